"""Sequential: the Keras-like model. Python decides what runs; the backend's kernels run it.

One training step (see DESIGN.md): forward through each layer into preallocated workspaces,
one loss kernel (value + gradient, fused with softmax/sigmoid where possible), backward in
reverse writing straight into the flat gradient buffer, ONE fused optimizer kernel.
"""

from __future__ import annotations

import numpy as np

from . import _validation as check
from . import backends, losses
from . import optimizers as optimizers_mod
from .backends.contract import LINEAR, LOSS_IDS
from .callbacks import Callback, History, ProgressBar
from .layers import Dense, Layer, head, rows
from .recurrent import _Recurrent

try:
    from ._ckernels import fisher_yates as _fisher_yates
except ImportError:  # no compiled module: the same swaps in Python
    _fisher_yates = None


def shuffled_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of range(n) (int64): Fisher-Yates over n uniform draws of ``rng``.

    Generator.permutation draws a bounded integer per element (33 µs for digits' 1437 rows,
    ~4% of a compiled epoch); one vector of draws and compiled swaps take ~6 µs.
    """
    u = rng.random(n)
    if _fisher_yates is not None:
        return _fisher_yates(u)
    order = np.arange(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        j = min(int(u[i] * (i + 1)), i)
        order[i], order[j] = order[j], order[i]
    return order


METRICS = {"accuracy": "accuracy", "acc": "accuracy"}
# most shuffle draws (float64) per compiled call of several epochs (Sequential._epochs_compiled)
DRAWS_PER_CALL = 1 << 20


class Sequential:
    """A linear stack of layers trained by backpropagation.

    Parameters
    ----------
    layers : list of Layer, optional
        The layers, first to last.
    backend : {"cython", "numba", "cuda", "numpy"}
        Which kernels run the model ("cython" is the compiled default; "numba" needs
        ``pip install numba``; "cuda" runs on an NVIDIA GPU through numba.cuda and keeps the
        model on the device while it trains (``pip install fastbp[cuda]``); "numpy" is the
        reference every backend is tested against).
    dtype : {"float32", "float64"}
        Dtype of parameters, activations and gradients.
    seed : int, optional
        Seeds initialization and shuffling: the same seed gives bit-identical training on the
        same backend.
    """

    def __init__(
        self,
        layers=None,
        backend: str = "cython",
        dtype="float32",
        seed=None,
        name: str = "sequential",
    ):
        self.backend = backends.get(backend)
        #: parameters and workspaces live on the backend's device (see _push / _pull)
        self._device = bool(getattr(self.backend, "device", False))
        self._on_device = False
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed, self.name = seed, name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self.metrics: list[str] = []
        self.stop_training = False
        self.built = False
        #: run Dense-only training in the backend's compiled loop where it has one
        self.use_compiled_loop = True
        self._n_features = None
        self._capacity = 0
        self._ws_shape = None  # per-sample input shape the workspaces were sized for
        self._out_rows = 1  # output rows per sample (timesteps for sequence outputs)
        self._shuffle_rng = np.random.default_rng(None if seed is None else [seed, 1])
        for layer in layers or []:
            self.add(layer)

    # -- structure -------------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append ``layer``; weights of the layers already built are kept."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a fastbp Layer, got {type(layer).__name__}")
        if self.layers and layer.input_dim is not None:
            raise ValueError("input_dim may only be given to the first layer")
        self.layers.append(layer)
        self.built = False

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self.layers:
            raise IndexError("pop from a model with no layers")
        self.built = False
        return self.layers.pop()

    @property
    def n_features(self) -> int | None:
        if self.layers and self.layers[0].input_dim is not None:
            return self.layers[0].input_dim
        return self._n_features

    @property
    def n_outputs(self) -> int:
        dim = self.n_features
        for layer in self.layers:
            dim = layer.output_dim(dim)
        return dim

    def build(self, n_features: int | None = None) -> None:
        """Allocate the flat buffers and initialize new layers (``n_features`` if not known)."""
        if not self.layers:
            raise ValueError("the model has no layers: add() some first")
        if n_features is not None:
            if self.n_features is not None and n_features != self.n_features:
                raise ValueError(f"x must have {self.n_features} features, got {n_features}")
            self._n_features = n_features
        if self.n_features is None:
            raise ValueError(
                "the number of input features is unknown: give the first layer "
                "input_dim, or call fit/predict"
            )
        self._pull()
        kept = {id(layer): [p.copy() for p in layer.params] for layer in self.layers}
        dims, total = [self.n_features], 0
        for layer in self.layers:
            total += sum(int(np.prod(s)) for s in layer.param_shapes(dims[-1]))
            dims.append(layer.output_dim(dims[-1]))
        self._params = np.zeros(total, dtype=self.dtype)  # ALL trainable parameters
        self._grads = np.zeros(total, dtype=self.dtype)  # their gradients, same layout
        rng = np.random.default_rng(self.seed)
        offset = 0
        for layer, n_in in zip(self.layers, dims, strict=False):
            offset = layer.bind(n_in, self._params, self._grads, offset)
            old = kept[id(layer)]
            if old and [o.shape for o in old] == [p.shape for p in layer.params]:
                for p, o in zip(layer.params, old, strict=True):
                    p[...] = o
            else:
                layer.initialize(rng)
        self._dims = dims
        self._inputs = [None] * len(self.layers)
        self._capacity, self._ws_shape = 0, None
        self._dev = None  # device copies (params, grads, optimizer state) once pushed
        for layer in self.layers:
            layer._alloc = self.backend.empty if self._device else np.empty
        self._seg_key = None
        self.built = True
        if self.optimizer is not None:
            self._prepare_compiled()

    def _rebind(self, params, grads) -> None:
        offset = 0
        for layer, n_in in zip(self.layers, self._dims, strict=False):
            offset = layer.bind(n_in, params, grads, offset)

    def _push(self) -> None:
        """Device backends: move parameters and optimizer state to the device and point the
        layers there (workspaces are allocated there too); no-op when already there. Layers'
        ``params`` are device arrays until ``_pull``."""
        if not self._device or self._on_device:
            return
        be, opt = self.backend, self.optimizer
        if self._dev is None or self._dev[0].size != self._params.size:
            # zeroed gradients: slots no kernel writes (moving statistics) must read 0
            self._dev = [be.empty(self._params.shape, self.dtype)]
            self._dev += [be.zeros(self._params.shape, self.dtype), None]
        be.copy(self._params, self._dev[0])  # (gradients are written before they are read)
        if opt is not None and opt.state is not None:
            if self._dev[2] is None or self._dev[2].shape != opt.state.shape:
                self._dev[2] = be.empty(opt.state.shape, self.dtype)
            be.copy(opt.state, self._dev[2])
            self._host_state, opt.state = opt.state, self._dev[2]
        self._rebind(self._dev[0], self._dev[1])
        self._on_device = True

    def _pull(self) -> None:
        """Copy the device's parameters, gradients and optimizer state back to the host arrays
        and point the layers at them (get_weights, save, ... call this)."""
        if not self._on_device:
            return
        be, opt = self.backend, self.optimizer
        be.copy(self._dev[0], self._params)
        be.copy(self._dev[1], self._grads)
        if opt is not None and opt.state is self._dev[2]:
            be.copy(opt.state, self._host_state)
            opt.state = self._host_state
        self._rebind(self._params, self._grads)
        self._on_device = False

    @property
    def _bound(self) -> tuple:
        """(params, grads) the layers are bound to: the device's while pushed."""
        return (self._dev[0], self._dev[1]) if self._on_device else (self._params, self._grads)

    def _ensure_built(self, n_features: int) -> None:
        if not self.built:
            self.build(n_features)

    def _sample_shapes(self, shape: tuple) -> list[tuple]:
        """Per-sample shapes entering each layer, then the output's (raises ValueError where a
        layer cannot take its input, e.g. a 2-D input to a recurrent layer)."""
        shapes = [tuple(shape)]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def _ensure_capacity(self, m: int, shape: tuple | None = None) -> None:
        """Workspaces for batches of m samples shaped ``shape`` (default: (n_features,))."""
        shape = (self.n_features,) if shape is None else tuple(shape)
        if m > self._capacity or shape != self._ws_shape:
            cap = max(m, self._capacity) if shape == self._ws_shape else m
            shapes = self._sample_shapes(shape)
            for layer, s in zip(self.layers, shapes, strict=False):
                layer.allocate(cap, self.dtype, s)
            self._capacity, self._ws_shape = cap, shape
            self._out_rows = int(np.prod(shapes[-1][:-1]))

    def _refresh_segments(self) -> None:
        """[start, end) and (l1, l2) of each trainable parameter array, recomputed only when
        the layers' trainable flags or regularizers changed (read at each fit / train_on_batch)."""
        key = tuple((layer.trainable, tuple(layer.regularizers())) for layer in self.layers)
        if getattr(self, "_seg_key", None) == key:
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
        self._seg = np.array(bounds, dtype=np.int64).reshape(-1, 2)
        self._seg_reg = np.array(regs, dtype=np.float64).reshape(-1, 2)
        self._reg_seg = np.array(reg_bounds, dtype=np.int64).reshape(-1, 2)
        self._reg_coef = np.array(reg_coef, dtype=np.float64).reshape(-1, 2)
        self._seg_key = key

    # -- compile ---------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None) -> None:
        """Choose the optimizer, the loss and the metrics ("accuracy").

        Parameters
        ----------
        optimizer : Optimizer or str
            An optimizer instance or a name ("sgd", "rmsprop", "adam", "adamw").
        loss : str
            "mse", "binary_crossentropy", "categorical_crossentropy" or
            "sparse_categorical_crossentropy".
        metrics : list of str, optional
            ["accuracy"]: threshold 0.5 for a single output, argmax otherwise.
        """
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse'")
        self.loss = losses.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        metrics = list(metrics or [])
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"metrics must be a list of {sorted(METRICS)}, got {m!r}")
        self.metrics = sorted({METRICS[m] for m in metrics})
        if self.layers:
            losses.check_output(self.loss, self.layers[-1].activation)
        if self.built:
            self._prepare_compiled()

    def _prepare_compiled(self) -> None:
        last = self.layers[-1]
        losses.check_output(self.loss, last.activation)
        # fused: the loss writes ∂L/∂Z of a Dense output layer (recurrent outputs feed back)
        self._fused = (self.loss, last.activation) in losses.FUSED and isinstance(last, Dense)
        self._sparse = self.loss == "sparse_categorical_crossentropy"
        self._loss_id = LOSS_IDS[self.loss]
        if (
            self.optimizer.state is None
            or self.optimizer.state.shape != (2, self._params.size)
            or self.optimizer.state.dtype != self.dtype
        ):
            self._pull()
            self.optimizer.build(self._params.size, self.dtype)

    def _check_compiled(self) -> None:
        if self.optimizer is None:
            raise RuntimeError("call compile(optimizer, loss) before training or evaluating")

    # -- kernels in order ------------------------------------------------------------------------
    def _fused_mlp_eligible(self) -> bool:
        """Would a device backend run this model through its fully fused MLP kernels?"""
        from .backends.cuda_mlp import eligible

        self._require_built()
        return self._device and eligible(self.layers, self.dtype)

    def _fused_mlp(self):
        """A device backend's fully fused MLP kernels for this model (cached), or None."""
        if not self._device or not self.use_compiled_loop or len(self._ws_shape or ()) != 1:
            return None
        key = (self._capacity, self._ws_shape, id(self._dev[0]), tuple(map(id, self.layers)))
        key += tuple((la.trainable, getattr(la, "act", None)) for la in self.layers)
        if getattr(self, "_fused_key", None) != key:
            self._fused_plan = self.backend.fused_mlp(
                self.layers, self._dev[0], self._dev[1], self._capacity, self.dtype
            )
            self._fused_key = key
        return self._fused_plan

    def _forward(self, X: np.ndarray, training: bool = False) -> np.ndarray:
        self._push()
        fused = self._fused_mlp()
        if fused is not None:  # one launch for all layers
            self._inputs[0] = X
            return fused.forward(X, X.shape[0])
        be = self.backend
        step = self.optimizer.iterations if self.optimizer is not None else 0
        for i, layer in enumerate(self.layers):
            self._inputs[i] = X
            X = layer.forward(be, X, training, step)
        return X

    # Sequence outputs (batch, T, k) are scored as batch·T rows, the mean over all of them (Keras).
    def _loss_kernel(self, P, Y, dP) -> float:
        if self._sparse:
            return self.backend.loss_sparse(rows(P), Y.reshape(Y.size), rows(dP), self._fused)
        return self.backend.loss(self._loss_id, rows(P), rows(Y), rows(dP), self._fused)

    def _count_correct(self, P, Y) -> int:
        if self._sparse:
            return self.backend.count_correct_sparse(rows(P), Y.reshape(Y.size))
        return self.backend.count_correct(rows(P), rows(Y))

    def _backprop(self, X, Y, count: bool) -> tuple[float, int]:
        """Forward, loss, backward: fills the flat gradient buffer (without regularization)."""
        P = self._forward(X, training=True)
        m = X.shape[0]
        loss = self._loss_kernel(P, Y, head(self.layers[-1].dA, m))
        correct = self._count_correct(P, Y) if count else 0
        self._backward(m)
        return loss, correct

    def _backward(self, m: int) -> None:
        """Backward through every layer from the last one's dA[:m] (written by the loss)."""
        layers = self.layers
        fused = self._fused_mlp()
        if fused is not None:  # one launch for all layers
            fused.backward(self._inputs[0], m, LINEAR if self._fused else None)
            return
        for i in range(len(layers) - 1, -1, -1):
            dX = head(layers[i - 1].dA, m) if i > 0 else None  # no dX for the first layer
            act = LINEAR if (self._fused and i == len(layers) - 1) else None
            layers[i].backward(self.backend, self._inputs[i], dX, act)

    def _train_step(self, X, Y, count: bool) -> tuple[float, int]:
        loss, correct = self._backprop(X, Y, count)
        loss += self._regularization_loss()  # at the weights the gradient was taken at
        self.optimizer.step(self.backend, *self._bound, self._seg, self._seg_reg)
        return loss, correct

    def _regularization_loss(self) -> float:
        """Σ l1·|W| + l2·W² over every regularized variable (frozen ones too, as Keras)."""
        self._refresh_segments()
        return self.backend.regularization_loss(self._bound[0], self._reg_seg, self._reg_coef)

    # -- data ------------------------------------------------------------------------------------
    def _prepare(self, x, y=None, name_x="x", name_y="y"):
        first = self.layers[0] if self.layers else None
        # a model with a recurrent layer takes sequences; Dense-only ones either kind
        ndims = (3,) if any(isinstance(la, _Recurrent) for la in self.layers) else (2, 3)
        shape = getattr(first, "input_shape", None)
        # device arrays (CUDA Array Interface) are checked where they are, never copied here
        on_dev = self._device and self.backend.is_device(x)
        features = self.backend.features if on_dev else check.features
        X = features(x, name_x, self.n_features, self.dtype, shape, ndims)
        self._ensure_built(tuple(X.shape)[-1])
        try:
            out_shape = self._sample_shapes(X.shape[1:])[-1]
        except ValueError as exc:
            raise ValueError(f"{name_x} has shape {X.shape}: {exc}") from None
        if y is None:
            return X, None
        self._check_compiled()
        targets = self.backend.targets if self._device and self.backend.is_device(y) else None
        return X, (targets or check.targets)(
            y, name_y, X.shape[0], self.loss, out_shape, self.dtype
        )

    # -- training --------------------------------------------------------------------------------
    def fit(
        self,
        x,
        y,
        batch_size=None,
        epochs=1,
        verbose=1,
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
    ) -> History:
        """Train for ``epochs`` passes over ``(x, y)``.

        Parameters
        ----------
        x : array (n_samples, n_features)
        y : array (n_samples, n_outputs), or (n_samples,) labels for the sparse loss
        batch_size : int or None
            Rows per step; None (or >= n_samples) trains full-batch, 1 is stochastic.
        epochs : int
        verbose : {0, 1, 2}
            0 silent, 1 progress bar (one line per epoch when not a terminal), 2 one line per epoch.
        callbacks : list of Callback
        validation_split : float in [0, 1)
            Fraction of the last rows (before shuffling) held out for validation.
        validation_data : tuple (x_val, y_val), optional
        shuffle : bool
            Reshuffle the rows every epoch.

        Returns
        -------
        History
            ``history.history["loss"]`` etc., one value per epoch.
        """
        self._check_compiled()
        X, Y = self._prepare(x, y)
        epochs = check.positive_int(epochs, "epochs")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            val = self._prepare(
                *validation_data, name_x="validation_data[0]", name_y="validation_data[1]"
            )
        elif validation_split > 0:
            n_val = int(X.shape[0] * validation_split)
            if n_val == 0 or n_val == X.shape[0]:
                raise ValueError(
                    f"validation_split={validation_split} leaves no rows for "
                    f"validation or training of {X.shape[0]}"
                )
            cut = X.shape[0] - n_val
            val = (X[cut:], Y[cut:])
            X, Y = X[:cut], Y[:cut]
        else:
            val = None
        n = X.shape[0]
        bs = n if batch_size is None else min(check.positive_int(batch_size, "batch_size"), n)
        self._ensure_capacity(bs, X.shape[1:])
        self._refresh_segments()
        shuffle = shuffle and bs < n  # a full batch's gradient does not depend on row order
        if self._device:  # the data goes over once, in one piece per array
            X, Y = self.backend.as_device(X), self.backend.as_device(Y)
            self._push()

        history = History()
        cbs = [history] + list(callbacks or [])
        if verbose:
            cbs.append(ProgressBar(verbose))
        per_batch = [
            c for c in cbs if type(c).on_train_batch_end is not Callback.on_train_batch_end
        ]
        self._fit_epochs, self._fit_steps = epochs, -(-n // bs)
        self.stop_training = False
        for c in cbs:
            c.set_model(self)
            c.on_train_begin()
        count = bool(self.metrics)
        # whole epochs in compiled code, unless a callback wants to run after every batch;
        # where the callbacks only read the epoch logs (History), runs of them in one call
        plan = None if per_batch else self._plan()
        if plan is not None and val is None and all(c.replayable for c in cbs):
            self._epochs_compiled(plan, X, Y, epochs, bs, shuffle, count, cbs)
        else:
            self._epochs_one_by_one(plan, X, Y, val, epochs, bs, shuffle, count, per_batch, cbs)
        for c in cbs:
            c.on_train_end()
        # a device model stays there (the next fit or train_on_batch starts at once);
        # get_weights, save, set_weights and the like bring it back (_pull)
        return history

    def _epochs_one_by_one(
        self, plan, X, Y, val, epochs, bs, shuffle, count, per_batch, cbs
    ) -> None:
        """``epochs`` epochs, each its own call (compiled, device or layer by layer), with the
        callbacks and the validation pass between them; stops where a callback asks."""
        n = X.shape[0]
        for epoch in range(epochs):
            for c in cbs:
                c.on_epoch_begin(epoch)
            order = shuffled_order(self._shuffle_rng, n) if shuffle else None
            if plan is not None:
                total, correct = self._epoch_compiled(plan, X, Y, order, bs, count)
            elif self._device:
                total, correct = self._epoch_device(X, Y, order, bs, count, per_batch)
            else:
                total, correct = self._epoch_python(X, Y, order, bs, count, per_batch)
            logs = self._logs(total / n, correct / (n * self._out_rows))
            if val is not None:
                vloss, vacc = self._evaluate(*val, bs)
                logs.update({"val_" + k: v for k, v in self._logs(vloss, vacc).items()})
                self._ensure_capacity(bs, X.shape[1:])  # back to the training shape
            for c in cbs:
                c.on_epoch_end(epoch, logs)
            if self.stop_training:
                break

    def _epoch_python(self, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        """One epoch, layer by layer from Python; returns (Σ loss·rows, correct)."""
        n = X.shape[0]
        if order is not None:
            Xb = np.empty((bs,) + X.shape[1:], dtype=X.dtype)
            Yb = np.empty((bs,) + Y.shape[1:], dtype=Y.dtype)
        total, correct = 0.0, 0
        for step, a in enumerate(range(0, n, bs)):
            b = min(a + bs, n)
            if order is not None:
                xb = np.take(X, order[a:b], axis=0, out=Xb[: b - a])
                yb = np.take(Y, order[a:b], axis=0, out=Yb[: b - a])
            else:
                xb, yb = X[a:b], Y[a:b]
            loss, right = self._train_step(xb, yb, count)
            total += loss * (b - a)
            correct += right
            if per_batch:
                logs = self._logs(total / b, correct / (b * self._out_rows))
                for c in per_batch:
                    c.on_train_batch_end(step, logs)
        return total, correct

    def _device_loss(self, P, Y, acc, weight=1.0) -> float:
        """Device backends: add Σ of the batch's losses to acc[0] without a round trip; returns
        the factor that turns acc[0] into Σ mean-loss·rows (the fit's accumulation)."""
        be, dP = self.backend, head(self.layers[-1].dA, P.shape[0])
        if self._sparse:
            div = be.loss_sparse_into(rows(P), Y.reshape(Y.size), rows(dP), self._fused, acc)
        else:
            div = be.loss_into(self._loss_id, rows(P), rows(Y), rows(dP), self._fused, acc)
        return div / P.shape[0]

    def _epoch_device(self, X, Y, order, bs, count, per_batch) -> tuple[float, int]:
        """One epoch with everything on the device: mini-batches gathered there, the loss and
        correct rows summed there and read back once (per batch only for batch callbacks)."""
        be, n = self.backend, X.shape[0]
        if order is not None:
            idx = be.as_device(order)
            if getattr(self, "_batch_ws", (None,))[0] is None or self._batch_ws[0].shape[0] < bs:
                self._batch_ws = (
                    be.empty((bs,) + tuple(X.shape[1:]), X.dtype),
                    be.empty((bs,) + tuple(Y.shape[1:]), Y.dtype),
                )
            Xb, Yb = self._batch_ws
        acc, reg = be.accumulator(), be.accumulator()
        per_row = 1.0
        for step, a in enumerate(range(0, n, bs)):
            b = min(a + bs, n)
            self._push()  # a batch callback may have pulled the weights (get_weights)
            if order is not None:
                be.take_rows(X, idx[a:b], Xb, b - a)
                be.take_rows(Y, idx[a:b], Yb, b - a)
                xb, yb = head(Xb, b - a), head(Yb, b - a)
            else:
                xb, yb = X[a:b], Y[a:b]
            P = self._forward(xb, training=True)
            per_row = self._device_loss(P, yb, acc)
            if count:
                self._count_device(P, yb, acc)
            self._backward(b - a)
            # regularization at the weights the gradient was taken at, weighted by the rows
            be.regularization_loss_into(self._bound[0], self._reg_seg, self._reg_coef, reg, b - a)
            self.optimizer.step(be, *self._bound, self._seg, self._seg_reg)
            if per_batch:
                sums = be.to_host(acc)
                logs = self._logs(
                    sums[0] / per_row / b + be.to_host(reg)[0] / b,
                    sums[1] / (b * self._out_rows),
                )
                for c in per_batch:
                    c.on_train_batch_end(step, logs)
        sums = be.to_host(acc)
        return float(sums[0] / per_row + be.to_host(reg)[0]), int(sums[1])

    def _count_device(self, P, Y, acc) -> None:
        if self._sparse:
            self.backend.count_into(rows(P), None, Y.reshape(Y.size), acc)
        else:
            self.backend.count_into(rows(P), rows(Y), None, acc)

    def _epoch_compiled(self, plan, X, Y, order, bs, count) -> tuple[float, int]:
        """One epoch inside the compiled loop (no Python per batch); same result as above."""
        Yd, labels = (None, Y) if self._sparse else (Y, None)
        total, correct, t = self.backend.train_epoch(
            plan, X, Yd, labels, order, bs, self.optimizer.iterations, count
        )
        self.optimizer.iterations = int(t)
        return total, correct

    def _epochs_compiled(self, plan, X, Y, epochs, bs, shuffle, count, cbs) -> None:
        """``epochs`` epochs as _epoch_compiled runs them one by one (the same shuffles: the
        Generator's draws for several epochs at once are the same numbers), several per call:
        up to DRAWS_PER_CALL draws (8 MB) a call."""
        n = X.shape[0]
        Yd, labels = (None, Y) if self._sparse else (Y, None)
        per_call, epoch = max(1, DRAWS_PER_CALL // n), 0
        while epoch < epochs:
            k = min(per_call, epochs - epoch)
            draws = self._shuffle_rng.random((k, n)) if shuffle else None
            totals, corrects, t = self.backend.train_epochs(
                plan, X, Yd, labels, draws, k, bs, self.optimizer.iterations, count
            )
            self.optimizer.iterations = int(t)
            for total, correct in zip(totals.tolist(), corrects.tolist(), strict=True):
                logs = self._logs(total / n, correct / (n * self._out_rows))
                for c in cbs:
                    c.on_epoch_begin(epoch)
                for c in cbs:
                    c.on_epoch_end(epoch, logs)
                epoch += 1

    def _plan(self):
        """The compiled backend's Plan for this model (cached), or None where there is none."""
        if not hasattr(self.backend, "Plan") or not self.use_compiled_loop:
            return None
        if any(type(layer) is not Dense for layer in self.layers) or len(self._ws_shape) != 1:
            return None
        opt = self.optimizer
        key = (
            self._seg_key,
            id(self._seg),
            id(self._reg_seg),
            self._capacity,
            self._ws_shape,
            id(opt),
            id(opt.state),
            id(self._params),
            self.loss,
        )
        if getattr(self, "_plan_key", None) != key:
            layers = [
                (la.W, la.b, la.A, la.dA, la.dW, la.db, la.act, la.alpha) for la in self.layers
            ]
            self._cached_plan = self.backend.Plan(
                layers,
                self._params,
                self._grads,
                opt.state,
                opt._hyper,
                self._seg,
                self._seg_reg,
                self._reg_seg,
                self._reg_coef,
                opt.kind,
                self._loss_id,
                self._fused,
            )
            self._plan_key = key
        return self._cached_plan

    def _logs(self, loss: float, acc: float) -> dict:
        return {"loss": loss, "accuracy": acc} if self.metrics else {"loss": loss}

    def train_on_batch(self, x, y) -> float:
        """One step on ``(x, y)`` as a single batch; returns the loss before the update."""
        self._check_compiled()
        X, Y = self._prepare(x, y)
        self._ensure_capacity(X.shape[0], X.shape[1:])
        self._refresh_segments()
        if self._device:  # over once, not once per kernel that reads them
            X, Y = self.backend.as_device(X), self.backend.as_device(Y)
        plan = self._plan()
        if plan is None:
            return self._train_step(X, Y, False)[0]
        Yd, labels = (None, Y) if self._sparse else (Y, None)
        loss = self.backend.train_step(plan, X, Yd, labels, self.optimizer.iterations)
        self.optimizer.iterations += 1
        return loss

    # -- inference -------------------------------------------------------------------------------
    def _chunk(self, X, batch_size) -> int:
        bs = check.positive_int(batch_size, "batch_size", allow_none=True)
        bs = min(X.shape[0], bs or max(self._capacity, 256))
        self._ensure_capacity(bs, X.shape[1:])
        return bs

    def predict(self, x, batch_size=None, verbose=0) -> np.ndarray:
        """Outputs of the last layer for ``x`` (n_samples, [timesteps,] n_features) ->
        (n_samples, [timesteps,] n_outputs) (timesteps where the last layer outputs sequences)."""
        X, _ = self._prepare(x)
        n = X.shape[0]
        bs = self._chunk(X, batch_size)
        out = np.empty((n,) + self._sample_shapes(X.shape[1:])[-1], dtype=self.dtype)
        if self._device:
            X = self.backend.as_device(X)
        for a in range(0, n, bs):
            P = self._forward(X[a : a + bs])
            out[a : a + bs] = self.backend.to_host(P) if self._device else P
        return out

    def _evaluate(self, X, Y, batch_size=None) -> tuple[float, float]:
        n = X.shape[0]
        bs = self._chunk(X, batch_size)
        if self._device:
            return self._evaluate_device(X, Y, bs)
        total, correct = 0.0, 0
        for a in range(0, n, bs):
            xb, yb = X[a : a + bs], Y[a : a + bs]
            P = self._forward(xb)
            total += self._loss_kernel(P, yb, self.layers[-1].dA[: xb.shape[0]]) * xb.shape[0]
            correct += self._count_correct(P, yb) if self.metrics else 0
        return total / n + self._regularization_loss(), correct / (n * self._out_rows)

    def _evaluate_device(self, X, Y, bs) -> tuple[float, float]:
        be, n = self.backend, X.shape[0]
        X, Y = be.as_device(X), be.as_device(Y)
        self._refresh_segments()
        acc, reg = be.accumulator(), be.accumulator()
        per_row = 1.0
        for a in range(0, n, bs):
            P = self._forward(X[a : a + bs])
            per_row = self._device_loss(P, Y[a : a + bs], acc)
            if self.metrics:
                self._count_device(P, Y[a : a + bs], acc)
        be.regularization_loss_into(self._bound[0], self._reg_seg, self._reg_coef, reg, 1.0)
        sums = be.to_host(acc)
        loss = float(sums[0] / per_row / n + be.to_host(reg)[0])
        return loss, float(sums[1] / (n * self._out_rows))

    def evaluate(self, x, y, batch_size=None, verbose=0):
        """Loss (with regularization) on ``(x, y)``; ``[loss, accuracy]`` if compiled with it."""
        X, Y = self._prepare(x, y)
        loss, acc = self._evaluate(X, Y, batch_size)
        return [loss, acc] if self.metrics else loss

    # -- weights ---------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies of [W0, b0, W1, b1, ...], W shaped (n_in, n_out)."""
        self._require_built()
        self._pull()
        return [p.copy() for layer in self.layers for p in layer.params]

    def set_weights(self, weights) -> None:
        """Set all parameters from a list ordered and shaped as ``get_weights()`` returns."""
        self._require_built()
        self._pull()
        targets = [p for layer in self.layers for p in layer.params]
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"weights must be a list of {len(targets)} arrays, got {len(weights)}")
        arrays = []
        for i, (w, t) in enumerate(zip(weights, targets, strict=True)):
            w = check._as_numeric(w, f"weights[{i}]")
            if w.shape != t.shape:
                raise ValueError(f"weights[{i}] must have shape {t.shape}, got {w.shape}")
            w = w.astype(self.dtype)
            check.check_finite(w, f"weights[{i}]")
            arrays.append(w)
        for w, t in zip(arrays, targets, strict=True):  # all checked before any is written
            t[...] = w

    def _require_built(self) -> None:
        if not self.built:
            if self.n_features is None:
                raise ValueError(
                    "the model is not built: give the first layer input_dim or "
                    "call fit/predict first"
                )
            self.build()

    def count_params(self) -> int:
        self._require_built()
        return int(self._params.size)

    def summary(self, print_fn=print) -> None:
        """Print each layer's output shape and parameter count."""
        self._require_built()
        first = self.layers[0].input_shape or self._ws_shape or (self.n_features,)
        shapes = self._sample_shapes(first)[1:]
        table = [("Layer (type)", "Output Shape", "Param #")]
        for layer, shape in zip(self.layers, shapes, strict=True):
            n = sum(p.size for p in layer.params)
            table.append((f"{layer.name} ({type(layer).__name__})", str((None, *shape)), str(n)))
        widths = [max(len(r[i]) for r in table) + 2 for i in range(3)]
        line = "-" * sum(widths)
        print_fn(f'Model: "{self.name}"  backend={self.backend.name} dtype={self.dtype.name}')
        print_fn(line)
        for i, r in enumerate(table):
            print_fn("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
            if i == 0:
                print_fn(line)
        trainable = sum(
            p.size
            for layer in self.layers
            if layer.trainable
            for p, learn in zip(layer.params, layer.param_trainable(), strict=True)
            if learn
        )
        print_fn(line)
        print_fn(f"Total params: {self._params.size}")
        print_fn(f"Trainable params: {trainable}")
        print_fn(f"Non-trainable params: {self._params.size - trainable}")

    # -- persistence -----------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend.name,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "n_features": self.n_features,
            "layers": [
                {"class": type(la).__name__, "config": la.get_config()} for la in self.layers
            ],
        }

    def save(self, filepath) -> None:
        """Write the model (config, weights, optimizer state) to one file, no pickle."""
        from .io import save_model

        self._pull()
        save_model(self, filepath)
