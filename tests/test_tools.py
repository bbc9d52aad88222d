"""Profiler, comparison runner, thread control and the command line."""

import json

import numpy as np
import pytest

import fastbp as fb
from fastbp.__main__ import main
from fastbp.workloads import WORKLOADS, build, flops_per_step


def test_profile_rows_and_model_restored():
    model, X, y = build("W2")
    before = model.get_weights()
    t0 = model.optimizer.iterations
    prof = fb.profile(model, X, y, steps=4)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # profiling trains nothing for good
    assert model.optimizer.iterations == t0
    kernels = {(r["layer"], r["kernel"]) for r in prof.rows}
    for layer in model.layers:
        assert (layer.name, "dense_forward") in kernels and (
            layer.name,
            "dense_backward",
        ) in kernels
    assert ("optimizer", "optimizer_step") in kernels and ("loss", "loss_sparse") in kernels
    assert all(r["calls"] == 4 for r in prof.rows)
    # of 4 calls a <= b <= c <= d, the median (b + c) / 2 is at most twice the mean
    assert all(0 < r["median_s"] <= 2 * r["per_call_s"] for r in prof.rows)
    assert sum(r["share"] for r in prof.rows) == pytest.approx(1.0)
    fwd = [r for r in prof.rows if r["kernel"] == "dense_forward"][0]
    assert fwd["gflops"] == pytest.approx(2 * 32 * 64 * 64 * 4 / fwd["total_s"] / 1e9)
    assert sum(prof.split.values()) == pytest.approx(1.0)
    assert [la["flop_ratio"] for la in prof.layers] == [1.0, 2.0]
    assert prof.compiled_step_time > 0 and prof.step_time > 0
    text = str(prof)
    assert "dense_forward" in text and "backward/forward time" in text
    json.dumps(prof.to_dict())


def test_profile_recurrent_and_dropout_layers():
    """Kernels are attributed to the layer that called them; recurrent GEMM FLOPs are counted."""
    model, X, y = build("W6")
    prof = fb.profile(model, X[:4], y[:4], steps=2)
    rows = {(r["layer"], r["kernel"]): r for r in prof.rows}
    lstm = model.layers[0].name
    fwd = rows[(lstm, "lstm_forward")]
    assert fwd["gflops"] * fwd["total_s"] * 1e9 / 2 == pytest.approx(
        2 * (4 * 50 * 32 * 512 + 4 * 49 * 128 * 512)
    )
    assert (lstm, "lstm_backward") in rows and ("optimizer", "optimizer_step") in rows
    assert prof.layers[0]["flop_ratio"] == pytest.approx(2.0)  # no dX for the first layer
    net = fb.Sequential([fb.layers.Dense(4, input_dim=3), fb.layers.Dropout(0.5)], seed=0)
    net.compile("sgd", "mse")
    prof = fb.profile(net, np.ones((2, 3)), np.ones((2, 4)), steps=1)
    assert (net.layers[1].name, "dropout_forward") in {(r["layer"], r["kernel"]) for r in prof.rows}


def test_demo_rnn_reaches_its_stated_error(capsys):
    from fastbp.__main__ import demo_rnn

    assert demo_rnn(15) < 0.005
    assert "test MSE" in capsys.readouterr().out


def test_profile_numpy_backend_has_no_compiled_time():
    model, X, y = build("W1", "numpy")
    prof = fb.profile(model, X, y, steps=2)
    assert prof.compiled_step_time is None and "compiled" not in str(prof)


def test_flops_per_step():
    assert flops_per_step("W2") == 6 * 32 * (64 * 64 + 64 * 10)
    assert set(WORKLOADS) >= {"W1", "W2", "W3", "W4"}


def test_runner_smoke(tmp_path, capsys):
    from fastbp.benchmark import STEPS, run

    STEPS_W1 = STEPS["W1"]
    STEPS["W1"] = 8
    try:
        out = run(["W1"], ["numpy", "nonexistent"], rounds=1, json_path=tmp_path / "r.json")
    finally:
        STEPS["W1"] = STEPS_W1
    table = capsys.readouterr().out
    w1 = out["workloads"]["W1"]
    assert set(w1["step_s"]) == {"fastbp fit", "fastbp train_on_batch", "numpy"}
    assert w1["step_s"]["fastbp fit"] > 0 and "fastbp fit faster by" in table
    assert json.loads((tmp_path / "r.json").read_text())["workloads"]["W1"]["steps_per_epoch"] == 8


def test_set_num_threads():
    pytest.importorskip("threadpoolctl")
    before = fb.get_num_threads()
    try:
        fb.set_num_threads(1)
        assert all(n == 1 for n in fb.get_num_threads().values())
    finally:
        for n in set(before.values()):
            fb.set_num_threads(n)
    with pytest.raises(ValueError, match="n must be a positive int"):
        fb.set_num_threads(0)


def test_cli_profile_and_errors(capsys):
    assert main(["profile", "--workload", "W1", "--steps", "2"]) == 0
    assert "dense_forward" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--workloads", "W9"])


def test_use_blas_switch(monkeypatch):
    from fastbp import blas

    assert blas.current_blas() == "openblas"
    with pytest.raises(ValueError, match="'openblas' or 'mkl'"):
        blas.use_blas("atlas")
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((40, 70)), rng.standard_normal((70, 30))
    A = np.empty((40, 30))
    be = fb.backends.get("cython")
    try:
        blas.use_blas("mkl")
    except RuntimeError as exc:  # no MKL here: a clear message, and nothing switched
        assert "pip install mkl" in str(exc) and blas.current_blas() == "openblas"
    else:
        be.dense_forward(X, W, None, 0, 0.0, A)
        np.testing.assert_allclose(A, X @ W, rtol=1e-12)
        assert blas.use_blas("openblas") == "mkl"
    be.dense_forward(X, W, None, 0, 0.0, A)
    np.testing.assert_allclose(A, X @ W, rtol=1e-12)
    monkeypatch.setattr(blas, "_find_mkl", lambda: None)
    monkeypatch.setattr(blas, "_loaded", {})
    with pytest.raises(RuntimeError, match="MKL not found"):
        blas.use_blas("mkl")
    assert blas.current_blas() == "openblas"
