/* Sparse categorical cross-entropy and its arg-max count for outputs no wider than one AVX-512
 * vector (digits' 10 classes), each row one masked vector (src_c/_loss.pxi keeps the scalar
 * loops for wider rows and builds without AVX-512). Per row i with label l, as the scalar loop:
 *   s = Σ_j p_j;  loss_i = −log clip(p_l / s, ε, 1 − ε);  fused (softmax + CE): dZ = (P − onehot)/m
 *   count: argmax_j p_j == l (the first of equal maxima, or the first NaN: np.argmax's rule)
 * Per 32x10 batch 0.37 µs for both, against 0.59 µs for the scalar loops (whose row sums and
 * arg-max compare chains stay scalar; float32 takes logf). The loads are from P, the masked
 * stores to dP: no row's load waits on the previous row's store. */
#ifndef FASTBP_LOSS_H
#define FASTBP_LOSS_H


#include <math.h>
#include <stdint.h>

/* The losses, by the names and ids of fastbp/losses.py (a test checks that the Cython module's
 * LOSS_IDS, built from these lists, equals the Python registry's). Element-wise ones (mean over all
 * elements) as X(NAME, ID, FUSES, VALUE, GRAD) with the formulas of fastbp/losses.py (FUSES:
 * with a fused output activation the gradient is p − y, as fastbp.losses.FUSABLE): VALUE and GRAD
 * (∂VALUE/∂p) of one element p with target y, where q = clip(p, eps, 1 − eps) and one = 1 are
 * in scope (the value accumulates in double, so its logarithms take a double). The
 * categorical cross-entropies are row operations (_loss.pxi, and the narrow path below). */
#define FASTBP_ELEMENT_LOSSES(X)                                                               \
    X(MSE, 0, 0, (p - y) * (p - y), 2 * (p - y))                                               \
    X(BINARY_CROSSENTROPY, 1, 1, -(y * log((double)q) + (one - y) * log((double)(one - q))),   \
      q == p ? (q - y) / (q * (one - q)) : 0)
#define FASTBP_ROW_LOSSES(X) X(CATEGORICAL_CROSSENTROPY, 2) X(SPARSE_CATEGORICAL_CROSSENTROPY, 3)

#define FASTBP_LOSS_ENUM(NAME, ID, ...) FASTBP_##NAME = ID,
#define FASTBP_LOSS_NAME(NAME, ID, ...) #NAME,
#define FASTBP_LOSS_ID(NAME, ID, ...) ID,
enum { FASTBP_ELEMENT_LOSSES(FASTBP_LOSS_ENUM) FASTBP_ROW_LOSSES(FASTBP_LOSS_ENUM) };
static const char* const fastbp_loss_names[] = {
    FASTBP_ELEMENT_LOSSES(FASTBP_LOSS_NAME) FASTBP_ROW_LOSSES(FASTBP_LOSS_NAME)};
static const int fastbp_loss_ids[] = {FASTBP_ELEMENT_LOSSES(FASTBP_LOSS_ID)
                                          FASTBP_ROW_LOSSES(FASTBP_LOSS_ID)};
enum { FASTBP_N_LOSSES = sizeof(fastbp_loss_ids) / sizeof(fastbp_loss_ids[0]) };

/* One case per element-wise loss: Σ VALUE over m·n elements into *total, dP = GRAD·inv (or the
 * fused (p − y)·inv); 1 where kind is element-wise, else 0. */
#define FASTBP_ELEMENT_LOSS_CASE(NAME, ID, FUSES, VALUE, GRAD)                                 \
    case ID:                                                                                   \
        for (long i = 0; i < size; i++) {                                                      \
            const FT p = P[i], y = Y[i];                                                       \
            const FT q = p < eps ? eps : (p > one - eps ? one - eps : p);                      \
            (void)q;                                                                           \
            sum += VALUE;                                                                      \
            dP[i] = FUSES && fused ? (p - y) * inv : (FT)(GRAD) * inv;                         \
        }                                                                                      \
        *total = sum;                                                                          \
        return 1;
#define FASTBP_ELEMENT_LOSS(S)                                                                 \
    static int fastbp_element_loss_##S(int kind, const FT* P, const FT* Y, FT* dP, long size,  \
                                       FT inv, int fused, double* total) {                     \
        const FT eps = (FT)1e-7, one = 1;                                                      \
        double sum = 0;                                                                        \
        switch (kind) { FASTBP_ELEMENT_LOSSES(FASTBP_ELEMENT_LOSS_CASE) }                      \
        return 0;                                                                              \
    }
#define FT float
FASTBP_ELEMENT_LOSS(f)
#undef FT
#define FT double
FASTBP_ELEMENT_LOSS(d)
#undef FT

#ifdef __AVX512F__
#include <immintrin.h>
#define FASTBP_CMPUNORD_F(k, a, b) _mm512_mask_cmp_ps_mask(k, a, b, _CMP_UNORD_Q)
#define FASTBP_CMPUNORD_D(k, a, b) _mm512_mask_cmp_pd_mask(k, a, b, _CMP_UNORD_Q)
#define FASTBP_SPARSE_NARROW(T, S, V, W, M_T, LOG, MASKZ_LOADU, MASK_STOREU, SET1, MUL, MASK_SUB, \
                             RADD, MASK_RMAX, MASK_CMPEQ, MASK_CMPUNORD)                                        \
    /* fused sparse CE of m rows of n <= W outputs; 0 where n > W (the caller's loop runs) */    \
    static int fastbp_sparse_ce_narrow_##S(const T* restrict P, const int64_t* labels,           \
                                           T* restrict dP, long m, long n, double* loss) {       \
        if (n > W) return 0;                                                                     \
        const M_T k = (M_T)((1u << n) - 1);                                                      \
        const T eps = (T)1e-7, one = 1, inv = one / (T)m;                                        \
        const V vinv = SET1(inv);                                                                \
        double total = 0;                                                                        \
        for (long i = 0; i < m; i++) {                                                           \
            const long l = (long)labels[i];                                                      \
            const V p = MASKZ_LOADU(k, P + i * n);                                               \
            const T q = P[i * n + l] / RADD(p);                                                  \
            total -= LOG(q < eps ? eps : (q > one - eps ? one - eps : q));                       \
            MASK_STOREU(dP + i * n, k, MASK_SUB(MUL(p, vinv), (M_T)(1u << l), MUL(p, vinv), vinv)); \
        }                                                                                        \
        *loss = total * inv;                                                                     \
        return 1;                                                                                \
    }                                                                                            \
    /* rows whose first maximal output is at their label; -1 where n > W */                      \
    static long fastbp_count_sparse_narrow_##S(const T* restrict P, const int64_t* labels,       \
                                               long m, long n) {                                 \
        if (n > W) return -1;                                                                    \
        const M_T k = (M_T)((1u << n) - 1);                                                      \
        long count = 0;                                                                          \
        for (long i = 0; i < m; i++) {                                                           \
            const V p = MASKZ_LOADU(k, P + i * n);                                               \
            /* the lowest lane equal to the max, or the first NaN (np.argmax's rule) */          \
            unsigned e = MASK_CMPUNORD(k, p, p);                                                 \
            if (!e) e = MASK_CMPEQ(k, p, SET1(MASK_RMAX(k, p)));                                 \
            count += __builtin_ctz(e | (1u << W)) == labels[i];                                  \
        }                                                                                        \
        return count;                                                                            \
    }
FASTBP_SPARSE_NARROW(float, f, __m512, 16, __mmask16, logf, _mm512_maskz_loadu_ps,
                     _mm512_mask_storeu_ps, _mm512_set1_ps, _mm512_mul_ps, _mm512_mask_sub_ps,
                     _mm512_reduce_add_ps, _mm512_mask_reduce_max_ps, _mm512_mask_cmpeq_ps_mask,
                     FASTBP_CMPUNORD_F)
FASTBP_SPARSE_NARROW(double, d, __m512d, 8, __mmask8, log, _mm512_maskz_loadu_pd,
                     _mm512_mask_storeu_pd, _mm512_set1_pd, _mm512_mul_pd, _mm512_mask_sub_pd,
                     _mm512_reduce_add_pd, _mm512_mask_reduce_max_pd, _mm512_mask_cmpeq_pd_mask,
                     FASTBP_CMPUNORD_D)
#else
static int fastbp_sparse_ce_narrow_f(const float* P, const int64_t* labels, float* dP, long m,
                                     long n, double* loss) {
    return 0;
}
static int fastbp_sparse_ce_narrow_d(const double* P, const int64_t* labels, double* dP, long m,
                                     long n, double* loss) {
    return 0;
}
static long fastbp_count_sparse_narrow_f(const float* P, const int64_t* labels, long m, long n) {
    return -1;
}
static long fastbp_count_sparse_narrow_d(const double* P, const int64_t* labels, long m, long n) {
    return -1;
}
#endif

#endif
