"""The comparison runner behind ``python -m fastbp bench``.

fastbp and each installed peer train the same workload (W1-W4 of fastbp.workloads) from the
same initial weights, in the same process, interleaved round by round (after a pause that lets
the previous peer's thread pools go idle), and the medians are compared: speedup = peer time /
fastbp time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

from . import layers
from .peers import PEERS
from .workloads import batch_size, build, flops_per_step, input_shape, loss_of

# Steps per timed epoch: long enough to amortize per-call costs (a JAX scan dispatch is ~1 ms),
# short enough for W4.
STEPS = {"W1": 4096, "W2": 512, "W3": 32, "W3D": 32, "W4": 2, "W5": 16, "W6": 8, "W6-GRU": 8}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def interleaved(fns: dict, rounds: int, settle: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each function, called round-robin ``rounds`` times.

    Each function is called once untimed first (compilation, allocation); each timed call is
    preceded by an untimed pause of ``settle`` seconds (OpenBLAS and OpenMP threads of the
    previous peer spin after its call and would steal the cores: OpenBLAS's workers for about
    0.25 s, measured for fastbp's team in src_c/_team.h).
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # compile / allocate outside the timed rounds
    for _ in range(rounds):
        for k, f in fns.items():
            if len(fns) > 1:
                time.sleep(settle)
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def sgemm_peak(n: int = 2048, rounds: int = 5) -> float:
    """GFLOP/s of SciPy's SGEMM (the BLAS fastbp's kernels call) at n³."""
    from scipy.linalg import blas

    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n)), dtype=np.float32)
    return 2.0 * n**3 / interleaved({"sgemm": lambda: blas.sgemm(1.0, a, a)}, rounds)["sgemm"] / 1e9


def _epoch_data(wid: str, steps: int, seed: int = 0):
    (shape, k), batch = input_shape(wid), batch_size(wid)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((steps, batch, *shape)).astype(np.float32)
    if loss_of(wid) == "mse":
        y = rng.integers(0, 2, (steps, batch, k)).astype(np.float32)
    else:
        y = rng.integers(0, k, (steps, batch))
    return X, y


def measure_workload(wid: str, peers, rounds: int) -> dict:
    """Per-step times of fastbp (fit, train_on_batch) and the peers on workload ``wid``."""
    steps = STEPS[wid]
    X, y = _epoch_data(wid, steps)
    Xf, yf = X.reshape((-1,) + X.shape[2:]), y.reshape((-1,) + y.shape[2:])
    fns = {}
    fit_model, _, _ = build(wid)
    fns["fastbp fit"] = lambda: fit_model.fit(
        Xf, yf, batch_size=X.shape[1], epochs=1, shuffle=False, verbose=0
    )
    tob_model, _, _ = build(wid)

    def tob():
        for i in range(steps):
            tob_model.train_on_batch(X[i], y[i])

    fns["fastbp train_on_batch"] = tob
    for name in peers:
        if name not in PEERS:
            continue
        fn = PEERS[name](wid, build(wid)[0], X, y)
        if fn is None:
            _log(f"  {name}: not installed or not written for {wid}, skipped")
            continue
        fns[name] = fn
        if name == "jax":
            fns["jax_scan"] = PEERS["jax_scan"](wid, build(wid)[0], X, y)
    fns = {k: f for k, f in fns.items() if f is not None}
    _log(f"{wid}: timing {', '.join(fns)} ({rounds} rounds of {steps} steps)")
    per_step = {k: v / steps for k, v in interleaved(fns, rounds).items()}
    from .profiler import profile

    # each layer's forward and backward kernels' median call, summed, in three profiles 0.3 s
    # apart (the last peer's BLAS threads may still spin: they slowed the profile's first
    # kernels, W3's forward came out at twice its time), the median of the three: a burst of
    # the host's other tenants moved one profile's ratio of totals by up to 0.2 (W3: 1.19-1.40
    # against a FLOP ratio of 1.25 in six profiles in a row)
    ratios, flop_ratio = [], 0.0
    for _ in range(3):
        time.sleep(0.3)
        prof = profile(build(wid)[0], X[0], y[0], steps=max(3, min(20, 2000 // steps)))
        fwd_rows = [r for r in prof.rows if r["kernel"].endswith("_forward")]
        bwd_rows = [r for r in prof.rows if r["kernel"].endswith("_backward")]
        fwd = sum(r["median_s"] * r["calls"] for r in fwd_rows)
        bwd = sum(r["median_s"] * r["calls"] for r in bwd_rows)
        ratios.append(bwd / fwd)
        ffl = sum(r["gflops"] * r["total_s"] for r in fwd_rows)
        flop_ratio = sum(r["gflops"] * r["total_s"] for r in bwd_rows) / ffl
    return {
        "steps_per_epoch": steps,
        "step_s": per_step,
        "gflops": flops_per_step(wid) / per_step["fastbp fit"] / 1e9,
        "bwd_fwd_time_ratio": statistics.median(ratios),
        "bwd_fwd_flop_ratio": flop_ratio,
    }


#: fastbp's digits model with a layer after the hidden one (measure_digits), by the name the
#: peers' versions carry after "+ "
MIDDLE = {
    "Dropout": lambda: layers.Dropout(0.2),
    "BatchNorm": lambda: layers.BatchNormalization(),
}
VARIANTS = {f"fastbp + {k}": f for k, f in MIDDLE.items()}


def measure_digits(epochs: int = 50, repeats: int = 5) -> dict | None:
    """Digits 64-64-10, Adam, batch 32, ``epochs`` epochs (float32): fastbp's Sequential and its
    scikit-learn drop-in (fastbp.sklearn.MLPClassifier) vs scikit-learn's MLPClassifier, and
    the same model written with PyTorch, JAX (one jit per epoch) and Keras where installed; and
    each of those with Dropout(0.2) or BatchNormalization() after the hidden layer (fastbp's:
    VARIANTS, also against the plain model's time). Each fit is timed alone: its test accuracy
    is taken once, in the untimed first call (scikit-learn's ``score`` took ~5 ms of the
    drop-in's ~30 ms)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    import warnings

    from . import optimizers
    from .model import Sequential

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    cut = int(0.8 * len(X))
    out = {}

    def fastbp_fit(name="fastbp"):
        middle = {"fastbp": [], **{k: [f()] for k, f in VARIANTS.items()}}[name]
        m = Sequential(
            [layers.Dense(64, "relu", input_dim=64), *middle, layers.Dense(10, "softmax")],
            seed=0,
        )
        m.compile(optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
        m.fit(X[:cut], y[:cut], batch_size=32, epochs=epochs, verbose=0)
        if name not in out:  # scored once, in the untimed first call: the time is the fit's
            out[name] = m.evaluate(X[cut:], y[cut:])[1]

    def mlp_fit(name, cls):
        # the same estimator settings for scikit-learn's MLPClassifier and fastbp's drop-in
        clf = cls(
            (64,),
            solver="adam",
            alpha=0.0,
            batch_size=32,
            max_iter=epochs,
            tol=0.0,
            n_iter_no_change=epochs + 1,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as asked
            clf.fit(X[:cut], y[:cut])
        if name not in out:
            out[name] = clf.score(X[cut:], y[cut:])

    from .sklearn import MLPClassifier as DropIn

    fns = {
        "fastbp": fastbp_fit,
        **{name: (lambda name=name: fastbp_fit(name)) for name in VARIANTS},
        "fastbp MLPClassifier": lambda: mlp_fit("fastbp MLPClassifier", DropIn),
        "sklearn": lambda: mlp_fit("sklearn", MLPClassifier),
    }
    fns.update(_keras_fits(X[:cut], y[:cut], X[cut:], y[cut:], epochs, out))
    fns.update(_peer_fits(X[:cut], y[:cut], X[cut:], y[cut:], epochs, out))
    _log(f"digits: {', '.join(fns)}, {epochs} epochs, {repeats} rounds")
    times = interleaved(fns, repeats)
    return {"epochs": epochs, "fit_s": times, "test_accuracy": dict(out)}


def measure_sklearn(rounds: int = 3) -> dict | None:
    """fastbp.sklearn's estimators against scikit-learn's own, same parameters (so the same
    model: fastbp.sklearn follows scikit-learn's draws and formulas), on its solvers' cases:
    its defaults (adam, batch 200, 100 hidden units, 200 iterations) and lbfgs on float64
    digits, and a bag-of-words shaped CSR input (5,000 x 20,000 at 0.5%, 20 classes, 100
    hidden units, 5 epochs). Seconds per fit, interleaved rounds, and each side's iterations
    and training accuracy."""
    try:
        import scipy.sparse as sp
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    import warnings

    from .sklearn import MLPClassifier as DropIn

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    Xs = sp.random(5000, 20000, density=0.005, format="csr", random_state=0)
    ys = rng.integers(0, 20, 5000)
    cases = {
        "digits, defaults (adam)": (X, y, {}),
        "digits, lbfgs": (X, y, {"solver": "lbfgs"}),
        "CSR 5000x20000, 5 epochs": (Xs, ys, {"max_iter": 5}),
    }
    out = {}
    for name, (Xc, yc, kw) in cases.items():
        fitted = {}

        def fit(cls, side, Xc=Xc, yc=yc, kw=kw, fitted=fitted):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning: the iterations asked
                fitted[side] = cls(random_state=0, **kw).fit(Xc, yc)

        _log(f"scikit-learn drop-in: {name}, {rounds} rounds")
        t = interleaved(
            {
                "fastbp": lambda: fit(DropIn, "fastbp"),
                "sklearn": lambda: fit(MLPClassifier, "sklearn"),
            },
            rounds,
        )
        out[name] = {
            "fit_s": t,
            "n_iter": {k: int(m.n_iter_) for k, m in fitted.items()},
            "train_accuracy": {k: float(m.score(Xc, yc)) for k, m in fitted.items()},
        }
    return out


def _peer_fits(Xtr, ytr, Xte, yte, epochs, out) -> dict:
    """PyTorch and JAX fits of the digits model, plain and with each of MIDDLE's layers."""
    from .model import Sequential
    from .peers import jax_digits, torch_digits

    fns = {}
    for peer, make in (("torch", torch_digits), ("jax epoch", jax_digits)):
        for middle in (None, *MIDDLE):
            m = Sequential(
                [layers.Dense(64, "relu", input_dim=64), layers.Dense(10, "softmax")], seed=0
            )
            m.build()
            made = make(m, middle, Xtr, ytr, epochs)
            if made is None:
                break
            name = peer if middle is None else f"{peer} + {middle}"

            def fit(made=made, name=name):
                made[0]()
                if name not in out:
                    out[name] = made[1](Xte, yte)

            fns[name] = fit
    return fns


def _keras_fits(Xtr, ytr, Xte, yte, epochs, out) -> dict:
    """Keras 3 fits (JAX backend where no backend is chosen), plain and with
    steps_per_execution=45 (one compiled call per epoch of 45 batches), and the latter with each
    of MIDDLE's layers; {} without Keras. Each model is compiled once: its first (warm-up) fit
    trains from scratch and gives the accuracy; timed fits continue training it (the time per
    epoch is the same)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return {}
    fns = {}
    mids = {
        "Dropout": lambda: keras.layers.Dropout(0.2),
        "BatchNorm": keras.layers.BatchNormalization,
    }
    runs = [("keras", 1, None), ("keras spe45", 45, None)]
    runs += [(f"keras spe45 + {k}", 45, k) for k in mids]
    for name, spe, middle in runs:
        keras.utils.set_random_seed(0)
        km = keras.Sequential(
            [
                keras.Input((Xtr.shape[1],)),
                keras.layers.Dense(64, "relu"),
                *([mids[middle]()] if middle else []),
                keras.layers.Dense(10, "softmax"),
            ]
        )
        km.compile(
            keras.optimizers.Adam(1e-3),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=spe,
        )

        def fit(km=km, name=name):
            km.fit(Xtr, ytr, batch_size=32, epochs=epochs, verbose=0)
            if name not in out:
                out[name] = float(km.evaluate(Xte, yte, verbose=0)[1])

        fns[name] = fit
    return fns


def run(
    workloads=("W1", "W2", "W3", "W3D", "W4"),
    peers=("torch", "jax", "numpy", "sklearn", "keras"),
    rounds: int = 7,
    json_path=None,
    plot_path=None,
) -> dict:
    """Measure, print the table, optionally write JSON and a plot; returns the results."""
    info = {"machine": f"{os.cpu_count()} cores", "peers": {}}
    try:
        import threadpoolctl

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        pass
    for name, mod in (("torch", "torch"), ("jax", "jax"), ("sklearn", "sklearn")):
        try:
            info["peers"][name] = __import__(mod).__version__
        except ImportError:
            pass
    if "torch" in info["peers"]:
        import torch

        torch.set_num_threads(os.cpu_count())
    _log("measuring SGEMM peak")
    info["sgemm_gflops"] = sgemm_peak()
    results = {"info": info, "workloads": {}}
    for wid in workloads:
        results["workloads"][wid] = measure_workload(wid, peers, rounds if wid != "W4" else 3)
    if "sklearn" in peers or "keras" in peers:
        results["digits"] = measure_digits()
    if "sklearn" in peers:
        results["sklearn"] = measure_sklearn()
    print(format_table(results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    if plot_path:
        plot(results, plot_path)
    return results


def format_table(results: dict) -> str:
    info = results["info"]
    peak = info["sgemm_gflops"]
    lines = [f"SGEMM peak (SciPy BLAS, 2048³): {peak:.0f} GFLOP/s; peers {info['peers']}"]
    head = f"{'wl':4} {'peer':24}{'step':>12}{'fastbp fit faster by':>22}"
    lines += [head, "-" * len(head)]
    for wid, r in results["workloads"].items():
        base = r["step_s"]["fastbp fit"]
        for peer, t in r["step_s"].items():
            lines.append(f"{wid:4} {peer:24}{_fmt_time(t):>12}{t / base:>21.2f}x")
        lines.append(
            f"{wid:4} fastbp fit: {r['gflops']:.1f} GFLOP/s ({100 * r['gflops'] / peak:.0f}% of "
            f"SGEMM); backward/forward time {r['bwd_fwd_time_ratio']:.2f} vs FLOP ratio "
            f"{r['bwd_fwd_flop_ratio']:.2f}"
        )
    d = results.get("digits")
    if d:
        fits = d["fit_s"]
        lines.append(f"digits 64-64-10, Adam, batch 32, {d['epochs']} epochs:")
        for peer, t in fits.items():
            # a peer's model with a middle layer against fastbp's with the same layer
            middle = peer.rpartition(" + ")[2] if " + " in peer else None
            base = fits.get(f"fastbp + {middle}", np.nan) if middle else fits["fastbp"]
            versus = (
                f"{t / fits['fastbp']:.2f}x the plain model's time"
                if peer in VARIANTS
                else f"fastbp{' + ' + middle if middle else ''} faster by {t / base:.2f}x"
            )
            lines.append(
                f"  {peer:22}{t:8.3f} s  test accuracy {d['test_accuracy'][peer]:.3f}  {versus}"
            )
    for name, r in (results.get("sklearn") or {}).items():
        f, s = r["fit_s"]["fastbp"], r["fit_s"]["sklearn"]
        lines.append(
            f"fastbp.sklearn vs scikit-learn, {name}: {f:.3f} s vs {s:.3f} s, fastbp faster by "
            f"{s / f:.2f}x; iterations {r['n_iter']['fastbp']} / {r['n_iter']['sklearn']}, "
            f"training accuracy {r['train_accuracy']['fastbp']:.3f} / "
            f"{r['train_accuracy']['sklearn']:.3f}"
        )
    return "\n".join(lines)


def _fmt_time(t: float) -> str:
    return f"{t * 1e6:.2f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def plot(results: dict, path) -> None:
    """Bar chart of step times per workload and peer (log scale); needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("--plot needs matplotlib (pip install matplotlib): no plot written")
        return
    wl = list(results["workloads"])
    peers = sorted({p for r in results["workloads"].values() for p in r["step_s"]})
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        vals = [results["workloads"][w]["step_s"].get(peer, np.nan) * 1e6 for w in wl]
        ax.bar(np.arange(len(wl)) + i * width, vals, width, label=peer)
    ax.set_xticks(np.arange(len(wl)) + 0.4 - width / 2, wl)
    ax.set_yscale("log")
    ax.set_ylabel("time per training step (µs, log)")
    ax.set_title("fastbp vs peers, same process, medians")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
