/* A Dense layer's element-wise steps around its GEMMs (src_c/_dense.pxi), in C: with `restrict`
 * arrays each row is one simd loop, the bias added and the activation applied in one pass (the
 * Cython version stored A + b and read it back for the activation, and its loops over pointers
 * that may alias vectorized behind run-time overlap checks).
 *   forward:  A = act(A + b)                 (row by row, so a row stays in L1)
 *   backward: dZ = dA ⊙ act'(A) in place     (the derivative from the outputs A); db = Σ_rows dZ
 * Activation ids: the enum below (the Cython module takes them from here; a test checks them
 * against fastbp/backends/contract.py). */
#ifndef FASTBP_ACT_H
#define FASTBP_ACT_H

#include <string.h>

#include "_fastmath.h"

enum {
    FASTBP_LINEAR = 0,
    FASTBP_SIGMOID = 1,
    FASTBP_TANH = 2,
    FASTBP_RELU = 3,
    FASTBP_LEAKY_RELU = 4,
    FASTBP_SOFTMAX = 5
};

/* for each row a (ld apart), for j < n: z = a[j] + b[j] (or a[j] where b is NULL: a separate
   loop, never `b ? b[j] : 0`, which GCC makes a masked load from NULL + j, a microcode assist
   per vector), then STMT */
#define FASTBP_ROWS_Z(T, STMT)                                                                 \
    for (long i = 0; i < m; i++) {                                                             \
        T *restrict a = A + i * ld;                                                            \
        if (b) {                                                                               \
            _Pragma("omp simd") for (long j = 0; j < n; j++) {                                 \
                T z = a[j] + b[j];                                                             \
                STMT;                                                                          \
            }                                                                                  \
        } else {                                                                               \
            _Pragma("omp simd") for (long j = 0; j < n; j++) {                                 \
                T z = a[j];                                                                    \
                STMT;                                                                          \
            }                                                                                  \
        }                                                                                      \
    }

/* Softmax rows no wider than one AVX-512 vector (digits' 10 classes), each row one masked
   vector: its max and its sum by the vector reductions, not a scalar chain per row. Eight rows
   at a time, all eight loaded before any is stored: a masked store's 64 bytes overlap the next
   row's first load, which then waits for the store to retire (row by row: 2.5x slower than the
   scalar loops, 8 at a time 0.65x their time, 32x10). shift: A = A + b − max per row (lanes
   past n read as −inf); scale: A /= Σ per row (A holds the exponentials). 0: not narrow. */
#ifdef __AVX512F__
#include <immintrin.h>
#define FASTBP_SOFTMAX_NARROW(T, S, V, W, M_T, MASK_LOADU, MASKZ_LOADU, MASK_STOREU, SET1, ADD,  \
                              SUB, MUL, RMAX, RADD)                                            \
    static inline __attribute__((always_inline)) V fastbp_sm_shifted_##S(                      \
        const T* a, const T* b, V bv, M_T k) {                                                 \
        V z = MASK_LOADU(SET1(-INFINITY), k, a);                                               \
        return b ? ADD(z, bv) : z;                                                             \
    }                                                                                          \
    static int fastbp_softmax_narrow_##S(T* restrict A, const T* restrict b, long m, long n,   \
                                         long ld, int scale) {                                 \
        if (n > W) return 0;                                                                   \
        const M_T k = (M_T)((1u << n) - 1);                                                    \
        const V bv = b ? MASKZ_LOADU(k, b) : SET1(0);                                          \
        long i = 0;                                                                            \
        for (; i + 8 <= m; i += 8) {                                                           \
            V z[8];                                                                            \
            for (int r = 0; r < 8; r++)                                                        \
                z[r] = scale ? MASKZ_LOADU(k, A + (i + r) * ld)                                \
                             : fastbp_sm_shifted_##S(A + (i + r) * ld, b, bv, k);              \
            for (int r = 0; r < 8; r++)                                                        \
                MASK_STOREU(A + (i + r) * ld, k,                                               \
                            scale ? MUL(z[r], SET1((T)1 / RADD(z[r])))                         \
                                  : SUB(z[r], SET1(RMAX(z[r]))));                              \
        }                                                                                      \
        for (; i < m; i++) {                                                                   \
            V z = scale ? MASKZ_LOADU(k, A + i * ld)                                           \
                        : fastbp_sm_shifted_##S(A + i * ld, b, bv, k);                         \
            MASK_STOREU(A + i * ld, k,                                                         \
                        scale ? MUL(z, SET1((T)1 / RADD(z))) : SUB(z, SET1(RMAX(z))));         \
        }                                                                                      \
        return 1;                                                                              \
    }
FASTBP_SOFTMAX_NARROW(float, f, __m512, 16, __mmask16, _mm512_mask_loadu_ps,
                      _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps, _mm512_set1_ps,
                      _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_reduce_max_ps,
                      _mm512_reduce_add_ps)
FASTBP_SOFTMAX_NARROW(double, d, __m512d, 8, __mmask8, _mm512_mask_loadu_pd,
                      _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd, _mm512_set1_pd,
                      _mm512_add_pd, _mm512_sub_pd, _mm512_mul_pd, _mm512_reduce_max_pd,
                      _mm512_reduce_add_pd)
/* dZ = dA ⊙ act'(A) and db = Σ_rows dZ for rows of at most four vectors (n <= 4·W; not
   softmax), whole vectors at the offsets the small-GEMM kernel stored dA at (it has just written
   it: a load that straddles a pending store waits for it), db in four named accumulators (in
   memory, each row's add waited on the previous row's store). 0 where not narrow. */
#define FASTBP_ACT_ROWS(DERIV, V, W, LD, ST, ADD)                                              \
    for (long i = 0; i < m; i++) {                                                             \
        const long o = i * ld;                                                                 \
        FASTBP_ACT_VEC(DERIV, V, W, LD, ST, ADD, 0, k0, s0)                                    \
        FASTBP_ACT_VEC(DERIV, V, W, LD, ST, ADD, 1, k1, s1)                                    \
        FASTBP_ACT_VEC(DERIV, V, W, LD, ST, ADD, 2, k2, s2)                                    \
        FASTBP_ACT_VEC(DERIV, V, W, LD, ST, ADD, 3, k3, s3)                                    \
    }
#define FASTBP_ACT_VEC(DERIV, V, W, LD, ST, ADD, v, k, acc)                                    \
    if (k) {                                                                                   \
        V d = LD(k, dA + o + v * W);                                                           \
        if (act != FASTBP_LINEAR) {                                                            \
            const V a = LD(k, A + o + v * W);                                                  \
            d = DERIV;                                                                         \
            ST(dA + o + v * W, k, d);                                                          \
        }                                                                                      \
        acc = ADD(acc, d);                                                                     \
    }
#define FASTBP_ACT_BWD_NARROW(T, S, V, W, M_T, MASKZ_LOADU, MASK_STOREU, SET0, SET1, ADD, SUB,  \
                              MUL, FNMADD, CMPGT, MASKZ_MOV, MASK_MOV)                         \
    static inline M_T fastbp_lanes_##S(long n, int v) { /* lanes of vector v below n */        \
        long left = n - v * W;                                                                 \
        return left >= W ? (M_T)~(M_T)0 : left > 0 ? (M_T)((1u << left) - 1) : 0;             \
    }                                                                                          \
    static int fastbp_act_backward_narrow_##S(const T* restrict A, T* restrict dA,             \
                                              T* restrict db, long m, long n, long ld, int act, \
                                              T alpha) {                                       \
        if (n > 4 * W || act == FASTBP_SOFTMAX) return 0;                                      \
        if (act == FASTBP_LINEAR && !db) return 1; /* nothing to do */                         \
        const M_T k0 = fastbp_lanes_##S(n, 0), k1 = fastbp_lanes_##S(n, 1);                    \
        const M_T k2 = fastbp_lanes_##S(n, 2), k3 = fastbp_lanes_##S(n, 3);                    \
        const V one = SET1(1), zero = SET0(), va = SET1(alpha);                                \
        V s0 = zero, s1 = zero, s2 = zero, s3 = zero;                                          \
        switch (act) { /* the derivative from the outputs a, times d */                        \
        case FASTBP_SIGMOID:                                                                   \
            FASTBP_ACT_ROWS(MUL(d, MUL(a, SUB(one, a))), V, W, MASKZ_LOADU, MASK_STOREU, ADD)  \
            break;                                                                             \
        case FASTBP_TANH:                                                                      \
            FASTBP_ACT_ROWS(MUL(d, FNMADD(a, a, one)), V, W, MASKZ_LOADU, MASK_STOREU, ADD)    \
            break;                                                                             \
        case FASTBP_RELU:                                                                      \
            FASTBP_ACT_ROWS(MASKZ_MOV(CMPGT(a, zero), d), V, W, MASKZ_LOADU, MASK_STOREU, ADD) \
            break;                                                                             \
        case FASTBP_LEAKY_RELU:                                                                \
            FASTBP_ACT_ROWS(MASK_MOV(MUL(va, d), CMPGT(a, zero), d), V, W, MASKZ_LOADU,        \
                            MASK_STOREU, ADD)                                                  \
            break;                                                                             \
        default: /* linear: db only */                                                         \
            FASTBP_ACT_ROWS(((void)a, d), V, W, MASKZ_LOADU, MASK_STOREU, ADD)                 \
            break;                                                                             \
        }                                                                                      \
        if (db) {                                                                              \
            if (k0) MASK_STOREU(db, k0, s0);                                                   \
            if (k1) MASK_STOREU(db + W, k1, s1);                                               \
            if (k2) MASK_STOREU(db + 2 * W, k2, s2);                                           \
            if (k3) MASK_STOREU(db + 3 * W, k3, s3);                                           \
        }                                                                                      \
        return 1;                                                                              \
    }
#define FASTBP_GT_PS(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define FASTBP_GT_PD(a, b) _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ)
FASTBP_ACT_BWD_NARROW(float, f, __m512, 16, __mmask16, _mm512_maskz_loadu_ps,
                      _mm512_mask_storeu_ps, _mm512_setzero_ps, _mm512_set1_ps, _mm512_add_ps,
                      _mm512_sub_ps, _mm512_mul_ps, _mm512_fnmadd_ps, FASTBP_GT_PS,
                      _mm512_maskz_mov_ps, _mm512_mask_mov_ps)
FASTBP_ACT_BWD_NARROW(double, d, __m512d, 8, __mmask8, _mm512_maskz_loadu_pd,
                      _mm512_mask_storeu_pd, _mm512_setzero_pd, _mm512_set1_pd, _mm512_add_pd,
                      _mm512_sub_pd, _mm512_mul_pd, _mm512_fnmadd_pd, FASTBP_GT_PD,
                      _mm512_maskz_mov_pd, _mm512_mask_mov_pd)
#else
static int fastbp_act_backward_narrow_f(const float* A, float* dA, float* db, long m, long n,
                                        long ld, int act, float alpha) {
    return 0;
}
static int fastbp_act_backward_narrow_d(const double* A, double* dA, double* db, long m, long n,
                                        long ld, int act, double alpha) {
    return 0;
}
static int fastbp_softmax_narrow_f(float* A, const float* b, long m, long n, long ld, int s) {
    return 0;
}
static int fastbp_softmax_narrow_d(double* A, const double* b, long m, long n, long ld, int s) {
    return 0;
}
#endif

#define FASTBP_ACT(T, S, EXP, TANH)                                                            \
    static void fastbp_bias_act_##S(T *restrict A, const T *restrict b, long m, long n,        \
                                    long ld, int act, T alpha) {                               \
        const T one = 1;                                                                       \
        switch (act) {                                                                         \
        case FASTBP_SIGMOID: /* e^-z may overflow to inf for z << 0: exactly 0, no NaN */      \
            FASTBP_ROWS_Z(T, a[j] = one / (one + EXP(-z)));                                    \
            return;                                                                            \
        case FASTBP_TANH:                                                                      \
            FASTBP_ROWS_Z(T, a[j] = TANH(z));                                                  \
            return;                                                                            \
        case FASTBP_RELU:                                                                      \
            FASTBP_ROWS_Z(T, a[j] = z > 0 ? z : 0);                                            \
            return;                                                                            \
        case FASTBP_LEAKY_RELU:                                                                \
            FASTBP_ROWS_Z(T, a[j] = z > 0 ? z : alpha * z);                                    \
            return;                                                                            \
        case FASTBP_SOFTMAX:                                                                   \
            break;                                                                             \
        default:                                                                               \
            if (b) FASTBP_ROWS_Z(T, a[j] = z);                                                 \
            return;                                                                            \
        }                                                                                      \
        /* softmax: z - max z per row; then e^(.) over the whole block in one loop (per row of \
           10 classes the loop is shorter than one vector); then each row / its sum */         \
        if (!fastbp_softmax_narrow_##S(A, b, m, n, ld, 0)) {                                   \
            for (long i = 0; i < m; i++) {                                                     \
                T *restrict a = A + i * ld;                                                    \
                if (b) {                                                                       \
                    _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] += b[j];             \
                }                                                                              \
                T mx = a[0];                                                                   \
                for (long j = 1; j < n; j++) mx = a[j] > mx ? a[j] : mx;                       \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] -= mx;                   \
            }                                                                                  \
        }                                                                                      \
        if (ld == n) {                                                                         \
            _Pragma("omp simd") for (long k = 0; k < m * n; k++) A[k] = EXP(A[k]);             \
        } else {                                                                               \
            for (long i = 0; i < m; i++) {                                                     \
                T *restrict a = A + i * ld;                                                    \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] = EXP(a[j]);             \
            }                                                                                  \
        }                                                                                      \
        if (fastbp_softmax_narrow_##S(A, b, m, n, ld, 1)) return;                              \
        for (long i = 0; i < m; i++) {                                                         \
            T *restrict a = A + i * ld;                                                        \
            T s = 0;                                                                           \
            for (long j = 0; j < n; j++) s += a[j];                                            \
            s = one / s;                                                                       \
            _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] *= s;                       \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* dD (m rows of n, ld apart, in place) ⊙= act'(A); db (n, or NULL) = Σ_rows dZ */         \
    static void fastbp_act_backward_db_##S(const T *restrict A, T *restrict dA, T *restrict db, \
                                           long m, long n, long ld, int act, T alpha) {        \
        const T one = 1;                                                                       \
        if (fastbp_act_backward_narrow_##S(A, dA, db, m, n, ld, act, alpha)) return;           \
        if (db) memset(db, 0, n * sizeof(T));                                                  \
        for (long i = 0; i < m; i++) {                                                         \
            const T *restrict a = A + i * ld;                                                  \
            T *restrict d = dA + i * ld;                                                       \
            switch (act) {                                                                     \
            case FASTBP_SIGMOID:                                                               \
                _Pragma("omp simd") for (long j = 0; j < n; j++) d[j] *= a[j] * (one - a[j]);  \
                break;                                                                         \
            case FASTBP_TANH:                                                                  \
                _Pragma("omp simd") for (long j = 0; j < n; j++) d[j] *= one - a[j] * a[j];    \
                break;                                                                         \
            case FASTBP_RELU:                                                                  \
                _Pragma("omp simd") for (long j = 0; j < n; j++) d[j] = a[j] > 0 ? d[j] : 0;   \
                break;                                                                         \
            case FASTBP_LEAKY_RELU: /* a > 0 exactly where z > 0: alpha >= 0 (API edge) */     \
                _Pragma("omp simd") for (long j = 0; j < n; j++)                               \
                    d[j] = a[j] > 0 ? d[j] : alpha * d[j];                                     \
                break;                                                                         \
            case FASTBP_SOFTMAX: { /* Jacobian-vector product: dz = a ⊙ (da − <da, a>) */      \
                T s = 0;                                                                       \
                for (long j = 0; j < n; j++) s += d[j] * a[j];                                 \
                _Pragma("omp simd") for (long j = 0; j < n; j++) d[j] = a[j] * (d[j] - s);     \
                break;                                                                         \
            }                                                                                  \
            default:                                                                           \
                break;                                                                         \
            }                                                                                  \
            if (db) {                                                                          \
                _Pragma("omp simd") for (long j = 0; j < n; j++) db[j] += d[j];                \
            }                                                                                  \
        }                                                                                      \
    }

FASTBP_ACT(float, f, fastbp_expf, fastbp_tanhf)
FASTBP_ACT(double, d, fastbp_exp, fastbp_tanh)

#endif
