"""Command line: ``python -m fastbp demo``."""

import argparse
import sys
import time

import numpy as np

import fastbp as fb
from fastbp.workloads import RECURRENT, WORKLOADS

ALL_WORKLOADS = sorted(WORKLOADS) + list(RECURRENT)


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


def demo_rnn(epochs: int = 15, backend: str = "cython") -> float:
    """Sine forecasting: from 40 noisy samples of sin(ω·t + φ) (ω, φ random per sequence),
    an LSTM(32) predicts the next clean value. Returns the test mean squared error."""
    rng = np.random.default_rng(0)
    n, T = 2500, 40
    omega = rng.uniform(0.1, 0.6, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    t = np.arange(T + 1)
    clean = np.sin(omega * t + phase)
    X = (clean[:, :T] + 0.05 * rng.standard_normal((n, T)))[..., None].astype(np.float32)
    y = clean[:, T:].astype(np.float32)
    cut = 2000
    model = fb.Sequential(
        [fb.layers.LSTM(32, input_shape=(T, 1)), fb.layers.Dense(1)], backend=backend, seed=0
    )
    model.compile(fb.optimizers.Adam(0.01), "mse")
    naive = float(np.mean((X[cut:, -1] - y[cut:]) ** 2))  # "tomorrow = today"
    print(f"\nsine forecasting, LSTM(32) -> Dense(1), Adam(0.01), batch 64, T={T}: next value")
    start = time.perf_counter()
    model.fit(X[:cut], y[:cut], epochs=epochs, batch_size=64, verbose=2)
    took = time.perf_counter() - start
    mse = model.evaluate(X[cut:], y[cut:])
    print(
        f"  test MSE {mse:.5f} (repeating the last sample: {naive:.5f}; the target is < 0.005) "
        f"({took:.2f} s for {epochs} epochs)"
    )
    return mse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train XOR, then scikit-learn's digits (or 'demo rnn': sine forecasting)"
    )
    demo.add_argument("task", nargs="?", default="dense", choices=["dense", "rnn"])
    demo.add_argument("--backend", default="cython", choices=fb.backends.available())
    demo.add_argument("--epochs", type=int, help="digits (default 30) or rnn (15) epochs")
    bench = sub.add_parser("bench", help="compare training-step times with installed peers")
    bench.add_argument("--workloads", help="default W1,W2,W3,W3D,W4 (cpu), W3,W7,W8 (cuda)")
    bench.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cuda: vs PyTorch on the GPU"
    )
    bench.add_argument("--peers", default="torch,jax,numpy,sklearn,keras")
    bench.add_argument("--rounds", type=int, default=7)
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument("--plot", help="draw the comparison to this PNG (needs matplotlib)")
    prof = sub.add_parser("profile", help="per-layer, per-kernel time of a workload's steps")
    prof.add_argument("--workload", default="W3", choices=ALL_WORKLOADS)
    prof.add_argument("--steps", type=int, default=20)
    prof.add_argument("--backend", default="cython", choices=fb.backends.available())
    args = parser.parse_args(argv)
    if args.command == "demo" and args.task == "rnn":
        demo_rnn(args.epochs or 15, backend=args.backend)
    elif args.command == "demo":
        demo_xor(backend=args.backend)
        demo_digits(args.epochs or 30, backend=args.backend)
    elif args.command == "bench":
        from .benchmark import run

        default = "W3,W7,W8" if args.device == "cuda" else "W1,W2,W3,W3D,W4"
        wls = [w.strip().upper() for w in (args.workloads or default).split(",") if w.strip()]
        unknown = set(wls) - set(ALL_WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads {sorted(unknown)}; choose from {ALL_WORKLOADS}")
        if args.device == "cuda":
            from .benchmark_cuda import run as run_cuda

            run_cuda(wls, args.rounds, args.json)
        else:
            run(wls, [p.strip() for p in args.peers.split(",")], args.rounds, args.json, args.plot)
    elif args.command == "profile":
        from .profiler import profile_workload

        print(profile_workload(args.workload, args.steps, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
