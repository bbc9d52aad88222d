"""Sequential: the Keras-like model. Python decides what runs; the backend's kernels run it.

One training step (docs/design.md): forward through each layer into preallocated workspaces,
one loss kernel (value + gradient, fused with softmax/sigmoid where possible), backward in
reverse writing straight into the flat gradient buffer, ONE fused optimizer kernel. The model
holds the Keras surface; its flat buffers are a ``params.ParameterStore`` and its steps run on
an executor (``executors.choose``: layer by layer, the compiled loop, or the device).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import _validation as check
from . import backends, executors, io, losses
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import params as params_mod
from .callbacks import History, ProgressBar
from .layers import LAYERS, Dense, Layer
from .params import ParameterStore
from .recurrent import _Recurrent


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
        #: parameters and workspaces live on the backend's device (see ParameterStore.push)
        self._device = bool(getattr(self.backend, "device", False))
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
        self.history: History | None = None  # the last fit's (set as it starts)
        self.built = False
        #: run training in the backend's compiled loop (or fused device kernels) where it has one
        self.use_compiled_loop = True
        #: the flat parameter and gradient buffers (internal API, docs/design.md)
        self.store = ParameterStore(self.dtype)
        self._n_features = None
        self.capacity = 0  # rows the workspaces hold
        self.ws_shape = None  # per-sample input shape the workspaces were sized for
        self.out_rows = 1  # output rows per sample (timesteps for sequence outputs)
        self.inputs: list = []  # each layer's input of the current batch (for its backward)
        self.shuffle_rng = np.random.default_rng(None if seed is None else [seed, 1])
        # per layer list (ids): the ranks the model takes and its output shape per input shape
        self._layout = (None, None, None)
        #: internal API (the scikit-learn drop-in): where set, ``order(n)`` gives each shuffled
        #: epoch's row order instead of ``shuffle_rng``
        self.shuffle_orders = None
        #: internal API: the L2/L1 penalty of a batch (loss and gradient) divided by its rows,
        #: scikit-learn's convention (Keras': per batch)
        self.penalty_per_row = False
        self._executor = None
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
        self._layout = (None, None, None)

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self.layers:
            raise IndexError("pop from a model with no layers")
        self.built, self._layout = False, (None, None, None)
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
        self.pull()
        self.store.build(self.layers, self.n_features, self.seed)
        self.inputs = [None] * len(self.layers)
        self.capacity, self.ws_shape = 0, None
        for layer in self.layers:
            layer._alloc = self.backend.empty if self._device else np.empty
            layer._place = self.backend.as_device if self._device else np.asarray
        self._executor = None
        self.built = True
        if self.optimizer is not None:
            self._prepare_compiled()

    # -- internal API: what gradcheck, the profiler and the drop-ins use (docs/design.md) ------
    @property
    def executor(self):
        """The executor that runs this model's steps (``executors.choose``; rebuilt with the
        model, or when ``backend`` is replaced)."""
        ex = self._executor
        if ex is None or ex.backend is not self.backend:
            ex = self._executor = executors.choose(self)
        return ex

    def push(self) -> None:
        """Device backends: move parameters and optimizer state to the device (no-op else)."""
        if self._device:
            self.store.push(self.backend, self.optimizer)

    def pull(self) -> None:
        """Device backends: bring parameters, gradients and optimizer state back to the host
        arrays (``store.params``, ``store.grads``, ``optimizer.state``); no-op else."""
        if self._device and self.built:
            self.store.pull(self.backend, self.optimizer)

    def sample_shapes(self, shape: tuple) -> list[tuple]:
        """Per-sample shapes entering each layer, then the output's (raises ValueError where a
        layer cannot take its input, e.g. a 2-D input to a recurrent layer)."""
        shapes = [tuple(shape)]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def ensure_capacity(self, m: int, shape: tuple | None = None) -> None:
        """Workspaces for batches of m samples shaped ``shape`` (default: (n_features,))."""
        shape = (self.n_features,) if shape is None else tuple(shape)
        if m > self.capacity or shape != self.ws_shape:
            cap = max(m, self.capacity) if shape == self.ws_shape else m
            shapes = self.sample_shapes(shape)
            for layer, s in zip(self.layers, shapes, strict=False):
                layer.allocate(cap, self.dtype, s)
            self.capacity, self.ws_shape = cap, shape
            self.out_rows = int(np.prod(shapes[-1][:-1]))

    def prepare(self, x, y=None, name_x="x", name_y="y"):
        """``x`` (and ``y``) checked and converted as the kernels take them (builds the model
        on first use); raises ValueError naming the argument."""
        first = self.layers[0] if self.layers else None
        layer_ids = tuple(map(id, self.layers))  # what the cached facts below depend on
        if self._layout[0] != layer_ids:
            # a model with a recurrent layer takes sequences; Dense-only ones either kind
            recurrent = any(isinstance(la, _Recurrent) for la in self.layers)
            self._layout = (layer_ids, (3,) if recurrent else (2, 3), {})
        ndims, out_shapes = self._layout[1], self._layout[2]
        shape = getattr(first, "input_shape", None)
        # device arrays (CUDA Array Interface) are checked where they are, never copied here
        on_dev = self._device and self.backend.is_device(x)
        if sp.issparse(x):  # CSR/CSC: the compiled loop's first Dense layer takes them
            if not (isinstance(first, Dense) and hasattr(self.backend, "train_epochs_sparse")):
                raise ValueError(
                    f"{name_x} is a sparse matrix: sparse inputs need a first Dense layer and "
                    f"the cython backend (this model: {type(first).__name__}, "
                    f"backend={self.backend.name!r}); pass x.toarray() otherwise"
                )
            X = check.sparse_features(x, name_x, self.n_features, self.dtype)
        else:
            features = self.backend.features if on_dev else check.features
            X = features(x, name_x, self.n_features, self.dtype, shape, ndims)
        if not self.built:
            self.build(tuple(X.shape)[-1])
        out_shape = out_shapes.get(X.shape[1:])
        if out_shape is None:
            try:
                out_shape = self.sample_shapes(X.shape[1:])[-1]
            except ValueError as exc:
                raise ValueError(f"{name_x} has shape {X.shape}: {exc}") from None
            out_shapes[X.shape[1:]] = out_shape
        if y is None:
            return X, None
        self.require_compiled()
        targets = self.backend.targets if self._device and self.backend.is_device(y) else None
        return X, (targets or check.targets)(
            y, name_y, X.shape[0], self.loss, out_shape, self.dtype
        )

    def require_compiled(self) -> None:
        if self.optimizer is None:
            raise RuntimeError("call compile(optimizer, loss) before training or evaluating")

    def require_built(self) -> None:
        if not self.built:
            if self.n_features is None:
                raise ValueError(
                    "the model is not built: give the first layer input_dim or "
                    "call fit/predict first"
                )
            self.build()

    def epoch_logs(self, loss: float, acc: float) -> dict:
        """The logs of an epoch (or a batch) as callbacks receive them."""
        return {"loss": loss, "accuracy": acc} if self.metrics else {"loss": loss}

    # -- compile ---------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None) -> None:
        """Choose the optimizer, the loss and the metrics ("accuracy").

        Parameters
        ----------
        optimizer : Optimizer or str
            An optimizer instance or a name ("sgd", "rmsprop", "adam", "adamw", "adagrad").
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
        self.metrics = sorted({metrics_mod.get(m) for m in list(metrics or [])})
        if self.layers:
            losses.check_output(self.loss, self.layers[-1].activation)
        if self.built:
            self._prepare_compiled()

    def _prepare_compiled(self) -> None:
        last = self.layers[-1]
        losses.check_output(self.loss, last.activation)
        #: the loss writes ∂L/∂Z of a Dense output layer (recurrent outputs feed back)
        self.fused_loss = losses.fuses(self.loss, last.activation) and isinstance(last, Dense)
        self.sparse_loss = losses.REGISTRY[self.loss].sparse
        self.loss_id = losses.LOSS_IDS[self.loss]
        state = self.optimizer.state
        if state is None or state.shape != (2, self.store.size) or state.dtype != self.dtype:
            self.pull()
            self.optimizer.build(self.store.size, self.dtype)

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
            Rows per step (None: 32, as Keras); >= n_samples trains full-batch, 1 is stochastic.
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
        self.require_compiled()
        X, Y = self.prepare(x, y)
        epochs = check.positive_int(epochs, "epochs")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            val = self.prepare(
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
        bs = min(32 if batch_size is None else check.positive_int(batch_size, "batch_size"), n)
        self.ensure_capacity(bs, X.shape[1:])
        self.store.refresh_segments()
        shuffle = shuffle and bs < n  # a full batch's gradient does not depend on row order
        if self._device:  # the data goes over once, in one piece per array
            X, Y = self.backend.as_device(X), self.backend.as_device(Y)
            self.push()

        history = self.history = History()  # (as Keras: the finished epochs' logs, also
        cbs = [history] + list(callbacks or [])  # after an exception such as Ctrl-C's)
        if verbose:
            cbs.append(ProgressBar(verbose))
        per_batch = [c for c in cbs if c.wants_batches]
        params = {"epochs": epochs, "steps": -(-n // bs), "verbose": verbose}
        self.stop_training = False
        for c in cbs:
            c.set_model(self)
            c.set_params(params)
            c.on_train_begin()
        count = bool(self.metrics)
        ex = self.executor
        ex.stop_nonfinite = any(c.stops_on_nonfinite for c in cbs)
        try:
            ex.fit_epochs(X, Y, val, epochs, bs, shuffle, count, per_batch, cbs)
        finally:
            ex.stop_nonfinite = False
        for c in cbs:
            c.on_train_end()
        # a device model stays there (the next fit or train_on_batch starts at once);
        # get_weights, save, set_weights and the like bring it back (pull)
        return history

    def train_on_batch(self, x, y) -> float:
        """One step on ``(x, y)`` as a single batch; returns the loss before the update."""
        self.require_compiled()
        X, Y = self.prepare(x, y)
        self.ensure_capacity(X.shape[0], X.shape[1:])
        self.store.refresh_segments()
        if self._device:  # over once, not once per kernel that reads them
            X, Y = self.backend.as_device(X), self.backend.as_device(Y)
        return self.executor.train_on_batch(X, Y)

    # -- inference -------------------------------------------------------------------------------
    def _chunk(self, X, batch_size) -> int:
        bs = check.positive_int(batch_size, "batch_size", allow_none=True)
        bs = min(X.shape[0], bs or max(self.capacity, 256))
        self.ensure_capacity(bs, X.shape[1:])
        return bs

    def predict(self, x, batch_size=None, verbose=0) -> np.ndarray:
        """Outputs of the last layer for ``x`` (n_samples, [timesteps,] n_features) ->
        (n_samples, [timesteps,] n_outputs) (timesteps where the last layer outputs sequences)."""
        X, _ = self.prepare(x)
        n = X.shape[0]
        bs = self._chunk(X, batch_size)
        out = np.empty((n,) + self.sample_shapes(X.shape[1:])[-1], dtype=self.dtype)
        if self._device:
            X = self.backend.as_device(X)
        self.executor.predict(X, bs, out)
        return out

    def evaluate(self, x, y, batch_size=None, verbose=0):
        """Loss (with regularization) on ``(x, y)``; ``[loss, accuracy]`` if compiled with it."""
        X, Y = self.prepare(x, y)
        loss, acc = self.executor.evaluate(X, Y, self._chunk(X, batch_size))
        return [loss, acc] if self.metrics else loss

    # -- weights ---------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies of [W0, b0, W1, b1, ...], W shaped (n_in, n_out)."""
        self.require_built()
        self.pull()
        return [p.copy() for layer in self.layers for p in layer.params]

    def set_weights(self, weights) -> None:
        """Set all parameters from a list ordered and shaped as ``get_weights()`` returns."""
        self.require_built()
        self.pull()
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
        i = 0
        for layer in self.layers:
            layer.check_params(arrays[i : i + len(layer.params)])
            i += len(layer.params)
        for w, t in zip(arrays, targets, strict=True):  # all checked before any is written
            t[...] = w

    def count_params(self) -> int:
        self.require_built()
        return self.store.size

    def summary(self, print_fn=print) -> None:
        """Print each layer's output shape and parameter count."""
        self.require_built()
        first = self.layers[0].input_shape or self.ws_shape or (self.n_features,)
        shapes = self.sample_shapes(first)[1:]
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
        print_fn(f"Total params: {self.store.size}")
        print_fn(f"Trainable params: {trainable}")
        print_fn(f"Non-trainable params: {self.store.size - trainable}")

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
        self.require_built()
        self.pull()
        config = {"model": self.get_config()}
        arrays = {"params": self.store.params}
        if self.optimizer is not None:
            opt = self.optimizer
            config["compile"] = {
                "optimizer": {"class": type(opt).__name__, "config": opt.get_config()},
                "loss": self.loss,
                "metrics": self.metrics,
                "iterations": opt.iterations,
            }
            arrays["optimizer_state"] = opt.state
        io.write(filepath, config, arrays)


def load(filepath, backend: str | None = None) -> Sequential:
    """Read a model written by ``Sequential.save``.

    Parameters
    ----------
    filepath : str or path
    backend : str, optional
        Run the model on this backend instead of the one it was saved from (a model trained
        on the GPU, loaded where there is none).

    Raises
    ------
    ValueError
        For a corrupt or hostile file, naming what is wrong: every array is checked against
        the config (shapes from the headers, before anything large is allocated), weights and
        optimizer state must be finite, the step counter an int >= 0.
    """
    made = {}

    def expect(config):
        model, n = _model_from_config(config, backend)
        made["model"] = model
        wanted = {"params": ((n,), model.dtype)}
        if "compile" in config:
            wanted["optimizer_state"] = ((2, n), model.dtype)
        return wanted

    config, arrays = io.read(filepath, expect)
    try:
        return _restore(made["model"], config, arrays)
    except ValueError as exc:
        raise io.invalid(filepath, str(exc)) from None


def _field(d, key, kinds, what):
    """d[key] of one of ``kinds`` (ValueError naming ``what`` otherwise)."""
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"{what}: missing {key!r}")
    value = d[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise ValueError(f"{what}: {key!r} must be {kinds}, got {value!r}")
    return value


def _model_from_config(config: dict, backend: str | None) -> tuple[Sequential, int]:
    """The unbuilt model a saved config describes and its parameter count (nothing large
    allocated); ValueError for anything wrong."""
    mc = _field(config, "model", (dict,), "config")
    kw = {
        "name": _field(mc, "name", (str,), "model"),
        "dtype": _field(mc, "dtype", (str,), "model"),
        "seed": _field(mc, "seed", (int, type(None)), "model"),
    }
    saved_backend = _field(mc, "backend", (str,), "model")
    n_features = _field(mc, "n_features", (int,), "model")
    if kw["dtype"] not in ("float32", "float64"):
        raise ValueError(f"model: dtype must be float32 or float64, got {kw['dtype']!r}")
    if n_features < 1:
        raise ValueError(f"model: n_features must be >= 1, got {n_features}")
    name = backend or saved_backend
    try:
        model = Sequential(backend=name, **kw)
    except ImportError as exc:
        raise ValueError(
            f"backend {name!r} is not available here ({exc}); pass backend='cython' (or "
            "another) to load it on this machine"
        ) from None
    layers = _field(mc, "layers", (list,), "model")
    if not layers:
        raise ValueError("model: no layers")
    for i, spec in enumerate(layers):
        cls = LAYERS.get(_field(spec, "class", (str,), f"layers[{i}]"))
        if cls is None:
            raise ValueError(f"layers[{i}]: unknown layer class {spec['class']!r}")
        kwargs = _field(spec, "config", (dict,), f"layers[{i}]")
        try:
            model.add(cls(**kwargs))
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"layers[{i}] ({spec['class']}): {exc}") from None
    try:
        _, n = params_mod.layout(model.layers, n_features)
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"model: {exc}") from None
    model._n_features = n_features
    return model, n


def _restore(model: Sequential, config: dict, arrays: dict) -> Sequential:
    """Build ``model`` and put the file's arrays (already shape-checked) in it."""
    params = arrays["params"]
    if not np.isfinite(params).all():
        raise ValueError("params contain NaN or inf")
    model.build(model.n_features)
    model.store.params[...] = params
    for layer in model.layers:
        layer.check_params(layer.params)
    if "compile" not in config:
        return model
    cc = _field(config, "compile", (dict,), "config")
    spec = _field(cc, "optimizer", (dict,), "compile")
    opt_cls = optimizers_mod.OPTIMIZERS.get(str(_field(spec, "class", (str,), "optimizer")).lower())
    if opt_cls is None:
        raise ValueError(f"optimizer: unknown class {spec['class']!r}")
    iterations = _field(cc, "iterations", (int,), "compile")
    if not 0 <= iterations < 2**53:  # (a float64 step count in the kernels)
        raise ValueError(f"compile: iterations must be an int in [0, 2**53), got {iterations}")
    try:
        opt = opt_cls.from_config(_field(spec, "config", (dict,), "optimizer"))
        model.compile(opt, _field(cc, "loss", (str,), "compile"), cc.get("metrics"))
    except TypeError as exc:
        raise ValueError(f"compile: {exc}") from None
    state = arrays["optimizer_state"]
    opt.check_state(state)
    model.optimizer.state[...] = state
    model.optimizer.iterations = iterations
    return model
