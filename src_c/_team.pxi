# The two-thread team (_team.h says why and when it is used).

import os as _os
import time as _time

cdef extern from "_team.h":
    ctypedef void (*fastbp_job)(void* ctx, int tid) noexcept nogil
    ctypedef struct fastbp_barrier:
        pass
    int fastbp_team_wanted
    long long fastbp_team_quiet_ns
    unsigned long fastbp_team_regions
    long long fastbp_team_helper_late_ns
    int fastbp_team_run(fastbp_job fn, void* ctx) noexcept nogil
    void fastbp_barrier_init(fastbp_barrier* b) noexcept nogil
    void fastbp_barrier_wait(fastbp_barrier* b) noexcept nogil
    ctypedef struct fastbp_chunks:
        pass
    void fastbp_chunks_init(fastbp_chunks* q) noexcept nogil
    int FASTBP_MAX_CHUNKS
    int fastbp_claim(fastbp_chunks* q, unsigned int ph, int n, int back) noexcept nogil
    void fastbp_finished(fastbp_chunks* q) noexcept nogil
    void fastbp_wait_done(fastbp_chunks* q, long long end) noexcept nogil
    void fastbp_blas_called() noexcept nogil
    long long fastbp_now_ns() noexcept nogil
    int fastbp_flag_get(const int* flag) noexcept nogil
    void fastbp_flag_set(int* flag, int value) noexcept nogil
    int fastbp_blas_avoid(int avoid) noexcept nogil
    void fastbp_blas_restore(int old) noexcept nogil
    int fastbp_blas_avoided() noexcept nogil
    int fastbp_team_sleeping
    int fastbp_team_cpu
    int fastbp_team_helper_cpus(unsigned char* cpus, int n) noexcept nogil


def set_team_threads(int n):
    """Threads of the team (LSTM/GRU time loops, mid-sized Dense epochs): 2 splits their steps
    over two cores (where no BLAS call ran in the last 0.25 s), 1 runs them in the caller's
    thread. Returns the previous
    value. fastbp.set_num_threads sets it."""
    global fastbp_team_wanted
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    old, fastbp_team_wanted = fastbp_team_wanted, min(n, 2)
    return old


def team_threads():
    """Threads of the team (1 or 2; see set_team_threads)."""
    return fastbp_team_wanted


def _team_regions():
    """How many regions (a recurrent forward or backward, a Dense epoch) ran on the team so far
    (for tests)."""
    return fastbp_team_regions


def _set_team_quiet(double seconds):
    """Use the team only this long after the last BLAS call (default 0.25 s; tests set 0).
    Returns the previous value."""
    global fastbp_team_quiet_ns
    old, fastbp_team_quiet_ns = fastbp_team_quiet_ns / 1e9, <long long>(seconds * 1e9)
    return old


def _set_team_helper_late(double seconds):
    """For tests: the helper starts each job this late (as when its core is taken). Returns
    the previous value."""
    global fastbp_team_helper_late_ns
    old = fastbp_team_helper_late_ns / 1e9
    fastbp_team_helper_late_ns = <long long>(seconds * 1e9)
    return old


def _team_state():
    """For tests: {"sleeping": the helper waits on its condition variable (not spinning),
    "kept_off": the CPU the helper was last kept off (the caller's; -1: none yet),
    "helper_cpus": the CPUs the helper may run on (None: no helper)}."""
    cdef unsigned char cpus[1024]
    n = min(_os.cpu_count() or 1, 1024)
    ok = fastbp_team_helper_cpus(cpus, n) == 0
    return {"sleeping": bool(fastbp_team_sleeping), "kept_off": fastbp_team_cpu,
            "helper_cpus": [i for i in range(n) if cpus[i]] if ok else None}


def _usable_cpus():
    try:
        return len(_os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return _os.cpu_count() or 1


fastbp_team_wanted = 2 if _usable_cpus() >= 2 else 1


cdef inline int part_start(Py_ssize_t n, int parts, int j) noexcept nogil:
    """The start of part j of range(n) in ``parts``, at a multiple of 16 (a float32 vector)."""
    if j >= parts:
        return <int>n
    return <int>min((j * n // parts + 8) // 16 * 16, n)


cdef inline void split_at(Py_ssize_t n, int tid, int* lo, int* hi) noexcept nogil:
    """Thread tid's half [lo, hi) of range(n) (part_start)."""
    lo[0], hi[0] = part_start(n, 2, tid), part_start(n, 2, tid + 1)


ctypedef struct MeetBench:
    long n
    fastbp_barrier bar


cdef void meet_job(void* ctx, int tid) noexcept nogil:
    cdef MeetBench* b = <MeetBench*>ctx
    cdef long i
    for i in range(b.n):
        fastbp_barrier_wait(&b.bar)


def _team_meetings(long n):
    """Run one team region of n meetings and nothing else; returns its seconds (None where the
    team did not run): what a meeting costs on this machine (for benchmarks)."""
    cdef MeetBench b
    cdef int ran
    b.n = n
    fastbp_barrier_init(&b.bar)
    t0 = _time.perf_counter()
    with nogil:
        ran = fastbp_team_run(meet_job, &b)
    return _time.perf_counter() - t0 if ran else None
