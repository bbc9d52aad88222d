# Row-major GEMM through SciPy's BLAS, transposes by flags (never materialized).
#
# A row-major matrix is its transpose in column-major order, so row-major
# C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep the flags.

cdef extern from "limits.h":
    int INT_MAX


cdef inline void gemm_rm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                         floating* A, int lda, floating* B, int ldb, floating beta,
                         floating* C, int ldc) noexcept nogil:
    """C(M,N) = alpha·op(A)·op(B) + beta·C, all row-major; ld* = stored row length."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)


cdef extern from "_fastmath.h":
    float fastbp_expf(float x) noexcept nogil
    float fastbp_tanhf(float x) noexcept nogil


cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return fastbp_expf(x)  # vectorizable (see _fastmath.h)
    else:
        return exp(x)


cdef inline floating ftanh(floating x) noexcept nogil:
    if floating is float:
        return fastbp_tanhf(x)
    else:
        return tanh(x)


cdef inline int blas_dim(Py_ssize_t n, str name) except -1:
    # BLAS takes 32-bit ints: refuse what would overflow rather than corrupt memory.
    if n > INT_MAX:
        raise ValueError(f"{name}={n} exceeds the BLAS limit of {INT_MAX}")
    return <int>n
