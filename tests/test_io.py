"""save / load: round trip, no pickle, corrupt files refused, nothing written half-way."""

import io
import json
import os
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
    with pytest.raises(ValueError, match="params must have shape"):
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


def _saved(tmp_path, batch_norm=False):
    layers = [fb.layers.Dense(4, "relu", input_dim=3)]
    layers += [fb.layers.BatchNormalization()] if batch_norm else []
    model = fb.Sequential([*layers, fb.layers.Dense(2, "softmax")], seed=0)
    model.compile(fb.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((20, 3)), rng.integers(0, 2, 20), epochs=1, verbose=0)
    path = tmp_path / "m.fastbp"
    model.save(path)
    return model, path


def _config(path):
    with np.load(path) as data:
        return json.loads(data["config"].tobytes())


def _with_config(path, config):
    _rewrite(path, config=np.frombuffer(json.dumps(config).encode(), np.uint8))


def _state(path):
    with np.load(path) as data:
        return data["optimizer_state"].copy()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda s: s.__setitem__((0, 0), np.nan), "NaN or inf"),
        (lambda s: s.__setitem__((1, 0), -1.0), "sums of squares"),
    ],
)
def test_corrupt_optimizer_state_is_refused(tmp_path, change, match):
    _, path = _saved(tmp_path)
    state = _state(path)
    change(state)
    _rewrite(path, optimizer_state=state)
    with pytest.raises(ValueError, match=match):
        fb.load(path)


@pytest.mark.parametrize("iterations", [-1, 1.5, True, "3", None, 2**60])
def test_corrupt_step_counter_is_refused(tmp_path, iterations):
    _, path = _saved(tmp_path)
    config = _config(path)
    config["compile"]["iterations"] = iterations
    _with_config(path, config)
    with pytest.raises(ValueError, match="iterations"):
        fb.load(path)


def test_negative_moving_variance_is_refused(tmp_path):
    model, path = _saved(tmp_path, batch_norm=True)
    with np.load(path) as data:
        params = data["params"].copy()
    base = model.store.params.__array_interface__["data"][0]
    var = model.layers[1].moving_variance.__array_interface__["data"][0]
    params[(var - base) // params.itemsize] = -1.0
    _rewrite(path, params=params)
    with pytest.raises(ValueError, match="moving_variance"):
        fb.load(path)
    with pytest.raises(ValueError, match="moving_variance"):  # set_weights checks it too
        weights = model.get_weights()
        weights[5][0] = -1.0
        model.set_weights(weights)


def test_a_config_declaring_a_huge_layer_is_refused_before_allocating(tmp_path):
    import tracemalloc

    _, path = _saved(tmp_path)
    config = _config(path)
    config["model"]["layers"][0]["config"]["units"] = 10**9
    _with_config(path, config)
    tracemalloc.start()
    with pytest.raises(ValueError, match="params must have shape"):
        fb.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20


def test_a_header_claiming_more_than_the_member_holds_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    config = _config(path)
    config["model"]["layers"][0]["config"]["units"] = 10**6  # params then (6 000 002,)
    _with_config(path, config)
    # a params header that says (6 000 002,) over the few bytes the member holds
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (6_000_002,)}
    )
    members["params.npy"] = header.getvalue() + members["params.npy"][-64:]
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(ValueError, match="header says"):
        fb.load(path)


def test_a_zip_bomb_is_refused_unread(tmp_path):
    _, path = _saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["params.npy"] = members["params.npy"] + bytes(50 * 2**20)  # deflates to ~50 KB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in members.items():
            z.writestr(n, b)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match="compressed"):
        fb.load(path)


@pytest.mark.parametrize("kind", ["npy", "nested zip", "extra member", "empty zip", "directory"])
def test_files_of_other_kinds_are_refused(tmp_path, kind):
    _, path = _saved(tmp_path)
    good = path.read_bytes()
    if kind == "npy":
        np.save(open(path, "wb"), np.zeros(3))
    elif kind == "nested zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.npy", good)
    elif kind == "extra member":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("payload.npy", b"x" * 10)
    elif kind == "empty zip":
        zipfile.ZipFile(path, "w").close()
    else:
        path.unlink()
        path.mkdir()
        with pytest.raises(IsADirectoryError):
            fb.load(path)
        return
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fb.load(path)


def test_a_backend_missing_here_is_a_value_error_with_a_way_out(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    config = _config(path)
    config["model"]["backend"] = "cuda"
    _with_config(path, config)
    real = fb.backends.get

    def get(name):
        if name == "cuda":
            raise ImportError("No module named 'numba'")
        return real(name)

    monkeypatch.setattr(fb.backends, "get", get)
    with pytest.raises(ValueError, match="backend='cython'"):
        fb.load(path)
    loaded = fb.load(path, backend="cython")
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["model"].__setitem__("layers", "Dense"),
        lambda c: c["model"].__setitem__("layers", []),
        lambda c: c["model"]["layers"][0].__setitem__("config", [1, 2]),
        lambda c: c["model"]["layers"][0]["config"].__setitem__("units", -3),
        lambda c: c["model"]["layers"][0]["config"].__setitem__("bogus", 1),
        lambda c: c["model"].__setitem__("dtype", "int8"),
        lambda c: c["model"].__setitem__("n_features", 0),
        lambda c: c["model"].__setitem__("seed", "x"),
        lambda c: c["compile"]["optimizer"].__setitem__("class", "Evil"),
        lambda c: c["compile"]["optimizer"]["config"].__setitem__("learning_rate", -1),
        lambda c: c["compile"].__setitem__("loss", 5),
        lambda c: c.__setitem__("model", None),
    ],
)
def test_malformed_configs_are_value_errors(tmp_path, edit):
    _, path = _saved(tmp_path)
    config = _config(path)
    edit(config)
    _with_config(path, config)
    with pytest.raises(ValueError, match="not a valid fastbp model file"):
        fb.load(path)


def test_a_killed_save_leaves_nothing_after_the_next_save(tmp_path):
    """kill -9 during save: the old file stays whole; its temporary file goes at the next save
    to the same path (a dead writer's only: a live one's is left alone)."""
    import subprocess
    import sys
    import time

    model, path = _saved(tmp_path)
    before = path.read_bytes()
    script = (
        "import numpy as np, fastbp as fb, time\n"
        "real = np.savez\n"
        "def slow(f, **a):\n"
        "    f.write(b'partial'); f.flush(); time.sleep(60)\n"
        "np.savez = slow\n"
        f"m = fb.load({str(path)!r})\n"
        f"m.save({str(path)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert stale and path.read_bytes() == before
    live = tmp_path / f".m.fastbp.fastbp-{os.getpid()}-x.tmp"  # this process: alive
    live.write_bytes(b"")
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, live.name])
    fb.load(path)
