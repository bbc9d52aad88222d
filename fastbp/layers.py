"""Layers. Each owns views into the model's flat parameter/gradient buffers and its workspaces.

A layer never allocates during a training step: ``allocate(capacity, dtype, in_shape)`` sizes
its workspaces once for the largest batch, and every step works on the first ``m`` rows of them.
Inputs are ``(batch, features)`` or sequences ``(batch, timesteps, features)``; Dense, Dropout and
BatchNormalization act on the last axis (per time step, as Keras), on 2-D row views.
"""

import numpy as np

from . import activations, initializers, regularizers
from .backends.contract import ACTIVATION_IDS


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


def _constant(like, n: int, value: float):
    """A length-n vector of ``value`` where ``like`` lives (host, or the device)."""
    v = np.full(n, value, dtype=like.dtype)
    if isinstance(like, np.ndarray):
        return v
    from .backends import numba_cuda

    return numba_cuda.as_device(v)


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

    def _workspace(self, capacity, dtype, in_shape, n_out, *names) -> None:
        """(capacity, *in_shape[:-1], n_out) arrays under ``names`` (row-wise layers)."""
        for name in names:
            setattr(self, name, self._alloc((capacity, *in_shape[:-1], n_out), dtype))

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "input_dim": self.input_dim}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config


class Dense(Layer):
    """Fully connected layer ``A = act(X·W + b)``, W shaped ``(n_in, units)`` (Keras layout).

    Parameters
    ----------
    units : int
        Output width.
    activation : str or None
        One of linear (None), sigmoid, tanh, relu, leaky_relu (slope 0.2), softmax.
    use_bias : bool
        Whether to add the bias ``b`` (units,).
    kernel_initializer, bias_initializer : str
        Names from ``fastbp.initializers``.
    kernel_regularizer : L1L2, str or None
        Penalty on W added to the loss.
    input_dim : int, optional
        Number of input features (first layer only; else taken from the data).
    input_shape : tuple, optional
        Keras' alternative: (features,) or (timesteps, features) per sample (first layer only).
    trainable : bool
        False freezes W and b.

    On sequences (batch, timesteps, features) the same W and b apply at every time step.
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        input_dim=None,
        trainable=True,
        name=None,
        input_shape=None,
    ):
        super().__init__(
            name=name, trainable=trainable, input_dim=input_dim, input_shape=input_shape
        )
        if isinstance(units, bool) or int(units) != units or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.act = ACTIVATION_IDS[self.activation]
        self.alpha = activations.LEAKY_RELU_SLOPE
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        initializers.get(kernel_initializer), initializers.get(bias_initializer)  # validate now
        self.kernel_regularizer = regularizers.get(kernel_regularizer)

    def param_shapes(self, n_in):
        return [(n_in, self.units), (self.units,)] if self.use_bias else [(n_in, self.units)]

    def output_dim(self, n_in):
        return self.units

    def bind(self, n_in, params, grads, offset):
        offset = super().bind(n_in, params, grads, offset)
        self.W, self.dW = self.params[0], self.grads[0]
        self.b = self.params[1] if self.use_bias else None
        self.db = self.grads[1] if self.use_bias else None
        return offset

    def initialize(self, rng):
        self.W[...] = initializers.get(self.kernel_initializer)(self.W.shape, rng)
        if self.use_bias:
            self.b[...] = initializers.get(self.bias_initializer)(self.b.shape, rng)

    def regularizers(self):
        return [self.kernel_regularizer] + ([None] if self.use_bias else [])

    def allocate(self, capacity, dtype, in_shape):
        # A: outputs; dA: ∂L/∂A, then dZ in place
        self._workspace(capacity, dtype, in_shape, self.units, "A", "dA")

    def forward(self, backend, X: np.ndarray, training=False, step=0) -> np.ndarray:
        """A[:m] = act(X·W + b) for X (m, [T,] n_in); returns that view."""
        A = head(self.A, X.shape[0])
        backend.dense_forward(rows(X), self.W, self.b, self.act, self.alpha, rows(A))
        return A

    def backward(self, backend, X, dX, act=None) -> None:
        """From dA[:m] (already written), write dW, db and ``dX`` (None for the first layer).

        ``act`` overrides the activation whose derivative is applied (LINEAR when the loss
        already gave ∂L/∂Z, as for softmax + cross-entropy).
        """
        m = X.shape[0]
        backend.dense_backward(
            rows(X),
            self.W,
            rows(head(self.A, m)),
            rows(head(self.dA, m)),
            self.act if act is None else act,
            self.alpha,
            self.dW,
            self.db,
            None if dX is None else rows(dX),
        )

    def get_config(self):
        return super().get_config() | {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "kernel_regularizer": (
                None if self.kernel_regularizer is None else self.kernel_regularizer.get_config()
            ),
        }


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    rest by 1/(1 − rate); identity at inference.

    Parameters
    ----------
    rate : float in [0, 1)
    seed : int, optional
        Masks are a counter-based hash of (seed, training step, index): reproducible, and fixed
        within a step. None derives the seed from the model's.
    """

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name=name)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise ValueError(f"rate must be a float in [0, 1), got {rate!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.rate, self.seed = float(rate), seed
        self._seed = seed

    def initialize(self, rng):
        if self.seed is None:
            self._seed = int(rng.integers(2**63))

    def allocate(self, capacity, dtype, in_shape):
        self._workspace(capacity, dtype, in_shape, self.n_in, "A", "dA", "mask")

    def forward(self, backend, X, training=False, step=0):
        """Training: A = X ⊙ mask; inference: X itself."""
        if not training or self.rate == 0:
            self._dropped = False
            return X
        m = X.shape[0]
        backend.dropout_forward(
            rows(X), self.rate, self._seed, step, rows(head(self.mask, m)), rows(head(self.A, m))
        )
        self._dropped = True
        return head(self.A, m)

    def backward(self, backend, X, dX, act=None):
        """dX = dA ⊙ mask (dA itself when nothing was dropped)."""
        if dX is None:
            return
        m = X.shape[0]
        if self._dropped:
            backend.dropout_backward(rows(head(self.dA, m)), rows(head(self.mask, m)), rows(dX))
        else:
            _assign(dX, head(self.dA, m))

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}


class BatchNormalization(Layer):
    """Batch normalization (Keras semantics and defaults).

    Training: normalize by the batch mean and biased variance, and update the moving statistics
    ``moving = momentum·moving + (1 − momentum)·batch``; inference (and when frozen): use them.
    Weights, as Keras: [gamma, beta, moving_mean, moving_variance] (gamma without ``scale``,
    beta without ``center``); the moving statistics are saved but not trained.

    Parameters
    ----------
    momentum : float
    epsilon : float
    center, scale : bool
        Learn the offset beta / the factor gamma.
    """

    def __init__(
        self, momentum=0.99, epsilon=1e-3, center=True, scale=True, name=None, trainable=True
    ):
        super().__init__(name=name, trainable=trainable)
        if not 0 <= momentum <= 1 or not epsilon > 0:
            raise ValueError(
                f"momentum must be in [0, 1] and epsilon > 0, got {momentum!r}, {epsilon!r}"
            )
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def param_shapes(self, n_in):
        return [(n_in,)] * (int(self.scale) + int(self.center) + 2)

    def param_trainable(self):
        return [True] * (int(self.scale) + int(self.center)) + [False, False]

    def bind(self, n_in, params, grads, offset):
        offset = super().bind(n_in, params, grads, offset)
        k = 0
        if self.scale:
            self.gamma, self.dgamma, k = self.params[0], self.grads[0], 1
        else:  # fixed at 1; its gradient goes to a scratch array
            self.gamma, self.dgamma = _constant(params, n_in, 1), _constant(params, n_in, 0)
        if self.center:
            self.beta, self.dbeta = self.params[k], self.grads[k]
            k += 1
        else:
            self.beta, self.dbeta = _constant(params, n_in, 0), _constant(params, n_in, 0)
        self.moving_mean, self.moving_variance = self.params[k], self.params[k + 1]
        self.mean, self.inv_std = _constant(params, n_in, 0), _constant(params, n_in, 1)
        return offset

    def initialize(self, rng):
        self.gamma[...] = 1
        self.beta[...] = 0
        self.moving_mean[...] = 0
        self.moving_variance[...] = 1

    def allocate(self, capacity, dtype, in_shape):
        # _dX: the dX nobody reads (first layer)
        self._workspace(capacity, dtype, in_shape, self.n_in, "A", "dA", "Xhat", "_dX")

    def forward(self, backend, X, training=False, step=0):
        """A = γ⊙x̂ + β with batch statistics (training) or the moving ones."""
        m = X.shape[0]
        self._batch_stats = training and self.trainable  # frozen: inference mode, as Keras
        backend.batchnorm_forward(
            rows(X),
            self.gamma,
            self.beta,
            self.epsilon,
            self._batch_stats,
            self.momentum,
            self.moving_mean,
            self.moving_variance,
            self.mean,
            self.inv_std,
            rows(head(self.Xhat, m)),
            rows(head(self.A, m)),
        )
        return head(self.A, m)

    def backward(self, backend, X, dX, act=None):
        """dγ, dβ and dX through the batch statistics (through fixed ones when frozen)."""
        m = X.shape[0]
        if self._batch_stats:
            out = rows(dX if dX is not None else head(self._dX, m))
            dA, Xhat = rows(head(self.dA, m)), rows(head(self.Xhat, m))
            backend.batchnorm_backward(
                dA, Xhat, self.gamma, self.inv_std, self.dgamma, self.dbeta, out
            )
        elif dX is not None:  # frozen: x̂ used fixed statistics, dX = dA·γ/σ
            backend.batchnorm_backward_frozen(
                rows(head(self.dA, m)), self.gamma, self.inv_std, rows(dX)
            )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }


from .recurrent import GRU, LSTM, SimpleRNN  # noqa: E402  (they subclass Layer)

LAYERS = {cls.__name__: cls for cls in (Dense, Dropout, BatchNormalization, SimpleRNN, LSTM, GRU)}
