/* Pixel-map view kernels: dihedral maps, skew, pixel permutations and CSR sparse
 * linear maps (see ssde/pixelmaps.h). */
#include "ssde/pixelmaps.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ssde/dtype_dispatch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Output rows per work item, and the column tile of a transposing copy. */
#define PM_ROW_BLOCK 32
#define PM_COL_TILE 32

/* ---- leading dimensions --------------------------------------------------- */
/* The leading dims of out and in (same shape), size-1 dims dropped and
 * neighbours merged where both tensors are contiguous across them. */
typedef struct {
    int n;
    int64_t count;
    int64_t shape[SSDE_MAX_DIMS];
    int64_t os[SSDE_MAX_DIMS]; /* out strides, elements */
    int64_t is[SSDE_MAX_DIMS]; /* in strides, elements */
} lead_iter;

static void
lead_init(lead_iter *L, const ssde_tensor *out, const ssde_tensor *in, int nlead)
{
    L->n = 0;
    L->count = 1;
    for (int d = 0; d < nlead; d++) {
        int64_t s = out->shape[d];
        L->count *= s;
        if (s == 1) {
            continue;
        }
        int k = L->n;
        if (k > 0 && L->os[k - 1] == out->stride[d] * s && L->is[k - 1] == in->stride[d] * s) {
            L->shape[k - 1] *= s;
            L->os[k - 1] = out->stride[d];
            L->is[k - 1] = in->stride[d];
        }
        else {
            L->shape[k] = s;
            L->os[k] = out->stride[d];
            L->is[k] = in->stride[d];
            L->n = k + 1;
        }
    }
}

static inline void
lead_offsets(const lead_iter *L, int64_t b, int64_t *oo, int64_t *io)
{
    int64_t o = 0, i = 0;
    for (int d = L->n - 1; d >= 0; d--) {
        int64_t q = b % L->shape[d];
        b /= L->shape[d];
        o += q * L->os[d];
        i += q * L->is[d];
    }
    *oo = o;
    *io = i;
}

static int
same_leading(const ssde_tensor *a, const ssde_tensor *b, int nkeep)
{
    if (a->ndim != b->ndim || a->ndim < nkeep) {
        return 0;
    }
    for (int d = 0; d < a->ndim - nkeep; d++) {
        if (a->shape[d] != b->shape[d]) {
            return 0;
        }
    }
    return 1;
}

static int
copy_dtypes_ok(const ssde_tensor *out, const ssde_tensor *in)
{
    size_t z = ssde_dtype_size(out->dtype);
    return out->dtype == in->dtype && (z == 2 || z == 4 || z == 8);
}

/* ---- dihedral names ------------------------------------------------------- */
static const char *const dih_names[SSDE_DIH_COUNT] = {
    "identity", "rot90_cw", "rot90_ccw", "rot180", "hflip", "vflip", "transpose", "antitranspose",
};

const char *
ssde_dihedral_name(int op)
{
    return op >= 0 && op < SSDE_DIH_COUNT ? dih_names[op] : NULL;
}

int
ssde_dihedral_from_name(const char *name)
{
    for (int op = 0; name != NULL && op < SSDE_DIH_COUNT; op++) {
        if (strcmp(name, dih_names[op]) == 0) {
            return op;
        }
    }
    return -1;
}

int
ssde_dihedral_swaps_axes(int op)
{
    return op == SSDE_DIH_ROT90_CW || op == SSDE_DIH_ROT90_CCW || op == SSDE_DIH_TRANSPOSE ||
           op == SSDE_DIH_ANTITRANSPOSE;
}

int
ssde_dihedral_inverse(int op)
{
    if (op == SSDE_DIH_ROT90_CW) {
        return SSDE_DIH_ROT90_CCW;
    }
    if (op == SSDE_DIH_ROT90_CCW) {
        return SSDE_DIH_ROT90_CW;
    }
    return op;
}

int
ssde_dihedral_index_map(int op, int64_t H, int64_t W, int64_t m[6])
{
    /* row = m0 i + m1 j + m2, col = m3 i + m4 j + m5 */
    static const int64_t lin[SSDE_DIH_COUNT][4] = {
        {1, 0, 0, 1},   /* identity:      (i, j) */
        {0, -1, 1, 0},  /* rot90_cw:      (H-1-j, i) */
        {0, 1, -1, 0},  /* rot90_ccw:     (j, W-1-i) */
        {-1, 0, 0, -1}, /* rot180:        (H-1-i, W-1-j) */
        {1, 0, 0, -1},  /* hflip:         (i, W-1-j) */
        {-1, 0, 0, 1},  /* vflip:         (H-1-i, j) */
        {0, 1, 1, 0},   /* transpose:     (j, i) */
        {0, -1, -1, 0}, /* antitranspose: (H-1-j, W-1-i) */
    };
    if (op < 0 || op >= SSDE_DIH_COUNT || H < 0 || W < 0) {
        return SSDE_ERR_VALUE;
    }
    m[0] = lin[op][0];
    m[1] = lin[op][1];
    m[3] = lin[op][2];
    m[4] = lin[op][3];
    /* a coefficient of -1 on the row (col) needs the offset H-1 (W-1) */
    m[2] = (m[0] < 0 || m[1] < 0) ? H - 1 : 0;
    m[5] = (m[3] < 0 || m[4] < 0) ? W - 1 : 0;
    return SSDE_OK;
}

/* ---- strided 2-D copy of a block of rows ---------------------------------- */
/* o, s point at element (0, 0) of one output / source plane; output row i,
 * column j is o[i osh + j osw] = s[i rs + j cs] (strides in elements). */
#define DEF_COPY2D(SUF, T)                                                                    \
    static void copy2d_##SUF(T *o, int64_t osh, int64_t osw, const T *s, int64_t rs,         \
                             int64_t cs, int64_t i0, int64_t i1, int64_t ncol)               \
    {                                                                                         \
        int64_t acs = cs < 0 ? -cs : cs, ars = rs < 0 ? -rs : rs;                             \
        if (acs <= 1 || acs <= ars) { /* row-wise: the source walks a row */                  \
            for (int64_t i = i0; i < i1; i++) {                                               \
                T *restrict orow = o + i * osh;                                               \
                const T *restrict srow = s + i * rs;                                          \
                if (osw == 1 && cs == 1) {                                                    \
                    memcpy(orow, srow, (size_t)ncol * sizeof(T));                             \
                }                                                                             \
                else if (osw == 1 && cs == -1) {                                              \
                    for (int64_t j = 0; j < ncol; j++) {                                      \
                        orow[j] = srow[-j];                                                   \
                    }                                                                         \
                }                                                                             \
                else if (osw == 1) {                                                          \
                    for (int64_t j = 0; j < ncol; j++) {                                      \
                        orow[j] = srow[j * cs];                                               \
                    }                                                                         \
                }                                                                             \
                else {                                                                        \
                    for (int64_t j = 0; j < ncol; j++) {                                      \
                        orow[j * osw] = srow[j * cs];                                         \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
            return;                                                                           \
        }                                                                                     \
        /* transposing: the source walks a column; copy square tiles so both sides stay in \
         * cache */                                                                           \
        for (int64_t jb = 0; jb < ncol; jb += PM_COL_TILE) {                                  \
            int64_t je = ncol - jb < PM_COL_TILE ? ncol : jb + PM_COL_TILE;                   \
            if (osw == 1) {                                                                   \
                for (int64_t i = i0; i < i1; i++) {                                           \
                    T *restrict orow = o + i * osh;                                           \
                    const T *restrict srow = s + i * rs;                                      \
                    for (int64_t j = jb; j < je; j++) {                                       \
                        orow[j] = srow[j * cs];                                               \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
            else {                                                                            \
                for (int64_t i = i0; i < i1; i++) {                                           \
                    T *restrict orow = o + i * osh;                                           \
                    const T *restrict srow = s + i * rs;                                      \
                    for (int64_t j = jb; j < je; j++) {                                       \
                        orow[j * osw] = srow[j * cs];                                         \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }
DEF_COPY2D(u16, uint16_t)
DEF_COPY2D(u32, uint32_t)
DEF_COPY2D(u64, uint64_t)

int
ssde_index_map2d(ssde_tensor *out, const ssde_tensor *in, const int64_t m[6])
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(in);
    if (!copy_dtypes_ok(out, in)) {
        return SSDE_ERR_DTYPE;
    }
    if (out->ndim < 2 || !same_leading(out, in, 2)) {
        return SSDE_ERR_SHAPE;
    }
    int nl = out->ndim - 2;
    int64_t OH = out->shape[nl], OW = out->shape[nl + 1];
    int64_t H = in->shape[nl], W = in->shape[nl + 1];
    int64_t total = ssde_numel(out);
    if (total == 0) {
        return SSDE_OK;
    }
    /* the map is affine: it stays inside the input iff its four corners do */
    for (int ci = 0; ci < 2; ci++) {
        for (int cj = 0; cj < 2; cj++) {
            int64_t i = ci ? OH - 1 : 0, j = cj ? OW - 1 : 0;
            int64_t r = m[0] * i + m[1] * j + m[2], c = m[3] * i + m[4] * j + m[5];
            if (r < 0 || r >= H || c < 0 || c >= W) {
                return SSDE_ERR_INDEX;
            }
        }
    }
    int64_t ish = in->stride[nl], isw = in->stride[nl + 1];
    int64_t osh = out->stride[nl], osw = out->stride[nl + 1];
    int64_t base = m[2] * ish + m[5] * isw;
    int64_t rs = m[0] * ish + m[3] * isw, cs = m[1] * ish + m[4] * isw;
    lead_iter L;
    lead_init(&L, out, in, nl);
    int64_t nrb = (OH + PM_ROW_BLOCK - 1) / PM_ROW_BLOCK;
    int64_t units = L.count * nrb;
    size_t z = ssde_dtype_size(out->dtype);
    int nthreads = ssde_effective_threads(total);
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t u = 0; u < units; u++) {
        int64_t plane = u / nrb, i0 = (u % nrb) * PM_ROW_BLOCK;
        int64_t i1 = OH - i0 < PM_ROW_BLOCK ? OH : i0 + PM_ROW_BLOCK;
        int64_t oo, io;
        lead_offsets(&L, plane, &oo, &io);
        io += base;
        if (z == 4) {
            copy2d_u32((uint32_t *)out->data + oo, osh, osw, (const uint32_t *)in->data + io, rs,
                       cs, i0, i1, OW);
        }
        else if (z == 2) {
            copy2d_u16((uint16_t *)out->data + oo, osh, osw, (const uint16_t *)in->data + io, rs,
                       cs, i0, i1, OW);
        }
        else {
            copy2d_u64((uint64_t *)out->data + oo, osh, osw, (const uint64_t *)in->data + io, rs,
                       cs, i0, i1, OW);
        }
    }
    return SSDE_OK;
}

int
ssde_dihedral(ssde_tensor *out, const ssde_tensor *in, int op)
{
    int64_t m[6];
    if (ssde_dihedral_index_map(op, in->ndim >= 2 ? in->shape[in->ndim - 2] : 0,
                                in->ndim >= 2 ? in->shape[in->ndim - 1] : 0, m) != SSDE_OK) {
        return SSDE_ERR_VALUE;
    }
    if (in->ndim < 2 || out->ndim != in->ndim) {
        return SSDE_ERR_SHAPE;
    }
    int nl = in->ndim - 2, sw = ssde_dihedral_swaps_axes(op);
    if (out->shape[nl] != in->shape[nl + sw] || out->shape[nl + 1] != in->shape[nl + 1 - sw]) {
        return SSDE_ERR_SHAPE;
    }
    return ssde_index_map2d(out, in, m);
}

/* ---- skew ----------------------------------------------------------------- */
/* Largest |shift| accepted: keeps every offset computation far from overflow. */
#define PM_MAX_SHIFT 4611686018427387904.0 /* 2^62 */

int64_t
ssde_skew_shift(double factor, int64_t H, int64_t w)
{
    double d = factor * (double)(w - H / 2);
    /* saturate instead of an undefined conversion (ssde_skew refuses such factors first) */
    if (!(d > -PM_MAX_SHIFT)) {
        return d != d ? 0 : -(int64_t)PM_MAX_SHIFT;
    }
    return d < PM_MAX_SHIFT ? (int64_t)d : (int64_t)PM_MAX_SHIFT;
}

/* Row i of a plane: o[i osh + w osw] = s[i ish + lo[w] - (i >= thr[w] ? wrap : 0)]. */
#define DEF_SKEW_ROWS(SUF, T)                                                                 \
    static void skew_rows_##SUF(T *o, int64_t osh, int64_t osw, const T *s, int64_t ish,     \
                                const int64_t *lo, const int64_t *thr, int64_t wrap,          \
                                int64_t i0, int64_t i1, int64_t W)                            \
    {                                                                                         \
        for (int64_t i = i0; i < i1; i++) {                                                   \
            T *restrict orow = o + i * osh;                                                   \
            const T *restrict srow = s + i * ish;                                             \
            if (osw == 1) {                                                                   \
                for (int64_t w = 0; w < W; w++) {                                             \
                    orow[w] = srow[lo[w] - (i >= thr[w] ? wrap : 0)];                         \
                }                                                                             \
            }                                                                                 \
            else {                                                                            \
                for (int64_t w = 0; w < W; w++) {                                             \
                    orow[w * osw] = srow[lo[w] - (i >= thr[w] ? wrap : 0)];                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }
DEF_SKEW_ROWS(u16, uint16_t)
DEF_SKEW_ROWS(u32, uint32_t)
DEF_SKEW_ROWS(u64, uint64_t)

int
ssde_skew(ssde_tensor *out, const ssde_tensor *in, double factor, int inverse)
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(in);
    if (!copy_dtypes_ok(out, in)) {
        return SSDE_ERR_DTYPE;
    }
    if (out->ndim < 2 || !same_leading(out, in, 0)) {
        return SSDE_ERR_SHAPE;
    }
    if (!isfinite(factor)) {
        return SSDE_ERR_VALUE;
    }
    int nl = out->ndim - 2;
    int64_t H = in->shape[nl], W = in->shape[nl + 1];
    double reach = fabs(factor) * ((double)W + (double)H);
    if (!(reach < PM_MAX_SHIFT)) {
        return SSDE_ERR_VALUE;
    }
    int64_t total = ssde_numel(out);
    if (total == 0) {
        return SSDE_OK;
    }
    int64_t ish = in->stride[nl], isw = in->stride[nl + 1];
    int64_t osh = out->stride[nl], osw = out->stride[nl + 1];
    int64_t *tab = ssde_malloc_array(2 * (size_t)W, sizeof(int64_t)); /* W <= 2^61 */
    if (tab == NULL) {
        return SSDE_ERR_NOMEM;
    }
    int64_t *lo = tab, *thr = tab + W;
    for (int64_t w = 0; w < W; w++) {
        int64_t d = ssde_skew_shift(factor, H, w);
        /* source row of output row i is (i + sh) mod H, sh in [0, H) */
        int64_t sh = (inverse ? d : -d) % H;
        if (sh < 0) {
            sh += H;
        }
        lo[w] = sh * ish + w * isw;
        thr[w] = H - sh;
    }
    int64_t wrap = H * ish;
    lead_iter L;
    lead_init(&L, out, in, nl);
    int64_t nrb = (H + PM_ROW_BLOCK - 1) / PM_ROW_BLOCK;
    int64_t units = L.count * nrb;
    size_t z = ssde_dtype_size(out->dtype);
    int nthreads = ssde_effective_threads(total);
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t u = 0; u < units; u++) {
        int64_t plane = u / nrb, i0 = (u % nrb) * PM_ROW_BLOCK;
        int64_t i1 = H - i0 < PM_ROW_BLOCK ? H : i0 + PM_ROW_BLOCK;
        int64_t oo, io;
        lead_offsets(&L, plane, &oo, &io);
        if (z == 4) {
            skew_rows_u32((uint32_t *)out->data + oo, osh, osw, (const uint32_t *)in->data + io,
                          ish, lo, thr, wrap, i0, i1, W);
        }
        else if (z == 2) {
            skew_rows_u16((uint16_t *)out->data + oo, osh, osw, (const uint16_t *)in->data + io,
                          ish, lo, thr, wrap, i0, i1, W);
        }
        else {
            skew_rows_u64((uint64_t *)out->data + oo, osh, osw, (const uint64_t *)in->data + io,
                          ish, lo, thr, wrap, i0, i1, W);
        }
    }
    free(tab);
    return SSDE_OK;
}

/* ---- pixel permutations --------------------------------------------------- */
/* Reads entry p of a 1-D or 2-D integer tensor in row-major order. */
static inline int64_t
index_at(const ssde_tensor *t, int64_t p)
{
    int64_t off;
    if (t->ndim == 1) {
        off = p * t->stride[0];
    }
    else {
        int64_t w = t->shape[1];
        off = (p / w) * t->stride[0] + (p % w) * t->stride[1];
    }
    return t->dtype == SSDE_I64 ? ((const int64_t *)t->data)[off]
                                : (int64_t)((const int32_t *)t->data)[off];
}

/* Element offset of flat pixel q in a plane with strides (sh, sw). */
static inline int64_t
pixel_offset(int64_t q, int64_t W, int64_t sh, int64_t sw)
{
    return (q / W) * sh + (q % W) * sw;
}

/* Row i of a plane: o[i osh + j osw] = s[tab[i W + j]]. */
#define DEF_GATHER_ROWS(SUF, T, ITS, IT)                                                      \
    static void gather_rows_##SUF##_##ITS(T *o, int64_t osh, int64_t osw, const T *s,        \
                                          const IT *tab, int64_t i0, int64_t i1, int64_t W)   \
    {                                                                                         \
        for (int64_t i = i0; i < i1; i++) {                                                   \
            T *restrict orow = o + i * osh;                                                   \
            const IT *restrict trow = tab + i * W;                                            \
            if (osw == 1) {                                                                   \
                for (int64_t j = 0; j < W; j++) {                                             \
                    orow[j] = s[trow[j]];                                                     \
                }                                                                             \
            }                                                                                 \
            else {                                                                            \
                for (int64_t j = 0; j < W; j++) {                                             \
                    orow[j * osw] = s[trow[j]];                                               \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }
DEF_GATHER_ROWS(u16, uint16_t, i32, int32_t)
DEF_GATHER_ROWS(u32, uint32_t, i32, int32_t)
DEF_GATHER_ROWS(u64, uint64_t, i32, int32_t)
DEF_GATHER_ROWS(u16, uint16_t, i64, int64_t)
DEF_GATHER_ROWS(u32, uint32_t, i64, int64_t)
DEF_GATHER_ROWS(u64, uint64_t, i64, int64_t)

/* First position of a contiguous index array holding a value outside [0, P), or -1. */
static int64_t
first_out_of_range(const void *data, int is64, int64_t n, int64_t P)
{
    if (is64) {
        const int64_t *q = data;
        for (int64_t p = 0; p < n; p++) {
            if ((uint64_t)q[p] >= (uint64_t)P) {
                return p;
            }
        }
    }
    else {
        const int32_t *q = data;
        for (int64_t p = 0; p < n; p++) {
            if ((uint64_t)(int64_t)q[p] >= (uint64_t)P) {
                return p;
            }
        }
    }
    return -1;
}

static int
row_major_contiguous(const ssde_tensor *t)
{
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect) {
            return 0;
        }
        expect *= t->shape[d];
    }
    return 1;
}

int
ssde_permute_pixels(ssde_tensor *out, const ssde_tensor *in, const ssde_tensor *index,
                    int scatter, ssde_map_error *err)
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(in);
    SSDE_CHECK_TENSOR(index);
    if (err != NULL) {
        err->kind = SSDE_MAPERR_NONE;
    }
    if (!copy_dtypes_ok(out, in) || (index->dtype != SSDE_I64 && index->dtype != SSDE_I32)) {
        return SSDE_ERR_DTYPE;
    }
    if (out->ndim < 2 || !same_leading(out, in, 0)) {
        return SSDE_ERR_SHAPE;
    }
    int nl = out->ndim - 2;
    int64_t H = in->shape[nl], W = in->shape[nl + 1], P = H * W;
    if (index->ndim < 1 || index->ndim > 2 || ssde_numel(index) != P ||
        (index->ndim == 2 && index->shape[1] != W)) {
        return SSDE_ERR_SHAPE;
    }
    if (P == 0) {
        return SSDE_OK;
    }
    int64_t ish = in->stride[nl], isw = in->stride[nl + 1];
    int64_t osh = out->stride[nl], osw = out->stride[nl + 1];
    int contiguous_plane = (W == 1 || isw == 1) && (H == 1 || ish == W);
    int is64 = index->dtype == SSDE_I64;
    const void *tab = NULL;
    void *owned = NULL;
    if (!scatter && contiguous_plane && row_major_contiguous(index)) {
        /* A private copy of the index is the table of source offsets: checked after the copy,
         * so a caller's thread writing the index meanwhile cannot send the gather outside. */
        const size_t iz = is64 ? sizeof(int64_t) : sizeof(int32_t);
        void *copy = ssde_malloc_array((size_t)P, iz);
        if (copy == NULL) {
            return SSDE_ERR_NOMEM;
        }
        memcpy(copy, index->data, (size_t)P * iz);
        int64_t bad = first_out_of_range(copy, is64, P, P);
        if (bad >= 0) {
            if (err != NULL) {
                err->kind = SSDE_MAPERR_INDEX_RANGE;
                err->pos = bad;
                err->value = is64 ? ((const int64_t *)copy)[bad]
                                  : (int64_t)((const int32_t *)copy)[bad];
                err->limit = P;
            }
            free(copy);
            return SSDE_ERR_INDEX;
        }
        tab = copy;
        owned = copy;
    }
    else if (scatter && contiguous_plane && row_major_contiguous(index) && P <= INT32_MAX) {
        /* the common scatter: an int32 inverse table, the bitmap catches repeats */
        int32_t *inv = ssde_malloc_array((size_t)P, sizeof(int32_t));
        uint64_t *seen = ssde_calloc_array((size_t)P / 64 + 1, sizeof(uint64_t));
        if (inv == NULL || seen == NULL) {
            free(inv);
            free(seen);
            return SSDE_ERR_NOMEM;
        }
        int64_t bad = -1;
        for (int64_t p = 0; p < P; p++) {
            int64_t q = is64 ? ((const int64_t *)index->data)[p]
                             : (int64_t)((const int32_t *)index->data)[p];
            if ((uint64_t)q >= (uint64_t)P) {
                bad = p;
                break;
            }
            uint64_t bit = (uint64_t)1 << (q & 63), word = seen[q >> 6];
            if (word & bit) {
                bad = p;
                break;
            }
            seen[q >> 6] = word | bit;
            inv[q] = (int32_t)p;
        }
        free(seen);
        if (bad >= 0) {
            free(inv); /* the generic pass below reports the error with its details */
        }
        else {
            owned = inv;
            tab = inv;
            is64 = 0;
        }
    }
    if (tab == NULL) {
        int64_t *tab64 = ssde_malloc_array((size_t)P, sizeof(int64_t));
        uint64_t *seen = scatter ? ssde_calloc_array((size_t)P / 64 + 1, sizeof(uint64_t)) : NULL;
        if (tab64 == NULL || (scatter && seen == NULL)) {
            free(tab64);
            free(seen);
            return SSDE_ERR_NOMEM;
        }
        int status = SSDE_OK;
        for (int64_t p = 0; p < P; p++) {
            int64_t q = index_at(index, p);
            if (q < 0 || q >= P) {
                if (err != NULL) {
                    err->kind = SSDE_MAPERR_INDEX_RANGE;
                    err->pos = p;
                    err->value = q;
                    err->limit = P;
                }
                status = SSDE_ERR_INDEX;
                break;
            }
            if (!scatter) {
                tab64[p] = contiguous_plane ? q : pixel_offset(q, W, ish, isw);
                continue;
            }
            uint64_t bit = (uint64_t)1 << (q & 63);
            if (seen[q >> 6] & bit) {
                if (err != NULL) {
                    int64_t first = 0;
                    while (first < p && index_at(index, first) != q) {
                        first++;
                    }
                    err->kind = SSDE_MAPERR_DUPLICATE;
                    err->pos = p;
                    err->value = q;
                    err->other = first;
                    err->limit = P;
                }
                status = SSDE_ERR_VALUE;
                break;
            }
            seen[q >> 6] |= bit;
            /* out.flat[q] = in.flat[p]: a gather through the inverse permutation */
            tab64[q] = contiguous_plane ? p : pixel_offset(p, W, ish, isw);
        }
        free(seen);
        if (status != SSDE_OK) {
            free(tab64);
            return status;
        }
        tab = tab64;
        owned = tab64;
        is64 = 1;
    }
    /* Work item: a block of rows of one plane. Plane-major order keeps one source plane in
     * cache while its rows are gathered (a random permutation reads all of it). */
    int64_t total = ssde_numel(out);
    lead_iter L;
    lead_init(&L, out, in, nl);
    int64_t nrb = (H + PM_ROW_BLOCK - 1) / PM_ROW_BLOCK;
    int64_t units = L.count * nrb;
    size_t z = ssde_dtype_size(out->dtype);
    int nthreads = ssde_effective_threads(total);
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t u = 0; u < units; u++) {
        int64_t plane = u / nrb, i0 = (u % nrb) * PM_ROW_BLOCK;
        int64_t i1 = H - i0 < PM_ROW_BLOCK ? H : i0 + PM_ROW_BLOCK;
        int64_t oo, io;
        lead_offsets(&L, plane, &oo, &io);
        char *o = out->data + oo * (int64_t)z;
        const char *sp = in->data + io * (int64_t)z;
#define PM_GATHER(SUF, T)                                                                     \
    if (is64) {                                                                               \
        gather_rows_##SUF##_i64((T *)o, osh, osw, (const T *)sp, (const int64_t *)tab, i0, i1, W); \
    }                                                                                         \
    else {                                                                                    \
        gather_rows_##SUF##_i32((T *)o, osh, osw, (const T *)sp, (const int32_t *)tab, i0, i1, W); \
    }
        if (z == 4) {
            PM_GATHER(u32, uint32_t)
        }
        else if (z == 2) {
            PM_GATHER(u16, uint16_t)
        }
        else {
            PM_GATHER(u64, uint64_t)
        }
#undef PM_GATHER
    }
    free(owned);
    return SSDE_OK;
}

/* ---- CSR sparse linear maps ------------------------------------------------
 * A call validates the structure read-only before any write (indptr start/order/end, index
 * range), taking int64 views of indptr/indices (copied only when not contiguous int64) and
 * an ACC view of the values (copied only when not contiguous float32/float64); see
 * DEF_CSR_RUN for the apply loops. */
#define CSR_ROW_BLOCK 64
#define CSR_COL_BLOCK 256

#ifdef _OPENMP
#define PM_OMP_PARALLEL _Pragma("omp parallel num_threads(nthreads) if (nthreads > 1)")
#define PM_OMP_FOR_STATIC _Pragma("omp for schedule(static)")
#else
#define PM_OMP_PARALLEL
#define PM_OMP_FOR_STATIC
#endif

static inline int
pm_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int64_t
int_at(const ssde_tensor *t, int64_t k)
{
    int64_t off = k * t->stride[0];
    return t->dtype == SSDE_I64 ? ((const int64_t *)t->data)[off]
                                : (int64_t)((const int32_t *)t->data)[off];
}

static void
set_err(ssde_map_error *err, int kind, int64_t pos, int64_t value, int64_t other, int64_t limit)
{
    if (err != NULL) {
        err->kind = kind;
        err->pos = pos;
        err->value = value;
        err->other = other;
        err->limit = limit;
    }
}

/* Shapes and dtypes of the structure; SSDE_OK or an error code. */
static int
csr_check_layout(const ssde_tensor *indptr, const ssde_tensor *indices, const ssde_tensor *values,
                 int64_t n_cols)
{
    if ((indptr->dtype != SSDE_I64 && indptr->dtype != SSDE_I32) ||
        (indices->dtype != SSDE_I64 && indices->dtype != SSDE_I32) || !ssde_is_float(values->dtype)) {
        return SSDE_ERR_DTYPE;
    }
    if (indptr->ndim != 1 || indptr->shape[0] < 1 || indices->ndim != 1 || values->ndim != 1 ||
        indices->shape[0] != values->shape[0]) {
        return SSDE_ERR_SHAPE;
    }
    if (n_cols < 0) {
        return SSDE_ERR_VALUE;
    }
    return SSDE_OK;
}

/* int64 views of the structure; owned_* are set when a copy was made. */
typedef struct {
    const int64_t *ptr;
    const int64_t *idx;
    int64_t *owned_ptr;
    int64_t *owned_idx;
} csr_struct;

static void
csr_struct_free(csr_struct *S)
{
    free(S->owned_ptr);
    free(S->owned_idx);
    S->owned_ptr = S->owned_idx = NULL;
}

static void
copy_i64(int64_t *dst, const ssde_tensor *t, int64_t n)
{
    if (n <= 0) {
        return;
    }
    if (t->dtype == SSDE_I64 && (t->stride[0] == 1 || n <= 1)) {
        memcpy(dst, t->data, (size_t)n * sizeof(int64_t));
        return;
    }
    for (int64_t k = 0; k < n; k++) {
        dst[k] = int_at(t, k);
    }
}

/* Validates the structure (before any write) and fills S. */
static int
csr_load(const ssde_tensor *indptr, const ssde_tensor *indices, int64_t n_cols, csr_struct *S,
         ssde_map_error *err)
{
    int64_t n_rows = indptr->shape[0] - 1, nnz = indices->shape[0];
    /* Private int64 copies, validated after the copy: the kernels never read the caller's
     * index memory, which another thread may be writing while the call runs. */
    S->owned_ptr = ssde_malloc_array((size_t)n_rows + 1, sizeof(int64_t));
    S->owned_idx = ssde_malloc_array((size_t)nnz, sizeof(int64_t));
    if (S->owned_ptr == NULL || S->owned_idx == NULL) {
        csr_struct_free(S);
        return SSDE_ERR_NOMEM;
    }
    copy_i64(S->owned_ptr, indptr, n_rows + 1);
    copy_i64(S->owned_idx, indices, nnz);
    S->ptr = S->owned_ptr;
    S->idx = S->owned_idx;
    const int64_t *ptr = S->ptr, *idx = S->idx;
    int status = SSDE_OK;
    if (ptr[0] != 0) {
        set_err(err, SSDE_MAPERR_INDPTR_START, 0, ptr[0], 0, nnz);
        status = SSDE_ERR_VALUE;
    }
    for (int64_t r = 1; status == SSDE_OK && r <= n_rows; r++) {
        if (ptr[r] < ptr[r - 1]) {
            set_err(err, SSDE_MAPERR_INDPTR_ORDER, r, ptr[r], ptr[r - 1], nnz);
            status = SSDE_ERR_VALUE;
        }
    }
    if (status == SSDE_OK && ptr[n_rows] != nnz) {
        set_err(err, SSDE_MAPERR_INDPTR_END, n_rows, ptr[n_rows], 0, nnz);
        status = SSDE_ERR_VALUE;
    }
    if (status == SSDE_OK) {
        for (int64_t k = 0; k < nnz; k++) {
            if ((uint64_t)idx[k] >= (uint64_t)n_cols) {
                set_err(err, SSDE_MAPERR_INDICES_RANGE, k, idx[k], 0, n_cols);
                status = SSDE_ERR_INDEX;
                break;
            }
        }
    }
    if (status != SSDE_OK) {
        csr_struct_free(S);
    }
    return status;
}

/* Rows [r0, r1) of the sparse product on a transposed block xt[c * BB + j]:
 *   ob[j][r * so] = sum_k V[k] xt[I[k] * BB + j]   for j < nb. */
#define DEF_CSR_ROWS(SUF, T, ACC, BB)                                                            \
    static void csr_rows_##SUF##_##BB(const int64_t *P, const int64_t *I, const ACC *V,          \
                                      const ACC *xt, int64_t r0, int64_t r1, T *const *ob,       \
                                      int nb, int64_t so)                                        \
    {                                                                                            \
        for (int64_t r = r0; r < r1; r++) {                                                      \
            ACC acc[BB];                                                                         \
            for (int j = 0; j < BB; j++) {                                                       \
                acc[j] = 0;                                                                      \
            }                                                                                    \
            for (int64_t k = P[r]; k < P[r + 1]; k++) {                                          \
                const ACC v = V[k];                                                              \
                const ACC *xc = xt + I[k] * BB;                                                  \
                for (int j = 0; j < BB; j++) {                                                   \
                    acc[j] += v * xc[j];                                                         \
                }                                                                                \
            }                                                                                    \
            for (int j = 0; j < nb; j++) {                                                       \
                SSDE_ST_##SUF(ob[j] + r * so, acc[j]);                                           \
            }                                                                                    \
        }                                                                                        \
    }

#define DEF_CSR_ALL_ROWS(SUF, T, ACC) \
    DEF_CSR_ROWS(SUF, T, ACC, 1)      \
    DEF_CSR_ROWS(SUF, T, ACC, 2)      \
    DEF_CSR_ROWS(SUF, T, ACC, 4)      \
    DEF_CSR_ROWS(SUF, T, ACC, 8)      \
    static void csr_rows_##SUF(int BB, const int64_t *P, const int64_t *I, const ACC *V,   \
                               const ACC *xt, int64_t r0, int64_t r1, T *const *ob, int nb, \
                               int64_t so)                                                 \
    {                                                                                      \
        switch (BB) {                                                                      \
            case 8: csr_rows_##SUF##_8(P, I, V, xt, r0, r1, ob, nb, so); break;            \
            case 4: csr_rows_##SUF##_4(P, I, V, xt, r0, r1, ob, nb, so); break;            \
            case 2: csr_rows_##SUF##_2(P, I, V, xt, r0, r1, ob, nb, so); break;            \
            default: csr_rows_##SUF##_1(P, I, V, xt, r0, r1, ob, nb, so); break;           \
        }                                                                                  \
    }
SSDE_FOR_EACH_FLOAT(DEF_CSR_ALL_ROWS)

#define CSR_MAX_BB 8

/* Adjoint on one block of nb <= BB slices, scattered into acc[c * BB + j] (zeroed):
 *   acc[I[k] * BB + j] += V[k] x_j[r]  for r in increasing order (x_j NULL: ones). */
#define DEF_CSR_SCATTER(SUF, T, ACC, BB)                                                         \
    static void csr_scatter_##SUF##_##BB(const int64_t *P, const int64_t *I, const ACC *V,       \
                                         int64_t n_rows, const T *const *xb, int nb, int64_t sx, \
                                         ACC *acc)                                               \
    {                                                                                            \
        for (int64_t r = 0; r < n_rows; r++) {                                                   \
            ACC xr[BB];                                                                          \
            for (int j = 0; j < BB; j++) {                                                       \
                xr[j] = j >= nb ? (ACC)0 : xb[j] == NULL ? (ACC)1 : (ACC)SSDE_LD_##SUF(xb[j] + r * sx); \
            }                                                                                    \
            for (int64_t k = P[r]; k < P[r + 1]; k++) {                                          \
                const ACC v = V[k];                                                              \
                ACC *a = acc + I[k] * BB;                                                        \
                for (int j = 0; j < BB; j++) {                                                   \
                    a[j] += v * xr[j];                                                           \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

#define DEF_CSR_ALL_SCATTER(SUF, T, ACC) \
    DEF_CSR_SCATTER(SUF, T, ACC, 1)      \
    DEF_CSR_SCATTER(SUF, T, ACC, 2)      \
    DEF_CSR_SCATTER(SUF, T, ACC, 4)      \
    DEF_CSR_SCATTER(SUF, T, ACC, 8)
SSDE_FOR_EACH_FLOAT(DEF_CSR_ALL_SCATTER)

/* For one dtype: values as ACC (copied unless usable in place), then
 *  forward: per block of BB slices, x's block transposed into xt[c * BB + j], then rows in
 *           parallel, each a sparse dot product over contiguous BB-vectors;
 *  adjoint: blocks of BB slices in parallel, each scattered into the thread's own
 *           accumulator acc[c * BB + j] and written back (no two threads share a slice).
 * Every output element sums its terms in increasing entry order k, whatever BB and the
 * thread count, so results are deterministic; x == NULL (coverage) reads ones. */
#define DEF_CSR_RUN(SUF, T, ACC)                                                                 \
    static int csr_run_##SUF(ssde_tensor *out, const ssde_tensor *x, const csr_struct *S,        \
                             const ssde_tensor *values, int64_t n_rows, int64_t n_cols,          \
                             int adjoint)                                                        \
    {                                                                                            \
        const int64_t *ptr = S->ptr, *idx = S->idx;                                              \
        int64_t nnz = ptr[n_rows];                                                               \
        int64_t vs = values->stride[0];                                                          \
        int nl = out->ndim - 1;                                                                  \
        lead_iter L;                                                                             \
        lead_init(&L, out, x != NULL ? x : out, nl);                                             \
        int64_t B = L.count;                                                                     \
        int64_t n_in = adjoint ? n_rows : n_cols, n_out = adjoint ? n_cols : n_rows;             \
        int nthreads = ssde_effective_threads(ssde_sat_mul(B, nnz + n_out + n_in));              \
        int BB = B >= 5 ? 8 : B >= 3 ? 4 : B == 2 ? 2 : 1;                                       \
        if (adjoint) { /* enough blocks to feed the team */                                      \
            while (BB > 1 && (B + BB - 1) / BB < nthreads) {                                     \
                BB /= 2;                                                                         \
            }                                                                                    \
        }                                                                                        \
        int64_t nbb = (B + BB - 1) / BB;                                                         \
        /* forward: with a block of batch slices per thread there is no barrier inside a block;  \
         * with fewer blocks than threads the rows of each block are shared instead */            \
        int by_block = adjoint || nbb >= nthreads;                                               \
        int direct = sizeof(T) == sizeof(ACC) && (vs == 1 || nnz <= 1);                          \
        ACC *val = NULL, *scratch = NULL;                                                        \
        size_t nscratch = 0, per_thread = 0; /* stays 0 (no allocation) on overflow */           \
        if (ssde_mul_size((size_t)(adjoint ? n_cols : n_in), (size_t)BB, &per_thread) == 0 &&    \
            ssde_add_size(per_thread, 1, &per_thread) == 0 &&                                    \
            ssde_mul_size(by_block ? (size_t)nthreads : 1, per_thread, &nscratch) < 0) {         \
            nscratch = 0;                                                                        \
        }                                                                                        \
        if (!direct) {                                                                           \
            val = ssde_malloc_array((size_t)nnz, sizeof(ACC));                                   \
        }                                                                                        \
        scratch = nscratch > 0 ? ssde_malloc_array(nscratch, sizeof(ACC)) : NULL;                \
        if ((!direct && val == NULL) || scratch == NULL) {                                       \
            free(val);                                                                           \
            free(scratch);                                                                       \
            return SSDE_ERR_NOMEM;                                                               \
        }                                                                                        \
        if (!direct) {                                                                           \
            const T *vsrc = (const T *)values->data;                                             \
            for (int64_t k = 0; k < nnz; k++) {                                                  \
                val[k] = SSDE_LD_##SUF(vsrc + k * vs);                                           \
            }                                                                                    \
        }                                                                                        \
        const ACC *V = direct ? (const ACC *)(const void *)values->data : val;                   \
        int64_t sx = x != NULL ? x->stride[nl] : 0, so = out->stride[nl];                        \
        if (adjoint) {                                                                           \
            PM_OMP_PARALLEL                                                                      \
            {                                                                                    \
                ACC *acc = scratch + (size_t)pm_thread_num() * ((size_t)n_cols * (size_t)BB + 1); \
                PM_OMP_FOR_STATIC                                                                \
                for (int64_t blk = 0; blk < nbb; blk++) {                                        \
                    int64_t b0 = blk * BB;                                                       \
                    int nb = (int)(B - b0 < BB ? B - b0 : BB);                                   \
                    const T *xb[CSR_MAX_BB];                                                     \
                    T *ob[CSR_MAX_BB];                                                           \
                    for (int j = 0; j < nb; j++) {                                               \
                        int64_t oo, xo;                                                          \
                        lead_offsets(&L, b0 + j, &oo, &xo);                                      \
                        ob[j] = (T *)out->data + oo;                                             \
                        xb[j] = x != NULL ? (const T *)x->data + xo : NULL;                      \
                    }                                                                            \
                    for (int64_t e = 0; e < n_cols * BB; e++) {                                  \
                        acc[e] = 0;                                                              \
                    }                                                                            \
                    switch (BB) {                                                                \
                        case 8:                                                                  \
                            csr_scatter_##SUF##_8(ptr, idx, V, n_rows, xb, nb, sx, acc);         \
                            break;                                                               \
                        case 4:                                                                  \
                            csr_scatter_##SUF##_4(ptr, idx, V, n_rows, xb, nb, sx, acc);         \
                            break;                                                               \
                        case 2:                                                                  \
                            csr_scatter_##SUF##_2(ptr, idx, V, n_rows, xb, nb, sx, acc);         \
                            break;                                                               \
                        default:                                                                 \
                            csr_scatter_##SUF##_1(ptr, idx, V, n_rows, xb, nb, sx, acc);         \
                            break;                                                               \
                    }                                                                            \
                    for (int j = 0; j < nb; j++) {                                               \
                        T *o = ob[j];                                                            \
                        for (int64_t c = 0; c < n_cols; c++) {                                   \
                            SSDE_ST_##SUF(o + c * so, acc[c * BB + j]);                          \
                        }                                                                        \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        else if (by_block) {                                                                     \
            PM_OMP_PARALLEL                                                                      \
            {                                                                                    \
                ACC *xt = scratch + (size_t)pm_thread_num() * ((size_t)n_in * (size_t)BB + 1);   \
                PM_OMP_FOR_STATIC                                                                \
                for (int64_t blk = 0; blk < nbb; blk++) {                                        \
                    int64_t b0 = blk * BB;                                                       \
                    int nb = (int)(B - b0 < BB ? B - b0 : BB);                                   \
                    const T *xb[CSR_MAX_BB];                                                     \
                    T *ob[CSR_MAX_BB];                                                           \
                    for (int j = 0; j < nb; j++) {                                               \
                        int64_t oo, xo;                                                          \
                        lead_offsets(&L, b0 + j, &oo, &xo);                                      \
                        ob[j] = (T *)out->data + oo;                                             \
                        xb[j] = (const T *)x->data + xo;                                         \
                    }                                                                            \
                    for (int j = 0; j < BB; j++) {                                               \
                        for (int64_t c = 0; c < n_in; c++) {                                     \
                            xt[c * BB + j] = j < nb ? SSDE_LD_##SUF(xb[j] + c * sx) : 0;         \
                        }                                                                        \
                    }                                                                            \
                    csr_rows_##SUF(BB, ptr, idx, V, xt, 0, n_out, ob, nb, so);               \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        else {                                                                                   \
            ACC *xt = scratch;                                                                   \
            int64_t ncb = (n_in + CSR_COL_BLOCK - 1) / CSR_COL_BLOCK;                            \
            int64_t nrb = (n_out + CSR_ROW_BLOCK - 1) / CSR_ROW_BLOCK;                           \
            PM_OMP_PARALLEL                                                                      \
            for (int64_t blk = 0; blk < nbb; blk++) {                                            \
                int64_t b0 = blk * BB;                                                           \
                int nb = (int)(B - b0 < BB ? B - b0 : BB);                                       \
                const T *xb[CSR_MAX_BB];                                                         \
                T *ob[CSR_MAX_BB];                                                               \
                for (int j = 0; j < nb; j++) {                                                   \
                    int64_t oo, xo;                                                              \
                    lead_offsets(&L, b0 + j, &oo, &xo);                                          \
                    ob[j] = (T *)out->data + oo;                                                 \
                    xb[j] = (const T *)x->data + xo;                                             \
                }                                                                                \
                PM_OMP_FOR_STATIC                                                                \
                for (int64_t cb = 0; cb < ncb; cb++) {                                           \
                    int64_t c0 = cb * CSR_COL_BLOCK;                                             \
                    int64_t c1 = n_in - c0 < CSR_COL_BLOCK ? n_in : c0 + CSR_COL_BLOCK;          \
                    for (int j = 0; j < BB; j++) {                                               \
                        if (j >= nb) {                                                           \
                            for (int64_t c = c0; c < c1; c++) {                                  \
                                xt[c * BB + j] = 0;                                              \
                            }                                                                    \
                        }                                                                        \
                        else {                                                                   \
                            const T *xr = xb[j];                                                 \
                            for (int64_t c = c0; c < c1; c++) {                                  \
                                xt[c * BB + j] = SSDE_LD_##SUF(xr + c * sx);                     \
                            }                                                                    \
                        }                                                                        \
                    }                                                                            \
                }                                                                                \
                PM_OMP_FOR_STATIC                                                                \
                for (int64_t rb = 0; rb < nrb; rb++) {                                           \
                    int64_t r0 = rb * CSR_ROW_BLOCK;                                             \
                    int64_t r1 = n_out - r0 < CSR_ROW_BLOCK ? n_out : r0 + CSR_ROW_BLOCK;        \
                    csr_rows_##SUF(BB, ptr, idx, V, xt, r0, r1, ob, nb, so);                 \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        free(val);                                                                               \
        free(scratch);                                                                           \
        return SSDE_OK;                                                                          \
    }
SSDE_FOR_EACH_FLOAT(DEF_CSR_RUN)

static int
csr_dispatch(ssde_tensor *out, const ssde_tensor *x, const csr_struct *S,
             const ssde_tensor *values, int64_t n_rows, int64_t n_cols, int adjoint)
{
    switch (values->dtype) {
        case SSDE_F32:
            return csr_run_f32(out, x, S, values, n_rows, n_cols, adjoint);
        case SSDE_F64:
            return csr_run_f64(out, x, S, values, n_rows, n_cols, adjoint);
        case SSDE_F16:
            return csr_run_f16(out, x, S, values, n_rows, n_cols, adjoint);
        default:
            return csr_run_bf16(out, x, S, values, n_rows, n_cols, adjoint);
    }
}

int
ssde_csr_apply(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *indptr,
               const ssde_tensor *indices, const ssde_tensor *values, int64_t n_cols, int adjoint,
               ssde_map_error *err)
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(x);
    SSDE_CHECK_TENSOR(indptr);
    SSDE_CHECK_TENSOR(indices);
    SSDE_CHECK_TENSOR(values);
    set_err(err, SSDE_MAPERR_NONE, 0, 0, 0, 0);
    int st = csr_check_layout(indptr, indices, values, n_cols);
    if (st != SSDE_OK) {
        return st;
    }
    if (x->dtype != values->dtype || out->dtype != values->dtype) {
        return SSDE_ERR_DTYPE;
    }
    int64_t n_rows = indptr->shape[0] - 1;
    int64_t n_in = adjoint ? n_rows : n_cols, n_out = adjoint ? n_cols : n_rows;
    if (x->ndim < 1 || !same_leading(out, x, 1) || x->shape[x->ndim - 1] != n_in ||
        out->shape[out->ndim - 1] != n_out) {
        return SSDE_ERR_SHAPE;
    }
    csr_struct S;
    st = csr_load(indptr, indices, n_cols, &S, err);
    if (st != SSDE_OK) {
        return st;
    }
    if (ssde_numel(out) > 0) {
        st = csr_dispatch(out, x, &S, values, n_rows, n_cols, adjoint);
    }
    csr_struct_free(&S);
    return st;
}

int
ssde_csr_coverage(ssde_tensor *out, const ssde_tensor *indptr, const ssde_tensor *indices,
                  const ssde_tensor *values, int64_t n_cols, ssde_map_error *err)
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(indptr);
    SSDE_CHECK_TENSOR(indices);
    SSDE_CHECK_TENSOR(values);
    set_err(err, SSDE_MAPERR_NONE, 0, 0, 0, 0);
    int st = csr_check_layout(indptr, indices, values, n_cols);
    if (st != SSDE_OK) {
        return st;
    }
    if (out->dtype != values->dtype) {
        return SSDE_ERR_DTYPE;
    }
    if (out->ndim != 1 || out->shape[0] != n_cols) {
        return SSDE_ERR_SHAPE;
    }
    csr_struct S;
    st = csr_load(indptr, indices, n_cols, &S, err);
    if (st != SSDE_OK) {
        return st;
    }
    if (n_cols > 0) {
        st = csr_dispatch(out, NULL, &S, values, indptr->shape[0] - 1, n_cols, 1);
    }
    csr_struct_free(&S);
    return st;
}
