"""In-process A/B of two source trees of fastbp (Python and compiled kernels both), on the
runner's workloads: ``train_on_batch`` and one ``fit`` epoch, the two trees alternating round by
round in one process (the host's ±30% drift between processes hides a few percent).

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py build_ext --inplace)
    python bench/ab_trees.py /tmp/old . --workloads W1,W2,W3 --rounds 21

Each tree is imported in turn under the name ``fastbp`` and its modules moved aside, so both stay
loaded. Prints per workload and call the medians and the median per-round ratio old/new with its
interquartile range (> 1: the new tree is faster).
"""

import argparse
import statistics
import sys
import time

CALLS = {"W1": 200, "W2": 200, "W3": 20, "W4": 2, "W5": 20, "W6": 20, "W6-GRU": 20}


def load(tree: str) -> dict:
    """The modules of the fastbp package found in ``tree``, imported and moved aside."""
    sys.path.insert(0, tree)
    import fastbp.benchmark  # noqa: F401
    import fastbp.workloads  # noqa: F401

    mods = {k: v for k, v in sys.modules.items() if k == "fastbp" or k.startswith("fastbp.")}
    for k in mods:
        del sys.modules[k]
    sys.path.remove(tree)
    return mods


def setup(mods: dict, wid: str):
    W, B = mods["fastbp.workloads"], mods["fastbp.benchmark"]
    model, Xb, yb = W.build(wid)
    steps, bs = B.STEPS[wid], W.batch_size(wid)
    X, y = B._epoch_data(wid, steps)
    X, y = X.reshape((-1,) + X.shape[2:]), y.reshape((-1,) + y.shape[2:])
    model.fit(X, y, batch_size=bs, epochs=1, shuffle=False, verbose=0)
    model.train_on_batch(Xb, yb)

    def on_batch():
        for _ in range(CALLS[wid]):
            model.train_on_batch(Xb, yb)
        return CALLS[wid]

    def fit():
        model.fit(X, y, batch_size=bs, epochs=1, shuffle=False, verbose=0)
        return steps

    return {"train_on_batch": on_batch, "fit": fit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    trees = {"old": load(args.old), "new": load(args.new)}
    for wid in args.workloads.split(","):
        calls = {name: setup(mods, wid) for name, mods in trees.items()}
        for what in ("train_on_batch", "fit"):
            times, ratios = {"old": [], "new": []}, []
            for r in range(args.rounds):
                for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    time.sleep(0.05)  # the other tree's team helper and BLAS workers go idle
                    t = time.perf_counter()
                    steps = calls[name][what]()
                    times[name].append((time.perf_counter() - t) / steps)
                ratios.append(times["old"][-1] / times["new"][-1])
            q = sorted(ratios)
            old, new = (statistics.median(times[k]) * 1e6 for k in ("old", "new"))
            lo, hi = q[len(q) // 4], q[3 * len(q) // 4]
            print(
                f"{wid} {what}: old {old:.2f} µs, new {new:.2f} µs a step; old/new median "
                f"{statistics.median(ratios):.3f} (IQR {lo:.3f}-{hi:.3f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
