/* gemm_real.c: the blocked GEMM of gradkern, BLIS style, for one instruction set and dtype.

   Included by gradkern.c once per (ISA, dtype) inside a `#pragma GCC target` region, with
   these defined by the includer:
     REAL          float or double
     G(name)       name with the ISA and dtype suffix, e.g. gemm_avx512_f32
     MR, NR        register tile: MR rows of C by NR columns (NR = NV vectors of VLEN)
     KC, MC, NC    cache blocks: a (KC, NR) panel of B stays in L1 while MR-row panels of an
                   (MC, KC) block of A stream from L2; a (KC, NC) block of B sits in L2/L3
     VEC, VLEN, VMASK, MAKE_MASK(count), VZERO(), VLOAD(p), VLOADM(mask, p),
     VSTOREM(p, mask, v), VBCAST(x), VFMA(a, b, acc), VADD(a, b)     the ISA's vector ops

   c (M, N) row-major = op(A) (M, K) @ op(B) (K, N) [+ bias (N)], where element (i, k) of
   op(A) is a[i*rsa + k*csa] and element (k, j) of op(B) is b[k*rsb + j*csb]. The three
   products of backprop are the same driver with different strides:
     X·W    (forward)          A = X  (rsa=C, csa=1)   B = W   (rsb=OC, csb=1)
     dY·Wᵀ  (input gradient)   A = dY (rsa=OC, csa=1)  B = Wᵀ  (rsb=1, csb=OC)
     Xᵀ·dY  (weight gradient)  A = Xᵀ (rsa=1, csa=C)   B = dY  (rsb=OC, csb=1)

   Every element of C sums its K products in the same order whatever the thread count or
   the packing: KC blocks in order, each accumulated from zero in registers, then added to
   C. So results are bit-identical across runs and thread counts. */

#define NV (NR / VLEN)

/* dst (kc, W) k-major panel from W "rows" r of a strided source:
   dst[k*W + r] = src[r*rs + k*cs] for r < rows, 0 for rows <= r < W (edge padding). */
static inline __attribute__((always_inline)) void G(pack_panel)(
    REAL *restrict dst, const REAL *restrict src, int64_t rs, int64_t cs, int64_t rows,
    int64_t kc, const int64_t W)
{
    if (rs == 1 && rows == W) {          /* each k is a contiguous run of W: a copy */
        for (int64_t k = 0; k < kc; k++) {
            const REAL *s = src + k * cs;
            REAL *d = dst + k * W;
            for (int64_t r = 0; r < W; r++) d[r] = s[r];
        }
        return;
    }
    if (cs == 1) {                       /* each r is contiguous along k: a transpose */
        int64_t k0 = 0;
#ifdef GK_PACK_T_FAST
        if (rows == W && W % 16 == 0) k0 = GK_PACK_T_FAST(dst, src, rs, kc, W);
#endif
        for (int64_t r = 0; r < rows; r++) {
            const REAL *s = src + r * rs;
            for (int64_t k = k0; k < kc; k++) dst[k * W + r] = s[k];
        }
    } else {
        for (int64_t k = 0; k < kc; k++)
            for (int64_t r = 0; r < rows; r++) dst[k * W + r] = src[r * rs + k * cs];
    }
    for (int64_t k = 0; k < kc; k++)
        for (int64_t r = rows; r < W; r++) dst[k * W + r] = 0;
}

static void G(pack_a)(REAL *restrict dst, const REAL *restrict src, int64_t rs, int64_t cs,
                      int64_t rows, int64_t kc)
{
    G(pack_panel)(dst, src, rs, cs, rows, kc, MR);
}

static void G(pack_b)(REAL *restrict dst, const REAL *restrict src, int64_t rs, int64_t cs,
                      int64_t rows, int64_t kc)
{
    G(pack_panel)(dst, src, rs, cs, rows, kc, NR);
}

/* The register micro-kernel: C (mr, nr) tile (+)= A panel (mr, kc) @ B panel (kc, nr).
   A packed: a[p*MR + r]; else a[r*rsa + p*csa] with rows past mr clamped to the last one.
   B packed: NR values per p, zero padded; else b + p*rsb, loaded under the column mask.
   nv: vectors per row actually computed (NV, or 1 for a tile at most VLEN wide, which
   halves the work of narrow layers such as a 10-class head).
   first: C = acc + bias (bias may be NULL); otherwise C = C + acc. Only the mr x nr
   corner of C is read or written. */
static inline __attribute__((always_inline)) void G(ukr_body)(
    int64_t kc, const REAL *restrict a, int64_t rsa, int64_t csa, const REAL *restrict b,
    int64_t rsb, REAL *restrict c, int64_t ldc, int64_t mr, int64_t nr, int first,
    const REAL *restrict bias, const int a_packed, const int b_packed, const int nv)
{
    VEC acc[MR][NV];
    VMASK mask[NV];
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) mask[v] = MAKE_MASK(nr - v * VLEN);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) acc[r][v] = VZERO();

    if (a_packed) {
        for (int64_t p = 0; p < kc; p++) {
            VEC bv[NV];
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                bv[v] = b_packed ? VLOAD(b + v * VLEN) : VLOADM(mask[v], b + v * VLEN);
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                VEC av = VBCAST(a[r]);
#pragma GCC unroll 8
                for (int v = 0; v < nv; v++) acc[r][v] = VFMA(av, bv[v], acc[r][v]);
            }
            a += MR;
            b += rsb;
        }
    } else {
        int64_t roff[MR];
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) roff[r] = (r < mr ? r : mr - 1) * rsa;
        for (int64_t p = 0; p < kc; p++) {
            VEC bv[NV];
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                bv[v] = b_packed ? VLOAD(b + v * VLEN) : VLOADM(mask[v], b + v * VLEN);
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++) {
                VEC av = VBCAST(a[roff[r]]);
#pragma GCC unroll 8
                for (int v = 0; v < nv; v++) acc[r][v] = VFMA(av, bv[v], acc[r][v]);
            }
            a += csa;
            b += rsb;
        }
    }

    VEC bias_v[NV];
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++)
        bias_v[v] = (first && bias) ? VLOADM(mask[v], bias + v * VLEN) : VZERO();
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        REAL *cr = c + r * ldc;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            VEC x = first ? VADD(acc[r][v], bias_v[v])
                          : VADD(VLOADM(mask[v], cr + v * VLEN), acc[r][v]);
            VSTOREM(cr + v * VLEN, mask[v], x);
        }
    }
}

/* the eight specializations: A packed or not, B packed or not, full or one-vector width */
#define GK_UKR(suffix, ap, bp, nv)                                                          \
    static void G(ukr_##suffix)(int64_t kc, const REAL *a, int64_t rsa, int64_t csa,      \
                                const REAL *b, int64_t rsb, REAL *c, int64_t ldc,         \
                                int64_t mr, int64_t nr, int first, const REAL *bias)      \
    {                                                                                       \
        G(ukr_body)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias, ap, bp, nv);      \
    }
GK_UKR(pp, 1, 1, NV)
GK_UKR(pu, 1, 0, NV)
GK_UKR(up, 0, 1, NV)
GK_UKR(uu, 0, 0, NV)
GK_UKR(pp1, 1, 1, 1)
GK_UKR(pu1, 1, 0, 1)
GK_UKR(up1, 0, 1, 1)
GK_UKR(uu1, 0, 0, 1)
#undef GK_UKR

static inline void G(ukr)(int64_t kc, const REAL *a, int64_t rsa, int64_t csa, const REAL *b,
                          int64_t rsb, REAL *c, int64_t ldc, int64_t mr, int64_t nr, int first,
                          const REAL *bias, int a_packed, int b_packed)
{
    int narrow = nr <= VLEN;
    int which = (a_packed ? 0 : 2) + (b_packed ? 0 : 1) + (narrow ? 4 : 0);
    switch (which) {
    case 0: G(ukr_pp)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 1: G(ukr_pu)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 2: G(ukr_up)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 3: G(ukr_uu)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 4: G(ukr_pp1)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 5: G(ukr_pu1)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    case 6: G(ukr_up1)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    default: G(ukr_uu1)(kc, a, rsa, csa, b, rsb, c, ldc, mr, nr, first, bias); break;
    }
}

/* Scratch one thread needs: an (MC, KC) block of A and a (KC, NC) block of B, each
   rounded to 64 bytes. */
static int64_t G(work_a)(void) { return round_up64(MC * KC, 64 / (int64_t)sizeof(REAL)); }
static int64_t G(work_b)(int64_t n)
{
    int64_t nc = n < NC ? n : NC;
    return round_up64(KC * round_up64(nc, NR), 64 / (int64_t)sizeof(REAL));
}

/* The fused epilogue on a finished (mc, nr) panel of C, still in cache: the activation layer
   after a Dense layer (forward), or the activation's gradient below it (backward), so that
   neither needs its own pass over memory. Same arithmetic as the activation kernels. */
static void G(epilogue)(int kind, const REAL *c, REAL *out, const REAL *aux, int64_t ld,
                        int64_t mr, int64_t nr)
{
    for (int64_t r = 0; r < mr; r++) {
        const REAL *cr = c + r * ld, *xr = aux ? aux + r * ld : NULL;
        REAL *o = out + r * ld;
        switch (kind) {
        case GK_EPI_IDENTITY:
            for (int64_t j = 0; j < nr; j++) o[j] = cr[j];
            break;
        case GK_EPI_RELU:  /* NaN stays NaN, as np.maximum(x, 0) (x > 0 ? x : 0 lost it) */
            for (int64_t j = 0; j < nr; j++) o[j] = cr[j] <= 0 ? (REAL)0 : cr[j];
            break;
        case GK_EPI_LEAKY:
            for (int64_t j = 0; j < nr; j++)
                o[j] = cr[j] * (cr[j] > 0 ? (REAL)1 : (REAL)GK_LEAKY);
            break;
        case GK_EPI_DRELU:
            for (int64_t j = 0; j < nr; j++) o[j] = xr[j] > 0 ? cr[j] : (REAL)0 * cr[j];
            break;
        case GK_EPI_DLEAKY:
            for (int64_t j = 0; j < nr; j++)
                o[j] = cr[j] * (xr[j] > 0 ? (REAL)1 : (REAL)GK_LEAKY);
            break;
        default:
            break;
        }
    }
}

/* colsum (n) = Σ_k B[k, j], k in order (so the same sums whatever the split): the bias
   gradient of Xᵀ·dY. Columns in register blocks of 4 vectors when rows are contiguous. */
static void G(colsum)(REAL *colsum, const REAL *b, int64_t rsb, int64_t csb, int64_t n,
                      int64_t k)
{
    if (csb != 1) {
        for (int64_t j = 0; j < n; j++) {
            REAL s = 0;
            for (int64_t p = 0; p < k; p++) s += b[p * rsb + j * csb];
            colsum[j] = s;
        }
        return;
    }
    for (int64_t j0 = 0; j0 < n; j0 += 4 * VLEN) {
        VMASK mask[4];
        VEC acc[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            mask[v] = MAKE_MASK(n - j0 - v * VLEN);
            acc[v] = VZERO();
        }
        for (int64_t p = 0; p < k; p++) {
            const REAL *row = b + p * rsb + j0;
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) acc[v] = VADD(acc[v], VLOADM(mask[v], row + v * VLEN));
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) VSTOREM(colsum + j0 + v * VLEN, mask[v], acc[v]);
    }
}

/* rows [0, rows) of an (mc, kc) block of A into MR-row panels: panel ir at dst + ir*kc */
static void G(pack_a_block)(REAL *restrict dst, const REAL *restrict asrc, int64_t rsa,
                            int64_t csa, int64_t rows, int64_t kc)
{
    int64_t done = 0;
#ifdef GK_PACK_A_T_FAST
    if (csa == 1) done = GK_PACK_A_T_FAST(dst, asrc, rsa, rows, kc);
#endif
    for (int64_t ir = done; ir < rows; ir += MR)
        G(pack_a)(dst + ir * kc, asrc + ir * rsa, rsa, csa, rows - ir < MR ? rows - ir : MR, kc);
}

/* All of A packed once per thread for all its chunks (see G(gemm)): the KC block at pc
   sits at pc * round_up(m, MR), its panel ir at + ir * kc, so the (MC, kc) block at ic
   starts at + ic * kc -- laid out as gemm_serial would pack it into ap. */
static int64_t G(own_a_size)(int64_t m, int64_t k)
{
    return round_up64(round_up64(m, MR) * k, 64 / (int64_t)sizeof(REAL));
}

/* whether a parallel split over N packs A once per thread: an A of at most 2^18 elements
   (width 1024 at batch 256), so the extra scratch is at most 1 MB (f32) a thread */
static int G(own_a)(int64_t m, int64_t n, int64_t k, int64_t trans_a, int small, int threads)
{
    return threads > 1 && !small && n >= m && round_up64(m, MR) * k <= (1 << 18);
}

static void G(pack_a_all)(REAL *apre, const REAL *a, int64_t rsa, int64_t csa, int64_t m,
                          int64_t k)
{
    int64_t m_pad = round_up64(m, MR);
    for (int64_t pc = 0; pc < k; pc += KC) {
        int64_t kc = k - pc < KC ? k - pc : KC;
        G(pack_a_block)(apre + pc * m_pad, a + pc * csa, rsa, csa, m, kc);
    }
}

/* One thread's share: C (m, n) block, all of K. colsum (n) or NULL. epi: kind, out and aux
   (both laid out like C) of the fused epilogue, applied to each tile after its last KC block.
   apre: all of A already packed (G(pack_a_all)), or NULL to pack it into ap. */
static void G(gemm_serial)(REAL *c, int64_t ldc, REAL *colsum, const REAL *a, int64_t rsa,
                           int64_t csa, const REAL *b, int64_t rsb, int64_t csb,
                           const REAL *bias, int64_t m, int64_t n, int64_t k, int pack_a,
                           int pack_b, REAL *ap, REAL *bp, int epi, REAL *eout,
                           const REAL *eaux, const REAL *apre)
{
    int64_t m_pad = round_up64(m, MR);
    if (colsum) G(colsum)(colsum, b, rsb, csb, n, k);
    for (int64_t jc = 0; jc < n; jc += NC) {
        int64_t nc = n - jc < NC ? n - jc : NC;
        for (int64_t pc = 0; pc < k; pc += KC) {
            int64_t kc = k - pc < KC ? k - pc : KC;
            int first = pc == 0;
            const REAL *bsrc = b + pc * rsb + jc * csb;
            if (pack_b)
                for (int64_t jr = 0; jr < nc; jr += NR)
                    G(pack_b)(bp + jr * kc, bsrc + jr * csb, csb, rsb,
                              nc - jr < NR ? nc - jr : NR, kc);
            for (int64_t ic = 0; ic < m; ic += MC) {
                int64_t mc = m - ic < MC ? m - ic : MC;
                const REAL *asrc = a + ic * rsa + pc * csa;
                const REAL *ablk = ap;
                if (pack_a && apre) ablk = apre + pc * m_pad + ic * kc;
                else if (pack_a) G(pack_a_block)(ap, asrc, rsa, csa, mc, kc);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int64_t nr = nc - jr < NR ? nc - jr : NR;
                    const REAL *bm = pack_b ? bp + jr * kc : bsrc + jr;
                    int64_t bstride = pack_b ? NR : rsb;
                    const REAL *bias_j = bias ? bias + jc + jr : NULL;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int64_t mr = mc - ir < MR ? mc - ir : MR;
                        REAL *cm = c + (ic + ir) * ldc + jc + jr;
                        const REAL *am = pack_a ? ablk + ir * kc : asrc + ir * rsa;
                        G(ukr)(kc, am, pack_a ? 1 : rsa, pack_a ? MR : csa, bm, bstride, cm,
                               ldc, mr, nr, first, bias_j, pack_a, pack_b);
                    }
                    if (epi && pc + kc >= k) {  /* this (mc, nr) panel of C is final */
                        int64_t off = ic * ldc + jc + jr;
                        G(epilogue)(epi, c + off, eout + off, eaux ? eaux + off : NULL, ldc, mc,
                                    nr);
                    }
                }
            }
        }
    }
}

/* Small products skip packing: A is read in place (any strides), and so is B when its
   rows are contiguous. Packing pays only when a block is reused enough times. */
static int G(use_small)(int64_t m, int64_t n, int64_t k)
{
    return m * n * k <= SMALL_MNK || m <= MR;
}

/* Scratch for a GEMM on at most `threads` threads: never more threads than G(gemm) would
   use for this product (one below the parallel threshold, at most one per tile of the
   split dimension), so a small layer on a many-core machine asks for little. */
static int64_t G(work)(int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b,
                       int threads)
{
    int small = G(use_small)(m, n, k);
    int64_t per = (small ? 0 : G(work_a)()) + ((small && !trans_b) ? 0 : G(work_b)(n));
    if ((double)m * (double)n * (double)k < g_par_mnk) threads = 1;
    int64_t tiles = n >= m ? (n + NR - 1) / NR : (m + MR - 1) / MR;
    if (threads > tiles) threads = (int)tiles;
    if (threads < 1) threads = 1;
    if (G(own_a)(m, n, k, trans_a, small, threads))  /* all of A per thread (G(gemm)) */
        per += G(own_a_size)(m, k);
    return per * threads;
}

static int G(gemm)(REAL *c, REAL *colsum, const REAL *a, const REAL *b, const REAL *bias,
                   int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b,
                   REAL *work, int64_t work_size, int epi, REAL *eout, const REAL *eaux)
{
    int64_t rsa = trans_a ? 1 : k, csa = trans_a ? m : 1;
    int64_t rsb = trans_b ? 1 : n, csb = trans_b ? k : 1;
    if (m == 0 || n == 0 || k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * n + j] = bias ? bias[j] : 0;
        if (epi) G(epilogue)(epi, c, eout, eaux, n, m, n);
        if (colsum) G(gemm_serial)(NULL, 0, colsum, a, rsa, csa, b, rsb, csb, NULL, 0, n, k,
                                   0, 0, NULL, NULL, 0, NULL, NULL, NULL);
        return GK_OK;
    }
    int small = G(use_small)(m, n, k);
    int pack_a = !small, pack_b = !small || trans_b;
    int64_t per = (pack_a ? G(work_a)() : 0) + (pack_b ? G(work_b)(n) : 0);
    int threads = 1;
    if ((double)m * (double)n * (double)k >= g_par_mnk) threads = gk_get_threads();
    if (per > 0) {
        int64_t fit = work ? work_size / per : 0;
        if (fit < 1) return GK_ERR_WORKSPACE;
        if (threads > fit) threads = (int)fit;
    }
    if (threads <= 1) {  /* no parallel region at all: it costs more than a small product */
        REAL *ap = work, *bp = pack_a ? (work ? work + G(work_a)() : NULL) : work;
        G(gemm_serial)(c, n, colsum, a, rsa, csa, b, rsb, csb, bias, m, n, k, pack_a, pack_b,
                       ap, bp, epi, eout, eaux, NULL);
        return GK_OK;
    }
    /* Split the larger of M and N into chunks of whole tiles, about four per thread, handed
       out dynamically: a thread slowed down by another process on its core takes fewer
       chunks instead of holding everyone up. Each chunk is a complete GEMM of its own
       (all of K, its own packing), so no two threads ever touch the same element of C.
       Split over N (the three products of a batch of 64-256 rows at widths >= 256), every
       chunk would pack all of A again: 8 chunks, 8 packs of A, which cost 10-19 % of the
       product at width 256 and 3-10 % at 1024 (2 threads). Instead each thread packs all of
       A once, into its own scratch, at its first chunk, and reuses it for the others. No
       barrier: packing A once for all threads together, then waiting for it, measured no
       faster, and a thread slowed down by a neighbour must hold no one up. */
    int split_n = n >= m;
    int64_t tile = split_n ? NR : MR, dim = split_n ? n : m;
    int64_t tiles = (dim + tile - 1) / tile;
    if (threads > tiles) threads = (int)tiles;
    int64_t own = G(own_a)(m, n, k, trans_a, small, threads) ? G(own_a_size)(m, k) : 0;
    if (own && work_size / (per + own) < 2) own = 0;  /* sized otherwise: chunks pack A */
    if (own) {
        per += own;
        if (work_size / per < threads) threads = (int)(work_size / per);
    }
    int64_t per_chunk = tiles / (4 * (int64_t)threads);
    if (per_chunk < 1) per_chunk = 1;
    int64_t chunks = (tiles + per_chunk - 1) / per_chunk;
#pragma omp parallel num_threads(threads)
    {
        int t = gk_thread_num();
        REAL *ap = work ? work + per * t : NULL;
        REAL *bp = pack_a ? (ap ? ap + G(work_a)() : NULL) : ap;
        REAL *apre = own ? bp + G(work_b)(n) : NULL;
        int packed = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < chunks; q++) {
            int64_t lo = q * per_chunk * tile, hi = (q + 1) * per_chunk * tile;
            if (hi > dim) hi = dim;
            if (apre && !packed) {
                G(pack_a_all)(apre, a, rsa, csa, m, k);
                packed = 1;
            }
            if (split_n)
                G(gemm_serial)(c + lo, n, colsum ? colsum + lo : NULL, a, rsa, csa,
                               b + lo * csb, rsb, csb, bias ? bias + lo : NULL, m, hi - lo, k,
                               pack_a, pack_b, ap, bp, epi, eout ? eout + lo : NULL,
                               eaux ? eaux + lo : NULL, apre);
            else
                G(gemm_serial)(c + lo * n, n, lo == 0 ? colsum : NULL, a + lo * rsa, rsa,
                               csa, b, rsb, csb, bias, hi - lo, n, k, pack_a, pack_b, ap, bp,
                               epi, eout ? eout + lo * n : NULL, eaux ? eaux + lo * n : NULL,
                               NULL);
        }
    }
    return GK_OK;
}

/* 12 independent chains acc = acc * x + y: enough to cover the FMA latency on every
   current x86 core. The result goes to a volatile sink so the loop stays. */
static double G(fma_loop)(int64_t iters)
{
    VEC acc[12];
    VEC x = VBCAST((REAL)0.999999), y = VBCAST((REAL)1e-7);
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) acc[r] = VBCAST((REAL)r);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int r = 0; r < 12; r++) acc[r] = VFMA(acc[r], x, y);
    VEC s = acc[0];
    for (int r = 1; r < 12; r++) s = VADD(s, acc[r]);
    REAL lanes[VLEN];
    memcpy(lanes, &s, sizeof(lanes));
    volatile REAL sink = lanes[0];
    (void)sink;
    return (double)iters * 12.0 * VLEN * 2.0;
}

#undef NV
