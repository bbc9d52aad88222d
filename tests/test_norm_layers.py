"""Dropout and BatchNormalization: kernels vs the reference, gradient checks, Keras semantics."""

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, KERNEL_BACKENDS, TOL

import fastbp as fb
from fastbp.backends import reference

SHAPES = [(1, 1), (1, 7), (6, 1), (33, 9)]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_reference(backend, dtype, shape, rng):
    be = fb.backends.get(backend)
    X = rng.standard_normal(shape).astype(dtype)
    got, want = [np.empty_like(X) for _ in range(2)], [np.empty_like(X) for _ in range(2)]
    be.dropout_forward(X, 0.4, 11, 3, *got)
    reference.dropout_forward(X, 0.4, 11, 3, *want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)  # the same counter-based masks
    dX, dX_ref = np.empty_like(X), np.empty_like(X)
    be.dropout_backward(X, got[0], dX)
    reference.dropout_backward(X, want[0], dX_ref)
    np.testing.assert_array_equal(dX, dX_ref)
    n = shape[1]
    g, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    for training in (True, False):
        outs = [
            [np.full(n, 0.5, dtype), np.full(n, 2.0, dtype)]
            + [np.empty(n, dtype), np.empty(n, dtype), np.empty_like(X), np.empty_like(X)]
            for _ in range(2)
        ]
        be.batchnorm_forward(X, g, b, 1e-3, training, 0.9, *outs[0])
        reference.batchnorm_forward(X, g, b, 1e-3, training, 0.9, *outs[1])
        for a, c in zip(*outs, strict=True):
            np.testing.assert_allclose(a, c, **TOL[dtype])
    dA = rng.standard_normal(shape).astype(dtype)
    grads = [[np.empty(n, dtype), np.empty(n, dtype), np.empty_like(X)] for _ in range(2)]
    be.batchnorm_backward(dA, outs[0][4], g, outs[0][3], *grads[0])
    reference.batchnorm_backward(dA, outs[1][4], g, outs[1][3], *grads[1])
    for a, c in zip(*grads, strict=True):
        np.testing.assert_allclose(a, c, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 10)


def _net(middle, backend, last="linear", out=3):
    stack = [fb.layers.Dense(6, "tanh", input_dim=4), middle, fb.layers.Dense(out, last)]
    return fb.Sequential(stack, backend=backend, dtype="float64", seed=3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "middle",
    [
        lambda: fb.layers.Dropout(0.3),
        lambda: fb.layers.BatchNormalization(),
        lambda: fb.layers.BatchNormalization(center=False, scale=False),
    ],
    ids=["dropout", "batchnorm", "batchnorm-plain"],
)
def test_gradcheck(backend, middle, rng):
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    model = _net(middle(), backend, "softmax")
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert fb.gradcheck(model, X, y) < 1e-6


def test_dropout_semantics(rng):
    X = np.ones((400, 50))
    layer = fb.layers.Dropout(0.25, seed=5)
    first = fb.layers.Dense(50, input_dim=50, kernel_initializer="ones")
    model = fb.Sequential([first, layer], dtype="float64")
    model.build()
    model.ensure_capacity(400)
    out = layer.forward(model.backend, X, training=True, step=0)
    assert abs((out == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / 0.75)
    again = layer.forward(model.backend, X, training=True, step=0).copy()
    np.testing.assert_array_equal(again, out)  # same step, same mask
    assert not np.array_equal(layer.forward(model.backend, X, training=True, step=1), again)
    assert layer.forward(model.backend, X, training=False) is X  # identity at inference
    np.testing.assert_array_equal(model.predict(np.eye(50)), np.ones((50, 50)))
    for bad in (-0.1, 1.0, "0.5"):
        with pytest.raises(ValueError, match=r"rate must be a float in \[0, 1\)"):
            fb.layers.Dropout(bad)


def test_batchnorm_keras_semantics(rng):
    X = rng.standard_normal((16, 4)) * 3 + 2
    bn = fb.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    model = fb.Sequential(
        [fb.layers.Dense(4, input_dim=4, kernel_initializer="ones"), bn], dtype="float64"
    )
    model.compile(fb.optimizers.SGD(0.1), "mse")
    model.build()
    model.layers[0].W[...] = np.eye(4)
    weights = model.get_weights()
    assert [w.shape for w in weights[2:]] == [(4,)] * 4  # gamma, beta, moving mean, variance
    model.layers[0].trainable = False
    model.train_on_batch(X, np.zeros((16, 4)))
    np.testing.assert_allclose(bn.moving_mean, 0.1 * X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.moving_variance, 0.9 + 0.1 * X.var(axis=0), rtol=1e-12)
    mm, mv = bn.moving_mean.copy(), bn.moving_variance.copy()
    P = model.predict(X)  # inference: the moving statistics, nothing updated
    np.testing.assert_allclose(P, bn.gamma * (X - mm) / np.sqrt(mv + 1e-3) + bn.beta, rtol=1e-12)
    np.testing.assert_array_equal(bn.moving_mean, mm)
    bn.trainable = False  # frozen: inference statistics, gamma and beta untouched
    g = bn.gamma.copy()
    model.train_on_batch(X, np.ones((16, 4)))
    np.testing.assert_array_equal(bn.gamma, g)
    np.testing.assert_array_equal(bn.moving_mean, mm)
    out = []
    model.summary(print_fn=out.append)
    assert "Non-trainable params: 36" in out[-1]


def test_training_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 4)), rng.integers(0, 3, 200)
    model = fb.Sequential(
        [
            fb.layers.Dense(6, "tanh", input_dim=4),
            fb.layers.BatchNormalization(),
            fb.layers.Dropout(0.2),
            fb.layers.Dense(3, "softmax"),
        ],
        seed=3,
    )
    model.compile(fb.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    h = model.fit(X, y, epochs=5, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    model.save(tmp_path / "m.fastbp")
    loaded = fb.load(tmp_path / "m.fastbp")
    assert [type(la).__name__ for la in loaded.layers] == [
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
