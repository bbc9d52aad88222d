"""Behaviour: XOR and digits learn; batching modes; determinism; dtype handling; callbacks."""

import numpy as np
import pytest
from conftest import BACKENDS, dense_model

import fastbp as fb

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0], dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_xor_learns(backend):
    model = dense_model([2, 3, 1], ["sigmoid", "sigmoid"], backend=backend, dtype="float32")
    model.compile(fb.optimizers.SGD(0.5), "mse", ["accuracy"])
    history = model.fit(XOR_X, XOR_Y, epochs=20000, verbose=0)
    assert history.history["loss"][-1] < 0.01
    assert history.history["accuracy"][-1] == 1.0
    np.testing.assert_array_equal(model.predict(XOR_X).ravel() > 0.5, XOR_Y > 0.5)


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = (X[order] / 16.0), y[order]
    cut = int(0.8 * len(X))
    return X[:cut], y[:cut], X[cut:], y[cut:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_digits_accuracy(backend, digits):
    Xtr, ytr, Xte, yte = digits
    model = dense_model([64, 64, 10], ["relu", "softmax"], backend=backend, dtype="float32")
    model.compile(fb.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(Xtr, ytr, epochs=30, batch_size=32, verbose=0)
    loss, acc = model.evaluate(Xte, yte)
    assert acc >= 0.96, acc


def test_one_hot_and_sparse_train_identically(digits):
    Xtr, ytr, _, _ = digits
    runs = []
    for loss, y in (
        ("sparse_categorical_crossentropy", ytr),
        ("categorical_crossentropy", np.eye(10)[ytr]),
    ):
        model = dense_model([64, 16, 10], ["tanh", "softmax"], seed=5)
        model.compile("adam", loss)
        model.fit(Xtr[:200], y[:200], epochs=2, batch_size=50, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size", [None, 10**6, 1, 3])
def test_batch_modes_match_manual_steps(batch_size):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    a = dense_model([3, 4, 2], ["tanh", "linear"], seed=1)
    b = dense_model([3, 4, 2], ["tanh", "linear"], seed=1)
    for m in (a, b):
        m.compile(fb.optimizers.SGD(0.1), "mse")
    a.fit(X, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    bs = 10 if batch_size is None else min(batch_size, 10)
    for _ in range(2):
        for s in range(0, 10, bs):
            b.train_on_batch(X[s : s + bs], y[s : s + bs])
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_bit_identical(backend):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    runs = []
    for _ in range(2):
        model = dense_model(
            [5, 8, 3], ["relu", "softmax"], backend=backend, dtype="float32", seed=7
        )
        model.compile("adam", "sparse_categorical_crossentropy")
        h = model.fit(X, y, batch_size=8, epochs=3, verbose=0)
        runs.append((model.get_weights(), h.history["loss"]))
    for wa, wb in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert runs[0][1] == runs[1][1]
    other = dense_model([5, 8, 3], ["relu", "softmax"], backend=backend, seed=8)
    assert not np.allclose(other.get_weights()[0], runs[0][0][0])


def test_backends_agree():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 4)), rng.integers(0, 2, 30)
    out = []
    for backend in BACKENDS:
        model = dense_model([4, 6, 2], ["leaky_relu", "softmax"], backend=backend, seed=3)
        model.compile(fb.optimizers.RMSprop(0.01, momentum=0.5), "sparse_categorical_crossentropy")
        model.fit(X, y, batch_size=7, epochs=3, verbose=0)
        out.append(model.get_weights())
    for other in out[1:]:
        for a, b in zip(out[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_float64_and_noncontiguous_input_to_float32_model():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 6))
    X_nc = base[:, ::2]  # float64, not contiguous
    y = rng.standard_normal(20)
    model = dense_model([3, 4, 1], ["tanh", "linear"], dtype="float32")
    model.compile("sgd", "mse")
    model.fit(X_nc, y, epochs=2, batch_size=5, verbose=0)
    P = model.predict(X_nc)
    assert P.dtype == np.float32 and P.shape == (20, 1)
    np.testing.assert_array_equal(P, model.predict(np.ascontiguousarray(X_nc, dtype=np.float32)))
    assert isinstance(model.train_on_batch(X_nc.tolist(), y.tolist()), float)


def test_history_validation_and_early_stopping():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), rng.integers(0, 2, 60)
    model = dense_model([4, 8, 2], ["relu", "softmax"], seed=0)
    model.compile(fb.optimizers.Adam(0.5), "sparse_categorical_crossentropy", ["accuracy"])
    stop = fb.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(
        X, y, epochs=200, batch_size=10, validation_split=0.25, callbacks=[stop], verbose=0
    )
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h.epoch) < 200 and stop.stopped_epoch == h.epoch[-1]
    best = int(np.argmin(h.history["val_loss"]))
    assert h.epoch[-1] - best == 2
    # the restored weights give the best epoch's validation loss
    val_loss = model.evaluate(X[45:], y[45:])[0]
    assert val_loss == pytest.approx(h.history["val_loss"][best], rel=1e-9)


def test_validation_data_matches_evaluate():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal((30, 1))
    model = dense_model([3, 2, 1], ["sigmoid", "linear"])
    model.compile("sgd", "mse")
    h = model.fit(X[:20], y[:20], epochs=1, validation_data=(X[20:], y[20:]), verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(model.evaluate(X[20:], y[20:]), rel=1e-12)


def test_learning_rate_scheduler_and_checkpoint(tmp_path):
    model = dense_model([2, 3, 1], ["sigmoid", "sigmoid"])
    model.compile(fb.optimizers.SGD(0.5), "mse")
    seen = []
    sched = fb.callbacks.LearningRateScheduler(lambda e, lr: seen.append(lr) or 0.5 / (e + 1))
    path = tmp_path / "ck-{epoch}.fastbp"
    model.fit(
        XOR_X,
        XOR_Y,
        epochs=3,
        verbose=0,
        callbacks=[sched, fb.callbacks.ModelCheckpoint(path, monitor="loss")],
    )
    assert seen == [0.5, 0.5, 0.25] and model.optimizer.learning_rate == pytest.approx(0.5 / 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ck-{i}.fastbp" for i in (1, 2, 3)]


def test_verbose_output(capsys):
    model = dense_model([2, 3, 1], ["sigmoid", "sigmoid"])
    model.compile(fb.optimizers.SGD(0.5), "mse", ["accuracy"])
    model.fit(XOR_X, XOR_Y, epochs=3, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3") and "loss:" in lines[0]
    model.fit(XOR_X, XOR_Y, epochs=3, verbose=0)
    assert capsys.readouterr().out == ""


def test_summary_and_weights_layout(capsys):
    model = fb.Sequential([fb.layers.Dense(4, "relu", input_dim=3), fb.layers.Dense(2)])
    model.summary()
    out = capsys.readouterr().out
    assert "Total params: 26" in out and "(None, 4)" in out
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 4), (4,), (4, 2), (2,)]
    ws = [np.full(s, i, dtype=np.float64) for i, s in enumerate(shapes)]
    model.set_weights(ws)
    for a, b in zip(model.get_weights(), ws, strict=True):
        np.testing.assert_array_equal(a, b)
    # views into one flat buffer: the layer sees the set values
    np.testing.assert_array_equal(model.layers[1].W, 2)


def test_initializers_statistics():
    rng = np.random.default_rng(0)
    shape = (400, 300)
    for name, std in [
        ("glorot_uniform", np.sqrt(2 / 700)),
        ("glorot_normal", np.sqrt(2 / 700)),
        ("he_uniform", np.sqrt(2 / 400)),
        ("he_normal", np.sqrt(2 / 400)),
        ("lecun_normal", np.sqrt(1 / 400)),
    ]:
        w = fb.initializers.get(name)(shape, rng)
        assert abs(w.std() / std - 1) < 0.02, name
    assert (fb.initializers.get("zeros")(shape, rng) == 0).all()
    assert (fb.initializers.get("ones")((3,), rng) == 1).all()
    assert (
        np.abs(fb.initializers.he_normal(shape, rng)).max() <= 2 * np.sqrt(2 / 400) / 0.8796 + 1e-12
    )


def test_add_keeps_weights_and_pop():
    model = dense_model([3, 4, 2], ["relu", "linear"])
    model.build()
    W0 = model.get_weights()[0]
    model.pop()
    model.add(fb.layers.Dense(5, "softmax"))
    model.build()
    np.testing.assert_array_equal(model.get_weights()[0], W0)
    assert model.get_weights()[2].shape == (4, 5)


def test_frozen_layer_is_not_updated():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
    model = dense_model([3, 4, 2], ["tanh", "linear"])
    model.compile(fb.optimizers.Adam(0.1), "mse")
    model.layers[0].trainable = False
    before = model.get_weights()
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.allclose(after[2], before[2])
    model.layers[0].trainable = True  # noticed at the next call
    model.train_on_batch(X, y)
    assert not np.allclose(model.get_weights()[0], before[0])
