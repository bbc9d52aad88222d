"""Thread control: fastbp's kernels run in the caller's thread; only BLAS starts threads.

The Cython kernels run their element-wise work serially next to the BLAS calls (no OpenMP):
a second thread pool beside OpenBLAS's fights it for the cores (DESIGN.md measured 25-30x
slowdowns on 2 cores). So the BLAS pools are the only knob.
"""

from __future__ import annotations


def set_num_threads(n: int) -> None:
    """Limit every BLAS thread pool in the process (NumPy's and SciPy's OpenBLAS, MKL) to ``n``.

    Parameters
    ----------
    n : int
        Threads per pool, >= 1. Lasts until changed again.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> dict[str, int]:
    """Threads of each BLAS pool loaded in the process, by library path."""
    from threadpoolctl import threadpool_info

    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
