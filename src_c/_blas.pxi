# Row-major GEMM through SciPy's BLAS, transposes by flags (never materialized).
#
# A row-major matrix is its transpose in column-major order, so row-major
# C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep the flags.

from libc.stdlib cimport free, malloc

cdef extern from "limits.h":
    int INT_MAX


# GEMMs go through these pointers: SciPy's OpenBLAS unless fastbp.blas.use_blas("mkl") points
# them at another library's Fortran sgemm_/dgemm_ (same signature as cython_blas's).
ctypedef void (*sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*,
                         float*, float*, int*) noexcept nogil
ctypedef void (*dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*,
                         double*, double*, int*) noexcept nogil
cdef sgemm_t SGEMM = sgemm
cdef dgemm_t DGEMM = dgemm


def _set_gemm(size_t sgemm_address, size_t dgemm_address):
    """Route GEMMs to these Fortran-ABI sgemm_/dgemm_ addresses; 0, 0 restores SciPy's BLAS.
    Private: fastbp.blas.use_blas resolves the addresses from a library it has loaded."""
    global SGEMM, DGEMM
    if (sgemm_address == 0) != (dgemm_address == 0):
        raise ValueError("give both addresses, or neither")
    SGEMM = <sgemm_t>sgemm_address if sgemm_address else sgemm
    DGEMM = <dgemm_t>dgemm_address if dgemm_address else dgemm


# Up to this many multiply-adds (M·N·K) a plain loop beats a BLAS call's fixed cost and the
# small-GEMM kernel's setup (tiny layers such as XOR's 2-2-1). Layers just above it, such as the
# 30->10 layer of Nielsen's 784-30-10 at batch 10 (3000), run faster in the small-GEMM kernel
# (examples/nielsen_mnist.py: 9 ms an epoch against 11-16 ms in plain loops). See
# set_small_gemm_limit.
cdef Py_ssize_t SMALL_GEMM = 256


def set_small_gemm_limit(Py_ssize_t limit):
    """Route GEMMs with M·N·K <= limit to the plain-loop kernel (0: always BLAS). Returns the
    previous limit. A tuning knob for benchmarks; results differ only by rounding."""
    global SMALL_GEMM
    old, SMALL_GEMM = SMALL_GEMM, max(limit, 0)
    return old


cdef void gemm_small(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                     const floating* A, int lda, const floating* B, int ldb, floating beta,
                     floating* C, int ldc) noexcept nogil:
    """The same contract as gemm_rm in plain loops (rows of C updated along contiguous j)."""
    cdef Py_ssize_t i, j, p
    cdef floating a, s
    cdef floating* c
    for i in range(M):
        c = C + i * ldc
        if trans_b:
            # C[i, j] = Σ_p op(A)[i, p]·B[j, p]: dot products along contiguous rows of B
            for j in range(N):
                s = 0
                for p in range(K):
                    s += (A[p * lda + i] if trans_a else A[i * lda + p]) * B[j * ldb + p]
                c[j] = alpha * s + (beta * c[j] if beta != 0 else 0)
        else:
            for j in range(N):
                c[j] = beta * c[j] if beta != 0 else 0
            for p in range(K):
                a = alpha * (A[p * lda + i] if trans_a else A[i * lda + p])
                for j in range(N):
                    c[j] += a * B[p * ldb + j]


cdef extern from "_gemm_rows.h":
    int FASTBP_GEMM_ROWS
    void gemm_rows_f(int ta, long M, long N, long K, float alpha, const float* A, long lda,
                     const float* B, long ldb, float beta, float* C, long ldc, int sgd,
                     float lr) noexcept nogil
    void gemm_rows_d(int ta, long M, long N, long K, double alpha, const double* A, long lda,
                     const double* B, long ldb, double beta, double* C, long ldc, int sgd,
                     double lr) noexcept nogil
    void fastbp_transpose_f(const float* B, long ldb, long n, long k, float* out) noexcept nogil


cdef extern from "_sparse_rows.h":
    int fastbp_sparse_rows_on
    int fastbp_sparse_gemm_f(long M, long N, long K, float alpha, const float* A, long lda,
                             const float* B, long ldb, float beta, float* C,
                             long ldc) noexcept nogil
    int fastbp_sparse_gemm_tn_f(long M, long N, long K, float alpha, const float* A, long lda,
                                const float* B, long ldb, float beta, float* C, long ldc,
                                int sgd, float lr) noexcept nogil


HAS_GEMM_ROWS = bool(FASTBP_GEMM_ROWS)  # built with AVX-512: the kernel exists
# Up to this many multiply-adds (M·N·K), a float32 GEMM goes to the register-blocked kernel of
# _gemm_rows.h instead of BLAS (with trans_b only where Bᵀ fits TRANSPOSED_B); float64 up to 1/8.
# Measured here (dense_forward/backward, kernel vs OpenBLAS with 2 threads): float32 10x784x30
# 1.5x, 32x128x512 (an LSTM step) 1.2x, 32x64x64 even, 128x256x256 0.67x; float64 10x784x30
# 1.6x, 32x128x512 0.6x.
cdef Py_ssize_t ROWS_GEMM = 1 << 21


def set_rows_gemm_limit(Py_ssize_t limit):
    """Route GEMMs with M·N·K <= limit (float64: limit / 8; with trans_b only a B of up to 4096
    numbers) to the register-blocked small-GEMM kernel (0: never). Returns the previous limit; a tuning knob,
    results differ by rounding. Without AVX-512 at build time the kernel is absent."""
    global ROWS_GEMM
    old, ROWS_GEMM = ROWS_GEMM, max(limit, 0)
    return old


cdef inline bint rows_gemm(Py_ssize_t mnk, bint single) noexcept nogil:
    """Is a product of mnk multiply-adds (single: float32) the small-GEMM kernel's size? (gemm_rm
    gives it a trans_b product only where Bᵀ fits TRANSPOSED_B.)"""
    return FASTBP_GEMM_ROWS and SMALL_GEMM < mnk <= (ROWS_GEMM if single else ROWS_GEMM // 8)


def _set_sparse_rows(bint on):
    """Let float32 products with a mostly-zero A skip its zeros (_sparse_rows.h; off: always
    the dense kernel, for tests). Returns the previous setting; False where the kernel is
    absent (no AVX-512 at build time)."""
    global fastbp_sparse_rows_on
    old = bool(fastbp_sparse_rows_on)
    if FASTBP_GEMM_ROWS:
        fastbp_sparse_rows_on = on
    return old


# Most numbers of a B that gemm_rm transposes for the small-GEMM kernel (a stack buffer)
cdef enum:
    TRANSPOSED_B = 4096


cdef inline void transpose(const floating* B, Py_ssize_t ldb, Py_ssize_t n, Py_ssize_t k,
                           floating* out) noexcept nogil:
    """out (k, n) = Bᵀ of the (n, k) matrix B stored with row length ldb (float32 from 256
    numbers on: 16x16 tiles in registers, _gemm_rows.h; below, the loops cost less)."""
    cdef Py_ssize_t i, j
    if floating is float:
        if FASTBP_GEMM_ROWS and n * k >= 256:
            fastbp_transpose_f(B, ldb, n, k, out)
            return
    for i in range(n):
        for j in range(k):
            out[j * n + i] = B[i * ldb + j]


cdef void gemm_rows(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                    floating* A, int lda, floating* B, int ldb, floating beta,
                    floating* C, int ldc) noexcept nogil:
    """gemm_rm through the small-GEMM kernel, which reads B by rows: a small op(B) = Bᵀ (a
    layer's dX = dZ·Wᵀ) is transposed into a buffer on the stack first, one pass over N·K
    numbers (float32 dX of digits' 64->10 output layer, batch 32: 1.8 µs in OpenBLAS, 1.0 here;
    W3's 256->10, batch 128: 13.7 -> 8.3 µs). Not inline: only this path has the buffer."""
    cdef floating bt[TRANSPOSED_B]
    if floating is float:
        if trans_a and not trans_b and beta == 0 and N <= 16 and M >= 32 and ldc == N and (
                M * N <= TRANSPOSED_B):
            # an output layer's dW = Xᵀ·dZ (M x N, N <= 16): one vector per row wastes lanes
            # (N of 16); Cᵀ = dZᵀ·X fills them, then one tile transpose. Each element is the
            # same FMA chain over K either way: the same numbers (64x10 by 32: 0.57 -> 0.47 µs)
            gemm_rows_f(True, N, M, K, alpha, B, ldb, A, lda, 0, bt, M, 0, 0)
            transpose(bt, M, N, M, C)
            return
        # A mostly zeros (pixels, ReLU outputs): only its nonzeros multiplied in
        if not trans_b and (fastbp_sparse_gemm_tn_f(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                                                    0, 0)
                            if trans_a else
                            fastbp_sparse_gemm_f(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)):
            return
    if trans_b:
        transpose(B, ldb, N, K, bt)
        B, ldb = bt, N
    if floating is float:
        gemm_rows_f(trans_a, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 0, 0)
    else:
        gemm_rows_d(trans_a, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 0, 0)


# gemm_blocked's chunks: a B block of up to 256x256 numbers (256 KB float32) stays in L2
cdef enum:
    BLOCK_K = 256
    BLOCK_N = 256


cdef void gemm_blocked(bint trans_a, int M, int N, int K, const floating* A, int lda,
                       const floating* B, int ldb, floating beta, floating* C,
                       int ldc) noexcept nogil:
    """C(M,N) = op(A)·B + beta·C in the small-GEMM kernel at any size (never BLAS: the team's
    regions run beside no BLAS pool), B taken in L2-sized blocks: K in chunks of BLOCK_K
    accumulated into C, N in chunks of BLOCK_N. K >= 1; only on builds with the kernel."""
    cdef int n0 = 0, k0, nc, kc
    cdef const floating* a
    while n0 < N:
        nc = min(<int>BLOCK_N, N - n0)
        k0 = 0
        while k0 < K:
            kc = min(<int>BLOCK_K, K - k0)
            a = A + (<Py_ssize_t>k0 * lda if trans_a else k0)
            if floating is float:
                gemm_rows_f(trans_a, M, nc, kc, 1, a, lda, B + <Py_ssize_t>k0 * ldb + n0, ldb,
                            beta if k0 == 0 else 1, C + n0, ldc, 0, 0)
            else:
                gemm_rows_d(trans_a, M, nc, kc, 1, a, lda, B + <Py_ssize_t>k0 * ldb + n0, ldb,
                            beta if k0 == 0 else 1, C + n0, ldc, 0, 0)
            k0 += kc
        n0 += nc


cdef inline void gemm_rows_sgd(bint trans_a, int M, int N, int K, const floating* A, int lda,
                               const floating* B, int ldb, floating l2x2, floating lr,
                               floating* W, int ldw) noexcept nogil:
    """W ← W − lr·(op(A)·B + l2x2·W) in the small-GEMM kernel's epilogue: plain SGD fused into
    its dW product (no dW written, no second pass over W). Only where rows_gemm says the product
    is the kernel's size; the same roundings as _optim.h's SGD (explicit FMAs on both sides)."""
    if floating is float:
        # a mostly-zero input (pixels): its zero features' rows of W skipped (_sparse_rows.h)
        if not (trans_a and fastbp_sparse_gemm_tn_f(M, N, K, 1, A, lda, B, ldb, l2x2, W, ldw, 1,
                                                    lr)):
            gemm_rows_f(trans_a, M, N, K, 1, A, lda, B, ldb, l2x2, W, ldw, 1, lr)
    else:
        gemm_rows_d(trans_a, M, N, K, 1, A, lda, B, ldb, l2x2, W, ldw, 1, lr)


cdef bint gemm_noblas(bint trans_a, bint trans_b, int M, int N, int K, floating* A, int lda,
                      floating* B, int ldb, floating beta, floating* C,
                      int ldc) noexcept nogil:
    """C = op(A)·op(B) + beta·C in the small-GEMM kernel at any size, op(B) = Bᵀ through a
    transposed copy (the team's fallback: _team.h, fastbp_blas_avoid). False: no memory for the
    copy (the caller takes BLAS)."""
    cdef floating* bt = NULL
    if trans_b:
        bt = <floating*>malloc(<size_t>N * K * sizeof(floating))
        if bt == NULL:
            return False
        transpose(B, ldb, N, K, bt)
        B, ldb = bt, N
    gemm_blocked(trans_a, M, N, K, A, lda, B, ldb, beta, C, ldc)
    free(bt)
    return True


cdef inline void gemm_rm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                         floating* A, int lda, floating* B, int ldb, floating beta,
                         floating* C, int ldc) noexcept nogil:
    """C(M,N) = alpha·op(A)·op(B) + beta·C, all row-major; ld* = stored row length."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if fastbp_blas_avoided() and FASTBP_GEMM_ROWS and alpha == 1 and K >= 1:
        # the serial side of work shaped for the team (_team.h): every product in the team's
        # kernel with its blocking, whatever the size, so that the numbers are the team's
        if gemm_noblas(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc):
            return
    if <Py_ssize_t>M * N * K <= SMALL_GEMM:
        gemm_small(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        return
    if rows_gemm(<Py_ssize_t>M * N * K, sizeof(floating) == 4) and (
            not trans_b or <Py_ssize_t>N * K <= TRANSPOSED_B):
        gemm_rows(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        return
    if floating is float:
        # beyond the small-GEMM kernel's sizes too (an evaluation of 1000 MNIST digits: 784 ->
        # 30 in 0.17 ms, OpenBLAS 0.5 ms): only where A is mostly zeros
        if not trans_a and not trans_b and fastbp_sparse_gemm_f(M, N, K, alpha, A, lda, B, ldb,
                                                                beta, C, ldc):
            return
    fastbp_blas_called()  # its pool may spin for a while now: no team (_team.h)
    if floating is float:
        SGEMM(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)
    else:
        DGEMM(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)


cdef extern from "_fastmath.h":
    double fastbp_sum_abs_f(const float* p, long n) noexcept nogil
    double fastbp_sum_sq_f(const float* p, long n) noexcept nogil
    double fastbp_sum_abs_d(const double* p, long n) noexcept nogil
    double fastbp_sum_sq_d(const double* p, long n) noexcept nogil
    unsigned int fastbp_ftz_on() noexcept nogil
    void fastbp_ftz_restore(unsigned int old) noexcept nogil


cdef inline int blas_dim(Py_ssize_t n, str name) except -1:
    # BLAS takes 32-bit ints: refuse what would overflow rather than corrupt memory.
    if n > INT_MAX:
        raise ValueError(f"{name}={n} exceeds the BLAS limit of {INT_MAX}")
    return <int>n
