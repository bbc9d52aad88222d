"""``python -m fastbp bench --device cuda``: the numba.cuda backend against PyTorch on one GPU.

Reports (1) GEMM TFLOP/s of fastbp's own kernel in the three forms backprop uses (NN forward,
TN for dW, NT for dX) against cuBLAS through ``torch.mm`` (fp32 with TF32 off, and on), and
(2) per-step times of whole training epochs (data already on the device) against PyTorch eager
with the same initial weights, fp32 with TF32 off and on. Everything is timed in one process,
interleaved round by round, after a synchronize; medians.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from .benchmark import _epoch_data, interleaved
from .peers import torch_peer
from .workloads import batch_size, build, flops_per_step

STEPS = {"W3": 64, "W4": 8, "W7": 2, "W8": 4}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sync() -> None:
    from numba import cuda

    cuda.synchronize()
    try:
        import torch

        torch.cuda.synchronize()
    except ImportError:
        pass


def timed(fns: dict, rounds: int, reps: int = 1) -> dict[str, float]:
    """Median seconds per call of each function: ``benchmark.interleaved`` (no pause: no CPU
    thread pools to settle) over ``reps`` calls followed by a device synchronize."""

    def synced(f):
        def run():
            for _ in range(reps):
                f()
            _sync()

        return run

    secs = interleaved({k: synced(f) for k, f in fns.items()}, rounds, settle=0.0)
    return {k: v / reps for k, v in secs.items()}


def gemm_report(n: int = 4096, rounds: int = 5) -> dict[str, float]:
    """TFLOP/s at n³ of fastbp's GEMM (NN, TN, NT) and of torch.mm (TF32 off / on)."""
    from .backends import cuda_gemm
    from .backends import numba_cuda as C

    rng = np.random.default_rng(0)
    a, b = (C.as_device(rng.standard_normal((n, n)).astype(np.float32)) for _ in range(2))
    c = C.empty((n, n), np.float32)
    fns = {
        f"fastbp {form}": (lambda ta=ta, tb=tb: cuda_gemm.gemm_launch(a, b, c, ta=ta, tb=tb))
        for form, ta, tb in (("NN", False, False), ("TN", True, False), ("NT", False, True))
    }
    try:
        import torch

        ta_, tb_ = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")

        def mm(tf32):
            def run():
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.mm(ta_, tb_)

            return run

        fns["cuBLAS (torch.mm) fp32"] = mm(False)
        try:
            cuda_gemm.use_cublas(True)
            cuda_gemm.use_cublas(False)

            def via_cupy():
                cuda_gemm.CUBLAS = True
                cuda_gemm.gemm_launch(a, b, c)
                cuda_gemm.CUBLAS = False

            fns["fastbp via CuPy cuBLAS NN"] = via_cupy
        except ImportError:
            _log("  cupy not installed: no cuBLAS option")
        fns["cuBLAS (torch.mm) tf32"] = mm(True)
    except ImportError:
        _log("  torch not installed: no cuBLAS reference")
    # check the product once against cuBLAS-free float64 on a corner
    cuda_gemm.gemm_launch(a, b, c)
    got = c.copy_to_host()[:64, :64]
    want = a.copy_to_host()[:64].astype(float) @ b.copy_to_host()[:, :64].astype(float)
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    secs = timed(fns, rounds, reps=3)
    out = {k: 2.0 * n**3 / s / 1e12 for k, s in secs.items()}
    out["relative error"] = err
    return out


def measure_workload(wid: str, rounds: int) -> dict:
    """Per-step times (ms) of fastbp cuda ``fit`` and PyTorch (TF32 off, on) on workload wid."""
    steps = STEPS.get(wid, 8)
    X, y = _epoch_data(wid, steps)
    model, _, _ = build(wid, "cuda")
    from .backends import numba_cuda as C

    Xd = C.as_device(X.reshape((-1,) + X.shape[2:]))
    yd = C.as_device(y.reshape((-1,) + y.shape[2:]))
    bs = batch_size(wid)
    fns = {"fastbp cuda fit": lambda: model.fit(Xd, yd, batch_size=bs, epochs=1, shuffle=False,
                                                  verbose=0)}  # fmt: skip
    from .backends.cuda_mlp import eligible

    if eligible(model.layers, model.dtype):
        slow, _, _ = build(wid, "cuda")
        slow.use_compiled_loop = False  # the same model through the layer-by-layer kernels
        fns["fastbp cuda unfused"] = lambda: slow.fit(
            Xd, yd, batch_size=bs, epochs=1, shuffle=False, verbose=0
        )
    else:
        try:
            from .backends import cuda_gemm

            cuda_gemm.use_cublas(True)
            cuda_gemm.use_cublas(False)
            other, _, _ = build(wid, "cuda")

            def with_cublas():
                cuda_gemm.CUBLAS = True
                other.fit(Xd, yd, batch_size=bs, epochs=1, shuffle=False, verbose=0)
                cuda_gemm.CUBLAS = False

            fns["fastbp cuda fit, GEMMs via cuBLAS"] = with_cublas
        except ImportError:
            pass
    ref, _, _ = build(wid, "numpy")  # the same initial weights, from the host
    for tf32 in (False, True):
        run = torch_peer(wid, ref, X, y, device="cuda", tf32=tf32)
        if run is not None:
            fns[f"torch {'tf32' if tf32 else 'fp32'}"] = run
    secs = timed(fns, rounds)
    res = {"workload": wid, "steps": steps, "batch": bs}
    res["ms_per_step"] = {k: 1e3 * s / steps for k, s in secs.items()}
    ours = res["ms_per_step"]["fastbp cuda fit"]
    res["speedup"] = {k: v / ours for k, v in res["ms_per_step"].items() if k != "fastbp cuda fit"}
    res["tflops"] = flops_per_step(wid) / (ours / 1e3) / 1e12
    return res


def run(workloads, rounds: int = 5, json_path=None, gemm_n: int = 4096) -> dict:
    from numba import cuda

    dev = cuda.get_current_device()
    results = {"device": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)}
    _log(f"GEMM {gemm_n}^3 on {results['device']} ...")
    results["gemm"] = gemm_report(gemm_n, rounds)
    for k, v in results["gemm"].items():
        print(f"  {k:28s} {v:8.3g}" + (" TFLOP/s" if "error" not in k else ""))
    cub = results["gemm"].get("cuBLAS (torch.mm) fp32")
    if cub:
        print(f"  own NN GEMM / cuBLAS fp32 = {results['gemm']['fastbp NN'] / cub:.2f}")
    results["workloads"] = []
    for wid in workloads:
        _log(f"{wid} ...")
        res = measure_workload(wid, rounds)
        results["workloads"].append(res)
        times = ", ".join(f"{k} {v:.3f}" for k, v in res["ms_per_step"].items())
        ratio = ", ".join(f"vs {k} {v:.2f}x" for k, v in res["speedup"].items())
        print(f"{wid} (batch {res['batch']}): ms/step {times}; speedup {ratio}; "
              f"fastbp {res['tflops']:.2f} TFLOP/s")  # fmt: skip
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    return results
