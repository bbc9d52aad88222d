/* Small GEMMs whose B is read by rows: C = alpha·op(A)·B + beta·C, all row-major, op(A) = A or
 * Aᵀ, so that C[i, :] = Σ_p op(A)[i, p]·B[p, :] (see src_c/_blas.pxi, gemm_rm). These are the
 * products of small mini-batches: the forward X·W of 10-32 rows and dW = Xᵀ·dZ whose K is the
 * batch, where a BLAS call's fixed cost (checks, packing, waking its threads) is a large share.
 *
 * Register blocking: rb rows of C by nv (1-4) AVX-512 vectors of columns stay in registers
 * over all of K; per p: nv loads of B's row, rb broadcasts of op(A), rb·nv fused multiply-adds.
 * Where C has 8 rows or more, blocks of 8 rows by at most 2 vectors (16 accumulators): each B
 * vector then serves 8 FMAs, half the B traffic of 4 by 4 (measured, float32: 128x256 by 256x10
 * 35-38 -> 45-50 GFLOP/s, 10x784 by 784x30 55-57 -> 64, the LSTM step's dW-shaped product
 * 57-74 -> 62-92; 32x64x64 unchanged); the last 10-15 rows as one block of 10 or 12 (24
 * accumulators), so a batch of 10 streams B once, not in an 8-row block and again in a 2-row
 * one (Nielsen's 10x784 by 784x30 forward: 0.86-0.89x the time, in-process A/B); then 4, 2, 1.
 * Except a product of one vector of columns without op(A) = Aᵀ (an output layer's forward,
 * N <= 16): blocks of 4 rows, 20-30% faster than 8 at every shape measured (32x64 by 64x10
 * 0.79 -> 0.63 µs, 128x256 by 256x10 12.5 -> 9.3 µs, 10x30 by 30x10; the 8 rows' broadcasts,
 * each from its own row of A, are the bottleneck there); with Aᵀ, 8 stays faster.
 * Columns beyond N are masked (loads give 0, stores skip them). The accumulators are named
 * scalars, not an array: GCC kept an array in registers but also stored all of it to the stack
 * on every p (16 stores per 16 FMAs, half the speed). Without AVX-512 at build time (-march),
 * FASTBP_GEMM_ROWS is 0 and gemm_rm keeps BLAS.
 * This core issues two 16-wide FMAs per cycle (~134 GFLOP/s float32, measured). */
#ifndef FASTBP_GEMM_ROWS_H
#define FASTBP_GEMM_ROWS_H

#ifdef __AVX512F__
#include <immintrin.h>
#define FASTBP_GEMM_ROWS 1

/* row r of the block times vector v: only where r < RB and v < NV (constants after inlining) */
#define FASTBP_ACC(F, r, v) if ((r) < RB && (v) < NV) c##r##v = F(a##r, b##v, c##r##v)

#define FASTBP_GEMM_ROWS_DEF(T, S, V, W, M_T, SET0, SET1, BCAST, MASKZ_LOADU, MASK_STOREU,     \
                             FMADD, FNMADD, MUL)                                               \
    static inline __attribute__((always_inline)) void gemm_rows_block_##S(                     \
        const int TA, const int RB, const int NV, long K, T alpha, const T* restrict A,        \
        long lda, const T* restrict B, long ldb, T beta, T* restrict C, long ldc, M_T last,    \
        int sgd, T lr) {                                                                       \
        V c00 = SET0(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,      \
          c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00,         \
          c32 = c00, c33 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,         \
          c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,         \
          c100 = c00, c101 = c00, c110 = c00, c111 = c00;                                      \
        const M_T full = (M_T)~(M_T)0;                                                         \
        const T* q0 = A; /* without TA: A's rows 0, 3, 6 and 9 at column p */                  \
        const T* q3 = RB > 3 && !TA ? A + 3 * lda : A;                                         \
        const T* q6 = RB > 6 && !TA ? A + 6 * lda : A;                                         \
        const T* q9 = RB > 9 && !TA ? A + 9 * lda : A;                                         \
        for (long p = 0; p < K; p++) {                                                         \
            const T* b = B + p * ldb;                                                          \
            V b0 = MASKZ_LOADU(NV == 1 ? last : full, b), b1 = c00, b2 = c00, b3 = c00;        \
            if (NV > 1) b1 = MASKZ_LOADU(NV == 2 ? last : full, b + W);                        \
            if (NV > 2) b2 = MASKZ_LOADU(NV == 3 ? last : full, b + 2 * W);                    \
            if (NV > 3) b3 = MASKZ_LOADU(last, b + 3 * W);                                     \
            /* op(A)[r, p]: Aᵀ's row p is contiguous (a[r]); A's rows are lda apart, reached   \
               from 4 pointers (rows 0, 3, 6, 9) at offsets 0, lda, 2·lda, which x86 addresses \
               as base + lda·(4|8) with lda in one register (with a row offset per broadcast,  \
               12 rows spilled the offsets to the stack: an extra load per broadcast) */       \
            const T* a = TA ? A + p * lda : q0;                                                \
            const long s1 = TA ? 1 : lda, s2 = TA ? 2 : 2 * lda;                               \
            const T* a_3 = TA ? a + 3 : q3;                                                    \
            const T* a_6 = TA ? a + 6 : q6;                                                    \
            const T* a_9 = TA ? a + 9 : q9;                                                    \
            V a0 = BCAST(a), a1 = c00, a2 = c00, a3 = c00, a4 = c00, a5 = c00, a6 = c00;       \
            V a7 = c00, a8 = c00, a9 = c00, a10 = c00, a11 = c00;                              \
            if (RB > 1) a1 = BCAST(a + s1);                                                    \
            if (RB > 2) a2 = BCAST(a + s2);                                                    \
            if (RB > 3) a3 = BCAST(a_3);                                                       \
            if (RB > 4) a4 = BCAST(a_3 + s1);                                                  \
            if (RB > 5) a5 = BCAST(a_3 + s2);                                                  \
            if (RB > 6) a6 = BCAST(a_6);                                                       \
            if (RB > 7) a7 = BCAST(a_6 + s1);                                                  \
            if (RB > 8) a8 = BCAST(a_6 + s2);                                                  \
            if (RB > 9) a9 = BCAST(a_9);                                                       \
            if (RB > 10) a10 = BCAST(a_9 + s1);                                                \
            if (RB > 11) a11 = BCAST(a_9 + s2);                                                \
            q0++, q3++, q6++, q9++;                                                            \
            FASTBP_ACC(FMADD, 0, 0); FASTBP_ACC(FMADD, 0, 1); FASTBP_ACC(FMADD, 0, 2); FASTBP_ACC(FMADD, 0, 3);            \
            FASTBP_ACC(FMADD, 1, 0); FASTBP_ACC(FMADD, 1, 1); FASTBP_ACC(FMADD, 1, 2); FASTBP_ACC(FMADD, 1, 3);            \
            FASTBP_ACC(FMADD, 2, 0); FASTBP_ACC(FMADD, 2, 1); FASTBP_ACC(FMADD, 2, 2); FASTBP_ACC(FMADD, 2, 3);            \
            FASTBP_ACC(FMADD, 3, 0); FASTBP_ACC(FMADD, 3, 1); FASTBP_ACC(FMADD, 3, 2); FASTBP_ACC(FMADD, 3, 3);            \
            FASTBP_ACC(FMADD, 4, 0); FASTBP_ACC(FMADD, 4, 1); FASTBP_ACC(FMADD, 5, 0); FASTBP_ACC(FMADD, 5, 1);            \
            FASTBP_ACC(FMADD, 6, 0); FASTBP_ACC(FMADD, 6, 1); FASTBP_ACC(FMADD, 7, 0); FASTBP_ACC(FMADD, 7, 1);            \
            FASTBP_ACC(FMADD, 8, 0); FASTBP_ACC(FMADD, 8, 1); FASTBP_ACC(FMADD, 9, 0); FASTBP_ACC(FMADD, 9, 1);            \
            FASTBP_ACC(FMADD, 10, 0); FASTBP_ACC(FMADD, 10, 1); FASTBP_ACC(FMADD, 11, 0); FASTBP_ACC(FMADD, 11, 1);        \
        }                                                                                      \
        V acc[12][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},      \
                        {c30, c31, c32, c33}, {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71},  \
                        {c80, c81}, {c90, c91}, {c100, c101}, {c110, c111}};                   \
        /* C is read (beta != 0, or sgd: C is W) for the whole block before any store: a       \
           masked store's lanes past a row's end overlap the next row's first load, which then \
           waits for the store to retire (a fused SGD reading W row after row ran 2x slower).  \
           Row pointers advance by ldc behind an empty asm: else GCC hoists all r·ldc offsets  \
           out of the block loop and spills them (a stack load per store) */                   \
        V old[12][4];                                                                          \
        T* c = C;                                                                              \
        if (sgd || beta != 0) /* else C may hold NaN: never read it */                         \
            for (int r = 0; r < RB; r++) {                                                     \
                for (int v = 0; v < NV; v++)                                                   \
                    old[r][v] = MASKZ_LOADU(v == NV - 1 ? last : full, c + v * W);             \
                c += ldc;                                                                      \
                __asm__("" : "+r"(c));                                                         \
            }                                                                                  \
        c = C;                                                                                 \
        for (int r = 0; r < RB; r++) {                                                         \
            for (int v = 0; v < NV; v++) {                                                     \
                V out = MUL(SET1(alpha), acc[r][v]);                                           \
                if (sgd) /* C is W: W - lr·(g + beta·W), g = alpha·acc (see gemm_rows_sgd) */  \
                    out = FNMADD(SET1(lr), FMADD(SET1(beta), old[r][v], out), old[r][v]);      \
                else if (beta != 0)                                                            \
                    out = FMADD(SET1(beta), old[r][v], out);                                   \
                MASK_STOREU(c + v * W, v == NV - 1 ? last : full, out);                        \
            }                                                                                  \
            c += ldc;                                                                          \
            __asm__("" : "+r"(c));                                                             \
        }                                                                                      \
    }                                                                                          \
    /* C(M, N) = alpha·op(A)·B + beta·C; op(A) = Aᵀ if ta (A stored (K, M)), B (K, N) */       \
    /* sgd: C is a weight matrix updated in place, C ← C − lr·(alpha·op(A)·B + beta·C):       \
       plain SGD (beta = 2·l2) fused into dW = Xᵀ·dZ, rounding as _optim.h's SGD */           \
    static void gemm_rows_##S(int ta, long M, long N, long K, T alpha, const T* A, long lda,   \
                              const T* B, long ldb, T beta, T* C, long ldc, int sgd, T lr) {   \
        /* 8 rows by 2 vectors where there are 8 rows: each B vector loaded serves 8 FMAs, half \
           the B traffic of 4 by 4 (B often comes from L2: an LSTM's 128x512 Wh) */            \
        const int maxnv = M >= 8 ? 2 : 4;                                                      \
        for (long j0 = 0; j0 < N;) {                                                           \
            long left = N - j0;                                                                \
            int nv = left >= maxnv * W ? maxnv : (int)((left + W - 1) / W);                    \
            long cols = left < (long)nv * W ? left : (long)nv * W;                             \
            M_T last = (M_T)((1ull << (cols - (long)(nv - 1) * W)) - 1);                       \
            for (long i0 = 0; i0 < M;) {                                                       \
                /* 8 rows, but the last 10-15 as 10 or 12 (a 10-row batch: B streamed once,    \
                   not by an 8-row block and again by a 2-row one) */                          \
                long rows = M - i0;                                                            \
                int rb = nv > 2 || (nv == 1 && !ta) ? (rows >= 4 ? 4 : rows >= 2 ? 2 : 1)      \
                         : rows >= 16 ? 8 : rows >= 12 ? 12 : rows >= 10 ? 10 : rows >= 8 ? 8  \
                         : rows >= 4 ? 4 : rows >= 2 ? 2 : 1;                                  \
                const T* a = ta ? A + i0 : A + i0 * lda;                                       \
                T* c = C + i0 * ldc + j0;                                                      \
                /* one call per (ta, rb, nv): each a block with constant loop structure */     \
                _Pragma("GCC unroll 48") for (int k = 0; k < 48; k++) {                        \
                    int kta = k / 24, kr = (k / 4) % 6, knv = k % 4 + 1;                       \
                    int krb = kr == 0 ? 12 : kr == 1 ? 10 : kr == 2 ? 8 : 8 >> (kr - 2);       \
                    if (kta == !!ta && krb == rb && knv == nv && (krb < 8 || knv <= 2))        \
                        gemm_rows_block_##S(kta, krb, knv, K, alpha, a, lda, B + j0, ldb,      \
                                            beta, c, ldc, last, sgd, lr);                      \
                }                                                                              \
                i0 += rb;                                                                      \
            }                                                                                  \
            j0 += cols;                                                                        \
        }                                                                                      \
    }

/* broadcasts straight from memory (one load uop): from a scalar GCC sometimes loaded it, then
   broadcast it on the shuffle port, which also issues one of the two FMAs (8 rows by 1 vector of
   128x256 by 256x10: 12 -> 18 µs) */
#define FASTBP_BCAST_F(p) _mm512_broadcastss_ps(_mm_load_ss(p))
#define FASTBP_BCAST_D(p) _mm512_broadcastsd_pd(_mm_load_sd(p))
FASTBP_GEMM_ROWS_DEF(float, f, __m512, 16, __mmask16, _mm512_setzero_ps, _mm512_set1_ps,
                     FASTBP_BCAST_F, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                     _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_mul_ps)
FASTBP_GEMM_ROWS_DEF(double, d, __m512d, 8, __mmask8, _mm512_setzero_pd, _mm512_set1_pd,
                     FASTBP_BCAST_D, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                     _mm512_fmadd_pd, _mm512_fnmadd_pd, _mm512_mul_pd)

/* out (k, n) = Bᵀ of the (n, k) float32 matrix B (rows ldb apart), in 16x16 tiles: 16 rows
   loaded (masked past k), transposed in registers (unpack, in-lane shuffle, two 128-bit lane
   shuffles: 64 shuffles a tile), columns stored as rows (masked past n). For dX = dZ·Wᵀ of an
   output layer (64x10: 0.21 -> 0.07 µs; the scalar loop moved one number per cycle). */
static void fastbp_transpose_f(const float* B, long ldb, long n, long k, float* out) {
    for (long i0 = 0; i0 < n; i0 += 16) {
        const long rows = n - i0 < 16 ? n - i0 : 16;
        const __mmask16 rmask = (__mmask16)((1u << rows) - 1);
        for (long j0 = 0; j0 < k; j0 += 16) {
            const long cols = k - j0 < 16 ? k - j0 : 16;
            const __mmask16 cmask = (__mmask16)((1u << cols) - 1);
            __m512 r[16], t[16], u[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(cmask, B + (i0 + i) * ldb + j0)
                                : _mm512_setzero_ps();
            /* t[2i], t[2i+1]: rows 2i, 2i+1 interleaved (per 128-bit lane L: columns 4L, 4L+1
               and 4L+2, 4L+3) */
            for (int i = 0; i < 8; i++) {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            /* u[4i+c], lane L: rows 4i..4i+3 at column 4L+c */
            for (int i = 0; i < 4; i++) {
                u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
                u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
                u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
                u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
            }
            /* column 4L+c = lane L of u[c], u[4+c], u[8+c], u[12+c] */
            for (int c = 0; c < 4; c++) {
                __m512 a = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
                __m512 b = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
                __m512 e = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
                __m512 d = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
                __m512 col[4] = {_mm512_shuffle_f32x4(a, e, 0x88), _mm512_shuffle_f32x4(b, d, 0x88),
                                 _mm512_shuffle_f32x4(a, e, 0xDD), _mm512_shuffle_f32x4(b, d, 0xDD)};
                for (int L = 0; L < 4; L++)
                    if (4 * L + c < cols)
                        _mm512_mask_storeu_ps(out + (j0 + 4 * L + c) * n + i0, rmask, col[L]);
            }
        }
    }
}

#else
#define FASTBP_GEMM_ROWS 0
static void fastbp_transpose_f(const float* B, long ldb, long n, long k, float* out) {}
static void gemm_rows_f(int ta, long M, long N, long K, float alpha, const float* A, long lda,
                        const float* B, long ldb, float beta, float* C, long ldc, int sgd,
                        float lr) {}
static void gemm_rows_d(int ta, long M, long N, long K, double alpha, const double* A, long lda,
                        const double* B, long ldb, double beta, double* C, long ldc, int sgd,
                        double lr) {}
#endif

#endif
