"""network.py and network2.py of Michael Nielsen's "Neural Networks and Deep Learning", on
fastbp's kernels.

Same API and data format: ``training_data`` is a list of ``(x, y)`` with ``x`` a column vector
``(n_in, 1)`` and ``y`` a one-hot column ``(n_out, 1)``; ``test_data`` / ``evaluation_data`` hold
``(x, label)``; ``weights[l]`` is ``(n_out, n_in)`` and ``biases[l]`` ``(n_out, 1)``. The update is
the book's ``w -= eta/len(mini_batch) * nabla_w`` (network2: after the L2 decay
``w *= 1 - eta*lmbda/n``) — but a whole epoch of mini-batches runs in compiled code instead of a
Python loop over samples. The weights and biases are views of the fastbp model's parameters.
"""

from __future__ import annotations

import json
import time

import numpy as np

from .. import layers, optimizers, regularizers
from ..callbacks import Callback
from ..model import Sequential


def sigmoid(z):
    """σ(z) = 1 / (1 + e^-z)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sigmoid_prime(z):
    """σ'(z) = σ(z)(1 - σ(z))."""
    s = sigmoid(z)
    return s * (1 - s)


class QuadraticCost:
    """C = ½‖a − y‖²; output error δ = (a − y) ⊙ σ'(z)."""

    loss = "mse"

    @staticmethod
    def fn(a, y):
        return 0.5 * np.linalg.norm(a - y) ** 2

    @staticmethod
    def delta(z, a, y):
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    """C = −Σ y ln a + (1 − y) ln(1 − a); output error δ = a − y."""

    loss = "binary_crossentropy"

    @staticmethod
    def fn(a, y):
        return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        return a - y


class Network:
    """A sigmoid network with layer sizes ``sizes`` (network.py; network2 with ``cost``).

    Parameters
    ----------
    sizes : list of int
        Neurons per layer, input first, e.g. ``[784, 30, 10]``.
    cost : QuadraticCost or CrossEntropyCost
        network.py uses the quadratic cost (the default).
    seed : int, optional
        Seeds the initial weights (Gaussian, as the book) and the shuffling.
    dtype : {"float64", "float32"}
        float64 as the book's NumPy arrays; float32 trains ~1.5x faster.
    """

    def __init__(self, sizes, cost=QuadraticCost, seed=None, dtype="float64"):
        if len(sizes) < 2 or any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"sizes must be at least two positive ints, got {sizes!r}")
        self.num_layers, self.sizes, self.cost = len(sizes), [int(s) for s in sizes], cost
        self._rng = np.random.default_rng(seed)
        self._lmbda, self._n, self._dtype = 0.0, 1, dtype
        self.epoch_seconds: list[float] = []  # of the last SGD call (fastbp's addition)
        self._model = self._new_model(seed)
        self.large_weight_initializer()

    def _new_model(self, seed):
        sizes = self.sizes
        stack = [
            layers.Dense(n, "sigmoid", input_dim=sizes[0] if i == 0 else None)
            for i, n in enumerate(sizes[1:])
        ]
        model = Sequential(stack, dtype=self._dtype, seed=seed)
        model.build()
        return model

    # -- parameters, in the book's layout (views: writes reach the model) ------------------------
    @property
    def weights(self) -> list[np.ndarray]:
        return [layer.W.T for layer in self._model.layers]

    @weights.setter
    def weights(self, ws):
        for layer, w in zip(self._model.layers, ws, strict=True):
            layer.W[...] = np.asarray(w).T

    @property
    def biases(self) -> list[np.ndarray]:
        return [layer.b.reshape(-1, 1) for layer in self._model.layers]

    @biases.setter
    def biases(self, bs):
        for layer, b in zip(self._model.layers, bs, strict=True):
            layer.b[...] = np.asarray(b).ravel()

    def default_weight_initializer(self):
        """network2: w ~ N(0, 1/n_in), b ~ N(0, 1)."""
        self.biases = [self._rng.standard_normal((y, 1)) for y in self.sizes[1:]]
        self.weights = [
            self._rng.standard_normal((y, x)) / np.sqrt(x)
            for x, y in zip(self.sizes[:-1], self.sizes[1:], strict=False)
        ]

    def large_weight_initializer(self):
        """network.py: w, b ~ N(0, 1)."""
        self.biases = [self._rng.standard_normal((y, 1)) for y in self.sizes[1:]]
        self.weights = [
            self._rng.standard_normal((y, x))
            for x, y in zip(self.sizes[:-1], self.sizes[1:], strict=False)
        ]

    # -- the book's methods ----------------------------------------------------------------------
    def feedforward(self, a):
        """Output column ``(n_out, 1)`` for the input column ``a`` ``(n_in, 1)``."""
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (self.sizes[0], 1):
            raise ValueError(f"a must have shape ({self.sizes[0]}, 1), got {a.shape}")
        return self._model.predict(a.T).T

    def _scale(self) -> float:
        # the book's gradient (summed over outputs) over fastbp's (averaged over outputs)
        n_out = self.sizes[-1]
        return n_out / 2.0 if self.cost is QuadraticCost else float(n_out)

    def _compile(self, eta, lmbda=0.0, n=1):
        """SGD whose step equals the book's: lr = eta·scale; L2 decay eta·lmbda/n on weights."""
        lr = eta * self._scale()
        l2 = lmbda / (2.0 * n * self._scale()) if lmbda else 0.0  # 2·l2·lr = eta·lmbda/n
        for layer in self._model.layers:
            layer.kernel_regularizer = regularizers.L2(l2) if l2 else None
        if self._model.optimizer is None or self._model.loss != self.cost.loss:
            self._model.compile(optimizers.SGD(lr), self.cost.loss)
        self._model.optimizer.learning_rate = lr

    def _stack(self, data, name):
        # straight into the model's dtype: fit and predict then use the rows as they are (a
        # float64 stack cast again by fit cost ~2 ms per epoch's test evaluation, 4000x784);
        # np.array copies and casts the columns in one pass, 2x faster than stacking raveled
        # views (4000 MNIST columns: 12 -> 6 ms); columns of unequal shapes take the slow way
        try:
            xs = [x for x, _ in data]
            try:
                X = np.array(xs, dtype=self._dtype)
                return X.reshape(len(xs), -1), [y for _, y in data]
            except ValueError:
                pass
            X = np.stack([np.ravel(x) for x in xs], dtype=self._dtype)
        except (TypeError, ValueError) as exc:
            msg = f"{name} must be a list of (x, y) with x of shape (n_in, 1): {exc}"
            raise ValueError(msg) from None
        return X, [y for _, y in data]

    def _targets(self, ys):
        ys = [np.asarray(y) for y in ys]
        if ys[0].size == 1:  # labels
            return np.eye(self.sizes[-1], dtype=self._dtype)[np.asarray(ys, dtype=np.int64).ravel()]
        return np.stack([y.ravel() for y in ys], dtype=self._dtype)

    def SGD(
        self,
        training_data,
        epochs,
        mini_batch_size,
        eta,
        test_data=None,
        lmbda=0.0,  # noqa: N802
        evaluation_data=None,
        monitor_evaluation_cost=False,
        monitor_evaluation_accuracy=False,
        monitor_training_cost=False,
        monitor_training_accuracy=False,
    ):
        """Mini-batch stochastic gradient descent, reshuffling the data every epoch.

        Prints ``Epoch {j}: {correct} / {n}`` with ``test_data`` (else ``Epoch {j} complete``),
        and network2's monitoring lines. Returns network2's four lists (evaluation cost and
        accuracy, training cost and accuracy; empty unless monitored). ``self.epoch_seconds``
        then holds each epoch's wall time, its report included (the one-time stacking of the
        lists into arrays before the first epoch is not).
        """
        training_data = list(training_data)
        n = len(training_data)
        if n == 0:
            raise ValueError("training_data is empty")
        X, ys = self._stack(training_data, "training_data")
        Y = self._targets(ys)
        self._lmbda, self._n = lmbda, n
        self._compile(eta, lmbda, n)
        # stacked once: the epochs then run in one compiled fit, reporting after each epoch
        test = self._labelled(test_data, "test_data") if test_data is not None else None
        evaluation = (
            self._labelled(evaluation_data, "evaluation_data")
            if evaluation_data is not None
            else None
        )
        out = ([], [], [], [])
        net = self
        self.epoch_seconds = []
        clock = [0.0]

        class Report(Callback):
            def on_epoch_begin(self, j, logs=None):
                clock[0] = time.perf_counter()

            def on_epoch_end(self, j, logs=None):
                if test is not None:
                    print(f"Epoch {j}: {net._correct(*test)} / {len(test[1])}")
                elif evaluation is None:
                    print(f"Epoch {j} complete")
                if monitor_training_cost:
                    out[2].append(net._cost(X, Y, lmbda))
                    print(f"Cost on training data: {out[2][-1]}")
                if monitor_training_accuracy:
                    out[3].append(net._correct(X, Y.argmax(axis=1)))
                    print(f"Accuracy on training data: {out[3][-1]} / {n}")
                if evaluation is not None and monitor_evaluation_cost:
                    Ye = np.eye(net.sizes[-1])[evaluation[1]]
                    out[0].append(net._cost(evaluation[0], Ye, lmbda))
                    print(f"Cost on evaluation data: {out[0][-1]}")
                if evaluation is not None and monitor_evaluation_accuracy:
                    out[1].append(net._correct(*evaluation))
                    print(f"Accuracy on evaluation data: {out[1][-1]} / {len(evaluation[1])}")
                net.epoch_seconds.append(time.perf_counter() - clock[0])

        self._model.fit(
            X,
            Y,
            batch_size=mini_batch_size,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            callbacks=[Report()],
        )
        return out

    def _labelled(self, data, name):
        """(X, labels) from a list of (x, label) or (x, one-hot y)."""
        X, ys = self._stack(list(data), name)
        return X, self._targets(ys).argmax(axis=1)

    def _correct(self, X, labels) -> int:
        return int(np.sum(self._model.predict(X).argmax(axis=1) == labels))

    def _cost(self, X, Y, lmbda) -> float:
        A = self._model.predict(X)
        cost = sum(self.cost.fn(a, y) for a, y in zip(A, Y, strict=True)) / len(X)
        return cost + 0.5 * (lmbda / len(X)) * sum(np.linalg.norm(w) ** 2 for w in self.weights)

    def update_mini_batch(self, mini_batch, eta, lmbda=0.0, n=1):
        """One step: w ← (1 − eta·lmbda/n)·w − eta/len(mini_batch)·Σ nabla_w (and b likewise)."""
        X, ys = self._stack(list(mini_batch), "mini_batch")
        self._compile(eta, lmbda, n)
        self._model.train_on_batch(X, self._targets(ys))

    def backprop(self, x, y):
        """``(nabla_b, nabla_w)``: the gradient of the cost of one sample, in the book's layout."""
        X = np.asarray(x, dtype=np.float64).reshape(1, -1)
        Y = self._targets([y])
        self._compile(1.0)
        model = self._model
        Xc, Yc = model.prepare(X, Y)
        model.ensure_capacity(1)
        model.executor.backprop(Xc, Yc, count=False)
        s = self._scale()
        nabla_b = [layer.db.reshape(-1, 1) * s for layer in model.layers]
        nabla_w = [layer.dW.T * s for layer in model.layers]
        return nabla_b, nabla_w

    def evaluate(self, test_data):
        """Number of ``(x, label)`` pairs whose most active output is the label."""
        return self._correct(*self._labelled(test_data, "test_data"))

    def accuracy(self, data, convert=False):
        """network2: correct count (labels and one-hot targets are both understood, so
        ``convert`` only keeps the book's signature)."""
        return self._correct(*self._labelled(data, "data"))

    def total_cost(self, data, lmbda, convert=False):
        """network2: mean cost over ``data`` plus ½·(lmbda/len(data))·Σ‖w‖²."""
        X, ys = self._stack(list(data), "data")
        return self._cost(X, self._targets(ys), lmbda)

    def cost_derivative(self, output_activations, y):
        """∂C/∂a for the quadratic cost."""
        return output_activations - y

    def save(self, filename):
        """network2's JSON file: sizes, weights, biases and cost name."""
        data = {
            "sizes": self.sizes,
            "weights": [w.tolist() for w in self.weights],
            "biases": [b.tolist() for b in self.biases],
            "cost": self.cost.__name__,
        }
        with open(filename, "w") as f:
            json.dump(data, f)


def load(filename) -> Network:
    """Read a network saved by ``Network.save`` (only the two known cost classes)."""
    with open(filename) as f:
        data = json.load(f)
    costs = {"QuadraticCost": QuadraticCost, "CrossEntropyCost": CrossEntropyCost}
    if data.get("cost") not in costs:
        raise ValueError(f"{filename}: unknown cost {data.get('cost')!r}")
    net = Network(data["sizes"], cost=costs[data["cost"]])
    net.weights = [np.array(w) for w in data["weights"]]
    net.biases = [np.array(b) for b in data["biases"]]
    return net


def vectorized_result(j, n=10):
    """One-hot column ``(n, 1)`` for label ``j`` (as mnist_loader)."""
    e = np.zeros((n, 1))
    e[j] = 1.0
    return e
