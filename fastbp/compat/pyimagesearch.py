"""The ``NeuralNetwork`` of PyImageSearch's backpropagation tutorial, on fastbp's kernels.

Same API: ``NeuralNetwork(layers, alpha=0.1)``, ``fit(X, y, epochs=1000, displayUpdate=100)``
printing ``[INFO] epoch=..., loss=...``, ``fit_partial``, ``predict(X, addBias=True)``,
``calculate_loss``, and the bias trick: a column of ones appended to the inputs, and one extra
sigmoid unit in every hidden layer (each ``W[i]`` of a hidden layer is ``(n_in + 1, n_out + 1)``).
Training is per-sample gradient descent on ½·Σ(p − y)², as the tutorial's, but each epoch runs
in compiled code. ``W`` holds views of the fastbp model's weights.
"""

from __future__ import annotations

import numpy as np

from .. import layers as fb_layers
from .. import optimizers
from ..callbacks import Callback
from ..model import Sequential


class _Report(Callback):
    def __init__(self, net, X, y, every):
        self.net, self.X, self.y, self.every = net, X, y, every

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0 or (epoch + 1) % self.every == 0:
            loss = self.net.calculate_loss(self.X, self.y)
            print(f"[INFO] epoch={epoch + 1}, loss={loss:.7f}")


class NeuralNetwork:
    """Sigmoid network with layer sizes ``layers`` trained by per-sample SGD with rate ``alpha``.

    Parameters
    ----------
    layers : list of int
        Units per layer, input first (e.g. ``[2, 2, 1]``).
    alpha : float
        Learning rate.
    seed : int, optional
        Seeds the initial weights (``randn / sqrt(n_in)``, as the tutorial).
    """

    def __init__(self, layers, alpha=0.1, seed=None):
        if len(layers) < 2 or any(int(n) != n or n < 1 for n in layers):
            raise ValueError(f"layers must be at least two positive ints, got {layers!r}")
        self.layers, self.alpha = [int(n) for n in layers], float(alpha)
        sizes = [n + 1 for n in self.layers[:-1]] + [self.layers[-1]]  # the bias trick
        stack = [
            fb_layers.Dense(n, "sigmoid", use_bias=False, input_dim=sizes[0] if i == 0 else None)
            for i, n in enumerate(sizes[1:])
        ]
        self._model = Sequential(stack, dtype="float64", seed=seed)
        self._model.build()
        rng = np.random.default_rng(seed)
        for i, layer in enumerate(self._model.layers):
            layer.W[...] = rng.standard_normal(layer.W.shape) / np.sqrt(self.layers[i])
        # the tutorial's step W -= alpha·Aᵀ·δ with δ = (p − y)·σ' is fastbp's mse step (gradient
        # 2·(p − y)/n_out) with learning rate alpha·n_out/2
        self._model.compile(optimizers.SGD(self.alpha * self.layers[-1] / 2.0), "mse")

    @property
    def W(self) -> list[np.ndarray]:  # noqa: N802  (the tutorial's name)
        return [layer.W for layer in self._model.layers]

    def __repr__(self) -> str:
        return "NeuralNetwork: {}".format("-".join(str(n) for n in self.layers))

    @staticmethod
    def sigmoid(x):
        return 1.0 / (1 + np.exp(-x))

    @staticmethod
    def sigmoid_deriv(x):
        """σ' from the output x = σ(z)."""
        return x * (1 - x)

    def _with_bias(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.layers[0]:
            raise ValueError(f"X must have {self.layers[0]} columns, got shape {X.shape}")
        return np.c_[X, np.ones(X.shape[0])]

    def fit(self, X, y, epochs=1000, displayUpdate=100):  # noqa: N803
        """``epochs`` passes of per-sample updates over ``X`` (in order), printing the loss at
        the first epoch and every ``displayUpdate`` epochs."""
        Xb = self._with_bias(X)
        Y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        Y = Y.T if Y.shape[0] == 1 and Xb.shape[0] != 1 else Y
        report = _Report(self, Xb, Y, displayUpdate)
        self._model.fit(
            Xb, Y, batch_size=1, epochs=epochs, shuffle=False, verbose=0, callbacks=[report]
        )

    def fit_partial(self, x, y):
        """One update on a single sample ``x`` (with its bias column) and target ``y``."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        self._model.train_on_batch(x, np.atleast_2d(np.asarray(y, dtype=np.float64)))

    def predict(self, X, addBias=True):  # noqa: N803
        """Outputs for the rows of ``X``; ``addBias`` appends the column of ones first."""
        p = self._with_bias(X) if addBias else np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self._model.predict(p)

    def calculate_loss(self, X, targets):
        """½·Σ(p − y)² over all rows (``X`` already holds the bias column)."""
        targets = np.atleast_2d(targets)
        predictions = self.predict(X, addBias=False)
        return 0.5 * np.sum((predictions - targets.reshape(predictions.shape)) ** 2)
