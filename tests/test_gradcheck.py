"""Float64 finite-difference gradient checks: every activation × every loss."""

import pytest
from conftest import BACKENDS, dense_model, loss_data

import fastbp as fb

HIDDEN = sorted(fb.activations.REGISTRY)  # every activation
# every loss with each output activation it accepts
OUTPUTS = [("mse", act) for act in HIDDEN] + [
    ("binary_crossentropy", "sigmoid"),
    ("binary_crossentropy", "softmax"),
    ("categorical_crossentropy", "softmax"),
    ("categorical_crossentropy", "sigmoid"),
    ("sparse_categorical_crossentropy", "softmax"),
    ("sparse_categorical_crossentropy", "sigmoid"),
]


def _data(loss, rng, n=6, k=4, out=3):
    return loss_data(loss, rng, n, k, out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,out_act", OUTPUTS)
def test_gradcheck(backend, hidden, loss, out_act, rng):
    X, y = _data(loss, rng)
    model = dense_model([4, 5, 3], [hidden, out_act], backend=backend, seed=1)
    model.compile("sgd", loss)
    assert fb.gradcheck(model, X, y) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_deep_regularized_no_bias(backend, rng):
    X, y = _data("mse", rng, n=5, k=3, out=2)
    reg = fb.regularizers.L1L2(0.01, 0.02)
    model = fb.Sequential(
        [
            fb.layers.Dense(4, "tanh", input_dim=3, kernel_regularizer=reg),
            fb.layers.Dense(4, "sigmoid", use_bias=False, kernel_regularizer="l2"),
            fb.layers.Dense(2),
        ],
        backend=backend,
        dtype="float64",
        seed=2,
    )
    model.compile("adam", "mse")
    assert fb.gradcheck(model, X, y) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_batch_of_one(backend, rng):
    X, y = _data("sparse_categorical_crossentropy", rng, n=1)
    model = dense_model([4, 1, 3], ["tanh", "softmax"], backend=backend)
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert fb.gradcheck(model, X, y) < 1e-6


def test_gradcheck_detects_a_wrong_gradient(rng):
    X, y = _data("mse", rng)
    model = dense_model([4, 5, 3], ["tanh", "linear"])
    model.compile("sgd", "mse")
    model.build()
    # a backend whose dense_backward forgets the activation derivative must be caught
    real = model.backend

    class Broken:
        name = "broken"

        def __getattr__(self, k):
            return getattr(real, k)

        def dense_backward(self, X, W, A, dA, act, alpha, dW, db, dX, Z=None):
            real.dense_backward(X, W, A, dA, 0, alpha, dW, db, dX, None)

    model.backend = Broken()
    assert fb.gradcheck(model, X, y) > 1e-2
