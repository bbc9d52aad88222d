"""The same seed, data and thread count train the same weights bit for bit, whatever ran
before or beside the fit: the two-thread team or the serial loop (team busy, BLAS called
within its quiet time, one thread wanted), an uneven last batch, two fits at once."""

import threading

import numpy as np
import pytest

import fastbp as fb

ck = pytest.importorskip("fastbp._ckernels", reason="the team is the compiled backend's")


def _dense(dtype):
    return fb.Sequential(
        [
            fb.layers.Dense(256, activation="relu", input_dim=784),
            fb.layers.Dense(128, activation="relu"),
            fb.layers.Dense(10, activation="softmax"),
        ],
        dtype=dtype,
        seed=0,
    )


def _recurrent(cell, dtype):
    layer = getattr(fb.layers, cell)(96, input_shape=(12, 8))
    return fb.Sequential([layer, fb.layers.Dense(1)], dtype=dtype, seed=0)


def _data(kind, n, dtype):
    rng = np.random.default_rng(1)
    if kind == "dense":
        X = rng.random((n, 784)).astype(dtype)
        X[X < 0.5] = 0  # half zeros, as pixels: the serial loop's sparse kernels would apply
        return X, rng.integers(0, 10, n)
    return rng.standard_normal((n, 12, 8)).astype(dtype), rng.standard_normal((n, 1)).astype(dtype)


def _fit(kind, dtype, n, how, batch_size=64):
    model = _dense(dtype) if kind == "dense" else _recurrent(kind, dtype)
    loss = "sparse_categorical_crossentropy" if kind == "dense" else "mse"
    model.compile(fb.optimizers.Adam(1e-3), loss)
    X, y = _data(kind, n, dtype)
    threads, quiet = ck.team_threads(), ck._set_team_quiet(0.0)
    try:
        if how == "one thread":
            ck.set_team_threads(1)
        elif how == "after BLAS":  # the team refuses: BLAS ran within its quiet time
            ck.set_team_threads(2)
            ck._set_team_quiet(3600.0)
            a = np.ones((200, 200))
            fb.backends.get("cython").dense_forward(a, a, None, 0, 0.0, np.empty((200, 200)))
        else:
            ck.set_team_threads(2)
        before = ck._team_regions()
        h = model.fit(X, y, batch_size=batch_size, epochs=2, verbose=0)
        ran = ck._team_regions() - before
    finally:
        ck.set_team_threads(threads)
        ck._set_team_quiet(quiet)
    return model.get_weights(), h.history["loss"], ran


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "kind,last", [("dense", 0), ("dense", 1), ("dense", 5), ("LSTM", 3), ("GRU", 7)]
)
def test_team_serial_and_refused_fits_are_identical(kind, last, dtype):
    if not ck.HAS_GEMM_ROWS:
        pytest.skip("the team runs only on builds with the small-GEMM kernel (AVX-512)")
    n = 128 + last  # two full batches and a last one of `last` rows
    ref, loss, ran = _fit(kind, dtype, n, "team")
    assert ran > 0  # the reference ran on the team
    for how in ("one thread", "after BLAS"):
        w, lo, ran = _fit(kind, dtype, n, how)
        assert ran == 0, how
        for a, b in zip(ref, w, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=how)
        assert lo == loss, how


def test_two_fits_at_once_match_one_alone():
    """Two threads fit at once: one of them holds the team, the other runs serially (and a
    predict between steps calls BLAS); each gets the weights of a fit alone."""
    ref, _, _ = _fit("dense", "float32", 133, "team")
    results = [None] * 4

    def work(i):
        results[i] = _fit("dense", "float32", 133, "team")[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in results:
        for a, b in zip(ref, w, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blas_thread_count_does_not_change_a_fit(dtype):
    """A model too large for the team multiplies through BLAS, whose threads split rows and
    columns of a product, never its sums: one or two BLAS threads, the same weights."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 512)).astype(dtype)
    y = rng.standard_normal((256, 4)).astype(dtype)
    runs = []
    for limit in (1, 2):
        model = fb.Sequential(
            [fb.layers.Dense(1024, activation="tanh", input_dim=512), fb.layers.Dense(4)],
            dtype=dtype,
            seed=0,
        )
        model.compile(fb.optimizers.SGD(1e-3, momentum=0.9), "mse")
        with threadpool_limits(limits=limit, user_api="blas"):
            model.fit(X, y, batch_size=256, epochs=2, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
