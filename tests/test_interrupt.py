"""Ctrl-C (SIGINT) during compiled loops: KeyboardInterrupt within 0.2 s, the model left at its
last finished step (weights, optimizer state, ``iterations``) and the History of the finished
epochs kept."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import fastbp as fb

pytest.importorskip("fastbp._ckernels", reason="the compiled loops are the cython backend's")


def _interrupt_after(seconds):
    """SIGINT to this process ``seconds`` from now (Python runs its handler in the main
    thread); returns a list that gets the time it was sent."""
    sent = []

    def fire():
        time.sleep(seconds)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()
    return sent


def _model(kind, dtype="float32"):
    if kind == "mlp":  # a Dense epoch the team takes (Σ m·n_in·n_out >= 2^22)
        layers = [
            fb.layers.Dense(256, "relu", input_dim=320),
            fb.layers.Dense(64, "relu"),
            fb.layers.Dense(10, "softmax"),
        ]
    elif kind == "tiny":  # W1's 2-2-1: sub-µs steps
        layers = [fb.layers.Dense(2, "sigmoid", input_dim=2), fb.layers.Dense(1, "sigmoid")]
    else:
        layers = [fb.layers.GRU(64, input_shape=(10, 8)), fb.layers.Dense(10, "softmax")]
    model = fb.Sequential(layers, dtype=dtype, seed=0)
    model.compile(
        fb.optimizers.Adam(1e-3), "mse" if kind == "tiny" else "sparse_categorical_crossentropy"
    )
    return model


def _data(kind, n):
    rng = np.random.default_rng(0)
    if kind == "mlp":
        return rng.random((n, 320), dtype=np.float32), rng.integers(0, 10, n)
    if kind == "tiny":
        return rng.random((n, 2), dtype=np.float32), rng.random((n, 1), dtype=np.float32)
    return rng.random((n, 10, 8), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("kind", ["mlp", "tiny", "gru"])
@pytest.mark.parametrize("threads", [2, 1])
def test_ctrl_c_stops_a_compiled_fit_at_a_step(kind, threads, team):
    from fastbp import _ckernels

    _ckernels.set_team_threads(threads)
    n, bs = (1000, 64) if kind != "tiny" else (400, 4)
    X, y = _data(kind, n)
    model = _model(kind)
    sent = _interrupt_after(0.4)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, batch_size=bs, epochs=10**6, shuffle=False, verbose=0)
    took = time.perf_counter() - sent[0]
    assert took < 0.2, f"KeyboardInterrupt {took:.3f} s after the signal"
    steps = -(-n // bs)
    it = model.optimizer.iterations
    epochs = len(model.history.history["loss"])
    assert epochs == it // steps  # the History of every finished epoch, no more
    if kind == "mlp" and threads == 2:
        assert team() > 0
    # the weights are those of exactly `it` steps: replay them without an interrupt
    again = _model(kind)
    if epochs:
        again.fit(X, y, batch_size=bs, epochs=epochs, shuffle=False, verbose=0)
    rest = it - epochs * steps
    if rest:
        again.fit(X[: rest * bs], y[: rest * bs], batch_size=bs, epochs=1, shuffle=False, verbose=0)
    assert again.optimizer.iterations == it
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.optimizer.state, again.optimizer.state)
    # and training goes on from there
    model.fit(X, y, batch_size=bs, epochs=1, verbose=0)
    assert model.optimizer.iterations == it + steps


def test_ctrl_c_stops_a_long_predict(team):
    X, _ = _data("mlp", 200_000)
    model = _model("mlp")
    model.predict(X[:10])
    sent = _interrupt_after(0.05)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):  # each call well over 0.05 s
            model.predict(X, batch_size=64)
    assert time.perf_counter() - sent[0] < 0.2


def test_ctrl_c_in_the_sklearn_drop_in_warns_as_scikit_learn():
    """scikit-learn's stochastic solvers catch KeyboardInterrupt, warn and keep the model."""
    from fastbp.sklearn import MLPClassifier

    X, y = _data("mlp", 2000)
    clf = MLPClassifier(
        hidden_layer_sizes=(256,), max_iter=10**5, tol=0.0, n_iter_no_change=10**6, random_state=0
    )
    _interrupt_after(0.5)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf.fit(X, y)
    assert 0 < clf.n_iter_ < 10**5
    assert len(clf.loss_curve_) == clf.n_iter_
    assert np.isfinite(clf.coefs_[0]).all()
    clf.predict(X[:5])
