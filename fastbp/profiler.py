"""Per-layer, per-kernel profile of training steps.

``profile`` swaps the model's backend for a proxy that times every kernel call, runs training
steps layer by layer, then puts the model back as it was (weights and optimizer state too).
Outside ``profile`` no timer runs anywhere. Times include each kernel's Python call (~1 µs),
which matters only for tiny layers; the compiled step time is reported beside for comparison.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

from .model import Sequential


def _flops(kernel: str, args: tuple) -> float:
    """Multiply-adds ×2 of the GEMMs inside a kernel call (0 for element-wise kernels)."""
    if kernel == "dense_forward":
        X, W = args[0], args[1]
        return 2.0 * X.shape[0] * W.shape[0] * W.shape[1]
    if kernel == "dense_backward":
        X, W, dX = args[0], args[1], args[8]
        return 2.0 * X.shape[0] * W.shape[0] * W.shape[1] * (1 if dX is None else 2)
    if kernel.split("_")[0] in ("rnn", "lstm", "gru"):
        X, Wx, Wh = args[0], args[1], args[2]  # X (m, T, F) forward, Xt (T, m, F) backward
        steps_rows, (F, g), n = X.shape[0] * X.shape[1], Wx.shape, Wh.shape[0]
        T = X.shape[1] if kernel.endswith("forward") else X.shape[0]
        rows_h = steps_rows // T * (T - 1)  # the recurrence skips h_{-1} = 0
        fwd = 2.0 * (steps_rows * F * g + rows_h * n * g)
        if kernel.endswith("forward"):
            return fwd
        return 2 * fwd + (0.0 if args[-1] is None else 2.0 * steps_rows * F * g)  # dX
    return 0.0


class _TimedBackend:
    """Forwards every kernel call to ``backend`` and records (calls, seconds, FLOPs, each
    call's seconds) per (layer, kernel); ``current`` is the layer whose forward/backward is
    running."""

    def __init__(self, backend):
        self._be = backend
        self.name = backend.name
        self.current = "loss"
        self.records: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0.0, []])

    def __getattr__(self, name):
        fn = getattr(self._be, name)
        if not callable(fn):
            return fn
        # a GPU backend launches asynchronously: wait for each kernel so that it is what's timed
        sync = (
            getattr(self._be, "synchronize", None) if getattr(self._be, "device", False) else None
        )

        def timed(*args):
            t = time.perf_counter()
            out = fn(*args)
            if sync is not None:
                sync()
            owner = "optimizer" if name == "optimizer_step" else self.current
            rec = self.records[(owner, name)]
            secs = time.perf_counter() - t
            rec[0] += 1
            rec[1] += secs
            rec[2] += _flops(name, args)
            rec[3].append(secs)
            return out

        return timed


def _attribute(layer, timed: _TimedBackend) -> None:
    """Make the layer's forward/backward tell ``timed`` whose kernels run (instance attributes,
    deleted afterwards)."""
    for method in ("forward", "backward"):
        original = getattr(type(layer), method)

        def wrapped(*args, _f=original, **kw):
            timed.current = layer.name
            try:
                return _f(layer, *args, **kw)
            finally:
                timed.current = "loss"

        setattr(layer, method, wrapped)


class Profile:
    """Result of ``profile``: ``rows`` (one per layer and kernel), split and ratios.

    ``str(profile)`` is a table; ``to_dict()`` gives plain data (for JSON).
    """

    def __init__(self, rows, steps, step_time, compiled_step_time, layers):
        self.rows, self.steps = rows, steps
        self.step_time, self.compiled_step_time = step_time, compiled_step_time
        self.layers = layers
        total = sum(r["total_s"] for r in rows) or 1.0
        self.split = {
            part: sum(r["total_s"] for r in rows if r["kernel"] in kernels) / total
            for part, kernels in (
                ("forward", {r["kernel"] for r in rows if r["kernel"].endswith("_forward")}),
                ("backward", {r["kernel"] for r in rows if r["kernel"].endswith("_backward")}),
                (
                    "loss",
                    {
                        "loss",
                        "loss_sparse",
                        "count_correct",
                        "count_correct_sparse",
                        "regularization_loss",
                    },
                ),
                ("update", {"optimizer_step"}),
            )
        }

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "step_time_s": self.step_time,
            "compiled_step_time_s": self.compiled_step_time,
            "split": self.split,
            "rows": self.rows,
            "layers": self.layers,
        }

    def __str__(self) -> str:
        head = f"{'layer':<14}{'kernel':<22}{'calls':>7}{'total ms':>10}{'µs/call':>10}"
        head += f"{'GFLOP/s':>9}{'share':>8}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            gf = f"{r['gflops']:.1f}" if r["gflops"] else "-"
            lines.append(
                f"{r['layer']:<14}{r['kernel']:<22}{r['calls']:>7}{r['total_s'] * 1e3:>10.3f}"
                f"{r['per_call_s'] * 1e6:>10.1f}{gf:>9}{r['share'] * 100:>7.1f}%"
            )
        lines.append("-" * len(head))
        lines.append("split: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in self.split.items()))
        for la in self.layers:
            lines.append(
                f"{la['layer']}: backward/forward time {la['time_ratio']:.2f}, "
                f"FLOP ratio {la['flop_ratio']:.2f}"
            )
        line = f"step (layer by layer, profiled): {self.step_time * 1e6:.1f} µs"
        if self.compiled_step_time is not None:
            line += f"; compiled step, no timers: {self.compiled_step_time * 1e6:.1f} µs"
        lines.append(line)
        return "\n".join(lines)

    __repr__ = __str__


def profile(model: Sequential, x, y, steps: int = 20, warmup: int = 2) -> Profile:
    """Time each kernel of ``steps`` training steps on ``(x, y)`` taken as one batch.

    Parameters
    ----------
    model : Sequential
        A compiled model; its weights and optimizer state are restored afterwards.
    x : array (batch, n_features)
    y : array of targets as ``fit`` takes them
    steps : int
        Profiled steps (after ``warmup`` untimed ones).

    Returns
    -------
    Profile
        Per layer and kernel: calls, total time, time per call (mean and median), GFLOP/s,
        share of the step.
    """
    model.require_compiled()
    X, Y = model.prepare(x, y)
    model.ensure_capacity(X.shape[0], X.shape[1:])
    model.store.refresh_segments()
    model.pull()  # (a device model: the host copy is the one restored afterwards)
    params = model.store.params
    saved = (params.copy(), model.optimizer.state.copy(), model.optimizer.iterations)
    real = model.backend
    try:
        compiled = None
        plan = model.executor.plan()
        if plan is not None:  # the same steps without timers, for comparison
            Xf, (Yd, labels) = model.executor.plan_inputs(X), model.executor.plan_targets(Y)
            for _ in range(warmup):
                real.train_step(plan, Xf, Yd, labels, model.optimizer.iterations)
            t = time.perf_counter()
            for _ in range(steps):
                real.train_step(plan, Xf, Yd, labels, model.optimizer.iterations)
            compiled = (time.perf_counter() - t) / steps
        for _ in range(warmup):
            model.executor.train_step(X, Y, bool(model.metrics))
        timed = _TimedBackend(real)
        for layer in model.layers:
            _attribute(layer, timed)
        model.backend = timed
        t = time.perf_counter()
        ex = model.executor  # (chosen anew for the timed backend)
        for _ in range(steps):
            ex.train_step(X, Y, bool(model.metrics))
        step_time = (time.perf_counter() - t) / steps
    finally:
        model.backend = real
        for layer in model.layers:
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("backward", None)
        model.pull()
        params[...], model.optimizer.state[...], model.optimizer.iterations = saved
    total = sum(rec[1] for rec in timed.records.values())
    rows = [
        {
            "layer": layer,
            "kernel": kernel,
            "calls": int(calls),
            "total_s": secs,
            "per_call_s": secs / calls,
            # robust to the other tenants of a shared host (a burst slows a few calls)
            "median_s": statistics.median(each),
            "gflops": flops / secs / 1e9 if flops else 0.0,
            "share": secs / total,
        }
        for (layer, kernel), (calls, secs, flops, each) in timed.records.items()
    ]
    layers = []
    for layer in model.layers:
        recs = {k: v for (name, k), v in timed.records.items() if name == layer.name}
        fwd = [v for k, v in recs.items() if k.endswith("_forward")]
        bwd = [v for k, v in recs.items() if k.endswith("_backward")]
        if fwd and bwd and fwd[0][2] > 0:
            layers.append(
                {
                    "layer": layer.name,
                    "time_ratio": bwd[0][1] / fwd[0][1],
                    "flop_ratio": bwd[0][2] / fwd[0][2],
                }
            )
    return Profile(rows, steps, step_time, compiled, layers)


def profile_workload(wid: str = "W3", steps: int = 20, backend: str = "cython") -> Profile:
    """Profile one of the benchmark workloads (see fastbp.workloads)."""
    from .workloads import build

    model, X, y = build(wid, backend)
    return profile(model, X, y, steps=steps)


__all__ = ["Profile", "profile", "profile_workload"]
