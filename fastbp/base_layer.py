"""The base of every layer, and the row views the row-wise kernels take.

A layer owns views into the model's flat parameter/gradient buffers and its workspaces. It never
allocates during a training step: ``allocate(capacity, dtype, in_shape)`` sizes its workspaces
once for the largest batch, and every step works on the first ``m`` rows of them. Inputs are
``(batch, features)`` or sequences ``(batch, timesteps, features)``.
"""

import numpy as np


def rows(a: np.ndarray) -> np.ndarray:
    """The 2-D (rows, last axis) view of a C-contiguous array, as the row-wise kernels take it
    (host or device array; a 2-D one itself: a numba device array's reshape costs ~10 µs)."""
    if a.ndim == 2:
        return a
    n = a.shape[a.ndim - 1]  # (numba's simulated device shapes take no negative index)
    return a.reshape(a.size // n if n else 0, n)


def head(a: np.ndarray, m: int) -> np.ndarray:
    """a[:m]: a workspace's first m rows (the batch), a itself where the batch fills it (slicing
    a numba device array costs ~50 µs of Python, several times per layer and step)."""
    return a if m == a.shape[0] else a[:m]


def _assign(dst, src) -> None:
    """dst[...] = src for two host or two device arrays."""
    if isinstance(dst, np.ndarray):
        dst[...] = src
    else:
        dst.copy_to_device(src)


def _input_shape(input_shape, input_dim):
    """Validate Keras' ``input_shape`` (per sample, ``None`` for any length); returns it and the
    feature count it implies."""
    if input_shape is None:
        return None, input_dim
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else None
    if (
        not shape
        or len(shape) > 2
        or not all(d is None or (isinstance(d, int) and d >= 1) for d in shape)
        or shape[-1] is None
    ):
        raise ValueError(
            "input_shape must be (features,) or (timesteps, features) of positive ints "
            f"(timesteps may be None), got {input_shape!r}"
        )
    if input_dim is not None and input_dim != shape[-1]:
        raise ValueError(f"input_dim={input_dim} contradicts input_shape={shape}")
    return shape, shape[-1]


class Layer:
    """Base class. Subclasses define ``param_shapes``, ``forward`` and ``backward``.

    ``forward(backend, X, training, step)`` returns the output rows for X; ``step`` (training
    steps done so far) seeds anything random. ``backward(backend, X, dX, act)`` reads ``dA`` and
    writes the parameter gradients and ``dX`` (None for the first layer).
    """

    _count = 0
    activation = "linear"  # what the output looks like to a loss (Dense overrides)
    #: allocates workspaces: np.empty, or the device backend's ``empty`` (set by the model)
    _alloc = staticmethod(np.empty)
    #: moves a host array where the model's buffers live: itself, or the device backend's
    #: ``as_device`` (set by the model)
    _place = staticmethod(np.asarray)

    def __init__(self, name=None, trainable=True, input_dim=None, input_shape=None):
        if name is None:
            Layer._count += 1
            name = f"{type(self).__name__.lower()}_{Layer._count}"
        self.name = name
        self.trainable = bool(trainable)
        if input_dim is not None and (int(input_dim) != input_dim or input_dim < 1):
            raise ValueError(f"input_dim must be a positive int, got {input_dim!r}")
        self.input_shape, input_dim = _input_shape(input_shape, input_dim)
        self.input_dim = None if input_dim is None else int(input_dim)
        self.n_in = None
        self.params: list[np.ndarray] = []  # views into the model's flat buffer
        self.grads: list[np.ndarray] = []

    # -- building -----------------------------------------------------------------------------
    def param_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        """Shapes of the trainable arrays, in get_weights order."""
        return []

    def output_dim(self, n_in: int) -> int:
        return n_in

    def output_shape(self, in_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample input shape (last axis = features)."""
        return tuple(in_shape[:-1]) + (self.output_dim(in_shape[-1]),)

    def bind(self, n_in: int, params: np.ndarray, grads: np.ndarray, offset: int) -> int:
        """Take views of the flat buffers starting at ``offset``; return the next offset."""
        self.n_in = n_in
        self.params, self.grads, self.offsets = [], [], []
        for shape in self.param_shapes(n_in):
            size = int(np.prod(shape))
            self.params.append(params[offset : offset + size].reshape(shape))
            self.grads.append(grads[offset : offset + size].reshape(shape))
            self.offsets.append(offset)
            offset += size
        return offset

    def initialize(self, rng: np.random.Generator) -> None:
        """Fill the parameters with their initial values."""

    def regularizers(self) -> list:
        """One L1L2 (or None) per parameter array."""
        return [None] * len(self.params)

    def param_trainable(self) -> list[bool]:
        """Per parameter array: does the optimizer update it (moving statistics do not)."""
        return [True] * len(self.params)

    def allocate(self, capacity: int, dtype, in_shape: tuple) -> None:
        """Size the workspaces for batches of up to ``capacity`` samples shaped ``in_shape``."""

    def _constant(self, like, n: int, value: float):
        """A length-n vector of ``value`` where ``like`` lives (host, or the device)."""
        v = np.full(n, value, dtype=like.dtype)
        return v if isinstance(like, np.ndarray) else self._place(v)

    def _workspace(self, capacity, dtype, in_shape, n_out, *names) -> None:
        """(capacity, *in_shape[:-1], n_out) arrays under ``names`` (row-wise layers)."""
        for name in names:
            setattr(self, name, self._alloc((capacity, *in_shape[:-1], n_out), dtype))

    def check_params(self, arrays) -> None:
        """Raise ValueError where ``arrays`` (values for ``params``, in order, finite) are not
        a valid state of this layer (BatchNormalization: a negative moving variance)."""

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "input_dim": self.input_dim}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config
