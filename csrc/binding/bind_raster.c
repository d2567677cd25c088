/* Binding of the rasterizer and the nearest-seed fill (ssde/raster.h). Both
 * kernels take compact row-major tensors; the Python wrappers
 * (syncsde/ops/raster.py) make them so. */
#include "arg.h"

#include "ssde/raster.h"

/* Refuses anything but a compact row-major layout of dtype `dtype`. */
static int
expect_compact(const ssde_arg *a, int dtype)
{
    if (a->t.dtype != dtype) {
        PyErr_Format(PyExc_TypeError, "argument '%s' has dtype %s; expected %s", a->name,
                     ssde_dtype_name(a->t.dtype), ssde_dtype_name(dtype));
        return -1;
    }
    if (ssde_numel(&a->t) == 0) {
        return 0; /* nothing is read or written */
    }
    int64_t running = 1;
    for (int d = a->t.ndim - 1; d >= 0; d--) {
        if (a->t.shape[d] != 1 && a->t.stride[d] != running) {
            PyErr_Format(PyExc_ValueError, "argument '%s' must be contiguous (row-major)",
                         a->name);
            return -1;
        }
        running *= a->t.shape[d];
    }
    return 0;
}

static PyObject *
py_rasterize(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *fo, *bo, *dob, *co;
    int perspective;
    double near;
    if (!PyArg_ParseTuple(args, "OOOOpd:rasterize", &fo, &bo, &dob, &co, &perspective, &near)) {
        return NULL;
    }
    ssde_arg t[4] = {SSDE_ARG_INIT("corners"), SSDE_ARG_INIT("face_id"), SSDE_ARG_INIT("bary"),
                     SSDE_ARG_INIT("depth")};
    PyObject *result = NULL;
    if (ssde_arg_borrow(co, &t[0], SSDE_ARG_INPUT) < 0 || expect_compact(&t[0], SSDE_F64) < 0 ||
        ssde_expect_ndim(&t[0], 3, 3, "[n_faces, 3, 3]") < 0) {
        goto done;
    }
    int64_t cs[3] = {t[0].t.shape[0], 3, 3};
    if (ssde_expect_shape(&t[0], 3, cs) < 0) {
        goto done;
    }
    if (ssde_arg_borrow(fo, &t[1], SSDE_ARG_OUTPUT) < 0 || expect_compact(&t[1], SSDE_I64) < 0 ||
        ssde_expect_ndim(&t[1], 2, 2, "[height, width]") < 0) {
        goto done;
    }
    int64_t H = t[1].t.shape[0], W = t[1].t.shape[1];
    int64_t bs[3] = {H, W, 3}, ds[2] = {H, W};
    if (ssde_arg_borrow(bo, &t[2], SSDE_ARG_OUTPUT) < 0 || expect_compact(&t[2], SSDE_F32) < 0 ||
        ssde_expect_shape(&t[2], 3, bs) < 0 || ssde_arg_borrow(dob, &t[3], SSDE_ARG_OUTPUT) < 0 ||
        expect_compact(&t[3], SSDE_F32) < 0 || ssde_expect_shape(&t[3], 2, ds) < 0) {
        goto done;
    }
    for (int i = 1; i < 4; i++) {
        for (int j = 0; j < i; j++) {
            if (ssde_expect_no_overlap(&t[i], &t[j], 0) < 0) {
                goto done;
            }
        }
    }
    int st;
    {
        SSDE_RELEASE_GIL(H * W + t[0].t.shape[0]);
        st = ssde_rasterize((const double *)t[0].t.data, t[0].t.shape[0], H, W, perspective, near,
                            (int64_t *)t[1].t.data, (float *)t[2].t.data, (float *)t[3].t.data);
        SSDE_ACQUIRE_GIL();
    }
    result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "rasterize");
done:
    ssde_args_release(t, 4);
    return result;
}

static PyObject *
py_nearest_seed(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *so, *lo;
    long long n_labels;
    if (!PyArg_ParseTuple(args, "OOOL:nearest_seed", &oo, &so, &lo, &n_labels)) {
        return NULL;
    }
    ssde_arg t[3] = {SSDE_ARG_INIT("seeds"), SSDE_ARG_INIT("out"), SSDE_ARG_INIT("labels")};
    PyObject *result = NULL;
    if (ssde_arg_borrow(so, &t[0], SSDE_ARG_INPUT) < 0 || expect_compact(&t[0], SSDE_I32) < 0 ||
        ssde_expect_ndim(&t[0], 2, 2, "[height, width]") < 0) {
        goto done;
    }
    int64_t H = t[0].t.shape[0], W = t[0].t.shape[1];
    int64_t shape[2] = {H, W};
    if (ssde_arg_borrow(oo, &t[1], SSDE_ARG_OUTPUT) < 0 || expect_compact(&t[1], SSDE_I64) < 0 ||
        ssde_expect_shape(&t[1], 2, shape) < 0 || ssde_expect_no_overlap(&t[1], &t[0], 0) < 0) {
        goto done;
    }
    const int32_t *labels = NULL;
    if (lo != Py_None) {
        if (ssde_arg_borrow(lo, &t[2], SSDE_ARG_INPUT) < 0 || expect_compact(&t[2], SSDE_I32) < 0 ||
            ssde_expect_shape(&t[2], 2, shape) < 0 || ssde_expect_no_overlap(&t[1], &t[2], 0) < 0) {
            goto done;
        }
        labels = (const int32_t *)t[2].t.data;
    }
    if (n_labels < 0) {
        PyErr_Format(PyExc_ValueError, "nearest_seed: argument 'n_labels' must be >= 0, got %lld",
                     n_labels);
        goto done;
    }
    int st;
    {
        SSDE_RELEASE_GIL(H * W);
        st = ssde_nearest_seed((const int32_t *)t[0].t.data, labels, n_labels, H, W,
                               (int64_t *)t[1].t.data);
        SSDE_ACQUIRE_GIL();
    }
    if (st == SSDE_ERR_INDEX) {
        PyErr_Format(PyExc_IndexError,
                     "nearest_seed: argument 'labels' holds a value outside [-1, n_labels = %lld)",
                     n_labels);
    }
    else if (st == SSDE_ERR_VALUE) {
        PyErr_Format(PyExc_ValueError,
                     "nearest_seed: image %lld x %lld too large (at most 2^24 per side) or "
                     "n_labels = %lld out of range",
                     (long long)H, (long long)W, n_labels);
    }
    else if (st != SSDE_OK) {
        ssde_raise_status(st, "nearest_seed");
    }
    result = st == SSDE_OK ? Py_NewRef(Py_None) : NULL;
done:
    ssde_args_release(t, 3);
    return result;
}

PyMethodDef ssde_raster_methods[] = {
    {"rasterize", py_rasterize, METH_VARARGS,
     "rasterize(face_id, bary, depth, corners, perspective, near): per-pixel face, barycentrics "
     "and depth of triangles given by pixel-space corners [F, 3, 3]."},
    {"nearest_seed", py_nearest_seed, METH_VARARGS,
     "nearest_seed(out, seeds, labels, n_labels): flat index of the nearest seed of every "
     "texel (exact Euclidean), per UV island when labels are given."},
    {NULL, NULL, 0, NULL},
};
