"""In-process A/B of two builds of the compiled kernels on the digits fit.

On a shared, noisy host the same build's fit moves by +-30% within minutes, so two builds are
compared in ONE process, alternating: the other build's ``fastbp/_ckernels*.so`` is loaded beside
the installed one and one model's compiled epochs run through it.

    git stash && python setup.py build_ext --inplace && cp fastbp/_ckernels*.so /tmp/old.so
    git stash pop && python setup.py build_ext --inplace
    python bench/ab_builds.py /tmp/old.so --rounds 15
    python bench/ab_builds.py /tmp/old.so --epochs 600   # one compiled epoch at a time

Prints the medians and the median per-round ratio old/new (> 1: the working tree is faster).
Whole fits resolve ~3% here; ``--epochs N`` alternates N single digits epochs (``train_epoch``,
45 steps, the same shuffled order) of the two builds and resolves ~0.5%.
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
    if kernels is not None:
        be = types.SimpleNamespace(
            **{k: getattr(m.backend, k) for k in dir(m.backend) if not k.startswith("__")}
        )
        be.Plan, be.train_epoch = kernels.Plan, kernels.train_epoch
        m.backend = be
    return m


def epochs(old, X, y, rounds: int) -> None:
    """Alternate one compiled digits epoch of each build ``rounds`` times; time per step."""
    import fastbp._ckernels as new

    plans = {}
    for name, kernels in (("old", old), ("new", new)):
        m = digits_model(kernels)
        m.fit(X, y, batch_size=32, epochs=1, verbose=0)
        plans[name] = (kernels, m._plan())
    order = np.random.default_rng(0).permutation(len(X)).astype(np.int64)
    times = {"old": [], "new": []}
    for _ in range(rounds):
        for name, (kernels, plan) in plans.items():
            t = time.perf_counter()
            kernels.train_epoch(plan, X, None, y, order, 32, 10.0, True)
            times[name].append(time.perf_counter() - t)
    o, n = np.array(times["old"]) / 45 * 1e6, np.array(times["new"]) / 45 * 1e6
    print(
        f"per step: old {np.median(o):.2f} µs, new {np.median(n):.2f} µs; per-round old/new "
        f"median {np.median(o / n):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the other build's _ckernels .so")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=0, help="time N single epochs instead")
    args = parser.parse_args()
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
    o, n = np.array(times["old"]), np.array(times["new"])
    print(
        f"old {np.median(o) * 1e3:.1f} ms, new {np.median(n) * 1e3:.1f} ms; per-round old/new "
        f"median {np.median(o / n):.3f} (min {min(o / n):.3f}, max {max(o / n):.3f})"
    )


if __name__ == "__main__":
    main()
