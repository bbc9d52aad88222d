"""Thread control: BLAS's pools and fastbp's two-thread team.

The Cython kernels run their element-wise work serially next to the BLAS calls (no OpenMP):
a second thread pool beside OpenBLAS's fights it for the cores (measured 25-30x
slowdowns on 2 cores). Exceptions: the LSTM and GRU time loops (a chain of small GEMMs that BLAS
cannot spread) and the epochs of mid-sized Dense models run on a team of two threads, the
caller's and one helper, where no BLAS call ran in the last 0.25 s; its regions call no BLAS
(src_c/_team.h).
"""

from __future__ import annotations

TEAM = "fastbp team"


def set_num_threads(n: int) -> None:
    """Limit every BLAS thread pool in the process (NumPy's and SciPy's OpenBLAS, MKL) and
    fastbp's team (at most 2) to ``n`` threads.

    Parameters
    ----------
    n : int
        Threads per pool, >= 1. Lasts until changed again.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
    ck = _ckernels()
    if ck is not None:
        ck.set_team_threads(n)


def get_num_threads() -> dict[str, int]:
    """Threads of each BLAS pool loaded in the process, by library path, and of fastbp's
    team (key ``fastbp.threads.TEAM``; absent without the compiled extension)."""
    from threadpoolctl import threadpool_info

    out = {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    ck = _ckernels()
    if ck is not None:
        out[TEAM] = ck.team_threads()
    return out


def _ckernels():
    try:
        from fastbp import _ckernels
    except ImportError:  # a checkout without the compiled extension
        return None
    return _ckernels
