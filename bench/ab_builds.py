"""In-process A/B of two builds of the compiled kernels on the digits fit (or a workload's).

On a shared, noisy host the same build's fit moves by +-30% within minutes, so two builds are
compared in ONE process, alternating: the other build's ``fastbp/_ckernels*.so`` is loaded beside
the installed one and one model's compiled epochs run through it.

    git stash && python setup.py build_ext --inplace && cp fastbp/_ckernels*.so /tmp/old.so
    git stash pop && python setup.py build_ext --inplace
    python bench/ab_builds.py /tmp/old.so --rounds 15
    python bench/ab_builds.py /tmp/old.so --epochs 600   # one compiled epoch at a time
    python bench/ab_builds.py /tmp/old.so --workload W3 --epochs 100   # the runner's W3 epoch

Prints the medians and the median per-round ratio old/new (> 1: the working tree is faster).
Whole fits resolve ~3% here; ``--epochs N`` alternates N single digits epochs (``train_epoch``,
45 steps, the same shuffled order) of the two builds and resolves ~0.5%. ``--workload W3``
alternates the runner's epochs of that workload instead (fastbp.benchmark: its data, 32
steps, unshuffled), 20 ms apart (the team's helper spins 2 ms after a region: _team.h).
"""

import argparse
import importlib.util
import sys
import time
import types

import numpy as np

from fastbp import layers, optimizers
from fastbp.model import Sequential


def load_other(path: str):
    """The extension module at ``path``, loaded under its own name beside the imported one."""
    mine = sys.modules["fastbp._ckernels"]
    spec = importlib.util.spec_from_file_location("fastbp._ckernels", path)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    sys.modules["fastbp._ckernels"] = mine
    return other


def digits_model(kernels=None) -> Sequential:
    """64-64-10, Adam, as the runner's digits fit; its compiled epochs from ``kernels``."""
    m = Sequential([layers.Dense(64, "relu", input_dim=64), layers.Dense(10, "softmax")], seed=0)
    m.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    return with_kernels(m, kernels)


def with_kernels(m: Sequential, kernels=None) -> Sequential:
    """``m`` with its compiled epochs (Plan, train_epoch[s]) from ``kernels`` (None: as it is)."""
    if kernels is not None:
        be = types.SimpleNamespace(
            **{k: getattr(m.backend, k) for k in dir(m.backend) if not k.startswith("__")}
        )
        be.Plan, be.train_epoch = kernels.Plan, kernels.train_epoch
        be.train_epochs = kernels.train_epochs
        m.backend = be
    return m


def alternate(calls: dict, rounds: int, pause: float = 0.0) -> dict:
    """Seconds of each call (old, new), the calls alternating ``rounds`` times, each after a
    ``pause``."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(pause)
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
    return {name: np.array(v) for name, v in times.items()}


def report(times: dict, scale: float, unit: str, label: str = "") -> None:
    """The medians of old and new (times ``scale``, in ``unit``) and of their per-round ratio."""
    o, n = times["old"] * scale, times["new"] * scale
    r = o / n
    print(
        f"{label}old {np.median(o):.3f} {unit}, new {np.median(n):.3f} {unit}; per-round old/new "
        f"median {np.median(r):.3f} (min {r.min():.3f}, max {r.max():.3f})"
    )


def workload_epochs(old, wid: str, rounds: int) -> None:
    """Alternate one runner epoch of workload ``wid`` of each build ``rounds`` times."""
    import fastbp._ckernels as new

    from fastbp.benchmark import STEPS, _epoch_data
    from fastbp.workloads import batch_size, build

    steps, bs = STEPS[wid], batch_size(wid)
    X, y = _epoch_data(wid, steps)
    X, y = X.reshape((-1,) + X.shape[2:]), y.reshape((-1,) + y.shape[2:])
    models = {name: with_kernels(build(wid)[0], k) for name, k in (("old", old), ("new", new))}
    for m in models.values():
        m.fit(X, y, batch_size=bs, epochs=1, shuffle=False, verbose=0)
    calls = {
        name: (lambda m=m: m.fit(X, y, batch_size=bs, epochs=1, shuffle=False, verbose=0))
        for name, m in models.items()
    }
    report(alternate(calls, rounds, pause=0.02), 1e3 / steps, "ms", f"{wid} per step: ")


def epochs(old, X, y, rounds: int) -> None:
    """Alternate one compiled digits epoch of each build ``rounds`` times; time per step."""
    import fastbp._ckernels as new

    plans = {}
    for name, kernels in (("old", old), ("new", new)):
        m = digits_model(kernels)
        m.fit(X, y, batch_size=32, epochs=1, verbose=0)
        plans[name] = (kernels, m.executor.plan())
    order = np.random.default_rng(0).permutation(len(X)).astype(np.int64)
    calls = {
        name: (lambda k=kernels, p=plan: k.train_epoch(p, X, None, y, order, 32, 10.0, True))
        for name, (kernels, plan) in plans.items()
    }
    report(alternate(calls, rounds), 1e6 / 45, "µs", "per step: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the other build's _ckernels .so")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=0, help="time N single epochs instead")
    parser.add_argument("--workload", help="a runner workload's epochs (W3, ...) for digits'")
    args = parser.parse_args()
    if args.workload:
        workload_epochs(load_other(args.old), args.workload, args.epochs or 50)
        return
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = (X[:1437] / 16.0).astype(np.float32), y[:1437]
    old = load_other(args.old)
    if args.epochs:
        epochs(old, np.ascontiguousarray(X), y.astype(np.int64), args.epochs)
        return
    times = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, kernels in (("old", old), ("new", None)):
            m = digits_model(kernels)
            t = time.perf_counter()
            m.fit(X, y, batch_size=32, epochs=50, verbose=0)
            times[name].append(time.perf_counter() - t)
    report({k: np.array(v) for k, v in times.items()}, 1e3, "ms")


if __name__ == "__main__":
    main()
