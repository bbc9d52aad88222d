"""The two-thread team itself (src_c/_team.h): meetings, where its helper runs, when it sleeps.
What runs on it (LSTM/GRU, Dense epochs) is tested in test_recurrent.py and
test_compiled_loop.py."""

import os
import sys
import time

import numpy as np
import pytest

from fastbp import backends


def test_a_region_of_meetings_runs_on_the_team(team):
    from fastbp import _ckernels

    seconds = _ckernels._team_meetings(1000)
    assert seconds is not None and seconds > 0
    assert team() == 1
    _ckernels.set_team_threads(1)
    assert _ckernels._team_meetings(10) is None  # team off: nothing ran
    assert team() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is Linux's")
def test_helper_is_kept_off_the_callers_cpu(team):
    """A woken helper placed on the caller's CPU spun against it for the whole region."""
    from fastbp import _ckernels

    _ckernels._team_meetings(10)
    state = _ckernels._team_state()
    assert state["kept_off"] >= 0
    assert state["helper_cpus"], "the helper must be allowed some CPU"
    assert state["kept_off"] not in state["helper_cpus"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_one_cpu_runs_serially(team):
    """Restricted to one CPU after import (taskset), a region would put two spinning threads on
    it: it runs serially instead."""
    from fastbp import _ckernels

    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert _ckernels._team_meetings(10) is None
        assert team() == 0
    finally:
        os.sched_setaffinity(0, allowed)
    assert _ckernels._team_meetings(10) is not None
    assert team() == 1


def test_helper_stops_spinning_when_blas_is_called(team, rng):
    """After a region the helper spins for up to 2 ms, unless fastbp calls BLAS meanwhile (its
    pool's workers want that core): then it sleeps at once. Observed within 1.5 ms of the
    region's end in at least one of 20 tries (a busy host may not run the helper in time: with
    both cores taken by other processes, 5 tries were not always enough)."""
    from fastbp import _ckernels

    a = rng.standard_normal((300, 300))
    out = np.empty((300, 300))
    for _ in range(20):
        _ckernels._team_meetings(10)
        end = time.perf_counter()
        backends.get("cython").dense_forward(a, a, None, 0, 0.0, out)  # BLAS
        while time.perf_counter() - end < 1.5e-3:
            if _ckernels._team_state()["sleeping"]:
                return
        time.sleep(0.01)  # the helper sleeps now anyway; the next try starts it afresh
    pytest.fail("the helper kept spinning after a BLAS call")
