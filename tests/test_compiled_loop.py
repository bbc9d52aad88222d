"""The compiled training loop (Plan, train_epoch, train_step) equals the layer-by-layer path."""

import numpy as np
import pytest
from conftest import COMPILED, loss_data

import fastbp as fb

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend")

CASES = [
    ("sparse_categorical_crossentropy", "softmax", lambda: fb.optimizers.Adam(0.01)),
    ("categorical_crossentropy", "softmax", lambda: fb.optimizers.AdamW(0.01, clipnorm=0.5)),
    ("binary_crossentropy", "sigmoid", lambda: fb.optimizers.RMSprop(0.01, momentum=0.5)),
    (
        "mse",
        "linear",
        lambda: fb.optimizers.SGD(0.05, momentum=0.9, nesterov=True, global_clipnorm=1.0),
    ),
    ("mse", "sigmoid", lambda: fb.optimizers.Adagrad(0.05, clipvalue=0.5)),
]


def _data(loss, rng):
    return loss_data(loss, rng, n=37, k=5, out=3)


def _model(out_act, make_opt, loss, dtype, compiled):
    model = fb.Sequential(
        [
            fb.layers.Dense(
                6, "tanh", input_dim=5, kernel_regularizer=fb.regularizers.L1L2(1e-3, 1e-2)
            ),
            fb.layers.Dense(4, "relu", use_bias=False),
            fb.layers.Dense(3, out_act),
        ],
        dtype=dtype,
        seed=4,
    )
    model.use_compiled_loop = compiled
    model.compile(make_opt(), loss, ["accuracy"])
    return model


@pytest.fixture(params=["whole", "by batch"])
def gather(request):
    """Shuffled compiled epochs gathered whole before their steps, or batch by batch."""
    from fastbp import _ckernels

    old = _ckernels._set_whole_epoch_bytes(1 << 22 if request.param == "whole" else 0)
    yield request.param
    _ckernels._set_whole_epoch_bytes(old)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,out_act,make_opt", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch_size,shuffle", [(8, True), (8, False), (None, True), (1, True)])
def test_fit_identical_to_layer_by_layer(
    dtype, loss, out_act, make_opt, batch_size, shuffle, gather
):
    X, y = _data(loss, np.random.default_rng(0))
    runs = []
    for compiled in (True, False):
        model = _model(out_act, make_opt, loss, dtype, compiled)
        model.layers[1].trainable = False
        h = model.fit(X, y, batch_size=batch_size, epochs=3, shuffle=shuffle, verbose=0)
        model.layers[1].trainable = True
        model.train_on_batch(X[:5], y[:5])
        runs.append((model.get_weights(), h.history, model.optimizer.iterations))
    (wa, ha, ta), (wb, hb, tb) = runs
    for a, b in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ta == tb and ha.keys() == hb.keys()
    for k in ha:  # the compiled sum of batch losses may be contracted to FMAs: last-bit noise
        np.testing.assert_allclose(ha[k], hb[k], rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size", [10, 1, None])
def test_plain_sgd_fused_into_backward_identical(dtype, batch_size):
    # plain SGD updates each layer inside the compiled backward pass, fused into dW's product
    # where the small-GEMM kernel computes it (40->30 and 30->20 here; 20->3 at batch 1 is a
    # plain-loop product, updated after it): the same weights as the layer-by-layer path
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((53, 40)), rng.standard_normal((53, 3))
    runs = []
    for compiled in (True, False):
        model = fb.Sequential(
            [
                fb.layers.Dense(
                    30, "sigmoid", input_dim=40, kernel_regularizer=fb.regularizers.L2(0.01)
                ),
                fb.layers.Dense(20, "tanh"),
                fb.layers.Dense(3),
            ],
            dtype=dtype,
            seed=5,
        )
        model.use_compiled_loop = compiled
        model.compile(fb.optimizers.SGD(0.05), "mse")
        model.layers[1].trainable = False
        h = model.fit(X, y, batch_size=batch_size, epochs=2, verbose=0)
        if compiled:
            assert model.executor.plan().sgd_fusable
        model.layers[1].trainable = True
        model.train_on_batch(X[:7], y[:7])
        runs.append((model.get_weights(), h.history["loss"]))
    (wa, ha), (wb, hb) = runs
    for a, b in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ha, hb, rtol=1e-14)


def test_compiled_loop_is_used_and_python_path_can_be_forced():
    X, y = _data("mse", np.random.default_rng(1))
    model = _model("linear", lambda: fb.optimizers.SGD(0.1), "mse", "float32", True)
    model.fit(X, y, epochs=1, verbose=0)
    assert model.executor.plan() is not None
    model.use_compiled_loop = False
    assert model.executor.plan() is None
    assert fb.Sequential([fb.layers.Dense(2, input_dim=2)], backend="numpy").executor.plan() is None


def _both_paths_after(change, seed):
    """Fit, apply ``change(model)``, fit again: compiled and layer-by-layer must agree."""
    X, y = _data("mse", np.random.default_rng(seed))
    runs = []
    for compiled in (True, False):
        model = _model("linear", lambda: fb.optimizers.SGD(0.1), "mse", "float64", compiled)
        model.fit(X, y, epochs=1, verbose=0)
        change(model)
        model.fit(X, y, epochs=1, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_plan_rebuilt_when_learning_rate_changes():
    # the plan reads the optimizer's hyper vector in place
    _both_paths_after(lambda m: setattr(m.optimizer, "learning_rate", 0.5), seed=2)


def _plan_args(dtype=np.float64, cap=4):
    W = np.zeros((3, 2), dtype)
    layer = (
        W,
        np.zeros(2, dtype),
        np.zeros((cap, 2), dtype),
        np.zeros((cap, 2), dtype),
        np.zeros((3, 2), dtype),
        np.zeros(2, dtype),
        0,
        0.0,
    )
    return dict(
        layers=[layer],
        params=np.zeros(8, dtype),
        grads=np.zeros(8, dtype),
        state=np.zeros((2, 8), dtype),
        hyper=np.zeros(len(fb.optimizers.HYPER)),
        segments=np.array([[0, 8]]),
        seg_reg=np.zeros((1, 2)),
        reg_segments=np.zeros((0, 2), np.int64),
        reg_coef=np.zeros((0, 2)),
        opt_kind=0,
        loss_kind=0,
        fused=False,
    )


def test_plan_and_epoch_validate_their_arrays():
    from fastbp._ckernels import Plan, train_epoch

    plan = Plan(**_plan_args())
    with pytest.raises(ValueError, match=r"X must have shape \(5, 3\)"):
        train_epoch(plan, np.zeros((5, 4)), np.zeros((5, 2)), None, None, 2, 0, False)
    with pytest.raises(ValueError, match="X must have dtype float64"):
        train_epoch(plan, np.zeros((5, 3), np.float32), np.zeros((5, 2)), None, None, 2, 0, False)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 4\]"):
        train_epoch(plan, np.zeros((5, 3)), np.zeros((5, 2)), None, None, 5, 0, False)
    with pytest.raises(ValueError, match="order must hold row indices"):
        train_epoch(plan, np.zeros((5, 3)), np.zeros((5, 2)), None, np.arange(1, 6), 2, 0, False)
    with pytest.raises(ValueError, match="order must hold row indices"):
        train_epoch(plan, np.zeros((5, 3)), np.zeros((5, 2)), None, np.arange(-1, 4), 2, 0, False)
    with pytest.raises(ValueError, match="labels must be None"):
        train_epoch(
            plan, np.zeros((5, 3)), np.zeros((5, 2)), np.zeros(5, np.int64), None, 2, 0, False
        )
    for change, pattern in [
        (dict(segments=np.array([[0, 9]])), "segments must lie within"),
        (dict(state=np.zeros((1, 8))), r"state must have shape \(2, 8\)"),
        (dict(hyper=np.zeros(3)), r"hyper must have shape \(12,\)"),
        (dict(layers=[]), "at least one layer"),
        (dict(params=np.zeros(8, np.int32)), "float32 or float64"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            Plan(**(_plan_args() | change))
    bad = _plan_args()
    bad["layers"][0] = (
        (np.zeros((3, 2)),) + bad["layers"][0][1:3] + (np.zeros((3, 2)),) + bad["layers"][0][4:]
    )
    with pytest.raises(ValueError, match=r"layer 0 dA must have shape \(4, 2\)"):
        Plan(**bad)


def test_all_finite():
    from fastbp._ckernels import all_finite

    x = np.ones((3, 4), np.float32)
    assert all_finite(x)
    for v in (np.nan, np.inf, -np.inf):
        x[2, 3] = v
        assert not all_finite(x)


def test_plan_follows_regularizer_changes():
    # regularizers are read at the next fit: the plan's segment arrays must follow
    _both_paths_after(
        lambda m: setattr(m.layers[1], "kernel_regularizer", fb.regularizers.L2(0.5)), seed=3
    )


def test_shuffled_order_compiled_and_python_agree(monkeypatch):
    from fastbp._ckernels import fisher_yates

    import fastbp.executors as fm

    for n in (0, 1, 2, 7, 1437):
        compiled = fm.shuffled_order(np.random.default_rng(n), n)
        monkeypatch.setattr(fm, "_fisher_yates", None)
        python = fm.shuffled_order(np.random.default_rng(n), n)
        monkeypatch.undo()
        assert compiled.dtype == np.int64 and sorted(compiled.tolist()) == list(range(n))
        np.testing.assert_array_equal(compiled, python)
    # draws just below 1 may round u·(i+1) up to i+1: clamped, still a permutation
    assert sorted(fisher_yates(np.full(5, 1 - 2**-53)).tolist()) == list(range(5))
    # and the orders are shuffled: not the identity for a long one
    assert not np.array_equal(fm.shuffled_order(np.random.default_rng(0), 100), np.arange(100))


@pytest.mark.parametrize("shuffle", [True, False])
def test_runs_of_epochs_in_one_call_identical_to_epoch_by_epoch(monkeypatch, shuffle):
    """Without callbacks a fit runs several epochs per compiled call (train_epochs), with the
    same shuffles; a callback that looks between epochs makes it go one epoch at a time."""
    import fastbp.executors as fm

    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(1))
    monkeypatch.setattr(fm, "DRAWS_PER_CALL", 2 * len(X))  # calls of 2, 2 and 1 epochs
    calls, orig = [], fm.Compiled.epoch
    monkeypatch.setattr(fm.Compiled, "epoch", lambda self, *a: calls.append(1) or orig(self, *a))
    runs = []
    for cbs in (None, [fb.callbacks.Callback()]):
        model = _model("softmax", lambda: fb.optimizers.Adam(0.01), CASES[0][0], "float32", True)
        h = model.fit(X, y, batch_size=8, epochs=5, shuffle=shuffle, verbose=0, callbacks=cbs)
        runs.append((model.get_weights(), h.history, h.epoch, model.optimizer.iterations))
    assert len(calls) == 5  # only the fit with a callback went epoch by epoch
    (wa, ha, ea, ta), (wb, hb, eb, tb) = runs
    for a, b in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ha == hb and ea == eb == list(range(5)) and ta == tb == 25


def test_train_epochs_validates_its_draws():
    from fastbp._ckernels import Plan, fisher_yates, train_epochs

    plan = Plan(**_plan_args())
    X, Y = np.zeros((5, 3)), np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"draws must have shape \(2, 5\)"):
        train_epochs(plan, X, Y, None, np.zeros((2, 4)), 2, 2, 0, False)
    for bad in (1.0, -0.1, np.nan):
        u = np.zeros((2, 5))
        u[1, 3] = bad
        with pytest.raises(ValueError, match=r"draws must lie in \[0, 1\)"):
            train_epochs(plan, X, Y, None, u, 2, 2, 0, False)
        with pytest.raises(ValueError, match=r"u must hold numbers in \[0, 1\)"):
            fisher_yates(u[1])
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_epochs(plan, X, Y, None, None, 0, 2, 0, False)
    totals, corrects, t = train_epochs(plan, X, Y, None, None, 3, 2, 4, False)
    assert totals.shape == corrects.shape == (3,) and t == 4 + 3 * 3


# -- whole epochs on the two-thread team (src_c/_train.pxi, _team.h) ---------------------------


def _team_model(out_act, make_opt, loss, dtype, narrow, l1=1e-4):
    # Σ 64·n_in·n_out >= 2^22 (the team's size); 192 and 100 units in two chunks of columns
    # (48/52 for 100); a 24-unit layer (narrow) is one chunk, as is a softmax output
    hidden = [fb.layers.Dense(24 if narrow else 100, "relu", use_bias=False)]
    model = fb.Sequential(
        [
            fb.layers.Dense(
                192, "tanh", input_dim=320, kernel_regularizer=fb.regularizers.L1L2(l1, 1e-3)
            ),
            *hidden,
            fb.layers.Dense(3, out_act),
        ],
        dtype=dtype,
        seed=4,
    )
    model.compile(make_opt(), loss, ["accuracy"])
    return model


# The team and the serial loop of a team-shaped epoch compute the same numbers (every product
# in the same kernel, each element's sums in the same order): equal bit for bit
TEAM_CASES = [(d, c) for d in ("float64", "float32") for c in CASES]


@pytest.mark.parametrize("dtype,case", TEAM_CASES, ids=[f"{d}-{c[0]}" for d, c in TEAM_CASES])
@pytest.mark.parametrize("shuffle,narrow", [(True, False), (False, True)])
def test_team_epochs_match_serial_epochs(dtype, case, shuffle, narrow, team):
    loss, out_act, make_opt = case
    from fastbp import _ckernels

    epochs = 2
    X, y = loss_data(loss, np.random.default_rng(0), n=150, k=320, out=3)
    X = X.astype(dtype) / 4
    runs = []
    for threads in (2, 1):
        _ckernels.set_team_threads(threads)
        model = _team_model(out_act, make_opt, loss, dtype, narrow)
        model.layers[1].trainable = False
        before = team()
        h = model.fit(X, y, batch_size=64, epochs=epochs, shuffle=shuffle, verbose=0)
        assert team() - before == (epochs if threads == 2 else 0)  # one region per epoch
        runs.append((model.get_weights(), h.history))
    (wa, ha), (wb, hb) = runs
    for a, b in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ha == hb


@pytest.mark.parametrize("late", [0.002, 0.05])
def test_team_epochs_with_a_late_helper(late, team):
    """A helper that starts late (its core taken): the caller takes the chunks it does not
    claim, all of them where it comes after the epoch's end (it then skips every phase); the
    same numbers as one thread."""
    from fastbp import _ckernels

    loss = "sparse_categorical_crossentropy"
    X, y = loss_data(loss, np.random.default_rng(0), n=150, k=320, out=3)
    runs = []
    for threads, late_s in ((2, late), (1, 0.0)):
        _ckernels.set_team_threads(threads)
        old = _ckernels._set_team_helper_late(late_s)
        try:
            model = _team_model("softmax", lambda: fb.optimizers.Adam(0.01), loss, "float64", False)
            before = team()
            model.fit(X / 4, y, batch_size=64, epochs=2, verbose=0)
            assert team() - before == (2 if threads == 2 else 0)
        finally:
            _ckernels._set_team_helper_late(old)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_team_epochs_come_back_after_a_refused_epoch(team):
    """An epoch the team refused (BLAS ran within the quiet time) runs serially without BLAS:
    if its own products (64x320 by 320x192) called BLAS, each call would refuse the next epoch
    too, and a fit that began right after a large predict would stay serial to its end."""
    import time

    from fastbp import _ckernels

    X, y = loss_data("mse", np.random.default_rng(0), n=64, k=320, out=3)
    model = _team_model("linear", lambda: fb.optimizers.Adam(), "mse", "float64", False)
    _ckernels._set_team_quiet(0.05)
    a = np.ones((300, 300))
    fb.backends.get("cython").dense_forward(a, a, None, 0, 0.0, np.empty((300, 300)))  # BLAS
    model.fit(X, y, batch_size=64, epochs=1, verbose=0)
    assert team() == 0  # refused: within 0.05 s of the BLAS call
    end = time.perf_counter() + 2.0
    while team() == 0 and time.perf_counter() < end:  # epoch after epoch, no pause
        model.fit(X, y, batch_size=64, epochs=1, verbose=0)
    assert team() > 0


def test_team_epochs_not_for_small_or_huge_models_or_fused_sgd(team):
    X, y = loss_data("mse", np.random.default_rng(0), n=64, k=320, out=3)
    model = _team_model("linear", lambda: fb.optimizers.SGD(0.01), "mse", "float64", False, 0.0)
    model.fit(X, y, batch_size=64, epochs=1, verbose=0)  # plain SGD: fused into the backward
    assert team() == 0
    model = _team_model("linear", lambda: fb.optimizers.Adam(), "mse", "float64", False)
    model.fit(X[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # 8 rows: too small a step
    assert team() == 0
    model.fit(X, y, batch_size=64, epochs=1, verbose=0)
    assert team() == 1
    huge = fb.Sequential([fb.layers.Dense(1000, input_dim=1100), fb.layers.Dense(3)])
    huge.compile(fb.optimizers.Adam(), "mse")  # 64x1100x1000 > 2^26: BLAS's packed GEMM
    huge.fit(np.ones((64, 1100)), np.ones((64, 3)), batch_size=64, epochs=1, verbose=0)
    assert team() == 1


class _Terminal:
    """A stream that says it is a terminal: ProgressBar draws its live bar there."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass


@pytest.mark.parametrize("shuffle", [True, False])
def test_progress_bar_stays_on_the_compiled_path(monkeypatch, shuffle):
    """A live progress bar sees chunks of compiled batches (no step layer by layer) and the
    weights equal a silent fit's; one line per epoch needs no batch hook at all."""
    import fastbp.executors as ex

    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(2))
    stepped = []
    orig = ex.LayerByLayer.train_step
    monkeypatch.setattr(
        ex.LayerByLayer, "train_step", lambda self, *a: stepped.append(1) or orig(self, *a)
    )
    runs = []
    for bar in (None, fb.callbacks.ProgressBar(1, _Terminal()), fb.callbacks.ProgressBar(2)):
        model = _model("softmax", lambda: fb.optimizers.Adam(0.01), CASES[0][0], "float64", True)
        cbs = [bar] if bar is not None else None
        h = model.fit(X, y, batch_size=4, epochs=3, shuffle=shuffle, verbose=0, callbacks=cbs)
        runs.append((model.get_weights(), h.history, model.optimizer.iterations))
    assert not stepped
    for w, hist, t in runs[1:]:
        for a, b in zip(runs[0][0], w, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(hist["loss"], runs[0][1]["loss"], rtol=1e-13)
        assert hist["accuracy"] == runs[0][1]["accuracy"] and t == runs[0][2]


def test_live_bar_draws_every_chunk():
    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(2))
    term = _Terminal()
    bar = fb.callbacks.ProgressBar(1, term)
    bar.batch_period = 0.0  # a redraw after every batch
    model = _model("softmax", lambda: fb.optimizers.Adam(0.01), CASES[0][0], "float32", True)
    model.fit(X, y, batch_size=4, epochs=1, verbose=0, callbacks=[bar])
    drawn = "".join(term.text)
    assert "10/10 [" in drawn and "Epoch 1/1" in drawn  # 37 rows in batches of 4: 10 steps


POST_STACKS = {  # Dense layers followed by BatchNormalization and Dropout
    "after hidden": lambda: [
        fb.layers.Dense(6, "tanh", input_dim=5),
        fb.layers.Dropout(0.3),
        fb.layers.Dense(3, "softmax"),
    ],  # fmt: skip
    "two": lambda: [
        fb.layers.Dense(6, "relu", input_dim=5),
        fb.layers.Dropout(0.5, seed=3),
        fb.layers.Dense(4, "sigmoid"),
        fb.layers.Dropout(0.2),
        fb.layers.Dense(3, "softmax"),
    ],  # fmt: skip
    "rate 0": lambda: [
        fb.layers.Dense(6, "relu", input_dim=5),
        fb.layers.Dropout(0.0),
        fb.layers.Dense(3, "softmax"),
    ],
    "batchnorm": lambda: [
        fb.layers.Dense(6, "relu", input_dim=5),
        fb.layers.BatchNormalization(),
        fb.layers.Dense(3, "softmax"),
    ],
    "batchnorm, dropout": lambda: [
        fb.layers.Dense(6, "tanh", input_dim=5),
        fb.layers.BatchNormalization(momentum=0.5),
        fb.layers.Dropout(0.4),
        fb.layers.Dense(4, "relu"),
        fb.layers.BatchNormalization(center=False, scale=False),
        fb.layers.Dense(3, "softmax"),
    ],
    "gelu (keeps Z)": lambda: [
        fb.layers.Dense(6, "gelu", input_dim=5),
        fb.layers.Dropout(0.3),
        fb.layers.Dense(4, "gelu"),
        fb.layers.Dense(3, "softmax"),
    ],
    "frozen batchnorm": lambda: [
        fb.layers.Dense(6, "relu", input_dim=5),
        fb.layers.BatchNormalization(trainable=False),
        fb.layers.Dense(3, "softmax"),
    ],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stack", sorted(POST_STACKS))
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_dropout_and_batchnorm_in_the_compiled_loop_identical(dtype, stack, opt):
    """BatchNormalization and Dropout after a Dense layer run inside the compiled loop with the
    layer-by-layer path's kernels and masks (the same counter-based hash, step = iterations
    before the step): the same weights and moving statistics."""
    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(5))
    runs = []
    for compiled in (True, False):
        model = fb.Sequential(POST_STACKS[stack](), dtype=dtype, seed=7)
        model.use_compiled_loop = compiled
        model.compile(opt, "sparse_categorical_crossentropy", ["accuracy"])
        h = model.fit(X, y, batch_size=8, epochs=3, verbose=0)
        model.train_on_batch(X[:5], y[:5])
        assert (model.executor.plan() is not None) == compiled
        runs.append((model.get_weights(), h.history))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(runs[0][1]["loss"], runs[1][1]["loss"], rtol=1e-14)


L = fb.layers
SEQ_STACKS = {  # (layers, target kind): recurrent layers, Dense on sequences, and the rest
    "rnn": (lambda: [L.SimpleRNN(5), L.Dense(3, "softmax")], "labels"),
    "relu rnn, bptt": (
        lambda: [L.SimpleRNN(5, "relu", bptt_steps=2, use_bias=False), L.Dense(3, "softmax")],
        "labels",
    ),
    "lstm sequences, dense per step": (
        lambda: [L.LSTM(5, return_sequences=True), L.Dense(2, "sigmoid")],
        "step bits",
    ),
    "gru, dropout, lstm, batchnorm": (
        lambda: [
            L.GRU(5, return_sequences=True, bptt_steps=2),
            L.Dropout(0.3),
            L.LSTM(4, kernel_regularizer=fb.regularizers.L1L2(1e-3, 1e-2)),
            L.BatchNormalization(),
            L.Dense(3, "softmax"),
        ],
        "labels",
    ),
    "dense per step, batchnorm, rnn sequences": (
        lambda: [
            L.Dense(5, "relu"),
            L.BatchNormalization(),
            L.SimpleRNN(3, activation="tanh", return_sequences=True),
            L.Dense(3, "softmax"),
        ],
        "step labels",
    ),
    "batchnorm on the inputs, frozen gru": (
        lambda: [L.BatchNormalization(), L.GRU(4, trainable=False), L.Dense(2, "linear")],
        "values",
    ),
}
FLAT_STACKS = {  # BatchNormalization and Dropout on the inputs, Dropout after the last layer
    "batchnorm first": lambda: [L.BatchNormalization(), L.Dense(4, "relu"), L.Dense(3)],
    "dropout first": lambda: [L.Dropout(0.3), L.Dense(4, "relu"), L.Dense(3)],
    "batchnorm, dropout first": lambda: [
        L.BatchNormalization(),
        L.Dropout(0.3),
        L.Dense(4, "relu"),
        L.Dropout(0.2),
        L.Dense(3),
    ],
    "frozen batchnorm first, dropout last": lambda: [
        L.BatchNormalization(trainable=False),
        L.Dense(4, "relu"),
        L.Dense(3),
        L.Dropout(0.5),
    ],
}


def _seq_data(kind, rng, n=37, T=6, F=4):
    X = rng.normal(size=(n, T, F))
    y = {
        "labels": lambda: rng.integers(0, 3, n),
        "step labels": lambda: rng.integers(0, 3, (n, T)),
        "step bits": lambda: (rng.random((n, T, 2)) > 0.5).astype(float),
        "values": lambda: rng.normal(size=(n, 2)),
    }[kind]()
    loss = {"labels": "sparse_categorical_crossentropy", "step labels": "sparse_categorical_"
            "crossentropy", "step bits": "binary_crossentropy", "values": "mse"}[kind]  # fmt: skip
    return X, y, loss


def _both_paths(make_layers, X, y, loss, dtype, opt):
    """fit (with validation), train_on_batch, evaluate and predict, compiled and layer by
    layer: [(weights, history, evaluate, predict)] in that order."""
    runs = []
    for compiled in (True, False):
        model = fb.Sequential(make_layers(), dtype=dtype, seed=3)
        model.use_compiled_loop = compiled
        model.compile(opt(), loss, ["accuracy"])
        h = model.fit(X, y, batch_size=8, epochs=2, verbose=0, validation_split=0.2)
        model.train_on_batch(X[:5], y[:5])
        ev = model.evaluate(X, y, batch_size=7)
        pred = model.predict(X, batch_size=6)
        assert (model.executor.plan() is not None) == compiled
        runs.append((model.get_weights(), h.history, ev, pred))
    return runs


def _assert_same(runs):
    """Bit for bit, except the loss sums (the compiled loop's Σ loss·rows may round through
    an FMA where Python rounds twice: 1 ulp, hence rtol 1e-14)."""
    (w0, h0, e0, p0), (w1, h1, e1, p1) = runs
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_allclose(e0, e1, rtol=1e-14)
    assert h0.keys() == h1.keys()
    for k in h0:
        np.testing.assert_allclose(h0[k], h1[k], rtol=1e-14)


OPTIMIZERS = {
    "adam": lambda: fb.optimizers.Adam(0.01),
    "sgd nesterov clipnorm": lambda: fb.optimizers.SGD(
        0.05, momentum=0.9, nesterov=True, clipnorm=0.5
    ),  # fmt: skip
    "rmsprop clipvalue": lambda: fb.optimizers.RMSprop(0.01, clipvalue=0.1),
    "adamw global clip": lambda: fb.optimizers.AdamW(0.01, global_clipnorm=1.0),
    "adagrad": lambda: fb.optimizers.Adagrad(0.05),
    "plain sgd": lambda: fb.optimizers.SGD(0.1),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stack", sorted(SEQ_STACKS))
def test_recurrent_models_in_the_compiled_loop_identical(dtype, stack):
    """Recurrent layers (whole sequences or the last step, truncated BPTT, frozen), Dense on
    sequences and the layers after them run inside the compiled loop with the same kernels as
    layer by layer: the same weights, predictions and (to 1 ulp) losses."""
    make_layers, kind = SEQ_STACKS[stack]
    X, y, loss = _seq_data(kind, np.random.default_rng(1))
    _assert_same(_both_paths(make_layers, X, y, loss, dtype, OPTIMIZERS["adam"]))


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_recurrent_compiled_loop_with_every_optimizer(opt):
    make_layers, kind = SEQ_STACKS["gru, dropout, lstm, batchnorm"]
    X, y, loss = _seq_data(kind, np.random.default_rng(2))
    _assert_same(_both_paths(make_layers, X, y, loss, "float64", OPTIMIZERS[opt]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stack", sorted(FLAT_STACKS))
def test_layers_on_the_inputs_and_after_the_last_in_the_compiled_loop(dtype, stack):
    X, y = _data("mse", np.random.default_rng(6))
    _assert_same(_both_paths(FLAT_STACKS[stack], X, y, "mse", dtype, OPTIMIZERS["adam"]))


def test_plan_refuses_bad_recurrent_specs():
    model = fb.Sequential(SEQ_STACKS["rnn"][0](), dtype="float64", seed=0)
    X, y, loss = _seq_data("labels", np.random.default_rng(0))
    model.compile("adam", loss)
    model.fit(X, y, epochs=1, verbose=0)
    plan = model.executor.plan()
    specs = list(model.executor.layer_specs(model.layers))
    store, opt = model.store, model.optimizer
    args = (store.params, store.grads, opt.state, opt._hyper, store.seg, store.seg_reg,
            store.reg_seg, store.reg_coef, opt.kind, model.loss_id, model.fused_loss)  # fmt: skip
    cells = specs[3]
    bad = [(c[0],) + c[1:5] + (c[5][:2],) if c else c for c in cells]  # a workspace missing
    with pytest.raises(ValueError, match="workspaces"):
        model.backend.Plan(specs[0], *args, None, None, bad, 6)
    bad = [("conv",) + c[1:] if c else c for c in cells]
    with pytest.raises(ValueError, match="cell must be"):
        model.backend.Plan(specs[0], *args, None, None, bad, 6)
    with pytest.raises(ValueError, match="workspace Xt"):  # sized for 6 steps, not 7
        model.backend.Plan(specs[0], *args, None, None, cells, 7)
    with pytest.raises(ValueError, match="labels"):
        model.backend.infer(plan, X.reshape(37, -1), None, np.zeros(3, np.int64), None, 8, False)
    with pytest.raises(ValueError, match="out must have shape"):
        model.backend.infer(plan, X.reshape(37, -1), None, None, np.zeros((37, 2)), 8, False)


# Every layer type either runs in the compiled loop or is listed here as running layer by layer:
# a new layer type must be put in one of the two, so that it cannot fall off the fast path
# unnoticed.
COMPILED_LAYERS = {"Dense", "Dropout", "BatchNormalization", "SimpleRNN", "LSTM", "GRU"}
LAYER_BY_LAYER = set()


def test_every_layer_type_is_placed():
    assert set(fb.layers.LAYERS) == COMPILED_LAYERS | LAYER_BY_LAYER
    assert not COMPILED_LAYERS & LAYER_BY_LAYER


@pytest.mark.parametrize("name", sorted(COMPILED_LAYERS))
def test_compiled_layers_get_a_plan(name):
    """A model of Dense layers with the layer type in the middle runs in the compiled loop."""
    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(5))
    middle = {
        "Dense": lambda: fb.layers.Dense(4, "relu"),
        "Dropout": lambda: fb.layers.Dropout(0.1),
        "BatchNormalization": lambda: fb.layers.BatchNormalization(),
        "SimpleRNN": lambda: fb.layers.SimpleRNN(4, return_sequences=True),
        "LSTM": lambda: fb.layers.LSTM(4, return_sequences=True),
        "GRU": lambda: fb.layers.GRU(4, return_sequences=True),
    }
    X = np.repeat(X[:, None, :], 3, axis=1)  # sequences of 3 steps
    y = np.repeat(y[:, None], 3, axis=1)
    model = fb.Sequential(
        [fb.layers.Dense(6, "relu"), middle[name](), fb.layers.Dense(3, "softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(X, y, epochs=1, verbose=0)
    assert model.executor.plan() is not None


def test_layers_out_of_order_run_layer_by_layer():
    """A Dropout before a BatchNormalization (the plan takes them after a layer in the other
    order) runs layer by layer, with the same results as forced."""
    X, y = _data("mse", np.random.default_rng(5))
    for layers in (
        [fb.layers.Dropout(0.2), fb.layers.BatchNormalization(), fb.layers.Dense(3)],
        [fb.layers.Dense(3, input_dim=5), fb.layers.Dropout(0.2), fb.layers.BatchNormalization()],
    ):
        model = fb.Sequential(layers)
        model.compile("sgd", "mse")
        model.fit(X, y, epochs=1, verbose=0)
        assert model.executor.plan() is None


def test_epoch_callbacks_and_validation_stay_compiled(monkeypatch):
    """EarlyStopping, ModelCheckpoint, LearningRateScheduler and a validation pass act between
    epochs: the epochs themselves run compiled, no step layer by layer."""
    import fastbp.executors as ex

    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(2))
    stepped = []
    orig = ex.LayerByLayer.train_step
    monkeypatch.setattr(
        ex.LayerByLayer, "train_step", lambda self, *a: stepped.append(1) or orig(self, *a)
    )
    model = _model("softmax", lambda: fb.optimizers.Adam(0.01), CASES[0][0], "float32", True)
    cbs = [
        fb.callbacks.EarlyStopping(patience=2),
        fb.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
    ]
    h = model.fit(X, y, batch_size=4, epochs=4, verbose=0, callbacks=cbs, validation_split=0.2)
    assert not stepped and len(h.history["val_loss"]) == len(h.history["loss"]) >= 3


def test_a_changed_dropout_rate_or_batchnorm_setting_reaches_the_plan():
    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(6))
    runs = []
    for compiled in (True, False):
        model = fb.Sequential(POST_STACKS["batchnorm, dropout"](), dtype="float64", seed=2)
        model.use_compiled_loop = compiled
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(X, y, batch_size=8, epochs=1, verbose=0)
        model.layers[2].rate = 0.7
        model.layers[1].momentum, model.layers[1].epsilon = 0.1, 0.5
        model.fit(X, y, batch_size=8, epochs=1, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_inputs_train_as_dense_ones(dtype):
    """CSR inputs: the first layer multiplies only the stored numbers; fit (shuffled, with
    validation data), train_on_batch, evaluate and predict give the dense inputs' numbers
    (the same products with the zero terms left out)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    Xs = sp.random(90, 40, density=0.1, format="csr", random_state=1, dtype=np.float64)
    y = rng.integers(0, 3, 90)
    runs = []
    for X in (Xs, Xs.toarray()):
        model = fb.Sequential(
            [L.Dense(8, "relu", input_dim=40), L.Dropout(0.2), L.Dense(3, "softmax")],
            dtype=dtype,
            seed=2,
        )
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        h = model.fit(X, y, batch_size=16, epochs=3, verbose=0, validation_data=(X[:20], y[:20]))
        loss = model.train_on_batch(X[:7], y[:7])
        runs.append((model.get_weights(), h.history, loss, model.evaluate(X, y), model.predict(X)))
    (w0, h0, l0, e0, p0), (w1, h1, l1, e1, p1) = runs
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(p0, p1, **tol)
    np.testing.assert_allclose(e0, e1, **tol)
    np.testing.assert_allclose(l0, l1, **tol)
    for k in h0:
        np.testing.assert_allclose(h0[k], h1[k], **tol)


def test_sparse_inputs_refused_where_not_compiled():
    import scipy.sparse as sp

    Xs = sp.random(10, 4, density=0.5, format="csr", random_state=1)
    y = np.arange(10) % 2
    for layers, backend in (
        ([L.Dense(2, "softmax", input_dim=4)], "numpy"),
        ([L.Dropout(0.1), L.Dense(2, "softmax")], "cython"),
    ):
        model = fb.Sequential(layers, backend=backend)
        model.compile("sgd", "sparse_categorical_crossentropy")
        with pytest.raises(ValueError, match="sparse"):
            model.fit(Xs, y, verbose=0)
    model = fb.Sequential([L.Dense(2, "softmax", input_dim=4)], dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(Xs, y, epochs=1, verbose=0)
    plan = model.executor.plan(sparse=True)
    ip, ix, d = np.array([0, 1], np.int64), np.array([7], np.int64), np.ones(1)
    with pytest.raises(ValueError, match="indices must be column numbers"):
        model.backend.train_epochs_sparse(plan, ip, ix, d, None, np.zeros(1, np.int64), None,
                                          1, 1, 0, False)  # fmt: skip
    with pytest.raises(ValueError, match="indptr must rise"):
        model.backend.infer_sparse(plan, np.array([0, 2], np.int64), ix, d, np.zeros((1, 2)), 1)
    with pytest.raises(ValueError, match="dense inputs"):
        model.backend.infer_sparse(model.executor.plan(), ip, ix, d, np.zeros((1, 2)), 1)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(sp.csr_matrix(np.full((2, 4), np.nan)), y[:2], verbose=0)


def test_loss_grad_is_the_full_gradient_of_its_loss():
    """loss_grad (L-BFGS' evaluation): the gradient left in grads, regularization included,
    is the derivative of the loss it returns (float64 central differences), and the
    parameters are unchanged."""
    X, y = _data("sparse_categorical_crossentropy", np.random.default_rng(3))
    model = fb.Sequential(
        [
            L.Dense(6, "tanh", input_dim=5, kernel_regularizer=fb.regularizers.L1L2(1e-3, 1e-2)),
            L.Dense(3, "softmax"),
        ],
        dtype="float64",
        seed=1,
    )
    model.build()
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.ensure_capacity(len(X))
    plan, be = model.executor.plan(), model.backend
    params, grads = model.store.params, model.store.grads
    p0 = params.copy()
    loss = be.loss_grad(plan, X, None, y.astype(np.int64))
    g = grads.copy()
    np.testing.assert_array_equal(params, p0)
    for i in np.random.default_rng(0).choice(params.size, 12, replace=False):
        values = []
        for h in (1e-6, -1e-6):
            params[i] = p0[i] + h
            values.append(be.loss_grad(plan, X, None, y.astype(np.int64)))
        params[i] = p0[i]
        np.testing.assert_allclose(g[i], (values[0] - values[1]) / 2e-6, rtol=1e-5, atol=1e-8)
    assert np.isfinite(loss)
