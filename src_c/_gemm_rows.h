/* Small GEMMs whose B is read by rows: C = alpha·op(A)·B + beta·C, all row-major, op(A) = A or
 * Aᵀ, so that C[i, :] = Σ_p op(A)[i, p]·B[p, :] (see src_c/_blas.pxi, gemm_rm). These are the
 * products of small mini-batches: the forward X·W of 10-32 rows and dW = Xᵀ·dZ whose K is the
 * batch, where a BLAS call's fixed cost (checks, packing, waking its threads) is a large share.
 *
 * Register blocking: rb (8, 4, 2 or 1) rows of C by nv (1-4; at most 2 where rb is 8) AVX-512
 * vectors of columns stay in registers over all of K; per p: nv loads of B's row, rb broadcasts
 * of op(A), rb·nv fused multiply-adds. Where C has 8 rows or more, 8 by 2 (16 accumulators):
 * each B vector then serves 8 FMAs, half the B traffic of 4 by 4 (measured, float32: 128x256
 * by 256x10 35-38 -> 45-50 GFLOP/s, 10x784 by 784x30 55-57 -> 64, the LSTM step's dW-shaped
 * product 57-74 -> 62-92; 32x64x64 unchanged). Columns beyond N are masked (loads give 0,
 * stores skip them). The accumulators are named scalars, not an array: GCC kept an array in
 * registers but also stored all of it to the stack on every p (16 stores per 16 FMAs, half the
 * speed). Without AVX-512 at build time (-march), FASTBP_GEMM_ROWS is 0 and gemm_rm keeps BLAS.
 * This core issues two 16-wide FMAs per cycle (~134 GFLOP/s float32, measured). */
#ifndef FASTBP_GEMM_ROWS_H
#define FASTBP_GEMM_ROWS_H

#ifdef __AVX512F__
#include <immintrin.h>
#define FASTBP_GEMM_ROWS 1

/* row r of the block times vector v: only where r < RB and v < NV (constants after inlining) */
#define FASTBP_ACC(F, r, v) if ((r) < RB && (v) < NV) c##r##v = F(a##r, b##v, c##r##v)

#define FASTBP_GEMM_ROWS_DEF(T, S, V, W, M_T, SET0, SET1, LOADU, MASKZ_LOADU, MASK_STOREU,     \
                             FMADD, MUL)                                                       \
    static inline __attribute__((always_inline)) void gemm_rows_block_##S(                     \
        const int TA, const int RB, const int NV, long K, T alpha, const T* restrict A,        \
        long lda, const T* restrict B, long ldb, T beta, T* restrict C, long ldc, M_T last) {  \
        V c00 = SET0(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,      \
          c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00,         \
          c32 = c00, c33 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,         \
          c61 = c00, c70 = c00, c71 = c00;                                                     \
        const M_T full = (M_T)~(M_T)0;                                                         \
        for (long p = 0; p < K; p++) {                                                         \
            const T* b = B + p * ldb;                                                          \
            V b0 = MASKZ_LOADU(NV == 1 ? last : full, b), b1 = c00, b2 = c00, b3 = c00;        \
            if (NV > 1) b1 = MASKZ_LOADU(NV == 2 ? last : full, b + W);                        \
            if (NV > 2) b2 = MASKZ_LOADU(NV == 3 ? last : full, b + 2 * W);                    \
            if (NV > 3) b3 = MASKZ_LOADU(last, b + 3 * W);                                     \
            const T* a = TA ? A + p * lda : A + p; /* op(A)[r, p] at a[r·step] */              \
            const long step = TA ? 1 : lda;                                                    \
            V a0 = SET1(a[0]), a1 = c00, a2 = c00, a3 = c00, a4 = c00, a5 = c00, a6 = c00;     \
            V a7 = c00;                                                                        \
            if (RB > 1) a1 = SET1(a[step]);                                                    \
            if (RB > 2) a2 = SET1(a[2 * step]);                                                \
            if (RB > 3) a3 = SET1(a[3 * step]);                                                \
            if (RB > 4) a4 = SET1(a[4 * step]);                                                \
            if (RB > 5) a5 = SET1(a[5 * step]);                                                \
            if (RB > 6) a6 = SET1(a[6 * step]);                                                \
            if (RB > 7) a7 = SET1(a[7 * step]);                                                \
            FASTBP_ACC(FMADD, 0, 0); FASTBP_ACC(FMADD, 0, 1); FASTBP_ACC(FMADD, 0, 2); FASTBP_ACC(FMADD, 0, 3);            \
            FASTBP_ACC(FMADD, 1, 0); FASTBP_ACC(FMADD, 1, 1); FASTBP_ACC(FMADD, 1, 2); FASTBP_ACC(FMADD, 1, 3);            \
            FASTBP_ACC(FMADD, 2, 0); FASTBP_ACC(FMADD, 2, 1); FASTBP_ACC(FMADD, 2, 2); FASTBP_ACC(FMADD, 2, 3);            \
            FASTBP_ACC(FMADD, 3, 0); FASTBP_ACC(FMADD, 3, 1); FASTBP_ACC(FMADD, 3, 2); FASTBP_ACC(FMADD, 3, 3);            \
            FASTBP_ACC(FMADD, 4, 0); FASTBP_ACC(FMADD, 4, 1); FASTBP_ACC(FMADD, 5, 0); FASTBP_ACC(FMADD, 5, 1);            \
            FASTBP_ACC(FMADD, 6, 0); FASTBP_ACC(FMADD, 6, 1); FASTBP_ACC(FMADD, 7, 0); FASTBP_ACC(FMADD, 7, 1);            \
        }                                                                                      \
        V acc[8][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},       \
                       {c30, c31, c32, c33}, {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};  \
        for (int r = 0; r < RB; r++)                                                           \
            for (int v = 0; v < NV; v++) {                                                     \
                T* c = C + r * ldc + v * W;                                                    \
                M_T mask = v == NV - 1 ? last : full;                                          \
                V out = MUL(SET1(alpha), acc[r][v]);                                           \
                if (beta != 0) /* C may hold NaN where beta is 0: never read it then */        \
                    out = FMADD(SET1(beta), MASKZ_LOADU(mask, c), out);                        \
                MASK_STOREU(c, mask, out);                                                     \
            }                                                                                  \
    }                                                                                          \
    /* C(M, N) = alpha·op(A)·B + beta·C; op(A) = Aᵀ if ta (A stored (K, M)), B stored (K, N) */  \
    static void gemm_rows_##S(int ta, long M, long N, long K, T alpha, const T* A, long lda,  \
                              const T* B, long ldb, T beta, T* C, long ldc) {                  \
        /* 8 rows by 2 vectors where there are 8 rows: each B vector loaded serves 8 FMAs, half \
           the B traffic of 4 by 4 (B often comes from L2: an LSTM's 128x512 Wh) */            \
        const int maxnv = M >= 8 ? 2 : 4;                                                      \
        for (long j0 = 0; j0 < N;) {                                                           \
            long left = N - j0;                                                                \
            int nv = left >= maxnv * W ? maxnv : (int)((left + W - 1) / W);                    \
            long cols = left < (long)nv * W ? left : (long)nv * W;                             \
            M_T last = (M_T)((1ull << (cols - (long)(nv - 1) * W)) - 1);                       \
            for (long i0 = 0; i0 < M;) {                                                       \
                int rb = M - i0 >= 8 && nv <= 2 ? 8 : M - i0 >= 4 ? 4 : M - i0 >= 2 ? 2 : 1;  \
                const T* a = ta ? A + i0 : A + i0 * lda;                                       \
                T* c = C + i0 * ldc + j0;                                                      \
                /* one call per (ta, rb, nv): each a block with constant loop structure */     \
                _Pragma("GCC unroll 32") for (int k = 0; k < 32; k++) {                        \
                    int kta = k / 16, krb = 8 >> ((k / 4) % 4), knv = k % 4 + 1;               \
                    if (kta == !!ta && krb == rb && knv == nv && (krb < 8 || knv <= 2))        \
                        gemm_rows_block_##S(kta, krb, knv, K, alpha, a, lda, B + j0, ldb,      \
                                            beta, c, ldc, last);                               \
                }                                                                              \
                i0 += rb;                                                                      \
            }                                                                                  \
            j0 += cols;                                                                        \
        }                                                                                      \
    }

FASTBP_GEMM_ROWS_DEF(float, f, __m512, 16, __mmask16, _mm512_setzero_ps, _mm512_set1_ps,
                     _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                     _mm512_fmadd_ps, _mm512_mul_ps)
FASTBP_GEMM_ROWS_DEF(double, d, __m512d, 8, __mmask8, _mm512_setzero_pd, _mm512_set1_pd,
                     _mm512_loadu_pd, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                     _mm512_fmadd_pd, _mm512_mul_pd)

#else
#define FASTBP_GEMM_ROWS 0
static void gemm_rows_f(int ta, long M, long N, long K, float alpha, const float* A, long lda,
                        const float* B, long ldb, float beta, float* C, long ldc) {}
static void gemm_rows_d(int ta, long M, long N, long K, double alpha, const double* A, long lda,
                        const double* B, long ldb, double beta, double* C, long ldc) {}
#endif

#endif
