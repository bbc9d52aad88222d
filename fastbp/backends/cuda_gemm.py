"""numba.cuda GEMM (and the launch-shape constants every numba.cuda kernel uses).

The GEMM is tiled and register-blocked: a block computes a BM x BN tile of C from BK-deep slices
of op(A) and op(B) staged in shared memory; each thread keeps a TM x TN accumulator in registers
(rows ``ty + i·BM/TM``, columns ``tx + j·BN/TN``: consecutive threads touch consecutive words, so
shared reads are conflict-free and C stores coalesce). Transposed operands are read through the
index map, never copied: NN for the forward, TN for dW = Xᵀ·dZ, NT for dX = dZ·Wᵀ. The epilogue
(alpha, beta·C, bias, activation) is fused into the GEMM's store.

Under ``NUMBA_ENABLE_CUDASIM=1`` every thread is a Python thread: small tiles keep the tests fast.
"""

import math
import os
from functools import cache

from numba import config, cuda

from .contract import LEAKY_RELU, RELU, SIGMOID, TANH

SIMULATOR = bool(config.ENABLE_CUDASIM)
# No fastmath: in numba.cuda any fastmath flag also compiles with flush-to-zero and approximate
# division/sqrt (and "afn" gives tanh.approx/ex2.approx); a float32 LSTM/RNN then drifts ~1e-4
# from the reference over its steps. Multiply-adds are still fused (NVVM's default).
FASTMATH = False
# GEMM tile shapes (BM, BN, BK, TM, TN): a large one for big products, a small one that keeps
# more blocks busy on small ones; the simulator gets a tiny tile (16 threads per block).
TILES = {
    "large": (16, 16, 4, 2, 2) if SIMULATOR else (128, 128, 8, 8, 8),
    "small": (8, 8, 4, 2, 2) if SIMULATOR else (64, 64, 8, 4, 4),
}
THREADS = 32 if SIMULATOR else 256  # element-wise kernels: threads per block
MAX_BLOCKS = 64 if SIMULATOR else 132 * 16  # grid-stride kernels: cap on blocks


def blocks(n: int) -> int:
    """Blocks for a grid-stride loop over n items."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS)))


WAVE = 4 if SIMULATOR else 264  # blocks that keep the device busy (2 per SM on an H100)


def tile_for(m: int, n: int) -> tuple:
    """The large tile where it still gives a wave of blocks on the device, else the small."""
    bm, bn = TILES["large"][:2]
    return TILES["large"] if -(-m // bm) * -(-n // bn) >= WAVE else TILES["small"]


@cuda.jit(device=True, inline=True)
def _act(v, act, slope):
    """act(v) for the element-wise activations (softmax is a row kernel)."""
    if act == SIGMOID:
        return 1 / (1 + math.exp(-v))
    if act == TANH:
        return math.tanh(v)
    if act == RELU:
        return v if v > 0 else v * 0
    if act == LEAKY_RELU:
        return v if v > 0 else slope * v
    return v


@cuda.jit(device=True, inline=True)
def _dact(a, d, act, slope):
    """d ⊙ act'(z) written through a = act(z) (element-wise activations)."""
    if act == SIGMOID:
        return d * a * (1 - a)
    if act == TANH:
        return d * (1 - a * a)
    if act == RELU:
        return d if a > 0 else d * 0
    if act == LEAKY_RELU:
        return d if a > 0 else slope * d
    return d


@cache
def gemm(ta: bool, tb: bool, dtype, tile: tuple, split: bool = False):
    """C = alpha·op(A)·op(B) + beta·C, then C = act(C + bias) (bias read only if has_bias); op = ᵀ
    if the flag is set. A is (M, K) or (K, M), B (K, N) or (N, K); launch ``gemm_launch``.

    ``split``: blockIdx.z takes the K range [z·kps, (z+1)·kps) and adds alpha·its product to C
    atomically (split-K, for few output tiles over a long K such as dW = Xᵀ·dZ of a large
    batch; C holds beta·C before, and there is no epilogue)."""
    BM, BN, BK, TM, TN = tile
    TX, TY = BN // TN, BM // TM
    NT = TX * TY
    zero = dtype(0)

    @cuda.jit(fastmath=FASTMATH)
    def kernel(A, B, C, bias, has_bias, M, N, K, alpha, beta, act, slope, kps):
        As = cuda.shared.array((BK, BM), dtype)
        Bs = cuda.shared.array((BK, BN), dtype)
        acc = cuda.local.array((TM, TN), dtype)
        ar = cuda.local.array(TM, dtype)
        br = cuda.local.array(TN, dtype)
        tid = cuda.threadIdx.x
        tx, ty = tid % TX, tid // TX
        row0, col0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        k_lo = cuda.blockIdx.z * kps if split else 0
        k_hi = min(K, k_lo + kps) if split else K
        for k0 in range(k_lo, k_hi, BK):
            # stage op(A)[row0:+BM, k0:+BK] as As[k, m]; coalesced along A's stored rows
            for e in range(tid, BM * BK, NT):
                if ta:  # A stored (K, M)
                    kk, mm = e // BM, e % BM
                    gk, gm = k0 + kk, row0 + mm
                    As[kk, mm] = A[gk, gm] if gk < k_hi and gm < M else zero
                else:  # A stored (M, K)
                    mm, kk = e // BK, e % BK
                    gk, gm = k0 + kk, row0 + mm
                    As[kk, mm] = A[gm, gk] if gk < k_hi and gm < M else zero
            for e in range(tid, BN * BK, NT):
                if tb:  # B stored (N, K)
                    nn, kk = e // BK, e % BK
                    gk, gn = k0 + kk, col0 + nn
                    Bs[kk, nn] = B[gn, gk] if gk < k_hi and gn < N else zero
                else:  # B stored (K, N)
                    kk, nn = e // BN, e % BN
                    gk, gn = k0 + kk, col0 + nn
                    Bs[kk, nn] = B[gk, gn] if gk < k_hi and gn < N else zero
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ar[i] = As[kk, ty + i * TY]
                for j in range(TN):
                    br[j] = Bs[kk, tx + j * TX]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ar[i] * br[j]
            cuda.syncthreads()
        for i in range(TM):
            r = row0 + ty + i * TY
            if r < M:
                for j in range(TN):
                    c = col0 + tx + j * TX
                    if c < N and split:
                        cuda.atomic.add(C, (r, c), alpha * acc[i, j])
                    elif c < N:
                        v = alpha * acc[i, j]
                        if beta != 0:
                            v += beta * C[r, c]
                        if has_bias:
                            v += bias[c]
                        C[r, c] = _act(v, act, slope)

    return kernel


#: Route GEMMs to cuBLAS through CuPy (zero-copy over the CUDA Array Interface) instead of the own
#: kernel, the epilogue then being a separate launch: ``use_cublas()`` or FASTBP_CUDA_GEMM=cublas.
CUBLAS = os.environ.get("FASTBP_CUDA_GEMM") == "cublas"


def use_cublas(on: bool = True) -> None:
    """Send the cuda backend's GEMMs to cuBLAS via CuPy (``pip install cupy-cuda12x`` or 13x)
    or back to fastbp's own kernel; fp32 (CuPy's default, TF32 off)."""
    global CUBLAS
    if on:
        import cupy  # noqa: F401  (fails here, not in the middle of a step)
    CUBLAS = bool(on)


def _cublas(A, B, C, ta, tb, alpha, beta, bias, act, slope):
    import cupy as cp

    a, b, c = cp.asarray(A), cp.asarray(B), cp.asarray(C)
    prod = cp.matmul(a.T if ta else a, b.T if tb else b, out=c if beta == 0 else None)
    if alpha != 1:
        prod *= alpha
    if beta != 0:
        c *= beta
        c += prod
    elif prod is not c:
        c[...] = prod
    if bias is not None or act != 0:
        from .cuda_kernels import kernels

        M, N = C.shape
        has_bias = bias is not None
        bias = bias if has_bias else placeholder(C.dtype, 1)
        dt = C.dtype.type
        kernels(dt).bias_act[blocks(C.size), THREADS](C, bias, has_bias, M, N, act, dt(slope))


def gemm_launch(A, B, C, ta=False, tb=False, alpha=1.0, beta=0.0, bias=None, act=0, slope=0.0):
    """C = act(alpha·op(A)·op(B) + beta·C + bias) on device arrays (shapes checked by callers)."""
    if CUBLAS and not SIMULATOR:
        return _cublas(A, B, C, ta, tb, alpha, beta, bias, act, slope)
    M, N = C.shape
    K = A.shape[0] if ta else A.shape[1]
    tile = tile_for(M, N)
    dt = C.dtype.type
    grid = (-(-N // tile[1]), -(-M // tile[0]))
    threads = (tile[0] // tile[3]) * (tile[1] // tile[4])
    has_bias = bias is not None
    # split-K where the output tiles cannot fill the device but K is long (>= 32 slices each)
    splits = min(-(-WAVE // (grid[0] * grid[1])), K // (32 * tile[2]))
    if splits > 1 and not has_bias and act == 0:
        kps = -(-K // splits // tile[2]) * tile[2]
        grid = grid + (-(-K // kps),)
        from .cuda_kernels import kernels

        if beta != 1:  # C ← beta·C, then every K slice adds its part
            kernels(C.dtype.type).scale[blocks(C.size), THREADS](C.reshape(C.size), dt(beta))
        k = gemm(bool(ta), bool(tb), C.dtype.type, tile, True)
    else:
        kps = K
        k = gemm(bool(ta), bool(tb), C.dtype.type, tile)
    bias = bias if has_bias else placeholder(C.dtype, 1)
    k[grid, threads](A, B, C, bias, has_bias, M, N, K, dt(alpha), dt(beta), act, dt(slope), kps)


@cache
def placeholder(dtype, ndim: int):
    """A 1-element device array passed where an optional array is absent (numba.cuda kernels
    take no None arguments; a flag says not to read it)."""
    return cuda.device_array((1,) * ndim, dtype=dtype)
