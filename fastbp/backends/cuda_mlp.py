"""Fully fused MLP for narrow nets on the GPU (the idea of tiny-cuda-nn's fully fused MLP).

For a float32 Dense-only model whose widths are all <= 64 (element-wise activations): the whole
forward pass is ONE launch and the whole backward pass ONE launch. A block takes R rows at a time
(persistent grid-stride over row tiles) and carries them through every layer in shared memory:
the activations never leave the chip between layers (each layer's output is also written once to
global memory, where the loss and the backward pass read it). The backward pass keeps each
thread's share of every layer's dW and db in registers across all of its row tiles and adds them
to the gradient buffer with one atomic add per element per block at the end.

Layer table (int64, one row per layer): [W offset, b offset (-1: no bias), n_in, n_out, act].
Thread block 16 x 16: thread (ty, tx) owns rows ty + 16·i and columns tx + 16·j of a tile.
"""

import numpy as np
from numba import cuda

from ..layers import head
from .contract import SOFTMAX
from .cuda_arrays import _fill
from .cuda_device import FASTMATH, _act, _dact
from .cuda_launch import cached

R = 64  # rows per tile
WMAX = 64  # widest layer (input or output) the fused kernels take
LMAX = 8  # most layers
RI, CJ = R // 16, WMAX // 16  # rows / columns per thread


def eligible(layers, dtype) -> bool:
    """Can the fused kernels run this stack (float32 Dense, widths <= 64, no softmax, no
    activation whose derivative needs z)?"""
    from ..layers import Dense

    return (
        np.dtype(dtype) == np.float32
        and 1 <= len(layers) <= LMAX
        and all(type(la) is Dense and la.act != SOFTMAX and not la.keeps_z for la in layers)
        and all(la.n_in <= WMAX and la.units <= WMAX for la in layers)
    )


@cuda.jit(fastmath=FASTMATH)
def mlp_forward(X, m, params, table, L, acts, out, slope):
    """acts[l, rows] = act_l(acts[l-1, rows]·W_l + b_l) for every layer; out = last layer."""
    H = cuda.shared.array((R, WMAX), np.float32)
    Ws = cuda.shared.array((WMAX, WMAX), np.float32)
    bs = cuda.shared.array(WMAX, np.float32)
    acc = cuda.local.array((RI, CJ), np.float32)
    hr = cuda.local.array(RI, np.float32)
    wc = cuda.local.array(CJ, np.float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * 16 + tx
    n0 = X.shape[1]
    for tile in range(cuda.blockIdx.x, (m + R - 1) // R, cuda.gridDim.x):
        r0 = tile * R
        for e in range(tid, R * WMAX, 256):
            r, k = e // WMAX, e % WMAX
            H[r, k] = X[r0 + r, k] if r0 + r < m and k < n0 else np.float32(0)
        for l in range(L):
            w_off, b_off = table[l, 0], table[l, 1]
            n_in, n_out, act = table[l, 2], table[l, 3], table[l, 4]
            for e in range(tid, WMAX * WMAX, 256):
                k, c = e // WMAX, e % WMAX
                inside = k < n_in and c < n_out
                Ws[k, c] = params[w_off + k * n_out + c] if inside else np.float32(0)
            if tid < WMAX:
                bs[tid] = params[b_off + tid] if b_off >= 0 and tid < n_out else np.float32(0)
            cuda.syncthreads()
            for i in range(RI):
                for j in range(CJ):
                    acc[i, j] = bs[tx + 16 * j]
            for k in range(n_in):
                for i in range(RI):
                    hr[i] = H[ty + 16 * i, k]
                for j in range(CJ):
                    wc[j] = Ws[k, tx + 16 * j]
                for i in range(RI):
                    for j in range(CJ):
                        acc[i, j] += hr[i] * wc[j]
            cuda.syncthreads()  # every thread has read H: overwrite it with this layer's output
            for i in range(RI):
                r = ty + 16 * i
                for j in range(CJ):
                    c = tx + 16 * j
                    v = _act(acc[i, j], act, slope) if c < n_out else np.float32(0)
                    H[r, c] = v
                    if r0 + r < m and c < n_out:
                        acts[l, r0 + r, c] = v
                        if l == L - 1:
                            out[r0 + r, c] = v
            cuda.syncthreads()


@cuda.jit(fastmath=FASTMATH)
def mlp_backward(X, m, params, grads, table, L, acts, dout, last_act, slope):
    """From dout = ∂L/∂(last output): dW_l, db_l of every layer added into grads (zeroed
    before); dZ carried down the layers in shared memory, dW/db partials in registers."""
    H = cuda.shared.array((R, WMAX), np.float32)
    D = cuda.shared.array((R, WMAX), np.float32)
    Wt = cuda.shared.array((WMAX, WMAX), np.float32)  # Wt[c, k] = W[k, c]: conflict-free reads
    dw = cuda.local.array((LMAX, CJ, CJ), np.float32)
    db = cuda.local.array((LMAX, CJ), np.float32)
    t = cuda.local.array((CJ, CJ), np.float32)
    g = cuda.local.array((RI, CJ), np.float32)
    hk = cuda.local.array(CJ, np.float32)
    dc = cuda.local.array(CJ, np.float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * 16 + tx
    for l in range(L):
        for a in range(CJ):
            db[l, a] = 0
            for b in range(CJ):
                dw[l, a, b] = 0
    for tile in range(cuda.blockIdx.x, (m + R - 1) // R, cuda.gridDim.x):
        r0 = tile * R
        n_last = table[L - 1, 3]
        for e in range(tid, R * WMAX, 256):
            r, c = e // WMAX, e % WMAX
            inside = r0 + r < m and c < n_last
            D[r, c] = (
                _dact(acts[L - 1, r0 + r, c], dout[r0 + r, c], last_act, slope)
                if inside
                else np.float32(0)
            )
        for l in range(L - 1, -1, -1):
            w_off, n_in, n_out = table[l, 0], table[l, 2], table[l, 3]
            for e in range(tid, R * WMAX, 256):
                r, k = e // WMAX, e % WMAX
                if r0 + r < m and k < n_in:
                    H[r, k] = X[r0 + r, k] if l == 0 else acts[l - 1, r0 + r, k]
                else:
                    H[r, k] = 0
            for e in range(tid, WMAX * WMAX, 256):
                k, c = e // WMAX, e % WMAX
                inside = k < n_in and c < n_out
                Wt[c, k] = params[w_off + k * n_out + c] if inside else np.float32(0)
            cuda.syncthreads()
            # dW partial: thread owns (k = ty + 16a, c = tx + 16b); db: rows ty + 16i, cols c
            for a in range(CJ):
                for b in range(CJ):
                    t[a, b] = 0
            for r in range(R):
                for a in range(CJ):
                    hk[a] = H[r, ty + 16 * a]
                for b in range(CJ):
                    dc[b] = D[r, tx + 16 * b]
                for a in range(CJ):
                    for b in range(CJ):
                        t[a, b] += hk[a] * dc[b]
            for a in range(CJ):
                for b in range(CJ):
                    dw[l, a, b] += t[a, b]
            for b in range(CJ):
                for i in range(RI):
                    db[l, b] += D[ty + 16 * i, tx + 16 * b]
            if l > 0:  # dZ of the layer below: (D·Wᵀ) ⊙ act'(its output H); thread (r, k)
                for i in range(RI):
                    for j in range(CJ):
                        g[i, j] = 0
                for c in range(n_out):
                    for i in range(RI):
                        hr0 = D[ty + 16 * i, c]
                        for j in range(CJ):
                            g[i, j] += hr0 * Wt[c, tx + 16 * j]
                act_below = table[l - 1, 4]
                for i in range(RI):
                    for j in range(CJ):
                        k = tx + 16 * j
                        h = H[ty + 16 * i, k]
                        g[i, j] = _dact(h, g[i, j], act_below, slope) if k < n_in else 0
            cuda.syncthreads()
            if l > 0:
                for i in range(RI):
                    for j in range(CJ):
                        D[ty + 16 * i, tx + 16 * j] = g[i, j]
            cuda.syncthreads()
    for l in range(L):
        w_off, b_off, n_in, n_out = table[l, 0], table[l, 1], table[l, 2], table[l, 3]
        for a in range(CJ):
            k = ty + 16 * a
            for b in range(CJ):
                c = tx + 16 * b
                if k < n_in and c < n_out:
                    cuda.atomic.add(grads, w_off + k * n_out + c, dw[l, a, b])
        if b_off >= 0:
            for b in range(CJ):
                c = tx + 16 * b
                if c < n_out:
                    cuda.atomic.add(grads, b_off + c, db[l, b])


mlp_forward, mlp_backward = cached(mlp_forward), cached(mlp_backward)


class FusedMLP:
    """The two launches for one model: ``forward(X, m)`` and ``backward(X, m, last_act)``.

    Parameters
    ----------
    layers : list of Dense
        Bound to the device's flat buffers (``offsets`` give W and b positions).
    params, grads : device arrays (p,)
    capacity : int
        Most rows per call (sizes the per-layer activation buffer (L, capacity, 64)).
    """

    def __init__(self, layers, params, grads, capacity):
        rows = [
            [la.offsets[0], la.offsets[1] if la.use_bias else -1, la.n_in, la.units, la.act]
            for la in layers
        ]
        self.table = cuda.to_device(np.array(rows, dtype=np.int64))
        self.layers, self.params, self.grads = layers, params, grads
        self.acts = cuda.device_array((len(layers), capacity, WMAX), np.float32)
        self.slope = np.float32(layers[0].alpha)
        from .cuda_device import MAX_BLOCKS

        self.max_blocks = MAX_BLOCKS

    def _grid(self, m):
        return min(self.max_blocks, -(-m // R)), (16, 16)

    def forward(self, X, m):
        """Every layer's output rows [0, m) (the last into layers[-1].A); returns that view."""
        last = self.layers[-1]
        out = head(last.A, m)
        mlp_forward[self._grid(m)](
            X, m, self.params, self.table, len(self.layers), self.acts, out, self.slope
        )
        return out

    def backward(self, X, m, last_act=None):
        """grads = ∂L/∂params from layers[-1].dA[:m] (∂L/∂Z where last_act is LINEAR)."""

        last = self.layers[-1]
        _fill(self.grads, 0)
        act = last.act if last_act is None else last_act
        mlp_backward[self._grid(m)](
            X, m, self.params, self.grads, self.table, len(self.layers), self.acts,
            head(last.dA, m), act, self.slope,
        )  # fmt: skip
