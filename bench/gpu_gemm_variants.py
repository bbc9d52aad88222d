"""GEMM kernel variants on a GPU: TFLOP/s of fastbp's generated kernel per tile shape, register
cap and BK unrolling, against torch.mm (fp32) in the same process.

    python bench/gpu_gemm_variants.py [n]          (or: bash bench/gpu_run.sh gemm)

Each variant compiles in ~8 s (28 s with the BK loop unrolled). Results on an H100 at 4096³
(2026-11-22): torch.mm 51.5; (128,128,8,8,8) 21.2, with max_registers=128 24.0 (the default),
unrolled 26.4; BK=16 13.5; (128,64,8,8,4) 19.5; (64,64,8,4,4) 15-17 TFLOP/s.
"""

import sys
import time

import numpy as np
import torch
from numba import cuda

from fastbp.backends import cuda_gemm as g

# (tile (BM, BN, BK, TM, TN), max_registers, ta, tb, unroll)
VARIANTS = [((128, 128, 8, 8, 8), 128, ta, tb, False) for ta, tb in ((0, 0), (1, 0), (0, 1))] + [
    ((128, 128, 8, 8, 8), None, 0, 0, False),
    ((128, 128, 8, 8, 8), 128, 0, 0, True),
    ((128, 128, 16, 8, 8), 128, 0, 0, False),
    ((128, 64, 8, 8, 4), None, 0, 0, False),
    ((64, 64, 8, 4, 4), None, 0, 0, False),
]


def best_time(f, reps: int = 10) -> float:
    f()
    cuda.synchronize()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        cuda.synchronize()
        times.append((time.perf_counter() - t) / reps)
    return min(times)


def main(n: int = 4096) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    a, b = (cuda.to_device(rng.standard_normal((n, n)).astype(np.float32)) for _ in range(2))
    c = cuda.device_array((n, n), np.float32)
    ta_, tb_ = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
    want = (ta_ @ tb_).cpu().numpy()
    print(f"torch.mm fp32 {2 * n**3 / best_time(lambda: torch.mm(ta_, tb_)) / 1e12:.1f} TFLOP/s")
    bias = g.placeholder(np.float32, 1)
    args = (a, b, c, bias, False, n, n, n, np.float32(1), np.float32(0), 0, np.float32(0), n)
    for tile, regs, ta, tb, unroll in VARIANTS:
        kernel = g.compile_gemm(bool(ta), bool(tb), np.float32, tile, unroll=unroll, regs=regs)
        grid = (-(-n // tile[1]), -(-n // tile[0]))
        threads = (tile[0] // tile[3]) * (tile[1] // tile[4])
        secs = best_time(lambda k=kernel, gr=grid, th=threads: k[gr, th](*args))
        err = np.abs(c.copy_to_host() - want).max() if not (ta or tb) else float("nan")
        form = ("T" if ta else "N") + ("T" if tb else "N")
        print(f"{tile} regs={regs} unroll={unroll} {form}: {2 * n**3 / secs / 1e12:.1f} TFLOP/s"
              f" (max |diff| vs torch {err:.1e})")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
