/* Window kernels: crop, adjoint paste, paste on top, coverage (see ssde/windows.h). */
#include "ssde/windows.h"

#include <stdlib.h>
#include <string.h>

#include "ssde/dtype_dispatch.h"
#include "ssde/half_convert.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- per-dtype row primitives ------------------------------------------- */

#define DEF_ROW_OPS(SUF, T, ACC)                                                          \
    static void load_##SUF(void *acc_, const char *src, int64_t ss, int64_t n)            \
    {                                                                                     \
        ACC *restrict acc = acc_;                                                         \
        if (ss == (int64_t)sizeof(T)) {                                                   \
            const T *restrict s = (const T *)src;                                         \
            for (int64_t k = 0; k < n; k++) {                                             \
                acc[k] = SSDE_LD_##SUF(s + k);                                            \
            }                                                                             \
        }                                                                                 \
        else {                                                                            \
            for (int64_t k = 0; k < n; k++) {                                             \
                acc[k] = SSDE_LD_##SUF(src + k * ss);                                     \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static void store_##SUF(char *dst, int64_t ds, const void *acc_, int64_t n)           \
    {                                                                                     \
        const ACC *restrict acc = acc_;                                                   \
        if (ds == (int64_t)sizeof(T)) {                                                   \
            T *restrict d = (T *)dst;                                                     \
            for (int64_t k = 0; k < n; k++) {                                             \
                SSDE_ST_##SUF(d + k, acc[k]);                                             \
            }                                                                             \
        }                                                                                 \
        else {                                                                            \
            for (int64_t k = 0; k < n; k++) {                                             \
                SSDE_ST_##SUF(dst + k * ds, acc[k]);                                      \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static void add_##SUF(void *acc_, const char *src, int64_t ss, const char *wt,        \
                          int64_t ws, int64_t n)                                          \
    {                                                                                     \
        ACC *restrict acc = acc_;                                                         \
        const int64_t z = (int64_t)sizeof(T);                                             \
        const T *restrict s = (const T *)src;                                             \
        if (wt == NULL) {                                                                 \
            if (ss == z) {                                                                \
                for (int64_t k = 0; k < n; k++) {                                         \
                    acc[k] += SSDE_LD_##SUF(s + k);                                       \
                }                                                                         \
            }                                                                             \
            else {                                                                        \
                for (int64_t k = 0; k < n; k++) {                                         \
                    acc[k] += SSDE_LD_##SUF(src + k * ss);                                \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        else if (ws == 0) {                                                               \
            const ACC wv = SSDE_LD_##SUF(wt);                                             \
            if (ss == z) {                                                                \
                for (int64_t k = 0; k < n; k++) {                                         \
                    acc[k] += wv * SSDE_LD_##SUF(s + k);                                  \
                }                                                                         \
            }                                                                             \
            else {                                                                        \
                for (int64_t k = 0; k < n; k++) {                                         \
                    acc[k] += wv * SSDE_LD_##SUF(src + k * ss);                           \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        else if (ss == z && ws == z) {                                                    \
            const T *restrict w = (const T *)wt;                                          \
            for (int64_t k = 0; k < n; k++) {                                             \
                acc[k] += SSDE_LD_##SUF(w + k) * SSDE_LD_##SUF(s + k);                    \
            }                                                                             \
        }                                                                                 \
        else {                                                                            \
            for (int64_t k = 0; k < n; k++) {                                             \
                acc[k] += SSDE_LD_##SUF(wt + k * ws) * SSDE_LD_##SUF(src + k * ss);       \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static void add_w_##SUF(void *den_, const char *wt, int64_t ws, int64_t n)            \
    {                                                                                     \
        ACC *restrict den = den_;                                                         \
        if (ws == 0) {                                                                    \
            const ACC wv = SSDE_LD_##SUF(wt);                                             \
            for (int64_t k = 0; k < n; k++) {                                             \
                den[k] += wv;                                                             \
            }                                                                             \
        }                                                                                 \
        else if (ws == (int64_t)sizeof(T)) {                                              \
            const T *restrict w = (const T *)wt;                                          \
            for (int64_t k = 0; k < n; k++) {                                             \
                den[k] += SSDE_LD_##SUF(w + k);                                           \
            }                                                                             \
        }                                                                                 \
        else {                                                                            \
            for (int64_t k = 0; k < n; k++) {                                             \
                den[k] += SSDE_LD_##SUF(wt + k * ws);                                     \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static void add_nd_##SUF(void *num_, void *den_, const char *src, int64_t ss,         \
                             const char *wt, int64_t ws, int64_t n)                       \
    {                                                                                     \
        ACC *restrict num = num_;                                                         \
        ACC *restrict den = den_;                                                         \
        const int64_t z = (int64_t)sizeof(T);                                             \
        if (wt == NULL) {                                                                 \
            add_##SUF(num_, src, ss, NULL, 0, n);                                         \
            for (int64_t k = 0; k < n; k++) {                                             \
                den[k] += (ACC)1;                                                         \
            }                                                                             \
        }                                                                                 \
        else if (ws == 0) {                                                               \
            add_##SUF(num_, src, ss, wt, 0, n);                                           \
            add_w_##SUF(den_, wt, 0, n);                                                  \
        }                                                                                 \
        else if (ss == z && ws == z) {                                                    \
            const T *restrict s = (const T *)src;                                         \
            const T *restrict w = (const T *)wt;                                          \
            for (int64_t k = 0; k < n; k++) {                                             \
                ACC wv = SSDE_LD_##SUF(w + k);                                            \
                num[k] += wv * SSDE_LD_##SUF(s + k);                                      \
                den[k] += wv;                                                             \
            }                                                                             \
        }                                                                                 \
        else {                                                                            \
            for (int64_t k = 0; k < n; k++) {                                             \
                ACC wv = SSDE_LD_##SUF(wt + k * ws);                                      \
                num[k] += wv * SSDE_LD_##SUF(src + k * ss);                               \
                den[k] += wv;                                                             \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static void add_one_##SUF(void *den_, int64_t n)                                      \
    {                                                                                     \
        ACC *restrict den = den_;                                                         \
        for (int64_t k = 0; k < n; k++) {                                                 \
            den[k] += (ACC)1;                                                             \
        }                                                                                 \
    }                                                                                     \
    static int64_t count_uncovered_##SUF(const void *den_, int64_t n)                     \
    {                                                                                     \
        const ACC *restrict den = den_;                                                   \
        int64_t bad = 0;                                                                  \
        for (int64_t k = 0; k < n; k++) {                                                 \
            bad += !(den[k] > (ACC)0);                                                    \
        }                                                                                 \
        return bad;                                                                       \
    }                                                                                     \
    static void store_div_##SUF(char *dst, int64_t ds, const void *num_, const void *den_, \
                                int64_t n, int zero_uncovered)                            \
    {                                                                                     \
        const ACC *restrict num = num_;                                                   \
        const ACC *restrict den = den_;                                                   \
        if (ds == (int64_t)sizeof(T) && count_uncovered_##SUF(den_, n) == 0) {            \
            T *restrict d = (T *)dst;                                                     \
            for (int64_t k = 0; k < n; k++) {                                             \
                SSDE_ST_##SUF(d + k, num[k] / den[k]);                                    \
            }                                                                             \
            return;                                                                       \
        }                                                                                 \
        for (int64_t k = 0; k < n; k++) {                                                 \
            if (den[k] > (ACC)0) {                                                        \
                SSDE_ST_##SUF(dst + k * ds, num[k] / den[k]);                             \
            }                                                                             \
            else if (zero_uncovered) {                                                    \
                SSDE_ST_##SUF(dst + k * ds, (ACC)0);                                      \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    static const ssde_row_ops row_ops_##SUF = {                                           \
        sizeof(T),      sizeof(ACC),    load_##SUF,    store_##SUF,                       \
        add_##SUF,      add_nd_##SUF,   add_w_##SUF,   add_one_##SUF,                     \
        store_div_##SUF, count_uncovered_##SUF,                                           \
    };
SSDE_FOR_EACH_FLOAT(DEF_ROW_OPS)

/* float16 rows load and store through the bulk converters (F16C where available). */
static void
load_f16_bulk(void *acc, const char *src, int64_t ss, int64_t n)
{
    ssde_half_to_float_n(src, ss, (float *)acc, n);
}

static void
store_f16_bulk(char *dst, int64_t ds, const void *acc, int64_t n)
{
    ssde_float_to_half_n((const float *)acc, dst, ds, n);
}

static const ssde_row_ops row_ops_f16_bulk = {
    sizeof(uint16_t), sizeof(float),  load_f16_bulk, store_f16_bulk,
    add_f16,          add_nd_f16,     add_w_f16,     add_one_f16,
    store_div_f16,    count_uncovered_f16,
};

const ssde_row_ops *
ssde_row_ops_for(int dtype)
{
    switch (dtype) {
        case SSDE_F32:
            return &row_ops_f32;
        case SSDE_F64:
            return &row_ops_f64;
        case SSDE_F16:
            (void)row_ops_f16;
            return &row_ops_f16_bulk;
        case SSDE_BF16:
            return &row_ops_bf16;
        default:
            return NULL;
    }
}

void
ssde_copy_items(char *dst, int64_t ds, const char *src, int64_t ss, int64_t n, size_t item)
{
    const int64_t z = (int64_t)item;
    if (ds == z && ss == z) {
        memcpy(dst, src, (size_t)n * item);
        return;
    }
    switch (item) {
        case 2:
            for (int64_t k = 0; k < n; k++) {
                *(uint16_t *)(dst + k * ds) = *(const uint16_t *)(src + k * ss);
            }
            break;
        case 4:
            for (int64_t k = 0; k < n; k++) {
                *(uint32_t *)(dst + k * ds) = *(const uint32_t *)(src + k * ss);
            }
            break;
        case 8:
            for (int64_t k = 0; k < n; k++) {
                *(uint64_t *)(dst + k * ds) = *(const uint64_t *)(src + k * ss);
            }
            break;
        default:
            for (int64_t k = 0; k < n; k++) {
                memcpy(dst + k * ds, src + k * ss, item);
            }
            break;
    }
}

/* ---- offsets -------------------------------------------------------------- */

int
ssde_offsets_to_i64(const ssde_tensor *offsets, int64_t *dst)
{
    SSDE_CHECK_TENSOR(offsets);
    if (offsets->dtype != SSDE_I64 && offsets->dtype != SSDE_I32) {
        return SSDE_ERR_DTYPE;
    }
    if (offsets->ndim != 2 || offsets->shape[1] != 2) {
        return SSDE_ERR_SHAPE;
    }
    int64_t item = (int64_t)ssde_dtype_size(offsets->dtype);
    for (int64_t i = 0; i < offsets->shape[0]; i++) {
        for (int64_t k = 0; k < 2; k++) {
            const char *p = offsets->data + (i * offsets->stride[0] + k * offsets->stride[1]) * item;
            dst[2 * i + k] = offsets->dtype == SSDE_I64 ? *(const int64_t *)p
                                                        : (int64_t)*(const int32_t *)p;
        }
    }
    return SSDE_OK;
}

int64_t
ssde_windows_first_invalid(const ssde_windows *win, int64_t H, int64_t W)
{
    if (win->n <= 0) {
        return -1;
    }
    if (win->h < 0 || win->w < 0 || win->h > H || win->w > W) {
        return 0;
    }
    for (int64_t i = 0; i < win->n; i++) {
        int64_t top = win->offsets[2 * i], left = win->offsets[2 * i + 1];
        if (top < 0 || top > H - win->h) {
            return i;
        }
        if (!win->circular && (left < 0 || left > W - win->w)) {
            return i;
        }
    }
    return -1;
}

int64_t
ssde_window_left(const ssde_windows *win, int64_t i, int64_t W)
{
    int64_t left = win->offsets[2 * i + 1];
    if (win->circular && W > 0) {
        left %= W;
        if (left < 0) {
            left += W;
        }
    }
    return left;
}

/* ---- shape checks --------------------------------------------------------- */

int
ssde_windows_check_size(const ssde_tensor *canvas, const ssde_windows *win)
{
    int64_t work = win->n;
    for (int d = 0; d < canvas->ndim - 2; d++) {
        if (ssde_mul_nonneg_i64(work, canvas->shape[d], &work) < 0) {
            return SSDE_ERR_VALUE;
        }
    }
    if (ssde_mul_nonneg_i64(work, win->h, &work) < 0 ||
        ssde_mul_nonneg_i64(work, win->w, &work) < 0 || work > SSDE_MAX_EXTENT_BYTES / 2) {
        return SSDE_ERR_VALUE;
    }
    return SSDE_OK;
}

/* canvas [*L, H, W], views [N, *L, h, w] (views may be NULL) */
static int
check_shapes(const ssde_tensor *canvas, const ssde_tensor *views, const ssde_windows *win)
{
    SSDE_CHECK_TENSOR(canvas);
    if (views != NULL) {
        SSDE_CHECK_TENSOR(views);
    }
    if (canvas->ndim < 2 || canvas->ndim > SSDE_MAX_DIMS - 1) {
        return SSDE_ERR_SHAPE;
    }
    if (win->n < 0 || win->h < 0 || win->w < 0 || ssde_windows_check_size(canvas, win) != SSDE_OK) {
        return SSDE_ERR_VALUE;
    }
    int nd = canvas->ndim;
    if (win->h > canvas->shape[nd - 2] || win->w > canvas->shape[nd - 1]) {
        return SSDE_ERR_SHAPE;
    }
    if (views != NULL) {
        if (views->ndim != nd + 1 || views->shape[0] != win->n ||
            views->shape[nd - 1] != win->h || views->shape[nd] != win->w) {
            return SSDE_ERR_SHAPE;
        }
        for (int d = 0; d < nd - 2; d++) {
            if (views->shape[d + 1] != canvas->shape[d]) {
                return SSDE_ERR_SHAPE;
            }
        }
        if (views->dtype != canvas->dtype) {
            return SSDE_ERR_DTYPE;
        }
    }
    if (!ssde_is_float(canvas->dtype)) {
        return SSDE_ERR_DTYPE;
    }
    if (ssde_windows_first_invalid(win, canvas->shape[nd - 2], canvas->shape[nd - 1]) >= 0) {
        return SSDE_ERR_INDEX;
    }
    return SSDE_OK;
}

static int
same_shape(const ssde_tensor *a, const ssde_tensor *b)
{
    if (a->ndim != b->ndim) {
        return 0;
    }
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] != b->shape[d]) {
            return 0;
        }
    }
    return 1;
}

static int64_t
lead_count(const ssde_tensor *canvas)
{
    int64_t n = 1;
    for (int d = 0; d < canvas->ndim - 2; d++) {
        n *= canvas->shape[d];
    }
    return n;
}

static inline int
thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- crop ----------------------------------------------------------------- */

int
ssde_crop_windows(ssde_tensor *views, const ssde_tensor *canvas, const ssde_windows *win)
{
    int st = check_shapes(canvas, views, win);
    if (st != SSDE_OK) {
        return st;
    }
    const int nd = canvas->ndim, nlead = nd - 2;
    const int64_t W = canvas->shape[nd - 1];
    const int64_t h = win->h, w = win->w, N = win->n;
    const int64_t Lt = lead_count(canvas);
    const int64_t rows = N * Lt * h;
    if (rows == 0 || w == 0) {
        return SSDE_OK;
    }
    const int64_t item = (int64_t)ssde_dtype_size(canvas->dtype);
    const int64_t cH = canvas->stride[nd - 2] * item, cW = canvas->stride[nd - 1] * item;
    const int64_t vN = views->stride[0] * item, vH = views->stride[nd - 1] * item,
                  vW = views->stride[nd] * item;
    int nthreads = ssde_effective_threads(rows * w);
    /* Blocks of consecutive rows of one (window, leading index) pair; the
     * pairs are split into row chunks only when there are too few of them. */
    const int64_t pairs = N * Lt;
    int64_t chunks = 1;
    if (nthreads > 1 && pairs < 4 * nthreads) {
        chunks = (4 * nthreads + pairs - 1) / pairs;
        if (chunks > h) {
            chunks = h;
        }
    }
    const int64_t chunk_len = (h + chunks - 1) / chunks;
    const int64_t nblocks = pairs * chunks;
    (void)nthreads;

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t pair = b / chunks;
        int64_t j0 = (b % chunks) * chunk_len;
        int64_t j1 = j0 + chunk_len < h ? j0 + chunk_len : h;
        int64_t l = pair % Lt;
        int64_t i = pair / Lt;
        int64_t top = win->offsets[2 * i];
        ssde_run runs[2];
        int nr = ssde_window_runs(ssde_window_left(win, i, W), w, W, runs);
        const char *src = canvas->data +
                          ssde_lead_offset(l, nlead, canvas->shape, canvas->stride, item) +
                          (top + j0) * cH;
        char *dst = views->data + i * vN +
                    ssde_lead_offset(l, nlead, views->shape + 1, views->stride + 1, item) + j0 * vH;
        for (int64_t j = j0; j < j1; j++, src += cH, dst += vH) {
            for (int k = 0; k < nr; k++) {
                ssde_copy_items(dst + runs[k].vcol * vW, vW, src + runs[k].ccol * cW, cW,
                                runs[k].len, (size_t)item);
            }
        }
    }
    return SSDE_OK;
}

/* ---- paste add ------------------------------------------------------------ */

int
ssde_paste_windows_add(ssde_tensor *canvas, const ssde_tensor *views, const ssde_tensor *weights,
                       const ssde_windows *win)
{
    if (weights != NULL) {
        SSDE_CHECK_TENSOR(weights);
    }
    int st = check_shapes(canvas, views, win);
    if (st != SSDE_OK) {
        return st;
    }
    if (weights != NULL) {
        if (!same_shape(weights, views)) {
            return SSDE_ERR_SHAPE;
        }
        if (weights->dtype != views->dtype) {
            return SSDE_ERR_DTYPE;
        }
    }
    const int nd = canvas->ndim, nlead = nd - 2;
    const int64_t H = canvas->shape[nd - 2], W = canvas->shape[nd - 1];
    const int64_t h = win->h, w = win->w, N = win->n;
    const int64_t Lt = lead_count(canvas);
    const int64_t units = Lt * H;
    if (units == 0 || N == 0 || h == 0 || w == 0) {
        return SSDE_OK;
    }
    const ssde_row_ops *ops = ssde_row_ops_for(canvas->dtype);
    const int64_t item = (int64_t)ops->item;
    const int64_t cH = canvas->stride[nd - 2] * item, cW = canvas->stride[nd - 1] * item;
    const int64_t vN = views->stride[0] * item, vH = views->stride[nd - 1] * item,
                  vW = views->stride[nd] * item;
    const int64_t wN = weights ? weights->stride[0] * item : 0;
    const int64_t wH = weights ? weights->stride[nd - 1] * item : 0;
    const int64_t wW = weights ? weights->stride[nd] * item : 0;
    /* float32/float64 rows with unit stride accumulate in place */
    const int direct = ops->item == ops->acc_item && cW == item;
    int nthreads = ssde_effective_threads(N * Lt * h * w);
    char *scratch = NULL;
    if (!direct) {
        size_t row_bytes;
        if (ssde_mul_size((size_t)W, ops->acc_item, &row_bytes) == 0) {
            scratch = ssde_malloc_array((size_t)nthreads, row_bytes);
        }
        if (scratch == NULL) {
            return SSDE_ERR_NOMEM;
        }
    }

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t u = 0; u < units; u++) {
        int64_t l = u / H, r = u % H;
        int any = 0;
        for (int64_t i = 0; i < N && !any; i++) {
            int64_t top = win->offsets[2 * i];
            any = top <= r && r < top + h;
        }
        if (!any) {
            continue;
        }
        char *crow = canvas->data + ssde_lead_offset(l, nlead, canvas->shape, canvas->stride, item) +
                     r * cH;
        int64_t voff = ssde_lead_offset(l, nlead, views->shape + 1, views->stride + 1, item);
        int64_t woff = weights ? ssde_lead_offset(l, nlead, weights->shape + 1, weights->stride + 1,
                                                  item)
                               : 0;
        char *acc = direct ? crow : scratch + (size_t)thread_id() * (size_t)W * ops->acc_item;
        if (!direct) {
            ops->load(acc, crow, cW, W);
        }
        for (int64_t i = 0; i < N; i++) {
            int64_t top = win->offsets[2 * i];
            if (r < top || r >= top + h) {
                continue;
            }
            int64_t j = r - top;
            const char *vrow = views->data + i * vN + voff + j * vH;
            const char *wrow = weights ? weights->data + i * wN + woff + j * wH : NULL;
            ssde_run runs[2];
            int nr = ssde_window_runs(ssde_window_left(win, i, W), w, W, runs);
            for (int k = 0; k < nr; k++) {
                ops->add(acc + runs[k].ccol * (int64_t)ops->acc_item, vrow + runs[k].vcol * vW, vW,
                         wrow ? wrow + runs[k].vcol * wW : NULL, wW, runs[k].len);
            }
        }
        if (!direct) {
            ops->store(crow, cW, acc, W);
        }
    }
    free(scratch);
    return SSDE_OK;
}

/* ---- paste on top --------------------------------------------------------- */

int
ssde_paste_windows_on_top(ssde_tensor *canvas, const ssde_tensor *views, const ssde_windows *win)
{
    int st = check_shapes(canvas, views, win);
    if (st != SSDE_OK) {
        return st;
    }
    const int nd = canvas->ndim, nlead = nd - 2;
    const int64_t H = canvas->shape[nd - 2], W = canvas->shape[nd - 1];
    const int64_t h = win->h, w = win->w, N = win->n;
    const int64_t Lt = lead_count(canvas);
    const int64_t units = Lt * H;
    if (units == 0 || N == 0 || h == 0 || w == 0) {
        return SSDE_OK;
    }
    const int64_t item = (int64_t)ssde_dtype_size(canvas->dtype);
    const int64_t cH = canvas->stride[nd - 2] * item, cW = canvas->stride[nd - 1] * item;
    const int64_t vN = views->stride[0] * item, vH = views->stride[nd - 1] * item,
                  vW = views->stride[nd] * item;
    int nthreads = ssde_effective_threads(N * Lt * h * w);
    (void)nthreads;

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t u = 0; u < units; u++) {
        int64_t l = u / H, r = u % H;
        char *crow = NULL;
        int64_t voff = 0;
        for (int64_t i = 0; i < N; i++) {
            int64_t top = win->offsets[2 * i];
            if (r < top || r >= top + h) {
                continue;
            }
            if (crow == NULL) {
                crow = canvas->data +
                       ssde_lead_offset(l, nlead, canvas->shape, canvas->stride, item) + r * cH;
                voff = ssde_lead_offset(l, nlead, views->shape + 1, views->stride + 1, item);
            }
            const char *vrow = views->data + i * vN + voff + (r - top) * vH;
            ssde_run runs[2];
            int nr = ssde_window_runs(ssde_window_left(win, i, W), w, W, runs);
            for (int k = 0; k < nr; k++) {
                ssde_copy_items(crow + runs[k].ccol * cW, cW, vrow + runs[k].vcol * vW, vW,
                                runs[k].len, (size_t)item);
            }
        }
    }
    return SSDE_OK;
}

/* ---- coverage ------------------------------------------------------------- */

int
ssde_window_coverage(ssde_tensor *out, const ssde_tensor *weights, const ssde_windows *win)
{
    if (weights != NULL) {
        SSDE_CHECK_TENSOR(weights);
    }
    if (out->ndim != 2) {
        return SSDE_ERR_SHAPE;
    }
    int st = check_shapes(out, NULL, win);
    if (st != SSDE_OK) {
        return st;
    }
    if (weights != NULL) {
        if (weights->ndim != 3 || weights->shape[0] != win->n || weights->shape[1] != win->h ||
            weights->shape[2] != win->w) {
            return SSDE_ERR_SHAPE;
        }
        if (weights->dtype != out->dtype) {
            return SSDE_ERR_DTYPE;
        }
    }
    const int64_t H = out->shape[0], W = out->shape[1];
    const int64_t h = win->h, w = win->w, N = win->n;
    if (H == 0 || W == 0) {
        return SSDE_OK;
    }
    const ssde_row_ops *ops = ssde_row_ops_for(out->dtype);
    const int64_t item = (int64_t)ops->item, acc_item = (int64_t)ops->acc_item;
    const int64_t oH = out->stride[0] * item, oW = out->stride[1] * item;
    const int64_t wN = weights ? weights->stride[0] * item : 0;
    const int64_t wH = weights ? weights->stride[1] * item : 0;
    const int64_t wW = weights ? weights->stride[2] * item : 0;
    int nthreads = ssde_effective_threads(N * h * w + H * W);
    char *scratch = NULL;
    size_t row_bytes;
    if (ssde_mul_size((size_t)W, ops->acc_item, &row_bytes) == 0) {
        scratch = ssde_malloc_array((size_t)nthreads, row_bytes);
    }
    if (scratch == NULL) {
        return SSDE_ERR_NOMEM;
    }

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t r = 0; r < H; r++) {
        char *acc = scratch + (size_t)thread_id() * (size_t)W * ops->acc_item;
        memset(acc, 0, (size_t)W * ops->acc_item);
        for (int64_t i = 0; i < N; i++) {
            int64_t top = win->offsets[2 * i];
            if (r < top || r >= top + h || w == 0) {
                continue;
            }
            ssde_run runs[2];
            int nr = ssde_window_runs(ssde_window_left(win, i, W), w, W, runs);
            for (int k = 0; k < nr; k++) {
                if (weights) {
                    const char *wrow = weights->data + i * wN + (r - top) * wH;
                    ops->add_w(acc + runs[k].ccol * acc_item, wrow + runs[k].vcol * wW, wW,
                               runs[k].len);
                }
                else {
                    ops->add_one(acc + runs[k].ccol * acc_item, runs[k].len);
                }
            }
        }
        ops->store(out->data + r * oH, oW, acc, W);
    }
    free(scratch);
    return SSDE_OK;
}
