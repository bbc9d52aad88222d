"""One-run comparison of training-step times: fastbp (cython, numpy reference) vs PyTorch.

    python bench/compare_steps.py [--workloads W1,W2,W3,W4] [--rounds 15] [--json out.json]

Peers run interleaved in the same process (round-robin blocks of calls), reported as medians,
so machine noise hits all of them alike. Also measures SciPy's SGEMM GFLOP/s, forward+backward
GFLOP/s of each workload, and one layer's backward/forward time ratio (FLOP ratio: 2).
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, if set, are removed for this process only.
"""

import os
import sys

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS):  # OpenBLAS reads them when it loads: start afresh
    for v in _BLAS_VARS:
        os.environ.pop(v, None)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.linalg import blas  # noqa: E402

import fastbp as fb  # noqa: E402
from fastbp.backends.contract import RELU  # noqa: E402
from fastbp.workloads import LAYER_SHAPES, WORKLOADS, build, flops_per_step, torch_step  # noqa: E402


def per_call(fn, min_block=0.02):
    """Calls per block so that one block lasts about ``min_block`` seconds."""
    fn()
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < min_block:
        fn()
        n += 1
    return max(n, 1)


def interleaved(fns: dict, rounds: int, settle: float = 0.15) -> dict:
    """Median seconds per call of each function, timed round-robin.

    Before each timed block the process idles ``settle`` seconds: the thread pools of the
    previous peer (OpenBLAS, OpenMP) keep spinning for up to ~0.1 s after their last call and
    would otherwise steal this machine's 2 cores from the next peer.
    """
    sizes = {k: per_call(f, min_block=0.1) for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(settle if len(fns) > 1 else 0.0)
            f()  # warm this peer's caches and threads
            t = time.perf_counter()
            for _ in range(sizes[k]):
                f()
            times[k].append((time.perf_counter() - t) / sizes[k])
    return {k: statistics.median(v) for k, v in times.items()}


SQUARE = np.asfortranarray(np.random.default_rng(0).standard_normal((2048, 2048)), np.float32)


def sgemm() -> None:
    """One 2048³ SGEMM through SciPy's BLAS (the library cython_blas calls)."""
    blas.sgemm(1.0, SQUARE, SQUARE)


def sgemm_gflops(rounds=7) -> float:
    return 2 * 2048**3 / interleaved({"sgemm": sgemm}, rounds)["sgemm"] / 1e9


def measure(wid: str, rounds: int) -> dict:
    """Step time of every peer on workload ``wid``, then fastbp's GFLOP/s and bwd/fwd ratio."""
    fns, models = {}, {}
    for backend in fb.backends.available():
        model, X, y = build(wid, backend)
        models[backend] = (model, X, y)
        fns[backend] = lambda m=model, X=X, y=y: m.train_on_batch(X, y)
    step = torch_step(wid)
    if step is not None:
        fns["torch"] = step
    res = interleaved(fns, rounds)
    model, X, y = models["cython"]
    Xc, yc = model._prepare(X, y)
    # the machine's speed drifts: time SGEMM in the same rounds as forward+backward
    both = interleaved({"fb": lambda: model._backprop(Xc, yc, False), "sgemm": sgemm}, rounds)
    fwd_bwd, peak = both["fb"], 2 * 2048**3 / both["sgemm"] / 1e9
    sizes, batch = WORKLOADS[wid][0], X.shape[0]
    # GEMM FLOPs actually done: forward + dW for every layer, dX for all but the first
    done = 6.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    done -= 2.0 * batch * sizes[0] * sizes[1]
    gflops = done / fwd_bwd / 1e9
    row = {
        "step_s": res,
        "fwd_bwd_s": fwd_bwd,
        "fwd_bwd_gflops": gflops,
        "sgemm_gflops_same_rounds": peak,
        "fwd_bwd_pct_sgemm": 100 * gflops / peak,
        "step_gflops_6bn": flops_per_step(wid) / res["cython"] / 1e9,
    }
    for k, v in res.items():
        print(f"{wid:4} {k:8} {v * 1e6:9.1f}µs {v / res['cython']:9.2f}x")
    print(
        f"{wid:4} forward+backward {fwd_bwd * 1e3:.3f} ms = {gflops:.0f} GFLOP/s "
        f"({100 * gflops / peak:.0f}% of SGEMM)"
    )
    if wid in LAYER_SHAPES:
        row["layer_bwd_over_fwd"] = layer_ratio(LAYER_SHAPES[wid], rounds)
        print(
            f"{wid:4} layer {LAYER_SHAPES[wid]}: backward/forward time "
            f"{row['layer_bwd_over_fwd']:.2f} (FLOP ratio 2)"
        )
    return row


def layer_ratio(shape, rounds: int) -> float:
    """Backward time over forward time of one relu Dense layer (cython backend)."""
    m, k, n = shape
    be = fb.backends.get("cython")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((m, k)).astype(np.float32)
    W = rng.standard_normal((k, n)).astype(np.float32)
    b, db, A = np.zeros(n, np.float32), np.zeros(n, np.float32), np.empty((m, n), np.float32)
    dA, dW, dX = np.ones((m, n), np.float32), np.empty_like(W), np.empty_like(X)
    r = interleaved(
        {
            "fwd": lambda: be.dense_forward(X, W, b, RELU, 0.0, A),
            "bwd": lambda: be.dense_backward(X, W, A, dA, RELU, 0.0, dW, db, dX),
        },
        rounds,
    )
    return r["bwd"] / r["fwd"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="W1,W2,W3,W4")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json")
    args = p.parse_args(argv)
    try:
        import threadpoolctl

        pools = [(i["internal_api"], i["num_threads"], i.get("architecture"))
                 for i in threadpoolctl.threadpool_info()]  # fmt: skip
    except ImportError:
        pools = "threadpoolctl not installed"
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    peak = sgemm_gflops()
    out = {"sgemm_gflops": peak, "threadpools": pools, "torch": torch_version, "workloads": {}}
    print(f"SciPy SGEMM 2048^3: {peak:.0f} GFLOP/s; BLAS pools {pools}; torch {torch_version}")
    print(f"{'wl':4} {'peer':8} {'step':>10} {'vs cython':>10}")
    for wid in args.workloads.split(","):
        rounds = args.rounds if wid != "W4" else max(3, args.rounds // 3)
        out["workloads"][wid] = measure(wid, rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
