"""numba.cuda GEMM (and the launch-shape constants every numba.cuda kernel uses).

The GEMM is tiled and register-blocked: a block computes a BM x BN tile of C from BK-deep slices
of op(A) and op(B) staged in shared memory (two buffers: the next slice's global loads are in
flight while the current one is multiplied; one barrier per slice); each thread keeps a TM x TN
accumulator in registers, as runs of 4 consecutive rows and columns (``ty·4 + i``, ``tx·4 + j``,
the next run BM/2 or BN/2 further), so that it reads its operands with 16-byte shared loads and
the threads of a warp read neighbouring runs. Transposed operands are read through the index map,
never copied: NN for the forward, TN for dW = Xᵀ·dZ, NT for dX = dZ·Wᵀ. The epilogue (alpha,
beta·C, bias, activation) is fused into the GEMM's store. The kernel's source is generated with
every per-thread loop spelled out (``_gemm_source``): numba has no unroll pragma, and a local
array indexed in a loop lives on the stack, not in registers.

Under ``NUMBA_ENABLE_CUDASIM=1`` every thread is a Python thread: small tiles keep the tests fast.
"""

import os
from functools import cache

from numba import cuda

from .cuda_device import (  # noqa: F401  (MAX_BLOCKS, placeholder: also used as G.*)
    FASTMATH,
    MAX_BLOCKS,
    SIMULATOR,
    THREADS,
    _act,
    blocks,
    device_function,
    placeholder,
)
from .cuda_kernels import kernels
from .cuda_launch import cached

# GEMM tile shapes (BM, BN, BK, TM, TN): a large one for big products, a small one that keeps
# more blocks busy on small ones; the simulator gets a tiny tile (16 threads per block).
TILES = {
    "large": (16, 16, 4, 2, 2) if SIMULATOR else (128, 128, 8, 8, 8),
    "small": (8, 8, 4, 2, 2) if SIMULATOR else (64, 64, 8, 4, 4),
}
WAVE = 4 if SIMULATOR else 264  # blocks that keep the device busy (2 per SM on an H100)


def tile_for(m: int, n: int) -> tuple:
    """The large tile where it still gives a wave of blocks on the device, else the small."""
    bm, bn = TILES["large"][:2]
    return TILES["large"] if -(-m // bm) * -(-n // bn) >= WAVE else TILES["small"]


def _rows(per_thread: int, threads: int, index: str) -> list:
    """Offsets (as source text) of a thread's ``per_thread`` rows (or columns) of a tile:
    runs of V = min(4, per_thread) consecutive ones, ``threads·V`` apart, so that a thread reads
    V neighbouring shared words at once (one 16-byte load for V = 4 float32) and the threads of
    a warp read neighbouring runs (conflict-free)."""
    v = min(4, per_thread)
    return [f"{index} * {v} + {(i // v) * threads * v + i % v}" for i in range(per_thread)]


def _gemm_source(ta: bool, tb: bool, tile: tuple, split: bool, unroll: bool = False) -> str:
    """Source text of one GEMM kernel, every per-thread loop unrolled by hand.

    numba has no unroll pragma, and a ``cuda.local.array`` indexed in a loop that LLVM leaves
    rolled lives in local memory (the stack): the 8x8 accumulator then cost a load and a store
    per multiply-add. Named scalars (``c_i_j``) are registers by construction. The loop over
    the BK rows of a slice stays a loop unless ``unroll``: spelled out it ran 10% faster at 4096³
    on the H100 (26.4 vs 24.0 TFLOP/s) but took 28 s instead of 8 s to compile, per kernel."""
    BM, BN, BK, TM, TN = tile
    TX, TY = BN // TN, BM // TM
    NT = TX * TY
    LA, LB = BM * BK // NT, BN * BK // NT  # elements of A / B each thread stages per slice
    # As[buf, k, m] / Bs[buf, k, n]: rows padded by 4 words (16 bytes: aligned vector reads
    # stay aligned) so that the A stores of the (M, K) layout, 8 k-rows at once, hit 8 banks.
    PA, PB = BM + 4, BN + 4
    align = "" if SIMULATOR else ", alignment=16"
    rows, cols = _rows(TM, TY, "ty"), _rows(TN, TX, "tx")
    L = []
    w = L.append
    w("def kernel(A, B, C, bias, has_bias, M, N, K, alpha, beta, act, slope, kps):")
    w(f"    As = cuda.shared.array((2, {BK}, {PA}), dtype{align})")
    w(f"    Bs = cuda.shared.array((2, {BK}, {PB}), dtype{align})")
    w("    tid = cuda.threadIdx.x")
    w(f"    tx = tid % {TX}")
    w(f"    ty = tid // {TX}")
    w(f"    row0 = cuda.blockIdx.y * {BM}")
    w(f"    col0 = cuda.blockIdx.x * {BN}")
    w("    k_lo = cuda.blockIdx.z * kps" if split else "    k_lo = 0")
    w("    k_hi = min(K, k_lo + kps)" if split else "    k_hi = K")
    for i in range(TM):
        w("    " + " = ".join(f"c_{i}_{j}" for j in range(TN)) + " = zero")
    staged = [f"pa{l}" for l in range(LA)] + [f"pb{l}" for l in range(LB)]
    w("    " + " = ".join(staged) + " = zero")
    # each thread stages fixed (k, m) / (k, n) cells: element e = tid + l·threads of the slice,
    # consecutive threads along the operand's stored rows (coalesced global reads)
    for name, L_, T, n in (("a", LA, ta, BM), ("b", LB, not tb, BN)):
        for l in range(L_):
            e = f"(tid + {l * NT})"
            if T:  # stored (K, n): k = e // n, index = e % n
                w(f"    {name}k{l} = {e} // {n}")
                w(f"    {name}i{l} = {e} % {n}")
            else:  # stored (n, K)
                w(f"    {name}i{l} = {e} // {BK}")
                w(f"    {name}k{l} = {e} % {BK}")

    def load(k0: str, pad: str) -> None:
        for l in range(LA):
            gk, gm = f"{k0} + ak{l}", f"row0 + ai{l}"
            ref = f"A[{gk}, {gm}]" if ta else f"A[{gm}, {gk}]"
            w(f"{pad}pa{l} = {ref} if {gk} < k_hi and {gm} < M else zero")
        for l in range(LB):
            gk, gn = f"{k0} + bk{l}", f"col0 + bi{l}"
            ref = f"B[{gn}, {gk}]" if tb else f"B[{gk}, {gn}]"
            w(f"{pad}pb{l} = {ref} if {gk} < k_hi and {gn} < N else zero")

    def store(buf: str, pad: str) -> None:
        for l in range(LA):
            w(f"{pad}As[{buf}, ak{l}, ai{l}] = pa{l}")
        for l in range(LB):
            w(f"{pad}Bs[{buf}, bk{l}, bi{l}] = pb{l}")

    # slice 0 into buffer 0; then each slice's global loads are issued before the products
    # of the previous one (registers pa/pb), stored into the other buffer after them: one
    # barrier per slice. The loop runs two slices per trip (buffers 0 and 1 spelled out), so
    # that every shared index is a per-thread base plus a constant.
    w("    if k_lo < k_hi:")
    load("k_lo", " " * 8)
    store("0", " " * 8)
    w("    cuda.syncthreads()")
    w(f"    for k0 in range(k_lo, k_hi, {2 * BK}):")
    for cur in (0, 1):
        k = f"k0 + {cur * BK}"
        w(f"        if {k} < k_hi:")
        w(f"            nxt = {k} + {BK} < k_hi")
        w("            if nxt:")
        load(f"{k} + {BK}", " " * 16)
        for kk in range(BK) if unroll else ["kk"]:
            pad = "" if unroll else "    "
            if not unroll:
                w(f"            for kk in range({BK}):")
            for i in range(TM):
                w(f"            {pad}a{i} = As[{cur}, {kk}, {rows[i]}]")
            for j in range(TN):
                w(f"            {pad}b{j} = Bs[{cur}, {kk}, {cols[j]}]")
            for i in range(TM):
                w(f"            {pad}" + "; ".join(f"c_{i}_{j} += a{i} * b{j}" for j in range(TN)))
        w("            if nxt:")
        store(f"{1 - cur}", " " * 16)
        w("            cuda.syncthreads()")
    for i in range(TM):
        w(f"    r = row0 + {rows[i]}")
        w("    if r < M:")
        for j in range(TN):
            w(f"        c = col0 + {cols[j]}")
            if split:
                w(f"        if c < N: cuda.atomic.add(C, (r, c), alpha * c_{i}_{j})")
            else:
                args = f"C, r, c, c_{i}_{j}, bias, has_bias, alpha, beta, act, slope"
                w(f"        if c < N: _store({args})")
    return "\n".join(L) + "\n"


@device_function
def _store(C, r, c, v, bias, has_bias, alpha, beta, act, slope):
    """C[r, c] = act(alpha·v + beta·C[r, c] + bias[c]): the GEMM's fused epilogue."""
    v = alpha * v
    if beta != 0:
        v += beta * C[r, c]
    if has_bias:
        v += bias[c]
    C[r, c] = _act(v, act, slope)


def compile_gemm(ta: bool, tb: bool, dtype, tile: tuple, split=False, unroll=False, regs=None):
    """The numba.cuda kernel of ``_gemm_source`` (not cached; ``gemm`` is): ``regs`` caps the
    registers per thread (None: the compiler's choice)."""
    scope = {"cuda": cuda, "dtype": dtype, "zero": dtype(0), "_store": _store, "min": min}
    source = _gemm_source(ta, tb, tile, split, unroll)
    exec(compile(source, f"<gemm {ta:d}{tb:d} {tile}>", "exec"), scope)
    options = {} if SIMULATOR or regs is None else {"max_registers": regs}
    return cuda.jit(fastmath=FASTMATH, **options)(scope["kernel"])


@cache
def gemm(ta: bool, tb: bool, dtype, tile: tuple, split: bool = False):
    """C = alpha·op(A)·op(B) + beta·C, then C = act(C + bias) (bias read only if has_bias); op = ᵀ
    if the flag is set. A is (M, K) or (K, M), B (K, N) or (N, K); launch ``gemm_launch``.

    ``split``: blockIdx.z takes the K range [z·kps, (z+1)·kps) and adds alpha·its product to C
    atomically (split-K, for few output tiles over a long K such as dW = Xᵀ·dZ of a large
    batch; C holds beta·C before, and there is no epilogue)."""
    # The 128x128 tile compiles to ~150 registers (one block of 256 threads per SM); capped at
    # 128 it spills a few words outside the inner loop and runs two blocks per SM: 21 -> 24
    # TFLOP/s at 4096³ on an H100.
    regs = 128 if tile == TILES["large"] else None
    return cached(compile_gemm(ta, tb, dtype, tile, split, regs=regs))


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
        if beta != 1:  # C ← beta·C, then every K slice adds its part
            kernels(C.dtype.type).scale[blocks(C.size), THREADS](C.reshape(C.size), dt(beta))
        k = gemm(bool(ta), bool(tb), C.dtype.type, tile, True)
    else:
        kps = K
        k = gemm(bool(ta), bool(tb), C.dtype.type, tile)
    bias = bias if has_bias else placeholder(C.dtype, 1)
    k[grid, threads](A, B, C, bias, has_bias, M, N, K, dt(alpha), dt(beta), act, dt(slope), kps)
