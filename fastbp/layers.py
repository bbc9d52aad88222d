"""Layers. Each owns views into the model's flat parameter/gradient buffers and its workspaces.

A layer never allocates during a training step: ``allocate(capacity, dtype, in_shape)`` sizes
its workspaces once for the largest batch, and every step works on the first ``m`` rows of them.
Inputs are ``(batch, features)`` or sequences ``(batch, timesteps, features)``; Dense, Dropout and
BatchNormalization act on the last axis (per time step, as Keras), on 2-D row views.
"""

import numpy as np

from . import activations, initializers, regularizers
from .backends.contract import ACTIVATION_IDS
from .base_layer import Layer, _assign, head, rows  # noqa: F401  (rows, head: part of the API)
from .recurrent import GRU, LSTM, SimpleRNN


class Dense(Layer):
    """Fully connected layer ``A = act(X·W + b)``, W shaped ``(n_in, units)`` (Keras layout).

    Parameters
    ----------
    units : int
        Output width.
    activation : str or None
        A name of ``fastbp.activations.REGISTRY``: linear (None), sigmoid, tanh, relu,
        leaky_relu (slope 0.2), softmax, gelu.
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
        #: whether the layer keeps its pre-activations Z (its activation's derivative needs z)
        self.keeps_z = activations.needs_z(self.act)
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
        # A: outputs; dA: ∂L/∂A, then dZ in place; Z: pre-activations, where the derivative
        # needs them
        names = ("A", "dA", "Z") if self.keeps_z else ("A", "dA")
        self._workspace(capacity, dtype, in_shape, self.units, *names)

    def _z(self, m):
        return rows(head(self.Z, m)) if self.keeps_z else None

    def forward(self, backend, X: np.ndarray, training=False, step=0) -> np.ndarray:
        """A[:m] = act(X·W + b) for X (m, [T,] n_in); returns that view."""
        m = X.shape[0]
        A = head(self.A, m)
        backend.dense_forward(rows(X), self.W, self.b, self.act, self.alpha, rows(A), self._z(m))
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
            self._z(m) if act is None else None,
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

    def check_params(self, arrays) -> None:
        if (np.asarray(arrays[-1]) < 0).any():
            raise ValueError(f"{self.name}: moving_variance must be >= 0")

    def bind(self, n_in, params, grads, offset):
        offset = super().bind(n_in, params, grads, offset)
        k = 0
        if self.scale:
            self.gamma, self.dgamma, k = self.params[0], self.grads[0], 1
        else:  # fixed at 1; its gradient goes to a scratch array
            self.gamma, self.dgamma = (
                self._constant(params, n_in, 1),
                self._constant(params, n_in, 0),
            )
        if self.center:
            self.beta, self.dbeta = self.params[k], self.grads[k]
            k += 1
        else:
            self.beta, self.dbeta = self._constant(params, n_in, 0), self._constant(params, n_in, 0)
        self.moving_mean, self.moving_variance = self.params[k], self.params[k + 1]
        self.mean, self.inv_std = self._constant(params, n_in, 0), self._constant(params, n_in, 1)
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


LAYERS = {cls.__name__: cls for cls in (Dense, Dropout, BatchNormalization, SimpleRNN, LSTM, GRU)}
