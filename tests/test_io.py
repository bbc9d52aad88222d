"""save / load: round trip, no pickle, corrupt files refused, nothing written half-way."""

import io
import zipfile

import numpy as np
import pytest
from conftest import dense_model

import fastbp as fb


def _trained(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    model = dense_model(
        [3, 5, 2],
        ["relu", "softmax"],
        dtype="float32",
        kernel_regularizer=fb.regularizers.L2(0.001),
    )
    model.compile(
        fb.optimizers.Adam(0.01, clipnorm=1.0), "sparse_categorical_crossentropy", ["accuracy"]
    )
    model.fit(X, y, epochs=2, batch_size=5, verbose=0)
    return model, X, y


def test_round_trip_continues_training_identically(tmp_path):
    model, X, y = _trained(tmp_path)
    path = tmp_path / "m.fastbp"
    model.save(path)
    loaded = fb.load(path)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # optimizer state travels too: one more step is identical
    assert loaded.train_on_batch(X, y) == model.train_on_batch(X, y)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_uncompiled_round_trip(tmp_path):
    model = dense_model([2, 3, 1], ["tanh", "sigmoid"])
    model.save(tmp_path / "u")
    assert (tmp_path / "u").exists()  # no suffix added
    loaded = fb.load(tmp_path / "u")
    assert loaded.optimizer is None
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


def _rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_corrupt_files_raise_value_error(tmp_path):
    model, _, _ = _trained(tmp_path)
    path = tmp_path / "m.fastbp"
    model.save(path)
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fb.load(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fb.load(path)

    path.write_bytes(good)
    _rewrite(path, params=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="params must be"):
        fb.load(path)

    path.write_bytes(good)
    cfg = b'{"format": "fastbp", "version": 1, "model": {"layers": [{"class": "os.system"}]}}'
    _rewrite(path, config=np.frombuffer(cfg, np.uint8))
    with pytest.raises(ValueError, match="not a valid"):
        fb.load(path)


def test_pickled_payload_is_not_executed(tmp_path):
    # an object array needs pickle to load; allow_pickle=False refuses it
    path = tmp_path / "evil.fastbp"
    buf = io.BytesIO()
    np.savez(buf, config=np.array([{"x": 1}], dtype=object), params=np.zeros(2))
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="not a valid"):
        fb.load(path)
    with zipfile.ZipFile(path) as z:
        assert "config.npy" in z.namelist()


def test_failed_save_leaves_old_file(tmp_path, monkeypatch):
    model, _, _ = _trained(tmp_path)
    path = tmp_path / "m.fastbp"
    model.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.fastbp"]  # no temp file left


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        fb.load("/nonexistent/model.fastbp")
