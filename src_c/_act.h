/* A Dense layer's element-wise steps around its GEMMs (src_c/_dense.pxi), in C: with `restrict`
 * arrays each row is one simd loop, the bias added and the activation applied in one pass
 * (Cython's loops over pointers that may alias vectorize only behind run-time overlap checks).
 *   forward:  A = act(A + b)                 (row by row, so a row stays in L1)
 *   backward: dZ = dA ⊙ act'(A) in place     (the derivative from the outputs A); db = Σ_rows dZ
 * Activation ids and formulas: the X-macro list of _act_list.h. The narrow AVX-512 paths below
 * cover the activations of the benchmarked models and return 0 for the others, which take the
 * generic loops generated from the list. An activation whose derivative needs z (NEEDS_Z) has z
 * stored by the forward (Z, same ld as A) and read by the backward. */
#ifndef FASTBP_ACT_H
#define FASTBP_ACT_H

#include <math.h>
#include <string.h>

#include "_fastmath.h"

#include "_act_list.h"

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
        case FASTBP_LINEAR: /* db only */                                                      \
            FASTBP_ACT_ROWS(((void)a, d), V, W, MASKZ_LOADU, MASK_STOREU, ADD)                 \
            break;                                                                             \
        default: /* the generic loops */                                                       \
            return 0;                                                                          \
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

/* the same rows, also storing z into Z (same ld) */
#define FASTBP_ROWS_ZS(T, STMT)                                                                \
    for (long i = 0; i < m; i++) {                                                             \
        T *restrict a = A + i * ld, *restrict zs = Z + i * ld;                                 \
        if (b) {                                                                               \
            _Pragma("omp simd") for (long j = 0; j < n; j++) {                                 \
                T z = a[j] + b[j];                                                             \
                zs[j] = z;                                                                     \
                STMT;                                                                          \
            }                                                                                  \
        } else {                                                                               \
            _Pragma("omp simd") for (long j = 0; j < n; j++) {                                 \
                T z = a[j];                                                                    \
                zs[j] = z;                                                                     \
                STMT;                                                                          \
            }                                                                                  \
        }                                                                                      \
    }

/* one case of the forward's switch per activation of _act_list.h: A = f(A + b), z kept in Z
   where given (the wrappers give it exactly for NEEDS_Z activations) */
#define FASTBP_ACT_FORWARD_CASE(NAME, ID, NEEDS_Z, FWD, BWD)                                   \
    case ID:                                                                                   \
        if (ID == FASTBP_LINEAR && !b && !Z) return;                                           \
        if (Z) {                                                                               \
            FASTBP_ROWS_ZS(FT, a[j] = FWD);                                                    \
        } else {                                                                               \
            FASTBP_ROWS_Z(FT, a[j] = FWD);                                                     \
        }                                                                                      \
        return;

/* one case of the backward's row switch: dz = BWD from a, d (and z where NEEDS_Z) */
#define FASTBP_ACT_BACKWARD_CASE(NAME, ID, NEEDS_Z, FWD, BWD)                                  \
    case ID:                                                                                   \
        if (ID != FASTBP_LINEAR) {                                                             \
            _Pragma("omp simd") for (long j = 0; j < n; j++) {                                 \
                const FT a = ar[j], d = dr[j];                                                 \
                const FT z = NEEDS_Z ? zr[j] : 0;                                              \
                (void)a, (void)z;                                                              \
                dr[j] = BWD;                                                                   \
            }                                                                                  \
        }                                                                                      \
        break;

/* FT, EXP, TANH, ERF: the float type and its functions, defined around each use */
#define FASTBP_ACT(S)                                                                          \
    static void fastbp_bias_act_z_##S(FT *restrict A, FT *restrict Z, const FT *restrict b,    \
                                      long m, long n, long ld, int act, FT alpha) {            \
        const FT one = 1;                                                                      \
        (void)one, (void)alpha;                                                                \
        switch (act) {                                                                         \
            FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_FORWARD_CASE)                            \
        case FASTBP_SOFTMAX:                                                                   \
            break;                                                                             \
        default: /* ids are checked at the API edge; never reached */                          \
            return;                                                                            \
        }                                                                                      \
        /* softmax: z - max z per row; then e^(.) over the whole block in one loop (per row of \
           10 classes the loop is shorter than one vector); then each row / its sum */         \
        if (!fastbp_softmax_narrow_##S(A, b, m, n, ld, 0)) {                                   \
            for (long i = 0; i < m; i++) {                                                     \
                FT *restrict a = A + i * ld;                                                   \
                if (b) {                                                                       \
                    _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] += b[j];             \
                }                                                                              \
                FT mx = a[0];                                                                  \
                for (long j = 1; j < n; j++) mx = a[j] > mx ? a[j] : mx;                       \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] -= mx;                   \
            }                                                                                  \
        }                                                                                      \
        if (ld == n) {                                                                         \
            _Pragma("omp simd") for (long k = 0; k < m * n; k++) A[k] = EXP(A[k]);             \
        } else {                                                                               \
            for (long i = 0; i < m; i++) {                                                     \
                FT *restrict a = A + i * ld;                                                   \
                _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] = EXP(a[j]);             \
            }                                                                                  \
        }                                                                                      \
        if (fastbp_softmax_narrow_##S(A, b, m, n, ld, 1)) return;                              \
        for (long i = 0; i < m; i++) {                                                         \
            FT *restrict a = A + i * ld;                                                       \
            FT s = 0;                                                                          \
            for (long j = 0; j < n; j++) s += a[j];                                            \
            s = one / s;                                                                       \
            _Pragma("omp simd") for (long j = 0; j < n; j++) a[j] *= s;                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    static void fastbp_bias_act_##S(FT *restrict A, const FT *restrict b, long m, long n,      \
                                    long ld, int act, FT alpha) {                              \
        fastbp_bias_act_z_##S(A, NULL, b, m, n, ld, act, alpha);                               \
    }                                                                                          \
                                                                                               \
    /* dA (m rows of n, ld apart, in place) ⊙= f'(z); db (n, or NULL) = Σ_rows dZ; Z (the     \
       pre-activations, same ld) is read only for NEEDS_Z activations */                       \
    static void fastbp_act_backward_z_##S(const FT *restrict A, const FT *restrict Z,          \
                                          FT *restrict dA, FT *restrict db, long m, long n,    \
                                          long ld, int act, FT alpha) {                        \
        const FT one = 1;                                                                      \
        (void)one, (void)alpha;                                                                \
        if (!fastbp_act_needs_z(act)                                                           \
            && fastbp_act_backward_narrow_##S(A, dA, db, m, n, ld, act, alpha))                \
            return;                                                                            \
        if (db) memset(db, 0, n * sizeof(FT));                                                 \
        for (long i = 0; i < m; i++) {                                                         \
            const FT *restrict ar = A + i * ld;                                                \
            const FT *restrict zr = Z ? Z + i * ld : NULL;                                     \
            FT *restrict dr = dA + i * ld;                                                     \
            (void)zr;                                                                          \
            switch (act) {                                                                     \
                FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_BACKWARD_CASE)                       \
            case FASTBP_SOFTMAX: { /* Jacobian-vector product: dz = a ⊙ (da − <da, a>) */      \
                FT s = 0;                                                                      \
                for (long j = 0; j < n; j++) s += dr[j] * ar[j];                               \
                _Pragma("omp simd") for (long j = 0; j < n; j++) dr[j] = ar[j] * (dr[j] - s);  \
                break;                                                                         \
            }                                                                                  \
            default:                                                                           \
                break;                                                                         \
            }                                                                                  \
            if (db) {                                                                          \
                _Pragma("omp simd") for (long j = 0; j < n; j++) db[j] += dr[j];               \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    static void fastbp_act_backward_db_##S(const FT *restrict A, FT *restrict dA,              \
                                           FT *restrict db, long m, long n, long ld, int act,  \
                                           FT alpha) {                                         \
        fastbp_act_backward_z_##S(A, NULL, dA, db, m, n, ld, act, alpha);                      \
    }

#define FT float
#define EXP fastbp_expf
#define TANH fastbp_tanhf
#define ERF erff
FASTBP_ACT(f)
#undef FT
#undef EXP
#undef TANH
#undef ERF
#define FT double
#define EXP fastbp_exp
#define TANH fastbp_tanh
#define ERF erf
FASTBP_ACT(d)
#undef FT
#undef EXP
#undef TANH
#undef ERF

#endif
