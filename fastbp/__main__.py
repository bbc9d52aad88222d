"""Command line: ``python -m fastbp demo``."""

import argparse
import sys
import time

import numpy as np

import fastbp as fb
from fastbp.workloads import WORKLOADS


def demo_xor(epochs: int = 20000, backend: str = "cython") -> float:
    """XOR with a 2-3-1 sigmoid net, SGD(0.5), MSE, full batch. Returns the final accuracy."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.float32)
    model = fb.Sequential(
        [fb.layers.Dense(3, "sigmoid", input_dim=2), fb.layers.Dense(1, "sigmoid")],
        backend=backend,
        seed=0,
    )
    model.compile(fb.optimizers.SGD(0.5), "mse", ["accuracy"])
    print(f"XOR 2-3-1 sigmoid, SGD(0.5), MSE, {epochs} epochs full batch")
    start = time.perf_counter()
    report = fb.callbacks.Callback()
    report.on_epoch_end = lambda e, logs: (
        print(f"  epoch {e + 1:5d}  loss {logs['loss']:.6f}  accuracy {logs['accuracy']:.2f}")
        if (e + 1) % (epochs // 10) == 0
        else None
    )
    model.fit(X, y, epochs=epochs, verbose=0, callbacks=[report])
    took = time.perf_counter() - start
    acc = model.evaluate(X, y)[1]
    print(
        f"  predictions {np.round(model.predict(X).ravel(), 3)}  accuracy {acc:.2f}  "
        f"({took:.2f} s, {took / epochs * 1e6:.1f} µs/step)"
    )
    return acc


def demo_digits(epochs: int = 30, backend: str = "cython") -> float:
    """scikit-learn's 8x8 digits: 64-64(relu)-10(softmax), Adam, batch 32. Returns test accuracy."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("digits demo skipped: scikit-learn is not installed (pip install scikit-learn)")
        return float("nan")
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    cut = int(0.8 * len(X))
    model = fb.Sequential(
        [fb.layers.Dense(64, "relu", input_dim=64), fb.layers.Dense(10, "softmax")],
        backend=backend,
        seed=0,
    )
    model.compile(fb.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    print(f"\ndigits 64-64-10 relu/softmax, Adam, batch 32: {cut} train / {len(X) - cut} test")
    start = time.perf_counter()
    model.fit(
        X[:cut],
        y[:cut],
        epochs=epochs,
        batch_size=32,
        verbose=2,
        validation_data=(X[cut:], y[cut:]),
    )
    took = time.perf_counter() - start
    loss, acc = model.evaluate(X[cut:], y[cut:])
    print(f"  test loss {loss:.4f}  test accuracy {acc:.4f}  ({took:.2f} s for {epochs} epochs)")
    return acc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train XOR, then scikit-learn's digits")
    demo.add_argument("--backend", default="cython", choices=fb.backends.available())
    demo.add_argument("--epochs", type=int, default=30, help="digits epochs")
    bench = sub.add_parser("bench", help="compare training-step times with installed peers")
    bench.add_argument("--workloads", default="W1,W2,W3,W4")
    bench.add_argument("--peers", default="torch,jax,numpy,sklearn,keras")
    bench.add_argument("--rounds", type=int, default=7)
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument("--plot", help="draw the comparison to this PNG (needs matplotlib)")
    prof = sub.add_parser("profile", help="per-layer, per-kernel time of a workload's steps")
    prof.add_argument("--workload", default="W3", choices=sorted(WORKLOADS))
    prof.add_argument("--steps", type=int, default=20)
    prof.add_argument("--backend", default="cython", choices=fb.backends.available())
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo_xor(backend=args.backend)
        demo_digits(args.epochs, backend=args.backend)
    elif args.command == "bench":
        from .benchmark import run

        wls = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
        unknown = set(wls) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads {sorted(unknown)}; choose from {sorted(WORKLOADS)}")
        run(wls, [p.strip() for p in args.peers.split(",")], args.rounds, args.json, args.plot)
    elif args.command == "profile":
        from .profiler import profile_workload

        print(profile_workload(args.workload, args.steps, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
