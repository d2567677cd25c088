/* Binding of the pixel-map view kernels: dihedral maps, skew, pixel
 * permutations and CSR sparse linear maps (ssde/pixelmaps.h). */
#include "arg.h"

#include <string.h>

#include "ssde/pixelmaps.h"

/* Borrows `x` (a floating input with at least ndim_min dims) and `out` (an
 * output of x's dtype that does not overlap x). */
static int
borrow_x_out(PyObject *xo, PyObject *oo, ssde_arg *x, ssde_arg *out, int ndim_min,
             const char *layout)
{
    if (ssde_arg_borrow(xo, x, SSDE_ARG_INPUT) < 0 || ssde_expect_float(x) < 0 ||
        ssde_expect_ndim(x, ndim_min, SSDE_MAX_DIMS, layout) < 0) {
        return -1;
    }
    if (ssde_arg_borrow(oo, out, SSDE_ARG_OUTPUT) < 0 || ssde_expect_dtype_like(out, x) < 0) {
        return -1;
    }
    return 0;
}

/* out must be x's shape with the trailing `nlast` dims replaced by `last`. */
static int
expect_out_shape(const ssde_arg *out, const ssde_arg *x, int nlast, const int64_t *last)
{
    int64_t shape[SSDE_MAX_DIMS];
    int nd = x->t.ndim;
    for (int d = 0; d < nd; d++) {
        shape[d] = d < nd - nlast ? x->t.shape[d] : last[d - (nd - nlast)];
    }
    return ssde_expect_shape(out, nd, shape);
}

/* Formats the error of an index map's data; returns NULL. */
static PyObject *
raise_map_error(int status, const ssde_map_error *e, const char *op, const char *index_name)
{
    switch (e->kind) {
        case SSDE_MAPERR_INDEX_RANGE:
            PyErr_Format(PyExc_IndexError,
                         "%s: argument '%s' holds %lld at position %lld; expected entries in "
                         "[0, %lld) (the number of pixels H*W)",
                         op, index_name, (long long)e->value, (long long)e->pos,
                         (long long)e->limit);
            return NULL;
        case SSDE_MAPERR_DUPLICATE:
            PyErr_Format(PyExc_ValueError,
                         "%s: argument '%s' must be a permutation of range(%lld) for "
                         "mode='scatter'; value %lld appears at positions %lld and %lld",
                         op, index_name, (long long)e->limit, (long long)e->value,
                         (long long)e->other, (long long)e->pos);
            return NULL;
        case SSDE_MAPERR_INDPTR_START:
            PyErr_Format(PyExc_ValueError, "%s: argument 'indptr' must start at 0; got indptr[0] = %lld",
                         op, (long long)e->value);
            return NULL;
        case SSDE_MAPERR_INDPTR_ORDER:
            PyErr_Format(PyExc_ValueError,
                         "%s: argument 'indptr' must be non-decreasing; got indptr[%lld] = %lld < "
                         "indptr[%lld] = %lld",
                         op, (long long)e->pos, (long long)e->value, (long long)(e->pos - 1),
                         (long long)e->other);
            return NULL;
        case SSDE_MAPERR_INDPTR_END:
            PyErr_Format(PyExc_ValueError,
                         "%s: argument 'indptr' must end at len(indices) = len(values) = %lld; got "
                         "indptr[-1] = %lld",
                         op, (long long)e->limit, (long long)e->value);
            return NULL;
        case SSDE_MAPERR_INDICES_RANGE:
            PyErr_Format(PyExc_IndexError,
                         "%s: argument 'indices' holds %lld at position %lld; expected column "
                         "indices in [0, n_cols = %lld)",
                         op, (long long)e->value, (long long)e->pos, (long long)e->limit);
            return NULL;
        default:
            return ssde_raise_status(status, op);
    }
}

/* ---- dihedral ---------------------------------------------------------------- */
static int
parse_dihedral(PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    int op = s != NULL ? ssde_dihedral_from_name(s) : -1;
    if (op < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "argument 'op' must be one of 'identity', 'rot90_cw', 'rot90_ccw', "
                     "'rot180', 'hflip', 'vflip', 'transpose', 'antitranspose'; got %R",
                     name);
    }
    return op;
}

static PyObject *
py_dihedral(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *xo, *name;
    if (!PyArg_ParseTuple(args, "OOO:dihedral", &oo, &xo, &name)) {
        return NULL;
    }
    int op = parse_dihedral(name);
    if (op < 0) {
        return NULL;
    }
    ssde_arg t[2] = {SSDE_ARG_INIT("x"), SSDE_ARG_INIT("out")};
    PyObject *result = NULL;
    if (borrow_x_out(xo, oo, &t[0], &t[1], 2, "[..., H, W]") == 0) {
        int nd = t[0].t.ndim, sw = ssde_dihedral_swaps_axes(op);
        int64_t last[2] = {t[0].t.shape[nd - 2 + sw], t[0].t.shape[nd - 1 - sw]};
        if (expect_out_shape(&t[1], &t[0], 2, last) == 0 &&
            ssde_expect_no_overlap(&t[1], &t[0], 0) == 0) {
            int st;
            SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
            st = ssde_dihedral(&t[1].t, &t[0].t, op);
            SSDE_ACQUIRE_GIL();
            result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "dihedral");
        }
    }
    ssde_args_release(t, 2);
    return result;
}

static PyObject *
py_dihedral_index_map(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *name;
    long long H, W;
    if (!PyArg_ParseTuple(args, "OLL:dihedral_index_map", &name, &H, &W)) {
        return NULL;
    }
    int op = parse_dihedral(name);
    if (op < 0) {
        return NULL;
    }
    int64_t m[6];
    if (ssde_dihedral_index_map(op, H, W, m) != SSDE_OK) {
        PyErr_Format(PyExc_ValueError,
                     "dihedral_index_map: H and W must be >= 0; got H=%lld, W=%lld", H, W);
        return NULL;
    }
    return Py_BuildValue("(LLLLLL)", (long long)m[0], (long long)m[1], (long long)m[2],
                         (long long)m[3], (long long)m[4], (long long)m[5]);
}

/* ---- skew -------------------------------------------------------------------- */
static PyObject *
py_skew(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *xo;
    double factor;
    int inverse;
    if (!PyArg_ParseTuple(args, "OOdp:skew", &oo, &xo, &factor, &inverse)) {
        return NULL;
    }
    ssde_arg t[2] = {SSDE_ARG_INIT("x"), SSDE_ARG_INIT("out")};
    PyObject *result = NULL;
    if (borrow_x_out(xo, oo, &t[0], &t[1], 2, "[..., H, W]") == 0 &&
        ssde_expect_shape_like(&t[1], &t[0]) == 0 &&
        ssde_expect_no_overlap(&t[1], &t[0], 0) == 0) {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_skew(&t[1].t, &t[0].t, factor, inverse);
        SSDE_ACQUIRE_GIL();
        if (st == SSDE_ERR_VALUE) {
            PyErr_Format(PyExc_ValueError,
                         "skew: argument 'factor' must be finite with |factor| * (H + W) < 2^62; "
                         "got %R",
                         PyTuple_GET_ITEM(args, 2));
        }
        else {
            result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "skew");
        }
    }
    ssde_args_release(t, 2);
    return result;
}

/* ---- pixel permutations ------------------------------------------------------ */
static PyObject *
py_permute_pixels(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *xo, *io;
    int scatter;
    if (!PyArg_ParseTuple(args, "OOOp:permute_pixels", &oo, &xo, &io, &scatter)) {
        return NULL;
    }
    ssde_arg t[3] = {SSDE_ARG_INIT("x"), SSDE_ARG_INIT("out"), SSDE_ARG_INIT("index")};
    PyObject *result = NULL;
    if (borrow_x_out(xo, oo, &t[0], &t[1], 2, "[..., H, W]") < 0 ||
        ssde_expect_shape_like(&t[1], &t[0]) < 0 || ssde_expect_no_overlap(&t[1], &t[0], 0) < 0 ||
        ssde_arg_borrow(io, &t[2], SSDE_ARG_INDEX) < 0 || ssde_expect_int_dtype(&t[2]) < 0 ||
        ssde_expect_no_overlap(&t[1], &t[2], 0) < 0) {
        goto done;
    }
    int nd = t[0].t.ndim;
    int64_t H = t[0].t.shape[nd - 2], W = t[0].t.shape[nd - 1];
    const ssde_tensor *ix = &t[2].t;
    int ok = (ix->ndim == 1 && ix->shape[0] == H * W) ||
             (ix->ndim == 2 && ix->shape[0] == H && ix->shape[1] == W);
    if (!ok) {
        char got[160];
        ssde_format_shape(ix, got, sizeof got);
        PyErr_Format(PyExc_ValueError,
                     "permute_pixels: argument 'index' has shape %s; expected (%lld,) (one entry "
                     "per pixel, H*W = %lld*%lld) or (%lld, %lld)",
                     got, (long long)(H * W), (long long)H, (long long)W, (long long)H,
                     (long long)W);
        goto done;
    }
    ssde_map_error err;
    int st;
    {
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_permute_pixels(&t[1].t, &t[0].t, ix, scatter, &err);
        SSDE_ACQUIRE_GIL();
    }
    result = st == SSDE_OK ? Py_NewRef(Py_None) : raise_map_error(st, &err, "permute_pixels", "index");
done:
    ssde_args_release(t, 3);
    return result;
}

/* ---- CSR --------------------------------------------------------------------- */
/* Borrows and checks indptr, indices, values (values' dtype like `like` when
 * given); t[0..2] are their args. */
static int
borrow_csr(PyObject *po, PyObject *io, PyObject *vo, ssde_arg *t, const ssde_arg *like,
           long long n_cols)
{
    if (ssde_arg_borrow(po, &t[0], SSDE_ARG_INDEX) < 0 || ssde_expect_int_dtype(&t[0]) < 0 ||
        ssde_expect_ndim(&t[0], 1, 1, "[n_rows + 1]") < 0) {
        return -1;
    }
    if (t[0].t.shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "argument 'indptr' must have n_rows + 1 >= 1 entries; got shape (0,)");
        return -1;
    }
    if (ssde_arg_borrow(io, &t[1], SSDE_ARG_INDEX) < 0 || ssde_expect_int_dtype(&t[1]) < 0 ||
        ssde_expect_ndim(&t[1], 1, 1, "[nnz]") < 0) {
        return -1;
    }
    if (ssde_arg_borrow(vo, &t[2], SSDE_ARG_INPUT) < 0 || ssde_expect_float(&t[2]) < 0 ||
        (like != NULL && ssde_expect_dtype_like(&t[2], like) < 0) ||
        ssde_expect_ndim(&t[2], 1, 1, "[nnz]") < 0) {
        return -1;
    }
    if (t[1].t.shape[0] != t[2].t.shape[0]) {
        PyErr_Format(PyExc_ValueError,
                     "argument 'values' has %lld entries; expected len(indices) = %lld",
                     (long long)t[2].t.shape[0], (long long)t[1].t.shape[0]);
        return -1;
    }
    if (n_cols < 0) {
        PyErr_Format(PyExc_ValueError, "argument 'n_cols' must be >= 0; got %lld", n_cols);
        return -1;
    }
    return 0;
}

static PyObject *
py_csr_apply(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *xo, *po, *io, *vo;
    long long n_cols;
    int adjoint;
    if (!PyArg_ParseTuple(args, "OOOOOLp:csr_apply", &oo, &xo, &po, &io, &vo, &n_cols,
                          &adjoint)) {
        return NULL;
    }
    ssde_arg t[5] = {SSDE_ARG_INIT("x"), SSDE_ARG_INIT("out"), SSDE_ARG_INIT("indptr"),
                     SSDE_ARG_INIT("indices"), SSDE_ARG_INIT("values")};
    PyObject *result = NULL;
    if (ssde_arg_borrow(xo, &t[0], SSDE_ARG_INPUT) < 0 || ssde_expect_float(&t[0]) < 0 ||
        ssde_expect_ndim(&t[0], 1, SSDE_MAX_DIMS, adjoint ? "[..., n_rows]" : "[..., n_cols]") < 0 ||
        borrow_csr(po, io, vo, &t[2], &t[0], n_cols) < 0) {
        goto done;
    }
    int64_t n_rows = t[2].t.shape[0] - 1;
    int64_t n_in = adjoint ? n_rows : n_cols, n_out = adjoint ? n_cols : n_rows;
    int nd = t[0].t.ndim;
    if (t[0].t.shape[nd - 1] != n_in) {
        char got[160];
        ssde_format_shape(&t[0].t, got, sizeof got);
        PyErr_Format(PyExc_ValueError,
                     "csr_apply: argument 'x' has shape %s; its last dim must be %s = %lld%s", got,
                     adjoint ? "n_rows" : "n_cols", (long long)n_in,
                     adjoint ? " (adjoint=True: len(indptr) - 1)" : "");
        goto done;
    }
    if (ssde_arg_borrow(oo, &t[1], SSDE_ARG_OUTPUT) < 0 || ssde_expect_dtype_like(&t[1], &t[0]) < 0 ||
        expect_out_shape(&t[1], &t[0], 1, &n_out) < 0) {
        goto done;
    }
    for (int i = 0; i < 5; i++) {
        if (i != 1 && ssde_expect_no_overlap(&t[1], &t[i], 0) < 0) {
            goto done;
        }
    }
    ssde_map_error err;
    int st;
    {
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t) + ssde_numel(&t[1].t) + t[3].t.shape[0]);
        st = ssde_csr_apply(&t[1].t, &t[0].t, &t[2].t, &t[3].t, &t[4].t, n_cols, adjoint, &err);
        SSDE_ACQUIRE_GIL();
    }
    result = st == SSDE_OK ? Py_NewRef(Py_None) : raise_map_error(st, &err, "csr_apply", "indices");
done:
    ssde_args_release(t, 5);
    return result;
}

static PyObject *
py_csr_coverage(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *po, *io, *vo;
    long long n_cols;
    if (!PyArg_ParseTuple(args, "OOOOL:csr_coverage", &oo, &po, &io, &vo, &n_cols)) {
        return NULL;
    }
    ssde_arg t[4] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("indptr"), SSDE_ARG_INIT("indices"),
                     SSDE_ARG_INIT("values")};
    PyObject *result = NULL;
    if (borrow_csr(po, io, vo, &t[1], NULL, n_cols) < 0) {
        goto done;
    }
    int64_t shape[1] = {n_cols};
    if (ssde_arg_borrow(oo, &t[0], SSDE_ARG_OUTPUT) < 0 || ssde_expect_dtype_like(&t[0], &t[3]) < 0 ||
        ssde_expect_shape(&t[0], 1, shape) < 0) {
        goto done;
    }
    for (int i = 1; i < 4; i++) {
        if (ssde_expect_no_overlap(&t[0], &t[i], 0) < 0) {
            goto done;
        }
    }
    ssde_map_error err;
    int st;
    {
        SSDE_RELEASE_GIL(t[2].t.shape[0] + n_cols);
        st = ssde_csr_coverage(&t[0].t, &t[1].t, &t[2].t, &t[3].t, n_cols, &err);
        SSDE_ACQUIRE_GIL();
    }
    result = st == SSDE_OK ? Py_NewRef(Py_None) : raise_map_error(st, &err, "csr_coverage", "indices");
done:
    ssde_args_release(t, 4);
    return result;
}

PyMethodDef ssde_views_methods[] = {
    {"dihedral", py_dihedral, METH_VARARGS,
     "dihedral(out, x, op): out = op(x) on the last two dims; op one of 'identity', 'rot90_cw',\n"
     "'rot90_ccw', 'rot180', 'hflip', 'vflip', 'transpose', 'antitranspose'"},
    {"dihedral_index_map", py_dihedral_index_map, METH_VARARGS,
     "dihedral_index_map(op, H, W) -> (a, b, c, d, e, f) with\n"
     "out[i, j] = in[a i + b j + c, d i + e j + f]"},
    {"skew", py_skew, METH_VARARGS,
     "skew(out, x, factor, inverse): out[..., i, w] = x[..., (i -/+ d_w) mod H, w],\n"
     "d_w = trunc(factor * (w - H // 2))"},
    {"permute_pixels", py_permute_pixels, METH_VARARGS,
     "permute_pixels(out, x, index, scatter): gather out.flat[p] = x.flat[index[p]] or\n"
     "scatter out.flat[index[p]] = x.flat[p] over the last two dims"},
    {"csr_apply", py_csr_apply, METH_VARARGS,
     "csr_apply(out, x, indptr, indices, values, n_cols, adjoint): out = A x or A^T x on the\n"
     "last dim"},
    {"csr_coverage", py_csr_coverage, METH_VARARGS,
     "csr_coverage(out, indptr, indices, values, n_cols): out = A^T 1 (column sums)"},
    {NULL, NULL, 0, NULL},
};
