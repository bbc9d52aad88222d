"""Recurrent kernels of the numba.cuda backend (math and layout: ``reference_rnn``).

The sequence loop runs on the host, each step on the device: ONE GEMM per step for the
recurrence (beta = 1 into the step's slice of the input projection, with SimpleRNN's activation in
its epilogue) and one element-wise cell kernel (LSTM / GRU gates); backward, one cell kernel and
one GEMM per step. The input projection of all steps, dWx, dWh and dX are one GEMM each over
T·m rows (dWh over H[0:T], where H[0] = 0). Launches: ~2 per step each way, so short sequences
and small batches are launch-bound on a GPU.
"""

import math
from functools import cache

from numba import cuda

from . import cuda_gemm as G
from .contract import LINEAR
from .cuda_arrays import _act_backward, _check, _fill, _OnDevice
from .cuda_device import FASTMATH, _dact, device_function
from .cuda_launch import cached
from .numba_cpu import _act_ok
from .numba_rnn import _bptt, _dims, _ws


def _sig(x):
    return 1 / (1 + math.exp(-x))


_dsig = device_function(_sig)


@cache
def _kernels(dtype):
    zero, one = dtype(0), dtype(1)

    @cuda.jit
    def time_major(X, Xt, m, T, F, back):
        """Xt[t, i] = X[i, t]; back: X[i, t] = Xt[t, i]."""
        for e in range(cuda.grid(1), m * T * F, cuda.gridsize(1)):
            i = e // (T * F)
            t = (e // F) % T
            f = e % F
            if back:
                X[i, t, f] = Xt[t, i, f]
            else:
                Xt[t, i, f] = X[i, t, f]

    @cuda.jit
    def output(H, Y, m, T, n, seq):
        """Y = H[1:] batch-major (return_sequences) or H[T]."""
        for e in range(cuda.grid(1), m * (T if seq else 1) * n, cuda.gridsize(1)):
            if seq:
                i = e // (T * n)
                t = (e // n) % T
                j = e % n
                Y[i, t * n + j] = H[t + 1, i, j]
            else:
                Y[e // n, e % n] = H[T, e // n, e % n]

    @device_function
    def dy(dY, i, j, t, T, n, seq):
        """∂L/∂h_t from above for (row i, unit j)."""
        if seq:
            return dY[i, t * n + j]
        return dY[i, j] if t == T - 1 else zero

    @cuda.jit(fastmath=FASTMATH)
    def rnn_cell_back(H, dY, dh, dG, t, T, m, n, seq, act, slope):
        """dG[t] = (dY_t + dh) ⊙ act'(h_t)."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i, j = e // n, e % n
            dG[t, i, j] = _dact(H[t + 1, i, j], dy(dY, i, j, t, T, n, seq) + dh[i, j], act, slope)

    @cuda.jit(fastmath=FASTMATH)
    def lstm_cell(G, H, C, t, m, n):
        """Gates [i f g o] of step t from their pre-activations in G[t]; c_t, h_t."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            r, j = e // n, e % n
            i = _dsig(G[t, r, j])
            f = _dsig(G[t, r, n + j])
            g = math.tanh(G[t, r, 2 * n + j])
            o = _dsig(G[t, r, 3 * n + j])
            G[t, r, j], G[t, r, n + j], G[t, r, 2 * n + j], G[t, r, 3 * n + j] = i, f, g, o
            c = f * C[t, r, j] + i * g
            C[t + 1, r, j] = c
            H[t + 1, r, j] = o * math.tanh(c)

    @cuda.jit(fastmath=FASTMATH)
    def lstm_cell_back(G, C, dY, dh, dc, dG, t, T, m, n, seq, cut):
        """dG[t] from dh (= dG[t+1]·Whᵀ) and dc; dc ← dc_t·f (0 at a cut)."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            r, j = e // n, e % n
            i, f = G[t, r, j], G[t, r, n + j]
            g, o = G[t, r, 2 * n + j], G[t, r, 3 * n + j]
            tc = math.tanh(C[t + 1, r, j])
            dht = dy(dY, r, j, t, T, n, seq) + dh[r, j]
            dct = dc[r, j] + dht * o * (one - tc * tc)
            dG[t, r, j] = dct * g * i * (one - i)
            dG[t, r, n + j] = dct * C[t, r, j] * f * (one - f)
            dG[t, r, 2 * n + j] = dct * i * (one - g * g)
            dG[t, r, 3 * n + j] = dht * tc * o * (one - o)
            dc[r, j] = zero if cut else dct * f

    @cuda.jit(fastmath=FASTMATH)
    def gru_cell(G, S, Rh, H, t, m, n):
        """z, r, ĥ of step t from G[t] (input side) and S = h·Wh + b₁ (recurrent side)."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i, j = e // n, e % n
            z = _dsig(G[t, i, j] + S[i, j])
            r = _dsig(G[t, i, n + j] + S[i, n + j])
            hh = math.tanh(G[t, i, 2 * n + j] + r * S[i, 2 * n + j])
            G[t, i, j], G[t, i, n + j], G[t, i, 2 * n + j] = z, r, hh
            Rh[t, i, j] = S[i, 2 * n + j]
            H[t + 1, i, j] = z * H[t, i, j] + (one - z) * hh

    @cuda.jit(fastmath=FASTMATH)
    def gru_cell_back(G, H, Rh, dY, dh, dG, dGh, t, T, m, n, seq, cut):
        """dG[t], dGh[t] from dh; dh ← dh_t·z (the GEMM dGh[t]·Whᵀ is added after; 0 at a cut)."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i, j = e // n, e % n
            z, r, hh = G[t, i, j], G[t, i, n + j], G[t, i, 2 * n + j]
            dht = dy(dY, i, j, t, T, n, seq) + dh[i, j]
            dz = dht * (H[t, i, j] - hh) * z * (one - z)
            dhh = dht * (one - z) * (one - hh * hh)
            dr = dhh * Rh[t, i, j] * r * (one - r)
            dG[t, i, j], dG[t, i, n + j], dG[t, i, 2 * n + j] = dz, dr, dhh
            dGh[t, i, j], dGh[t, i, n + j], dGh[t, i, 2 * n + j] = dz, dr, dhh * r
            dh[i, j] = zero if cut else dht * z

    found = {k: v for k, v in locals().items() if callable(v) and hasattr(v, "__getitem__")}
    return type("RecurrentKernels", (), {k: cached(v) for k, v in found.items()})


def _launch(kernel, size, *args):
    kernel[G.blocks(size), G.THREADS](*args)


def _cut(bptt, t):
    return t == 0 or (bptt > 0 and t % bptt == 0)


def _rows2(a):
    """(T, m, c) as (T·m, c)."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])


def _project(X, Wx, b, Xt, Z, k):
    """Xt = X time-major; Z (T, m, c) = Xt·Wx + b (one GEMM over T·m rows)."""
    m, T, F = X.shape
    _launch(k.time_major, X.size, X, Xt, m, T, F, False)
    G.gemm_launch(_rows2(Xt), Wx, _rows2(Z), bias=b)


def _weight_grads(Xt, Wx, H, dGx, dGh, dWx, dWh, dX, k):
    """dWx = Xtᵀ·dGx, dWh = H[0:T]ᵀ·dGh (H[0] = 0), dX = dGx·Wxᵀ batch-major (via Xt)."""
    T, m, F = Xt.shape
    G.gemm_launch(_rows2(Xt), _rows2(dGx), dWx, ta=True)
    G.gemm_launch(_rows2(H[:T]), _rows2(dGh), dWh, ta=True)
    if dX is not None:
        G.gemm_launch(_rows2(dGx), Wx, _rows2(Xt), tb=True)
        _launch(k.time_major, Xt.size, dX, Xt, m, T, F, True)


def _col_sums(A2, out):
    _act_backward(A2, A2, out, LINEAR, 0.0)


@cache
def _scratch(m, n, dtype):
    """SimpleRNN's dh (the contract gives it no workspace): allocated once per shape."""
    return cuda.device_array((m, n), dtype=dtype)


def rnn_forward(X, Wx, Wh, b, act, alpha, Xt, H, Y):
    """h_t = act(x_t·Wx + h_{t−1}·Wh + b): per step ONE GEMM with the activation fused."""
    with _OnDevice(("Xt", "H", "Y"), X=X, Wx=Wx, Wh=Wh, b=b, Xt=Xt, H=H, Y=Y) as d:
        X, Wx, Wh, b, Xt, H, Y = (d[k] for k in ("X", "Wx", "Wh", "b", "Xt", "H", "Y"))
        m, T, F, n, seq = _dims("rnn_forward", X, Wx, Wh, 1, False, Y, dict(b=b, Xt=Xt, H=H),
                                _ws(1), _check)  # fmt: skip
        _act_ok(act, alpha, recurrent=True)
        k = _kernels(X.dtype.type)
        _fill(H[0], 0)
        _project(X, Wx, b, Xt, H[1:], k)
        for t in range(T):
            G.gemm_launch(H[t], Wh, H[t + 1], beta=1.0, act=act, slope=alpha)
        _launch(k.output, Y.size, H, Y, m, T, n, seq)


def rnn_backward(Xt, Wx, Wh, H, dY, act, alpha, bptt, dG, dWx, dWh, db, dX):
    """BPTT of rnn_forward (Xt is overwritten when dX is given)."""
    arrays = dict(Xt=Xt, Wx=Wx, Wh=Wh, H=H, dY=dY, dG=dG, dWx=dWx, dWh=dWh, db=db, dX=dX)
    with _OnDevice(("Xt", "dG", "dWx", "dWh", "db", "dX"), **arrays) as d:
        Xt, Wx, Wh, H, dY, dG = (d[k] for k in ("Xt", "Wx", "Wh", "H", "dY", "dG"))
        dWx, dWh, db, dX = d["dWx"], d["dWh"], d["db"], d["dX"]
        m, T, F, n, seq = _dims(
            "rnn_backward", Xt, Wx, Wh, 1, True, dY,
            dict(H=H, dG=dG, dWx=dWx, dWh=dWh, db=db, dX=dX), _ws(1), _check,
        )  # fmt: skip
        _act_ok(act, alpha, recurrent=True)
        bptt = _bptt(bptt)
        k = _kernels(Xt.dtype.type)
        dh = _scratch(m, n, Xt.dtype)
        _fill(dh, 0)
        slope = Xt.dtype.type(alpha)
        for t in range(T - 1, -1, -1):
            _launch(k.rnn_cell_back, m * n, H, dY, dh, dG, t, T, m, n, seq, act, slope)
            if _cut(bptt, t):
                _fill(dh, 0)
            else:
                G.gemm_launch(dG[t], Wh, dh, tb=True)
        _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX, k)
        if db is not None:
            _col_sums(_rows2(dG), db)


def lstm_forward(X, Wx, Wh, b, Xt, H, C, G_, Y):
    """LSTM over the sequence (gates [i f g o]): per step one GEMM and one cell kernel."""
    arrays = dict(X=X, Wx=Wx, Wh=Wh, b=b, Xt=Xt, H=H, C=C, G=G_, Y=Y)
    with _OnDevice(("Xt", "H", "C", "G", "Y"), **arrays) as d:
        X, Wx, Wh, b, Xt, H, C, Gw, Y = (d[k] for k in arrays)
        m, T, F, n, seq = _dims("lstm_forward", X, Wx, Wh, 4, False, Y,
                                dict(b=b, Xt=Xt, H=H, C=C, G=Gw), _ws(4), _check)  # fmt: skip
        k = _kernels(X.dtype.type)
        _fill(H[0], 0)
        _fill(C[0], 0)
        _project(X, Wx, b, Xt, Gw, k)
        for t in range(T):
            G.gemm_launch(H[t], Wh, Gw[t], beta=1.0)
            _launch(k.lstm_cell, m * n, Gw, H, C, t, m, n)
        _launch(k.output, Y.size, H, Y, m, T, n, seq)


def lstm_backward(Xt, Wx, Wh, H, C, G_, dY, bptt, dG, dh, dc, dWx, dWh, db, dX):
    """BPTT of lstm_forward (Xt is overwritten when dX is given)."""
    arrays = dict(Xt=Xt, Wx=Wx, Wh=Wh, H=H, C=C, G=G_, dY=dY, dG=dG, dh=dh, dc=dc, dWx=dWx,
                  dWh=dWh, db=db, dX=dX)  # fmt: skip
    with _OnDevice(("Xt", "dG", "dh", "dc", "dWx", "dWh", "db", "dX"), **arrays) as d:
        Xt, Wx, Wh, H, C, Gw, dY = (d[k] for k in ("Xt", "Wx", "Wh", "H", "C", "G", "dY"))
        dG, dh, dc, dWx, dWh, db, dX = (d[k] for k in ("dG", "dh", "dc", "dWx", "dWh", "db", "dX"))
        m, T, F, n, seq = _dims(
            "lstm_backward", Xt, Wx, Wh, 4, True, dY,
            dict(H=H, C=C, G=Gw, dG=dG, dh=dh, dc=dc, dWx=dWx, dWh=dWh, db=db, dX=dX),
            _ws(4), _check,
        )  # fmt: skip
        bptt = _bptt(bptt)
        k = _kernels(Xt.dtype.type)
        _fill(dh, 0)
        _fill(dc, 0)
        for t in range(T - 1, -1, -1):
            cut = _cut(bptt, t)
            _launch(k.lstm_cell_back, m * n, Gw, C, dY, dh, dc, dG, t, T, m, n, seq, cut)
            if cut:
                _fill(dh, 0)
            else:
                G.gemm_launch(dG[t], Wh, dh, tb=True)
        _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX, k)
        if db is not None:
            _col_sums(_rows2(dG), db)


def gru_forward(X, Wx, Wh, b, Xt, H, G_, Rh, S, Y):
    """GRU over the sequence (gates [z r h], reset after the product)."""
    arrays = dict(X=X, Wx=Wx, Wh=Wh, b=b, Xt=Xt, H=H, G=G_, Rh=Rh, S=S, Y=Y)
    with _OnDevice(("Xt", "H", "G", "Rh", "S", "Y"), **arrays) as d:
        X, Wx, Wh, b, Xt, H, Gw, Rh, S, Y = (d[k] for k in arrays)
        m, T, F, n, seq = _dims("gru_forward", X, Wx, Wh, 3, False, Y,
                                dict(b=b, Xt=Xt, H=H, G=Gw, Rh=Rh, S=S), _ws(3),
                                _check)  # fmt: skip
        k = _kernels(X.dtype.type)
        _fill(H[0], 0)
        _project(X, Wx, None if b is None else b[0], Xt, Gw, k)
        for t in range(T):
            G.gemm_launch(H[t], Wh, S, bias=None if b is None else b[1])
            _launch(k.gru_cell, m * n, Gw, S, Rh, H, t, m, n)
        _launch(k.output, Y.size, H, Y, m, T, n, seq)


def gru_backward(Xt, Wx, Wh, H, G_, Rh, dY, bptt, dG, dGh, dh, dWx, dWh, db, dX):
    """BPTT of gru_forward (Xt is overwritten when dX is given)."""
    arrays = dict(Xt=Xt, Wx=Wx, Wh=Wh, H=H, G=G_, Rh=Rh, dY=dY, dG=dG, dGh=dGh, dh=dh,
                  dWx=dWx, dWh=dWh, db=db, dX=dX)  # fmt: skip
    with _OnDevice(("Xt", "dG", "dGh", "dh", "dWx", "dWh", "db", "dX"), **arrays) as d:
        Xt, Wx, Wh, H, Gw, Rh, dY = (d[k] for k in ("Xt", "Wx", "Wh", "H", "G", "Rh", "dY"))
        dG, dGh, dh = d["dG"], d["dGh"], d["dh"]
        dWx, dWh, db, dX = d["dWx"], d["dWh"], d["db"], d["dX"]
        m, T, F, n, seq = _dims(
            "gru_backward", Xt, Wx, Wh, 3, True, dY,
            dict(H=H, G=Gw, Rh=Rh, dG=dG, dGh=dGh, dh=dh, dWx=dWx, dWh=dWh, db=db, dX=dX),
            _ws(3), _check,
        )  # fmt: skip
        bptt = _bptt(bptt)
        k = _kernels(Xt.dtype.type)
        _fill(dh, 0)
        for t in range(T - 1, -1, -1):
            cut = _cut(bptt, t)
            _launch(k.gru_cell_back, m * n, Gw, H, Rh, dY, dh, dG, dGh, t, T, m, n, seq, cut)
            if not cut:
                G.gemm_launch(dGh[t], Wh, dh, tb=True, beta=1.0)
        _weight_grads(Xt, Wx, H, dG, dGh, dWx, dWh, dX, k)
        if db is not None:
            _col_sums(_rows2(dG), db[0])
            _col_sums(_rows2(dGh), db[1])
