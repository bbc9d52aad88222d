"""Recurrent kernels of the Numba backend (math and layout: ``reference_rnn``; loops as in
src_c/_rnn.pxi and src_c/_cells.h): one ``np.dot`` per step for the recurrence, one for the input
projection of all steps, one each for dWx, dWh and dX."""

import numpy as np

from .numba_common import _act_backward, _act_ok, _bias_act, _check, _shape, jit


@jit
def _sig(x):
    return 1 / (1 + np.exp(-x))


@jit
def _cut(bptt, t):
    return t == 0 or (bptt > 0 and t % bptt == 0)


@jit
def _project(X, Wx, b, Xt, Z):
    """Xt = X time-major; Z (T·m, cols) = Xt·Wx + b."""
    m, T, F = X.shape
    for t in range(T):
        Xt[t] = X[:, t]
    np.dot(Xt.reshape((T * m, F)), Wx, out=Z)
    if b is not None:
        _bias_act(Z, b, 0, Z.dtype.type(0))


@jit
def _output(H, Y, seq):
    T, m, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    if seq:
        for i in range(m):
            for t in range(T):
                Y[i, t * n : (t + 1) * n] = H[t + 1, i]
    else:
        Y[:] = H[T]


@jit
def _dy(dY, i, t, T, n, seq, out):
    """out = row i of ∂L/∂h_t from above (0 where only the last step was output)."""
    if seq:
        out[:] = dY[i, t * n : (t + 1) * n]
    elif t == T - 1:
        out[:] = dY[i]
    else:
        out[:] = 0


@jit
def _weight_grads(Xt, Wx, H, dGx, dGh, dWx, dWh, dX):
    T, m, F = Xt.shape
    n, g = H.shape[2], dGx.shape[2]
    np.dot(Xt.reshape((T * m, F)).T, dGx.reshape((T * m, g)), out=dWx)
    if T > 1:
        np.dot(H[1:T].reshape(((T - 1) * m, n)).T, dGh[1:].reshape(((T - 1) * m, g)), out=dWh)
    else:
        dWh[:] = 0
    if dX is not None:
        np.dot(dGx.reshape((T * m, g)), Wx.T, out=Xt.reshape((T * m, F)))
        for t in range(T):
            dX[:, t] = Xt[t]


@jit
def _col_sums(A, out):
    out[:] = 0
    for r in range(A.shape[0]):
        for j in range(A.shape[1]):
            out[j] += A[r, j]


@jit
def _rnn_forward(X, Wx, Wh, b, act, alpha, Xt, H, Y, seq):
    m, T, F = X.shape
    n = Wh.shape[0]
    _project(X, Wx, None, Xt, H[1:].reshape((T * m, n)))
    H[0] = 0
    tmp = np.empty((m, n), H.dtype)
    for t in range(T):
        if t > 0:
            np.dot(H[t], Wh, out=tmp)
            H[t + 1] += tmp
        _bias_act(H[t + 1], b, act, alpha)
    _output(H, Y, seq)


@jit
def _rnn_backward(Xt, Wx, Wh, H, dY, act, alpha, bptt, dG, dWx, dWh, db, dX, seq):
    T, m, F = Xt.shape
    n = Wh.shape[0]
    for t in range(T):
        for i in range(m):
            _dy(dY, i, t, T, n, seq, dG[t, i])
    tmp = np.empty((m, n), H.dtype)
    for t in range(T - 1, -1, -1):
        _act_backward(H[t + 1], dG[t], None, act, alpha)
        if not _cut(bptt, t):
            np.dot(dG[t], Wh.T, out=tmp)
            dG[t - 1] += tmp
    _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX)
    if db is not None:
        _col_sums(dG.reshape((T * m, n)), db)


@jit
def _lstm_forward(X, Wx, Wh, b, Xt, H, C, G, Y, seq):
    m, T, F = X.shape
    n = Wh.shape[0]
    _project(X, Wx, b, Xt, G.reshape((T * m, 4 * n)))
    H[0] = 0
    C[0] = 0
    tmp = np.empty((m, 4 * n), H.dtype)
    for t in range(T):
        if t > 0:
            np.dot(H[t], Wh, out=tmp)
            G[t] += tmp
        for i in range(m):
            g = G[t, i]
            for j in range(n):
                gi, gf = _sig(g[j]), _sig(g[n + j])
                gg, go = np.tanh(g[2 * n + j]), _sig(g[3 * n + j])
                g[j], g[n + j], g[2 * n + j], g[3 * n + j] = gi, gf, gg, go
                c = gf * C[t, i, j] + gi * gg
                C[t + 1, i, j] = c
                H[t + 1, i, j] = go * np.tanh(c)
    _output(H, Y, seq)


@jit
def _lstm_backward(Xt, Wx, Wh, H, C, G, dY, bptt, dG, dh, dc, dWx, dWh, db, dX, seq):
    T, m, F = Xt.shape
    n = Wh.shape[0]
    for i in range(m):
        _dy(dY, i, T - 1, T, n, seq, dh[i])
    dc[:] = 0
    tmp = np.empty((m, n), H.dtype)
    for t in range(T - 1, -1, -1):
        stop = _cut(bptt, t)
        for i in range(m):
            g, d = G[t, i], dG[t, i]
            for j in range(n):
                gi, gf, gg, go = g[j], g[n + j], g[2 * n + j], g[3 * n + j]
                tc = np.tanh(C[t + 1, i, j])
                dht = dh[i, j]
                dct = dc[i, j] + dht * go * (1 - tc * tc)
                d[j] = dct * gg * gi * (1 - gi)
                d[n + j] = dct * C[t, i, j] * gf * (1 - gf)
                d[2 * n + j] = dct * gi * (1 - gg * gg)
                d[3 * n + j] = dht * tc * go * (1 - go)
                dc[i, j] = 0 if stop else dct * gf
            if t > 0:
                _dy(dY, i, t - 1, T, n, seq, dh[i])
        if not stop:
            np.dot(dG[t], Wh.T, out=tmp)
            dh += tmp
    _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX)
    if db is not None:
        _col_sums(dG.reshape((T * m, 4 * n)), db)


@jit
def _gru_forward(X, Wx, Wh, b, Xt, H, G, Rh, S, Y, seq):
    m, T, F = X.shape
    n = Wh.shape[0]
    _project(X, Wx, None if b is None else b[0], Xt, G.reshape((T * m, 3 * n)))
    H[0] = 0
    for t in range(T):
        if t > 0:
            np.dot(H[t], Wh, out=S)
        else:
            S[:] = 0
        if b is not None:
            S += b[1]
        for i in range(m):
            g, s = G[t, i], S[i]
            for j in range(n):
                z = _sig(g[j] + s[j])
                r = _sig(g[n + j] + s[n + j])
                hh = np.tanh(g[2 * n + j] + r * s[2 * n + j])
                g[j], g[n + j], g[2 * n + j] = z, r, hh
                Rh[t, i, j] = s[2 * n + j]
                H[t + 1, i, j] = z * H[t, i, j] + (1 - z) * hh
    _output(H, Y, seq)


@jit
def _gru_backward(Xt, Wx, Wh, H, G, Rh, dY, bptt, dG, dGh, dh, dWx, dWh, db, dX, seq):
    T, m, F = Xt.shape
    n = Wh.shape[0]
    for i in range(m):
        _dy(dY, i, T - 1, T, n, seq, dh[i])
    y = np.empty(n, H.dtype)
    tmp = np.empty((m, n), H.dtype)
    for t in range(T - 1, -1, -1):
        stop = _cut(bptt, t)
        for i in range(m):
            g, d, e = G[t, i], dG[t, i], dGh[t, i]
            if t > 0:
                _dy(dY, i, t - 1, T, n, seq, y)
            else:
                y[:] = 0
            for j in range(n):
                z, r, hh = g[j], g[n + j], g[2 * n + j]
                dht = dh[i, j]
                dz = dht * (H[t, i, j] - hh) * z * (1 - z)
                dhh = dht * (1 - z) * (1 - hh * hh)
                dr = dhh * Rh[t, i, j] * r * (1 - r)
                d[j], d[n + j], d[2 * n + j] = dz, dr, dhh
                e[j], e[n + j], e[2 * n + j] = dz, dr, dhh * r
                dh[i, j] = (0 if stop else dht * z) + y[j]
        if not stop:
            np.dot(dGh[t], Wh.T, out=tmp)
            dh += tmp
    _weight_grads(Xt, Wx, H, dG, dGh, dWx, dWh, dX)
    if db is not None:
        _col_sums(dG.reshape((T * m, 3 * n)), db[0])
        _col_sums(dGh.reshape((T * m, 3 * n)), db[1])


# -- checks at the edge ---------------------------------------------------------------------------


def _dims(kernel, X, Wx, Wh, gates, time_major, Y, arrays, want, check=_check):
    """(m, T, F, n, seq) after checking every array (``want``: name -> shape from m, T, F, n;
    ``check``: the dtype/contiguity check of the backend's kind of array)."""
    check(Wx.dtype, X=X, Wx=Wx, Wh=Wh, Y=Y, **arrays)
    T, m, F = X.shape if time_major else (X.shape[1], X.shape[0], X.shape[2])
    n = Wh.shape[0]
    if 0 in (m, T, F, n):
        raise ValueError(
            f"{kernel} needs non-empty shapes, got batch={m}, timesteps={T}, features={F}, "
            f"units={n}"
        )
    _shape("Wx", Wx, (F, gates * n)), _shape("Wh", Wh, (n, gates * n))
    shapes = want(m, T, F, n)
    for key, a in arrays.items():
        _shape(key, a, shapes[key])
    if tuple(Y.shape) not in ((m, T * n), (m, n)):
        raise ValueError(
            f"{'dY' if time_major else 'Y'} must have shape {(m, T * n)} (return_sequences) or "
            f"{(m, n)}, got {Y.shape}"
        )
    return m, T, F, n, tuple(Y.shape) == (m, T * n)


def _ws(g):
    """The workspace shapes of a cell with g gate blocks."""
    return lambda m, T, F, n: dict(
        Xt=(T, m, F), H=(T + 1, m, n), C=(T + 1, m, n), G=(T, m, g * n), Rh=(T, m, n),
        S=(m, 3 * n), dG=(T, m, g * n), dGh=(T, m, g * n), dh=(m, n), dc=(m, n),
        dWx=(F, g * n), dWh=(n, g * n), dX=(m, T, F),
        b=(2, 3 * n) if g == 3 else (g * n,), db=(2, 3 * n) if g == 3 else (g * n,),
    )  # fmt: skip


def _bptt(bptt):
    if bptt < 0:
        raise ValueError(f"bptt must be >= 0 (0: whole sequence), got {bptt}")
    return int(bptt)


def rnn_forward(X, Wx, Wh, b, act, alpha, Xt, H, Y):
    """h_t = act(x_t·Wx + h_{t−1}·Wh + b)."""
    *_, seq = _dims("rnn_forward", X, Wx, Wh, 1, False, Y, dict(b=b, Xt=Xt, H=H), _ws(1))
    _act_ok(act, alpha, recurrent=True)
    _rnn_forward(X, Wx, Wh, b, act, X.dtype.type(alpha), Xt, H, Y, seq)


def rnn_backward(Xt, Wx, Wh, H, dY, act, alpha, bptt, dG, dWx, dWh, db, dX):
    """BPTT of rnn_forward (Xt is overwritten when dX is given)."""
    arrays = dict(H=H, dG=dG, dWx=dWx, dWh=dWh, db=db, dX=dX)
    *_, seq = _dims("rnn_backward", Xt, Wx, Wh, 1, True, dY, arrays, _ws(1))
    _act_ok(act, alpha, recurrent=True)
    dt = Xt.dtype.type
    _rnn_backward(Xt, Wx, Wh, H, dY, act, dt(alpha), _bptt(bptt), dG, dWx, dWh, db, dX, seq)


def lstm_forward(X, Wx, Wh, b, Xt, H, C, G, Y):
    """LSTM over the sequence (gates [i f g o])."""
    arrays = dict(b=b, Xt=Xt, H=H, C=C, G=G)
    *_, seq = _dims("lstm_forward", X, Wx, Wh, 4, False, Y, arrays, _ws(4))
    _lstm_forward(X, Wx, Wh, b, Xt, H, C, G, Y, seq)


def lstm_backward(Xt, Wx, Wh, H, C, G, dY, bptt, dG, dh, dc, dWx, dWh, db, dX):
    """BPTT of lstm_forward (Xt is overwritten when dX is given)."""
    arrays = dict(H=H, C=C, G=G, dG=dG, dh=dh, dc=dc, dWx=dWx, dWh=dWh, db=db, dX=dX)
    *_, seq = _dims("lstm_backward", Xt, Wx, Wh, 4, True, dY, arrays, _ws(4))
    _lstm_backward(Xt, Wx, Wh, H, C, G, dY, _bptt(bptt), dG, dh, dc, dWx, dWh, db, dX, seq)


def gru_forward(X, Wx, Wh, b, Xt, H, G, Rh, S, Y):
    """GRU over the sequence (gates [z r h], reset after the product)."""
    arrays = dict(b=b, Xt=Xt, H=H, G=G, Rh=Rh, S=S)
    *_, seq = _dims("gru_forward", X, Wx, Wh, 3, False, Y, arrays, _ws(3))
    _gru_forward(X, Wx, Wh, b, Xt, H, G, Rh, S, Y, seq)


def gru_backward(Xt, Wx, Wh, H, G, Rh, dY, bptt, dG, dGh, dh, dWx, dWh, db, dX):
    """BPTT of gru_forward (Xt is overwritten when dX is given)."""
    arrays = dict(H=H, G=G, Rh=Rh, dG=dG, dGh=dGh, dh=dh, dWx=dWx, dWh=dWh, db=db, dX=dX)
    *_, seq = _dims("gru_backward", Xt, Wx, Wh, 3, True, dY, arrays, _ws(3))
    _gru_backward(Xt, Wx, Wh, H, G, Rh, dY, _bptt(bptt), dG, dGh, dh, dWx, dWh, db, dX, seq)
