"""Textbook drop-ins: each update equals the original per-sample algorithm, written out here."""

import numpy as np
import pytest

from fastbp.compat import nielsen
from fastbp.compat.pyimagesearch import NeuralNetwork


def _sig(z):
    return 1 / (1 + np.exp(-z))


def _book_backprop(weights, biases, x, y, cross_entropy):
    """network.py's per-sample backprop (quadratic or cross-entropy output error)."""
    acts, zs = [x], []
    for w, b in zip(weights, biases, strict=True):
        zs.append(w @ acts[-1] + b)
        acts.append(_sig(zs[-1]))
    delta = acts[-1] - y
    if not cross_entropy:
        delta = delta * _sig(zs[-1]) * (1 - _sig(zs[-1]))
    nb, nw = [delta], [delta @ acts[-2].T]
    for layer in range(2, len(weights) + 1):
        sp = _sig(zs[-layer]) * (1 - _sig(zs[-layer]))
        delta = (weights[-layer + 1].T @ delta) * sp
        nb.insert(0, delta)
        nw.insert(0, delta @ acts[-layer - 1].T)
    return nb, nw


def _data(rng, n, sizes):
    xs = [rng.standard_normal((sizes[0], 1)) for _ in range(n)]
    ys = [nielsen.vectorized_result(int(rng.integers(sizes[-1])), sizes[-1]) for _ in range(n)]
    return list(zip(xs, ys, strict=True))


@pytest.mark.parametrize("cost", [nielsen.QuadraticCost, nielsen.CrossEntropyCost])
@pytest.mark.parametrize("lmbda", [0.0, 2.0])
def test_update_mini_batch_equals_the_book(cost, lmbda):
    rng = np.random.default_rng(0)
    sizes = [5, 4, 3]
    net = nielsen.Network(sizes, cost=cost, seed=1)
    assert [w.shape for w in net.weights] == [(4, 5), (3, 4)]
    assert [b.shape for b in net.biases] == [(4, 1), (3, 1)]
    batch = _data(rng, 6, sizes)
    ws, bs = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    eta, n = 0.7, 50
    sum_b, sum_w = [np.zeros_like(b) for b in bs], [np.zeros_like(w) for w in ws]
    for x, y in batch:
        nb, nw = _book_backprop(ws, bs, x, y, cost is nielsen.CrossEntropyCost)
        sum_b = [a + c for a, c in zip(sum_b, nb, strict=True)]
        sum_w = [a + c for a, c in zip(sum_w, nw, strict=True)]
    want_w = [
        (1 - eta * lmbda / n) * w - eta / len(batch) * g for w, g in zip(ws, sum_w, strict=True)
    ]
    want_b = [b - eta / len(batch) * g for b, g in zip(bs, sum_b, strict=True)]
    net.update_mini_batch(batch, eta, lmbda, n)
    for got, want in zip(net.weights + net.biases, want_w + want_b, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_backprop_feedforward_evaluate():
    rng = np.random.default_rng(1)
    net = nielsen.Network([3, 4, 2], seed=2)
    x, y = _data(rng, 1, [3, 4, 2])[0]
    want_b, want_w = _book_backprop(net.weights, net.biases, x, y, False)
    nb, nw = net.backprop(x, y)
    for got, want in zip(nb + nw, want_b + want_w, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    a = x
    for w, b in zip(net.weights, net.biases, strict=True):
        a = _sig(w @ a + b)
    np.testing.assert_allclose(net.feedforward(x), a, rtol=1e-12)
    assert net.evaluate([(x, int(np.argmax(a)))]) == 1
    np.testing.assert_array_equal(net.cost_derivative(a, y), a - y)
    with pytest.raises(ValueError, match=r"a must have shape \(3, 1\)"):
        net.feedforward(np.ones(3))


def test_sgd_prints_and_learns(capsys, tmp_path):
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((3, 6)) * 3
    labels = rng.integers(0, 3, 300)
    xs = centers[labels] + rng.standard_normal((300, 6))
    train = [
        (x.reshape(6, 1), nielsen.vectorized_result(t, 3)) for x, t in zip(xs, labels, strict=True)
    ]
    test = [(x.reshape(6, 1), int(t)) for x, t in zip(xs[:100], labels[:100], strict=True)]
    net = nielsen.Network([6, 8, 3], seed=0)
    net.SGD(train, 5, 10, 3.0, test_data=test)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Epoch 0: ") and lines[-1].endswith(" / 100") and len(lines) == 5
    assert net.evaluate(test) > 90
    assert len(net.epoch_seconds) == 5 and min(net.epoch_seconds) > 0
    # columns of equal size but unequal shapes are stacked too (the slower path)
    mixed = [(x.ravel() if i % 2 else x, y) for i, (x, y) in enumerate(test)]
    assert net.evaluate(mixed) == net.evaluate(test)
    net2 = nielsen.Network([6, 8, 3], cost=nielsen.CrossEntropyCost, seed=0)
    net2.default_weight_initializer()
    ec, ea, tc, ta = net2.SGD(
        train,
        3,
        10,
        0.5,
        lmbda=1.0,
        evaluation_data=test,
        monitor_evaluation_accuracy=True,
        monitor_training_cost=True,
    )
    assert len(ea) == 3 and len(tc) == 3 and ec == [] and ta == [] and ea[-1] > 90
    assert "Accuracy on evaluation data" in capsys.readouterr().out
    net2.save(tmp_path / "net.json")
    again = nielsen.load(tmp_path / "net.json")
    assert again.cost is nielsen.CrossEntropyCost and again.sizes == [6, 8, 3]
    np.testing.assert_array_equal(again.weights[1], net2.weights[1])
    assert again.evaluate(test) == net2.evaluate(test)


def test_pyimagesearch_fit_partial_equals_the_tutorial():
    nn = NeuralNetwork([3, 4, 2], alpha=0.3, seed=0)
    assert repr(nn) == "NeuralNetwork: 3-4-2" and [w.shape for w in nn.W] == [(4, 5), (5, 2)]
    W = [w.copy() for w in nn.W]
    x = np.array([[0.2, -0.5, 0.9, 1.0]])  # with the bias column
    y = np.array([[1.0, 0.0]])
    A = [x]  # the tutorial's fit_partial, written out
    for w in W:
        A.append(_sig(A[-1] @ w))
    D = [(A[-1] - y) * A[-1] * (1 - A[-1])]
    for layer in range(len(A) - 2, 0, -1):
        D.append((D[-1] @ W[layer].T) * A[layer] * (1 - A[layer]))
    D = D[::-1]
    want = [w - 0.3 * A[i].T @ D[i] for i, w in enumerate(W)]
    nn.fit_partial(x, y)
    for got, w in zip(nn.W, want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)


def test_pyimagesearch_xor(capsys):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    y = np.array([[0], [1], [1], [0]])
    nn = NeuralNetwork([2, 2, 1], alpha=0.5, seed=1)
    nn.fit(X, y, epochs=20000, displayUpdate=5000)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[INFO] epoch=1, loss=") and out[-1].startswith("[INFO] epoch=20000")
    np.testing.assert_array_equal(nn.predict(X).ravel() > 0.5, y.ravel() > 0.5)
    Xb = np.c_[X, np.ones(4)]
    assert nn.calculate_loss(Xb, y) == pytest.approx(0.5 * np.sum((nn.predict(X) - y) ** 2))
    np.testing.assert_array_equal(nn.predict(Xb, addBias=False), nn.predict(X))
