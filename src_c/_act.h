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
        for (long i = 0; i < m; i++) {                                                         \
            T *restrict a = A + i * ld;                                                        \
            if (b) {                                                                           \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] += b[j];                 \
            }                                                                                  \
            T mx = a[0];                                                                       \
            for (long j = 1; j < n; j++) mx = a[j] > mx ? a[j] : mx;                           \
            _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] -= mx;                       \
        }                                                                                      \
        if (ld == n) {                                                                         \
            _Pragma("omp simd") for (long k = 0; k < m * n; k++) A[k] = EXP(A[k]);             \
        } else {                                                                               \
            for (long i = 0; i < m; i++) {                                                     \
                T *restrict a = A + i * ld;                                                    \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] = EXP(a[j]);             \
            }                                                                                  \
        }                                                                                      \
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
