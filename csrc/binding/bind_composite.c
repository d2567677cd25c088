/* Binding of the window (crop / paste / coverage) and compositing kernels. */
#include "arg.h"

#include <stdlib.h>
#include <string.h>

#include "ssde/composite.h"
#include "ssde/windows.h"

/* Borrows `obj` as the [N, 2] offsets, checks the window size against the
 * canvas H x W and every window's position, and fills `win` (offsets copied
 * into *buf, which the caller frees). Returns 0 or -1 with an exception set. */
static int
load_windows(PyObject *obj, int64_t h, int64_t w, int64_t H, int64_t W, int circular,
             ssde_windows *win, int64_t **buf)
{
    ssde_arg a = SSDE_ARG_INIT("offsets");
    *buf = NULL;
    if (ssde_arg_borrow(obj, &a, SSDE_ARG_INDEX) < 0) {
        return -1;
    }
    if (a.t.ndim != 2 || a.t.shape[1] != 2) {
        char got[160];
        ssde_format_shape(&a.t, got, sizeof got);
        PyErr_Format(PyExc_ValueError,
                     "argument 'offsets' must have shape (N, 2) ((top, left) per window); got "
                     "shape %s",
                     got);
        ssde_arg_release(&a);
        return -1;
    }
    if (h < 0 || w < 0) {
        PyErr_Format(PyExc_ValueError, "window size (h, w) = (%lld, %lld) must be non-negative",
                     (long long)h, (long long)w);
        ssde_arg_release(&a);
        return -1;
    }
    if (h > H || w > W) {
        PyErr_Format(PyExc_ValueError,
                     "window size (h, w) = (%lld, %lld) is larger than the canvas (H, W) = "
                     "(%lld, %lld)",
                     (long long)h, (long long)w, (long long)H, (long long)W);
        ssde_arg_release(&a);
        return -1;
    }
    /* n * 2 entries fit (the borrow bounds the tensor's size); the byte count is checked */
    int64_t n = a.t.shape[0];
    size_t entries;
    if (ssde_mul_size((size_t)n, 2, &entries) < 0 || ssde_add_size(entries, 1, &entries) < 0 ||
        (*buf = ssde_malloc_array(entries, sizeof(int64_t))) == NULL) {
        ssde_arg_release(&a);
        PyErr_Format(PyExc_MemoryError, "argument 'offsets': no memory to copy %lld windows",
                     (long long)n);
        return -1;
    }
    int st = ssde_offsets_to_i64(&a.t, *buf);
    ssde_arg_release(&a);
    if (st != SSDE_OK) {
        free(*buf);
        *buf = NULL;
        ssde_raise_status(st, "offsets");
        return -1;
    }
    win->n = n;
    win->h = h;
    win->w = w;
    win->offsets = *buf;
    win->circular = circular;
    ssde_tensor plane = {0}; /* n * h * w elements must fit (the kernels add *L) */
    plane.ndim = 2;
    plane.shape[0] = H;
    plane.shape[1] = W;
    if (ssde_windows_check_size(&plane, win) != SSDE_OK) {
        PyErr_Format(PyExc_ValueError,
                     "%lld windows of %lldx%lld pixels are more than any canvas can hold "
                     "(n * h * w overflows 2^61)",
                     (long long)n, (long long)h, (long long)w);
        free(*buf);
        *buf = NULL;
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t top = (*buf)[2 * i], left = (*buf)[2 * i + 1];
        int bad_top = top < 0 || top > H - h;
        int bad_left = !circular && (left < 0 || left > W - w);
        if (bad_top || bad_left) {
            if (circular) {
                PyErr_Format(PyExc_IndexError,
                             "window %lld: offsets[%lld] = (top=%lld, left=%lld) puts the %lldx%lld "
                             "window outside the %lldx%lld canvas; need 0 <= top <= %lld (the "
                             "height does not wrap)",
                             (long long)i, (long long)i, (long long)top, (long long)left,
                             (long long)h, (long long)w, (long long)H, (long long)W,
                             (long long)(H - h));
            }
            else {
                PyErr_Format(PyExc_IndexError,
                             "window %lld: offsets[%lld] = (top=%lld, left=%lld) puts the %lldx%lld "
                             "window outside the %lldx%lld canvas; need 0 <= top <= %lld and 0 <= "
                             "left <= %lld (or circular=True)",
                             (long long)i, (long long)i, (long long)top, (long long)left,
                             (long long)h, (long long)w, (long long)H, (long long)W,
                             (long long)(H - h), (long long)(W - w));
            }
            free(*buf);
            *buf = NULL;
            return -1;
        }
    }
    return 0;
}

/* canvas [*L, H, W] with 2 <= ndim <= MAX_DIMS - 1 */
static int
expect_canvas(const ssde_arg *canvas)
{
    if (ssde_expect_float(canvas) < 0) {
        return -1;
    }
    return ssde_expect_ndim(canvas, 2, SSDE_MAX_DIMS - 1, "[*L, H, W]");
}

/* views [N, *L, h, w] matching canvas [*L, H, W]; h, w taken from views. */
static int
expect_views(const ssde_arg *views, const ssde_arg *canvas)
{
    if (ssde_expect_dtype_like(views, canvas) < 0) {
        return -1;
    }
    int nd = canvas->t.ndim;
    int ok = views->t.ndim == nd + 1;
    for (int d = 0; ok && d < nd - 2; d++) {
        ok = views->t.shape[d + 1] == canvas->t.shape[d];
    }
    if (!ok) {
        char got[160], cv[160];
        ssde_format_shape(&views->t, got, sizeof got);
        ssde_format_shape(&canvas->t, cv, sizeof cv);
        PyErr_Format(PyExc_ValueError,
                     "argument '%s' has shape %s; expected [N, *L, h, w] with the leading dims "
                     "*L of '%s' %s",
                     views->name, got, canvas->name, cv);
        return -1;
    }
    return 0;
}

static int
expect_view_count(const ssde_arg *views, const ssde_windows *win)
{
    if (views->t.shape[0] != win->n) {
        PyErr_Format(PyExc_ValueError,
                     "argument '%s' holds %lld views but 'offsets' has %lld windows",
                     views->name, (long long)views->t.shape[0], (long long)win->n);
        return -1;
    }
    return 0;
}

static int
parse_uncovered(const char *s, int *policy)
{
    if (strcmp(s, "keep") == 0) {
        *policy = SSDE_UNCOVERED_KEEP;
    }
    else if (strcmp(s, "zero") == 0) {
        *policy = SSDE_UNCOVERED_ZERO;
    }
    else if (strcmp(s, "error") == 0) {
        *policy = SSDE_UNCOVERED_ERROR;
    }
    else {
        PyErr_Format(PyExc_ValueError,
                     "argument 'uncovered' must be 'keep', 'zero' or 'error'; got '%s'", s);
        return -1;
    }
    return 0;
}

/* Optional weights broadcast to `like` (numpy rules), same dtype, no overlap with out. */
static int
borrow_weights(PyObject *obj, ssde_arg *wt, const ssde_arg *like, const ssde_arg *out)
{
    if (obj == Py_None) {
        return 0;
    }
    if (ssde_arg_borrow(obj, wt, SSDE_ARG_INPUT) < 0 || ssde_expect_dtype_like(wt, like) < 0 ||
        ssde_broadcast_like(wt, like) < 0 || ssde_expect_no_overlap(out, wt, 0) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
finish(int st, const char *op)
{
    return st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, op);
}

/* crop_windows(out, canvas, offsets, h, w, circular) */
static PyObject *
py_crop_windows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_out, *o_canvas, *o_off;
    long long h, w;
    int circular;
    if (!PyArg_ParseTuple(args, "OOOLLp:crop_windows", &o_out, &o_canvas, &o_off, &h, &w,
                          &circular)) {
        return NULL;
    }
    ssde_arg t[2] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("canvas")};
    int64_t *buf = NULL;
    ssde_windows win;
    PyObject *result = NULL;
    if (ssde_arg_borrow(o_canvas, &t[1], SSDE_ARG_INPUT) < 0 || expect_canvas(&t[1]) < 0) {
        goto done;
    }
    int nd = t[1].t.ndim;
    if (load_windows(o_off, h, w, t[1].t.shape[nd - 2], t[1].t.shape[nd - 1], circular, &win,
                     &buf) < 0) {
        goto done;
    }
    int64_t want[SSDE_MAX_DIMS];
    want[0] = win.n;
    for (int d = 0; d < nd - 2; d++) {
        want[d + 1] = t[1].t.shape[d];
    }
    want[nd - 1] = h;
    want[nd] = w;
    if (ssde_arg_borrow(o_out, &t[0], SSDE_ARG_OUTPUT) < 0 ||
        ssde_expect_dtype_like(&t[0], &t[1]) < 0 || ssde_expect_shape(&t[0], nd + 1, want) < 0 ||
        ssde_expect_no_overlap(&t[0], &t[1], 0) < 0) {
        goto done;
    }
    {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_crop_windows(&t[0].t, &t[1].t, &win);
        SSDE_ACQUIRE_GIL();
        result = finish(st, "crop_windows");
    }
done:
    free(buf);
    ssde_args_release(t, 2);
    return result;
}

/* Borrows and checks the (canvas, views, offsets, weights) arguments shared by the paste
 * and average kernels: t[0] canvas (output), t[1] views, t[2] weights (when not None). */
static int
borrow_canvas_views(PyObject *o_canvas, PyObject *o_views, PyObject *o_off, PyObject *o_wt,
                    int circular, ssde_arg *t, ssde_windows *win, int64_t **buf)
{
    if (ssde_arg_borrow(o_canvas, &t[0], SSDE_ARG_OUTPUT) < 0 || expect_canvas(&t[0]) < 0 ||
        ssde_arg_borrow(o_views, &t[1], SSDE_ARG_INPUT) < 0 || expect_views(&t[1], &t[0]) < 0) {
        return -1;
    }
    int nd = t[0].t.ndim;
    if (load_windows(o_off, t[1].t.shape[nd - 1], t[1].t.shape[nd], t[0].t.shape[nd - 2],
                     t[0].t.shape[nd - 1], circular, win, buf) < 0 ||
        expect_view_count(&t[1], win) < 0 || ssde_expect_no_overlap(&t[0], &t[1], 0) < 0 ||
        borrow_weights(o_wt, &t[2], &t[1], &t[0]) < 0) {
        return -1;
    }
    return 0;
}

/* Shared by paste_windows_add (with weights) and paste_windows_on_top. */
static PyObject *
paste_common(PyObject *args, int on_top)
{
    PyObject *o_canvas, *o_views, *o_off, *o_wt = Py_None;
    int circular;
    if (on_top) {
        if (!PyArg_ParseTuple(args, "OOOp:paste_windows_on_top", &o_canvas, &o_views, &o_off,
                              &circular)) {
            return NULL;
        }
    }
    else if (!PyArg_ParseTuple(args, "OOOOp:paste_windows_add", &o_canvas, &o_views, &o_off,
                               &o_wt, &circular)) {
        return NULL;
    }
    const char *op = on_top ? "paste_windows_on_top" : "paste_windows_add";
    ssde_arg t[3] = {SSDE_ARG_INIT("canvas"), SSDE_ARG_INIT("views"), SSDE_ARG_INIT("weights")};
    int64_t *buf = NULL;
    ssde_windows win;
    PyObject *result = NULL;
    if (borrow_canvas_views(o_canvas, o_views, o_off, o_wt, circular, t, &win, &buf) < 0) {
        goto done;
    }
    {
        int st;
        const ssde_tensor *wt = o_wt == Py_None ? NULL : &t[2].t;
        SSDE_RELEASE_GIL(ssde_numel(&t[1].t));
        st = on_top ? ssde_paste_windows_on_top(&t[0].t, &t[1].t, &win)
                    : ssde_paste_windows_add(&t[0].t, &t[1].t, wt, &win);
        SSDE_ACQUIRE_GIL();
        result = finish(st, op);
    }
done:
    free(buf);
    ssde_args_release(t, 3);
    return result;
}

static PyObject *
py_paste_windows_add(PyObject *self, PyObject *args)
{
    (void)self;
    return paste_common(args, 0);
}

static PyObject *
py_paste_windows_on_top(PyObject *self, PyObject *args)
{
    (void)self;
    return paste_common(args, 1);
}

/* window_coverage(out, offsets, h, w, weights|None, circular); out [H, W] */
static PyObject *
py_window_coverage(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_out, *o_off, *o_wt;
    long long h, w;
    int circular;
    if (!PyArg_ParseTuple(args, "OOLLOp:window_coverage", &o_out, &o_off, &h, &w, &o_wt,
                          &circular)) {
        return NULL;
    }
    ssde_arg t[2] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("weights")};
    int64_t *buf = NULL;
    ssde_windows win;
    PyObject *result = NULL;
    if (ssde_arg_borrow(o_out, &t[0], SSDE_ARG_OUTPUT) < 0 || ssde_expect_float(&t[0]) < 0 ||
        ssde_expect_ndim(&t[0], 2, 2, "[H, W]") < 0) {
        goto done;
    }
    if (load_windows(o_off, h, w, t[0].t.shape[0], t[0].t.shape[1], circular, &win, &buf) < 0) {
        goto done;
    }
    if (o_wt != Py_None) {
        if (ssde_arg_borrow(o_wt, &t[1], SSDE_ARG_INPUT) < 0 ||
            ssde_expect_dtype_like(&t[1], &t[0]) < 0) {
            goto done;
        }
        /* per view [N] or broadcastable to per pixel [N, h, w] */
        ssde_arg like = SSDE_ARG_INIT("[N, h, w] windows");
        like.t.ndim = 3;
        like.t.shape[0] = win.n;
        like.t.shape[1] = h;
        like.t.shape[2] = w;
        if (t[1].t.ndim == 1) {
            if (t[1].t.shape[0] != win.n && t[1].t.shape[0] != 1) {
                PyErr_Format(PyExc_ValueError,
                             "argument 'weights' has shape (%lld,); a 1-D weights holds one "
                             "value per view: expected (%lld,) (or [N, h, w] per pixel)",
                             (long long)t[1].t.shape[0], (long long)win.n);
                goto done;
            }
            t[1].t.ndim = 3;
            t[1].t.shape[1] = 1;
            t[1].t.shape[2] = 1;
            t[1].t.stride[1] = 0;
            t[1].t.stride[2] = 0;
        }
        if (ssde_broadcast_like(&t[1], &like) < 0 || ssde_expect_no_overlap(&t[0], &t[1], 0) < 0) {
            goto done;
        }
    }
    {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t) + win.n * h * w);
        st = ssde_window_coverage(&t[0].t, o_wt == Py_None ? NULL : &t[1].t, &win);
        SSDE_ACQUIRE_GIL();
        result = finish(st, "window_coverage");
    }
done:
    free(buf);
    ssde_args_release(t, 2);
    return result;
}

/* normalize_accumulated(out, num, den, uncovered) */
static PyObject *
py_normalize_accumulated(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_out, *o_num, *o_den;
    const char *unc;
    if (!PyArg_ParseTuple(args, "OOOs:normalize_accumulated", &o_out, &o_num, &o_den, &unc)) {
        return NULL;
    }
    int policy;
    if (parse_uncovered(unc, &policy) < 0) {
        return NULL;
    }
    ssde_arg t[3] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("num"), SSDE_ARG_INIT("den")};
    PyObject *result = NULL;
    if (ssde_arg_borrow(o_num, &t[1], SSDE_ARG_INPUT) < 0 || ssde_expect_float(&t[1]) < 0 ||
        ssde_arg_borrow(o_out, &t[0], SSDE_ARG_OUTPUT) < 0 ||
        ssde_expect_dtype_like(&t[0], &t[1]) < 0 || ssde_expect_shape_like(&t[0], &t[1]) < 0 ||
        ssde_expect_no_overlap(&t[0], &t[1], 1) < 0 ||
        ssde_arg_borrow(o_den, &t[2], SSDE_ARG_INPUT) < 0 ||
        ssde_expect_dtype_like(&t[2], &t[0]) < 0 || ssde_broadcast_like(&t[2], &t[0]) < 0 ||
        ssde_expect_no_overlap(&t[0], &t[2], 1) < 0) {
        goto done;
    }
    {
        int st;
        int64_t bad = 0;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_normalize_accumulated(&t[0].t, &t[1].t, &t[2].t, policy, &bad);
        SSDE_ACQUIRE_GIL();
        if (st == SSDE_ERR_VALUE && bad > 0) {
            PyErr_Format(PyExc_ValueError,
                         "normalize_accumulated: %lld element(s) of 'den' are uncovered (den "
                         "<= 0 or NaN) and uncovered='error'; nothing was written",
                         (long long)bad);
        }
        else {
            result = finish(st, "normalize_accumulated");
        }
    }
done:
    ssde_args_release(t, 3);
    return result;
}

/* window_average(canvas, views, offsets, weights|None, circular, uncovered) */
static PyObject *
py_window_average(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_canvas, *o_views, *o_off, *o_wt;
    int circular;
    const char *unc;
    if (!PyArg_ParseTuple(args, "OOOOps:window_average", &o_canvas, &o_views, &o_off, &o_wt,
                          &circular, &unc)) {
        return NULL;
    }
    int policy;
    if (parse_uncovered(unc, &policy) < 0) {
        return NULL;
    }
    ssde_arg t[3] = {SSDE_ARG_INIT("canvas"), SSDE_ARG_INIT("views"), SSDE_ARG_INIT("weights")};
    int64_t *buf = NULL;
    ssde_windows win;
    PyObject *result = NULL;
    if (borrow_canvas_views(o_canvas, o_views, o_off, o_wt, circular, t, &win, &buf) < 0) {
        goto done;
    }
    {
        int st;
        int64_t bad = 0;
        SSDE_RELEASE_GIL(ssde_numel(&t[1].t) + ssde_numel(&t[0].t));
        st = ssde_window_average(&t[0].t, &t[1].t, o_wt == Py_None ? NULL : &t[2].t, &win, policy,
                                 &bad);
        SSDE_ACQUIRE_GIL();
        if (st == SSDE_ERR_VALUE && bad > 0) {
            PyErr_Format(PyExc_ValueError,
                         "window_average: %lld canvas element(s) are uncovered (no window, or "
                         "total weight <= 0) and uncovered='error'; nothing was written",
                         (long long)bad);
        }
        else {
            result = finish(st, "window_average");
        }
    }
done:
    free(buf);
    ssde_args_release(t, 3);
    return result;
}

PyMethodDef ssde_composite_methods[] = {
    {"crop_windows", py_crop_windows, METH_VARARGS,
     "crop_windows(out, canvas, offsets, h, w, circular): out[i] = window i of canvas"},
    {"paste_windows_add", py_paste_windows_add, METH_VARARGS,
     "paste_windows_add(canvas, views, offsets, weights|None, circular):\n"
     "canvas += sum_i f_i^T(weights_i * views_i) (adjoint of crop_windows)"},
    {"paste_windows_on_top", py_paste_windows_on_top, METH_VARARGS,
     "paste_windows_on_top(canvas, views, offsets, circular): window N-1 ends on top"},
    {"window_coverage", py_window_coverage, METH_VARARGS,
     "window_coverage(out, offsets, h, w, weights|None, circular): out[H, W] = sum of footprints"},
    {"normalize_accumulated", py_normalize_accumulated, METH_VARARGS,
     "normalize_accumulated(out, num, den, uncovered): out = num / den where den > 0;\n"
     "uncovered in {'keep', 'zero', 'error'}"},
    {"window_average", py_window_average, METH_VARARGS,
     "window_average(canvas, views, offsets, weights|None, circular, uncovered):\n"
     "canvas = sum_i f_i^T(w_i y_i) / sum_i f_i^T(w_i) where covered"},
    {NULL, NULL, 0, NULL},
};
