/* Compositing kernels: normalize_accumulated and window_average (see ssde/composite.h). */
#include "ssde/composite.h"

#include <stdlib.h>
#include <string.h>

#include "ssde/dtype_dispatch.h"
#include "ssde/elementwise.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- out = num / den ------------------------------------------------------ */

/* Operands: 0 out, 1 num, 2 den. params: int zero_uncovered. */
#define DEF_NORMALIZE(SUF, T, ACC)                                                         \
    static void normalize_##SUF(int64_t n, char *const *p, const int64_t *s,               \
                                const void *prm)                                           \
    {                                                                                      \
        const int zero = *(const int *)prm;                                                \
        const int64_t z = (int64_t)sizeof(T);                                              \
        if (s[0] == z && s[1] == z && s[2] == z) {                                         \
            T *o = (T *)p[0];                                                              \
            const T *x = (const T *)p[1], *d = (const T *)p[2];                            \
            int64_t bad = 0;                                                               \
            for (int64_t k = 0; k < n; k++) {                                              \
                bad += !(SSDE_LD_##SUF(d + k) > (ACC)0);                                   \
            }                                                                              \
            if (bad == 0) {                                                                \
                for (int64_t k = 0; k < n; k++) {                                          \
                    SSDE_ST_##SUF(o + k, SSDE_LD_##SUF(x + k) / SSDE_LD_##SUF(d + k));     \
                }                                                                          \
                return;                                                                    \
            }                                                                              \
        }                                                                                  \
        else if (s[2] == 0) {                                                              \
            const ACC dv = SSDE_LD_##SUF(p[2]);                                            \
            if (dv > (ACC)0) {                                                             \
                if (s[0] == z && s[1] == z) {                                              \
                    T *o = (T *)p[0];                                                      \
                    const T *x = (const T *)p[1];                                          \
                    for (int64_t k = 0; k < n; k++) {                                      \
                        SSDE_ST_##SUF(o + k, SSDE_LD_##SUF(x + k) / dv);                   \
                    }                                                                      \
                }                                                                          \
                else {                                                                     \
                    for (int64_t k = 0; k < n; k++) {                                      \
                        SSDE_ST_##SUF(p[0] + k * s[0], SSDE_LD_##SUF(p[1] + k * s[1]) / dv); \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            else if (zero) {                                                               \
                for (int64_t k = 0; k < n; k++) {                                          \
                    SSDE_ST_##SUF(p[0] + k * s[0], (ACC)0);                                \
                }                                                                          \
            }                                                                              \
            return;                                                                        \
        }                                                                                  \
        for (int64_t k = 0; k < n; k++) {                                                  \
            ACC dv = SSDE_LD_##SUF(p[2] + k * s[2]);                                       \
            if (dv > (ACC)0) {                                                             \
                SSDE_ST_##SUF(p[0] + k * s[0], SSDE_LD_##SUF(p[1] + k * s[1]) / dv);       \
            }                                                                              \
            else if (zero) {                                                               \
                SSDE_ST_##SUF(p[0] + k * s[0], (ACC)0);                                    \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    static int64_t count_bad_##SUF(const char *p, int64_t s, int64_t n)                    \
    {                                                                                      \
        int64_t bad = 0;                                                                   \
        for (int64_t k = 0; k < n; k++) {                                                  \
            bad += !(SSDE_LD_##SUF(p + k * s) > (ACC)0);                                   \
        }                                                                                  \
        return bad;                                                                        \
    }
SSDE_FOR_EACH_FLOAT(DEF_NORMALIZE)

typedef int64_t (*count_fn)(const char *p, int64_t s, int64_t n);

/* Number of elements of t that are not > 0; zero-stride dims count once. */
static int64_t
count_not_positive(const ssde_tensor *t)
{
    ssde_tensor d = {0};
    d.data = t->data;
    d.dtype = t->dtype;
    for (int k = 0; k < t->ndim; k++) {
        if (t->shape[k] == 0) {
            return 0;
        }
        if (t->shape[k] > 1 && t->stride[k] != 0) {
            d.shape[d.ndim] = t->shape[k];
            d.stride[d.ndim] = t->stride[k];
            d.ndim++;
        }
    }
    count_fn fn = SSDE_PICK_FLOAT(t->dtype, count_bad);
    const int64_t item = (int64_t)ssde_dtype_size(t->dtype);
    if (d.ndim == 0) {
        return fn(d.data, 0, 1);
    }
    const int64_t inner = d.shape[d.ndim - 1], istride = d.stride[d.ndim - 1] * item;
    const int64_t rows = ssde_numel(&d) / inner;
    int64_t bad = 0;
    int nthreads = ssde_effective_threads(rows * inner);
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1) reduction(+ : bad)
#endif
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = ssde_lead_offset(r, d.ndim - 1, d.shape, d.stride, item);
        bad += fn(d.data + off, istride, inner);
    }
    return bad;
}

static int
parse_policy(int policy)
{
    return policy == SSDE_UNCOVERED_KEEP || policy == SSDE_UNCOVERED_ZERO ||
           policy == SSDE_UNCOVERED_ERROR;
}

int
ssde_normalize_accumulated(ssde_tensor *out, const ssde_tensor *num, const ssde_tensor *den,
                           int policy, int64_t *n_uncovered)
{
    SSDE_CHECK_TENSOR(out);
    SSDE_CHECK_TENSOR(num);
    SSDE_CHECK_TENSOR(den);
    if (!parse_policy(policy)) {
        return SSDE_ERR_VALUE;
    }
    if (!ssde_is_float(out->dtype) || num->dtype != out->dtype || den->dtype != out->dtype) {
        return SSDE_ERR_DTYPE;
    }
    if (n_uncovered != NULL) {
        *n_uncovered = 0;
    }
    ssde_tensor ops[3] = {*out, *num, *den};
    /* the engine checks the shapes; check them first for the error scan */
    for (int i = 1; i < 3; i++) {
        if (ops[i].ndim != out->ndim) {
            return SSDE_ERR_SHAPE;
        }
        for (int d = 0; d < out->ndim; d++) {
            if (ops[i].shape[d] != out->shape[d]) {
                return SSDE_ERR_SHAPE;
            }
        }
    }
    if (policy == SSDE_UNCOVERED_ERROR) {
        int64_t bad = count_not_positive(den);
        if (bad > 0) {
            if (n_uncovered != NULL) {
                *n_uncovered = bad;
            }
            return SSDE_ERR_VALUE;
        }
    }
    int zero = policy == SSDE_UNCOVERED_ZERO;
    return ssde_elementwise(3, ops, SSDE_PICK_FLOAT(out->dtype, normalize), &zero);
}

/* ---- window average ------------------------------------------------------- */

typedef struct {
    const ssde_row_ops *ops;
    const ssde_windows *win;
    const ssde_tensor *weights;
    int64_t W, item, acc_item;
    int64_t vN, vH, vW, wN, wH, wW;
} avg_ctx;

/* den[0..W) = sum of the weights (or 1) of the windows covering canvas row r,
 * weights' leading byte offset woff. Returns whether any window covers r. */
static int
row_den(const avg_ctx *c, char *den, int64_t r, int64_t woff)
{
    const ssde_windows *win = c->win;
    int any = 0;
    memset(den, 0, (size_t)c->W * (size_t)c->acc_item);
    for (int64_t i = 0; i < win->n; i++) {
        int64_t top = win->offsets[2 * i];
        if (r < top || r >= top + win->h) {
            continue;
        }
        any = 1;
        ssde_run runs[2];
        int nr = ssde_window_runs(ssde_window_left(win, i, c->W), win->w, c->W, runs);
        for (int k = 0; k < nr; k++) {
            if (c->weights != NULL) {
                const char *wrow = c->weights->data + i * c->wN + woff + (r - top) * c->wH;
                c->ops->add_w(den + runs[k].ccol * c->acc_item, wrow + runs[k].vcol * c->wW, c->wW,
                              runs[k].len);
            }
            else {
                c->ops->add_one(den + runs[k].ccol * c->acc_item, runs[k].len);
            }
        }
    }
    return any;
}

int
ssde_window_average(ssde_tensor *canvas, const ssde_tensor *views, const ssde_tensor *weights,
                    const ssde_windows *win, int policy, int64_t *n_uncovered)
{
    SSDE_CHECK_TENSOR(canvas);
    SSDE_CHECK_TENSOR(views);
    if (weights != NULL) {
        SSDE_CHECK_TENSOR(weights);
    }
    if (!parse_policy(policy)) {
        return SSDE_ERR_VALUE;
    }
    if (n_uncovered != NULL) {
        *n_uncovered = 0;
    }
    /* shapes, dtypes and offsets are checked exactly as for paste_windows_add */
    const int nd = canvas->ndim;
    if (nd < 2 || nd > SSDE_MAX_DIMS - 1 || views->ndim != nd + 1 || win->n < 0 || win->h < 0 ||
        win->w < 0 || views->shape[0] != win->n || views->shape[nd - 1] != win->h ||
        views->shape[nd] != win->w || win->h > canvas->shape[nd - 2] ||
        win->w > canvas->shape[nd - 1]) {
        return SSDE_ERR_SHAPE;
    }
    if (ssde_windows_check_size(canvas, win) != SSDE_OK) {
        return SSDE_ERR_VALUE;
    }
    for (int d = 0; d < nd - 2; d++) {
        if (views->shape[d + 1] != canvas->shape[d]) {
            return SSDE_ERR_SHAPE;
        }
    }
    if (!ssde_is_float(canvas->dtype) || views->dtype != canvas->dtype ||
        (weights != NULL && weights->dtype != canvas->dtype)) {
        return SSDE_ERR_DTYPE;
    }
    if (weights != NULL) {
        if (weights->ndim != views->ndim) {
            return SSDE_ERR_SHAPE;
        }
        for (int d = 0; d < views->ndim; d++) {
            if (weights->shape[d] != views->shape[d]) {
                return SSDE_ERR_SHAPE;
            }
        }
    }
    const int64_t H = canvas->shape[nd - 2], W = canvas->shape[nd - 1];
    if (ssde_windows_first_invalid(win, H, W) >= 0) {
        return SSDE_ERR_INDEX;
    }
    const int nlead = nd - 2;
    int64_t Lt = 1;
    for (int d = 0; d < nlead; d++) {
        Lt *= canvas->shape[d];
    }
    const int64_t units = Lt * H;
    if (units == 0 || W == 0) {
        return SSDE_OK;
    }
    const ssde_row_ops *ops = ssde_row_ops_for(canvas->dtype);
    avg_ctx c;
    c.ops = ops;
    c.win = win;
    c.weights = weights;
    c.W = W;
    c.item = (int64_t)ops->item;
    c.acc_item = (int64_t)ops->acc_item;
    c.vN = views->stride[0] * c.item;
    c.vH = views->stride[nd - 1] * c.item;
    c.vW = views->stride[nd] * c.item;
    c.wN = weights ? weights->stride[0] * c.item : 0;
    c.wH = weights ? weights->stride[nd - 1] * c.item : 0;
    c.wW = weights ? weights->stride[nd] * c.item : 0;
    const int64_t item = c.item;
    const int64_t cH = canvas->stride[nd - 2] * item, cW = canvas->stride[nd - 1] * item;
    const int64_t h = win->h, w = win->w, N = win->n;

    /* The denominator depends on the row only when the weights do not vary
     * over the leading dims (no weights, per-pixel or per-view weights). */
    int den_shared = 1;
    if (weights != NULL) {
        for (int d = 0; d < nlead; d++) {
            if (weights->shape[d + 1] > 1 && weights->stride[d + 1] != 0) {
                den_shared = 0;
            }
        }
    }
    int nthreads = ssde_effective_threads(N * Lt * h * w + units * W);
    size_t row_bytes, n_rows;
    char *scratch = NULL;
    if (ssde_mul_size((size_t)W, (size_t)c.acc_item, &row_bytes) == 0 &&
        ssde_mul_size((size_t)nthreads, 2, &n_rows) == 0) {
        scratch = ssde_malloc_array(n_rows, row_bytes);
    }
    if (scratch == NULL) {
        return SSDE_ERR_NOMEM;
    }

    if (policy == SSDE_UNCOVERED_ERROR) {
        const int64_t den_units = den_shared ? H : units;
        int64_t bad = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1) reduction(+ : bad)
#endif
        for (int64_t u = 0; u < den_units; u++) {
#ifdef _OPENMP
            char *den = scratch + (size_t)omp_get_thread_num() * 2 * row_bytes;
#else
            char *den = scratch;
#endif
            int64_t l = den_shared ? 0 : u % Lt, r = den_shared ? u : u / Lt;
            int64_t woff = weights ? ssde_lead_offset(l, nlead, weights->shape + 1,
                                                      weights->stride + 1, item)
                                   : 0;
            row_den(&c, den, r, woff);
            bad += ops->count_uncovered(den, W);
        }
        if (den_shared) {
            bad *= Lt;
        }
        if (bad > 0) {
            if (n_uncovered != NULL) {
                *n_uncovered = bad;
            }
            free(scratch);
            return SSDE_ERR_VALUE;
        }
    }

    const int zero = policy == SSDE_UNCOVERED_ZERO;
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
#ifdef _OPENMP
        char *num = scratch + (size_t)omp_get_thread_num() * 2 * row_bytes;
#else
        char *num = scratch;
#endif
        char *den = num + row_bytes;
        int64_t last_r = -1;
        int last_any = 0;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t u = 0; u < units; u++) {
            /* row-major over (r, l): consecutive units share a row and its denominator */
            int64_t r = u / Lt, l = u % Lt;
            char *crow = canvas->data +
                         ssde_lead_offset(l, nlead, canvas->shape, canvas->stride, item) + r * cH;
            int64_t voff = ssde_lead_offset(l, nlead, views->shape + 1, views->stride + 1, item);
            int64_t woff = weights ? ssde_lead_offset(l, nlead, weights->shape + 1,
                                                      weights->stride + 1, item)
                                   : 0;
            int any;
            if (den_shared) {
                if (r != last_r) {
                    last_any = row_den(&c, den, r, woff);
                    last_r = r;
                }
                any = last_any;
            }
            else {
                memset(den, 0, row_bytes);
                any = 0;
                for (int64_t i = 0; i < N && !any; i++) {
                    int64_t top = win->offsets[2 * i];
                    any = top <= r && r < top + h;
                }
            }
            memset(num, 0, row_bytes);
            if (!any || w == 0) {
                if (zero) {
                    ops->store(crow, cW, num, W);
                }
                continue;
            }
            for (int64_t i = 0; i < N; i++) {
                int64_t top = win->offsets[2 * i];
                if (r < top || r >= top + h) {
                    continue;
                }
                const char *vrow = views->data + i * c.vN + voff + (r - top) * c.vH;
                const char *wrow = weights ? weights->data + i * c.wN + woff + (r - top) * c.wH
                                           : NULL;
                ssde_run runs[2];
                int nr = ssde_window_runs(ssde_window_left(win, i, W), w, W, runs);
                for (int k = 0; k < nr; k++) {
                    char *nk = num + runs[k].ccol * c.acc_item;
                    const char *vk = vrow + runs[k].vcol * c.vW;
                    const char *wk = wrow ? wrow + runs[k].vcol * c.wW : NULL;
                    if (den_shared) {
                        ops->add(nk, vk, c.vW, wk, c.wW, runs[k].len);
                    }
                    else {
                        ops->add_nd(nk, den + runs[k].ccol * c.acc_item, vk, c.vW, wk, c.wW,
                                    runs[k].len);
                    }
                }
            }
            ops->store_div(crow, cW, num, den, W, zero);
        }
    }
    free(scratch);
    return SSDE_OK;
}
