"""The parameter store: a model's flat buffers, where they live, and which parts train.

All trainable parameters of a model live in one contiguous 1-D array; each layer's arrays (a
Dense layer's ``W`` (n_in, n_out) and ``b``) are views into it, and the gradients mirror that
layout. On a device backend the store keeps device copies of parameters, gradients and optimizer
state while the model trains there (``push``) and copies them back on demand (``pull``).
"""

from __future__ import annotations

import math

import numpy as np


def layout(layers, n_features: int) -> tuple[list[int], int]:
    """The features into each layer (``n_features`` first, the output last) and the number of
    parameters of ``layers``: nothing allocated (``load`` checks a file's config with it)."""
    dims, total = [n_features], 0
    for layer in layers:
        total += sum(math.prod(s) for s in layer.param_shapes(dims[-1]))
        dims.append(layer.output_dim(dims[-1]))
    return dims, total


class ParameterStore:
    """Flat parameter and gradient buffers of a model's layers.

    Attributes
    ----------
    params, grads : ndarray (p,)
        The host buffers (the layers' views point here unless the store is pushed).
    dims : list of int
        Feature count entering each layer, then the output's.
    on_device : bool
        Whether the layers are bound to the device copies.
    seg, seg_reg : ndarray (s, 2) int64, (s, 2) float64
        ``[start, end)`` of each trainable parameter array and its (l1, l2): what the optimizer
        updates.
    reg_seg, reg_coef : ndarray (r, 2) int64, (r, 2) float64
        The same for every regularized array (frozen ones too): the loss's penalty.
    """

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.params = self.grads = None
        self.dims: list[int] = []
        self.layers: list = []
        self.on_device = False
        self._dev = None  # device copies [params, grads, optimizer state]
        self._host_state = None
        self._seg_key = None

    # -- building ----------------------------------------------------------------------------
    def build(self, layers, n_features: int, seed) -> None:
        """Allocate the buffers for ``layers`` on ``n_features`` inputs and bind the layers to
        them; a layer whose parameter shapes are unchanged keeps its values, the others are
        initialized from ``seed``."""
        kept = {id(layer): [p.copy() for p in layer.params] for layer in layers}
        dims, total = layout(layers, n_features)
        self.params = np.zeros(total, dtype=self.dtype)
        self.grads = np.zeros(total, dtype=self.dtype)
        rng = np.random.default_rng(seed)
        offset = 0
        for layer, n_in in zip(layers, dims, strict=False):
            offset = layer.bind(n_in, self.params, self.grads, offset)
            old = kept[id(layer)]
            if old and [o.shape for o in old] == [p.shape for p in layer.params]:
                for p, o in zip(layer.params, old, strict=True):
                    p[...] = o
            else:
                layer.initialize(rng)
        self.layers, self.dims = list(layers), dims
        self._dev, self.on_device, self._seg_key = None, False, None

    @property
    def size(self) -> int:
        return int(self.params.size)

    def _rebind(self, params, grads) -> None:
        offset = 0
        for layer, n_in in zip(self.layers, self.dims, strict=False):
            offset = layer.bind(n_in, params, grads, offset)

    # -- where the buffers live ----------------------------------------------------------------
    @property
    def bound(self) -> tuple:
        """(params, grads) the layers are bound to: the device's while pushed."""
        return (self._dev[0], self._dev[1]) if self.on_device else (self.params, self.grads)

    def push(self, backend, optimizer) -> None:
        """Move parameters and optimizer state to ``backend``'s device and bind the layers
        there (no-op when already there). The layers' ``params`` are device arrays until
        :meth:`pull`."""
        if self.on_device:
            return
        be = backend
        if self._dev is None or self._dev[0].size != self.params.size:
            # zeroed gradients: slots no kernel writes (moving statistics) must read 0
            self._dev = [be.empty(self.params.shape, self.dtype)]
            self._dev += [be.zeros(self.params.shape, self.dtype), None]
        be.copy(self.params, self._dev[0])  # (gradients are written before they are read)
        if optimizer is not None and optimizer.state is not None:
            if self._dev[2] is None or self._dev[2].shape != optimizer.state.shape:
                self._dev[2] = be.empty(optimizer.state.shape, self.dtype)
            be.copy(optimizer.state, self._dev[2])
            self._host_state, optimizer.state = optimizer.state, self._dev[2]
        self._rebind(self._dev[0], self._dev[1])
        self.on_device = True

    def pull(self, backend, optimizer) -> None:
        """Copy the device's parameters, gradients and optimizer state back to the host arrays
        and bind the layers to them (no-op when not pushed)."""
        if not self.on_device:
            return
        be = backend
        be.copy(self._dev[0], self.params)
        be.copy(self._dev[1], self.grads)
        if optimizer is not None and optimizer.state is self._dev[2]:
            be.copy(optimizer.state, self._host_state)
            optimizer.state = self._host_state
        self._rebind(self.params, self.grads)
        self.on_device = False

    # -- which parts train ---------------------------------------------------------------------
    def refresh_segments(self) -> None:
        """Recompute ``seg``, ``seg_reg``, ``reg_seg``, ``reg_coef`` where the layers' trainable
        flags or regularizers changed since the last call."""
        key = tuple((layer.trainable, tuple(layer.regularizers())) for layer in self.layers)
        if self._seg_key == key:
            return
        bounds, regs, reg_bounds, reg_coef = [], [], [], []
        for layer in self.layers:
            for p, start, reg, learn in zip(
                layer.params,
                layer.offsets,
                layer.regularizers(),
                layer.param_trainable(),
                strict=True,
            ):
                if layer.trainable and learn:
                    bounds.append((start, start + p.size))
                    regs.append((reg.l1, reg.l2) if reg else (0.0, 0.0))
                if reg is not None:
                    reg_bounds.append((start, start + p.size))
                    reg_coef.append((reg.l1, reg.l2))
        self.seg = np.array(bounds, dtype=np.int64).reshape(-1, 2)
        self.seg_reg = np.array(regs, dtype=np.float64).reshape(-1, 2)
        self.reg_seg = np.array(reg_bounds, dtype=np.int64).reshape(-1, 2)
        self.reg_coef = np.array(reg_coef, dtype=np.float64).reshape(-1, 2)
        self._seg_key = key

    @property
    def segments_key(self):
        """Changes whenever the segments do (part of a compiled plan's cache key)."""
        return self._seg_key
