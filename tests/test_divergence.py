"""Divergence is caught: TerminateOnNaN (Keras semantics) inside the compiled loops, checkpoints
never replaced by a non-finite model, the scikit-learn drop-in raising as scikit-learn does."""

import warnings

import numpy as np
import pytest
from conftest import BACKENDS

import fastbp as fb


def _diverging(backend="cython", dtype="float32", batch_norm=False, width=32):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10)).astype(dtype)
    y = (rng.standard_normal((256, 1)) * 1e3).astype(dtype)
    layers = [fb.layers.Dense(width, "relu", input_dim=10)]
    layers += [fb.layers.BatchNormalization()] if batch_norm else []
    layers += [fb.layers.Dense(20, "relu"), fb.layers.Dense(1)]
    model = fb.Sequential(layers, backend=backend, dtype=dtype, seed=0)
    model.compile(fb.optimizers.SGD(1e3), "mse")
    return model, X, y


class _EveryBatch(fb.callbacks.Callback):
    """A batch callback: the epochs run layer by layer (or in compiled chunks of one batch)."""

    def on_train_batch_end(self, batch, logs=None):
        pass


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "how", ["compiled", "team", "per batch", "batch norm"], ids=lambda s: s.replace(" ", "-")
)
def test_terminate_on_nan_stops_at_the_first_nonfinite_batch(backend, how, capsys):
    if how != "compiled" and backend != "cython":
        pytest.skip("the paths of the compiled backend")
    model, X, y = _diverging(backend, batch_norm=how == "batch norm", width=256)
    extra = [_EveryBatch()] if how == "per batch" else []
    if how == "team":
        pytest.importorskip("fastbp._ckernels").set_team_threads(2)
    with np.errstate(all="ignore"):
        h = model.fit(
            X, y, epochs=20, batch_size=32, verbose=0, shuffle=False,
            callbacks=[fb.callbacks.TerminateOnNaN(), *extra],
        )  # fmt: skip
    # without it: every epoch runs, the loss NaN from the first on
    ref, X, y = _diverging(backend, batch_norm=how == "batch norm", width=256)
    with np.errstate(all="ignore"):
        losses = []
        for step in range(8):
            losses.append(
                ref.train_on_batch(X[32 * step : 32 * step + 32], y[32 * step : 32 * step + 32])
            )
    first_bad = next(i for i, v in enumerate(losses) if not np.isfinite(v))
    assert h.history["loss"] and len(h.history["loss"]) == 1
    assert not np.isfinite(h.history["loss"][0])
    assert model.optimizer.iterations == first_bad + 1  # the update of the bad step applied
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_terminate_on_nan_catches_nonfinite_weights_at_an_epoch_end(capsys):
    """NaN weights behind a finite loss: the first layer's row of an input that is always 0,
    which the float32 kernels skip (0·NaN never computed). The compiled loop's check at the
    epoch's end stops the run of epochs there."""
    ck = pytest.importorskip("fastbp._ckernels")
    if not ck._set_sparse_rows(True):
        pytest.skip("the kernels that skip zero inputs are the AVX-512 build's")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 64)).astype("float32")
    X[rng.random(X.shape) < 0.9] = 0
    X[:, 0] = 0
    y = rng.standard_normal((64, 1)).astype("float32")
    model = fb.Sequential([fb.layers.Dense(16, "relu", input_dim=64), fb.layers.Dense(1)], seed=0)
    model.compile(fb.optimizers.SGD(1e-3), "mse")
    row = model.get_weights()[0][0]
    assert np.array_equal(model.store.params[:16], row)  # W's first row leads the buffer
    model.store.params[:16] = np.nan  # (set_weights refuses NaN)
    h = model.fit(X, y, epochs=5, batch_size=16, verbose=0, shuffle=False,
                  callbacks=[fb.callbacks.TerminateOnNaN()])  # fmt: skip
    assert np.isfinite(h.history["loss"]).all() and len(h.history["loss"]) == 1
    assert model.optimizer.iterations == 4
    assert "Invalid weights" in capsys.readouterr().out


def test_model_checkpoint_keeps_the_last_good_file(tmp_path):
    model, X, y = _diverging()
    path = tmp_path / "model.fastbp"
    good = fb.Sequential([fb.layers.Dense(1, input_dim=10)], seed=0)
    good.compile("sgd", "mse")
    good.save(path)
    before = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="not saved"), np.errstate(all="ignore"):
        model.fit(X, y, epochs=2, batch_size=32, verbose=0,
                  callbacks=[fb.callbacks.ModelCheckpoint(str(path), monitor="loss")])  # fmt: skip
    assert path.read_bytes() == before
    fb.load(path)  # still a loadable, finite model


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("lr", [1e10, 1e3])
def test_drop_in_raises_where_scikit_learn_raises(solver, lr):
    from sklearn.neural_network import MLPRegressor as Theirs

    from fastbp.sklearn import MLPRegressor as Ours

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 5)), rng.standard_normal(200) * 1e3
    outcomes = []
    for cls in (Theirs, Ours):
        est = cls(solver=solver, learning_rate_init=lr, max_iter=5, random_state=0)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                est.fit(X, y)
                outcomes.append(("fitted", bool(np.isfinite(est.coefs_[0]).all())))
            except ValueError as e:
                outcomes.append(("raised", str(e)))
    assert outcomes[0] == outcomes[1]
