/* Binding of the step kernels (Tweedie, DDIM, CFG, fused SyncSDE). */
#include "arg.h"

#include "ssde/steps.h"

/* Borrows args[0] as the output and args[1..n-1] as inputs of an elementwise
 * kernel: one floating dtype, the output's shape (inputs whose bit is set in
 * `broadcastable` may broadcast to it), and no overlap with the output other
 * than an exact in-place alias. */
static int
borrow_elementwise(PyObject *const *objs, ssde_arg *args, int n, unsigned broadcastable)
{
    if (ssde_arg_borrow(objs[0], &args[0], SSDE_ARG_OUTPUT) < 0 || ssde_expect_float(&args[0]) < 0) {
        return -1;
    }
    for (int i = 1; i < n; i++) {
        if (ssde_arg_borrow(objs[i], &args[i], SSDE_ARG_INPUT) < 0 ||
            ssde_expect_dtype_like(&args[i], &args[0]) < 0) {
            return -1;
        }
        if (broadcastable & (1u << i)) {
            if (ssde_broadcast_like(&args[i], &args[0]) < 0) {
                return -1;
            }
        }
        else if (ssde_expect_shape_like(&args[i], &args[0]) < 0) {
            return -1;
        }
        if (ssde_expect_no_overlap(&args[0], &args[i], 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
py_ddim_coefficients(PyObject *self, PyObject *args)
{
    (void)self;
    double abar_t, abar_s, eta = 0.0;
    if (!PyArg_ParseTuple(args, "dd|d:ddim_coefficients", &abar_t, &abar_s, &eta)) {
        return NULL;
    }
    ssde_ddim_coeffs c;
    if (ssde_ddim_coefficients(abar_t, abar_s, eta, &c) != SSDE_OK) {
        PyErr_Format(PyExc_ValueError,
                     "ddim_coefficients: need 0 < abar_t <= 1, 0 < abar_s <= 1 and eta >= 0; "
                     "got abar_t=%R, abar_s=%R, eta=%R",
                     PyTuple_GET_ITEM(args, 0), PyTuple_GET_ITEM(args, 1),
                     PyTuple_GET_SIZE(args) > 2 ? PyTuple_GET_ITEM(args, 2) : Py_None);
        return NULL;
    }
    return Py_BuildValue("(dddd)", c.c_x, c.c_eps, c.sigma, c.gamma);
}

static PyObject *
py_lincomb2(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *objs[3];
    double a, b;
    if (!PyArg_ParseTuple(args, "OOOdd:lincomb2", &objs[0], &objs[1], &objs[2], &a, &b)) {
        return NULL;
    }
    ssde_arg t[3] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("x"), SSDE_ARG_INIT("y")};
    PyObject *result = NULL;
    if (borrow_elementwise(objs, t, 3, 0) == 0) {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_lincomb2(&t[0].t, &t[1].t, &t[2].t, a, b);
        SSDE_ACQUIRE_GIL();
        result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "lincomb2");
    }
    ssde_args_release(t, 3);
    return result;
}

static PyObject *
py_lincomb3(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *objs[4];
    double a, b, c;
    if (!PyArg_ParseTuple(args, "OOOOddd:lincomb3", &objs[0], &objs[1], &objs[2], &objs[3], &a,
                          &b, &c)) {
        return NULL;
    }
    ssde_arg t[4] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("x"), SSDE_ARG_INIT("y"),
                     SSDE_ARG_INIT("z")};
    PyObject *result = NULL;
    if (borrow_elementwise(objs, t, 4, 0) == 0) {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_lincomb3(&t[0].t, &t[1].t, &t[2].t, &t[3].t, a, b, c);
        SSDE_ACQUIRE_GIL();
        result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "lincomb3");
    }
    ssde_args_release(t, 4);
    return result;
}

static PyObject *
py_syncsde_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *objs[6];
    double c_x, c_eps, c_z, pull;
    if (!PyArg_ParseTuple(args, "OOOOOOdddd:syncsde_update", &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &objs[5], &c_x, &c_eps, &c_z, &pull)) {
        return NULL;
    }
    int n = objs[5] == Py_None ? 5 : 6;
    ssde_arg t[6] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("x"),    SSDE_ARG_INIT("eps"),
                     SSDE_ARG_INIT("ref"), SSDE_ARG_INIT("mask"), SSDE_ARG_INIT("noise")};
    PyObject *result = NULL;
    /* the mask broadcasts (per-pixel masks over channels, one scalar per view) */
    if (borrow_elementwise(objs, t, n, 1u << 4) == 0) {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_syncsde_update(&t[0].t, &t[1].t, &t[2].t, &t[3].t, &t[4].t,
                                 n == 6 ? &t[5].t : NULL, c_x, c_eps, c_z, pull);
        SSDE_ACQUIRE_GIL();
        result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "syncsde_update");
    }
    ssde_args_release(t, 6);
    return result;
}

static PyObject *
py_masked_update(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *objs[5];
    double c, a, b;
    if (!PyArg_ParseTuple(args, "OOOOOddd:masked_update", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &c, &a, &b)) {
        return NULL;
    }
    int n = objs[4] == Py_None ? 4 : 5;
    ssde_arg t[5] = {SSDE_ARG_INIT("out"), SSDE_ARG_INIT("x"), SSDE_ARG_INIT("mask"),
                     SSDE_ARG_INIT("y"), SSDE_ARG_INIT("w")};
    PyObject *result = NULL;
    /* the mask broadcasts (a per-pixel map over channels and samples) */
    if (borrow_elementwise(objs, t, n, 1u << 2) == 0) {
        int st;
        SSDE_RELEASE_GIL(ssde_numel(&t[0].t));
        st = ssde_masked_update(&t[0].t, &t[1].t, &t[2].t, &t[3].t, n == 5 ? &t[4].t : NULL, c,
                                a, b);
        SSDE_ACQUIRE_GIL();
        result = st == SSDE_OK ? Py_NewRef(Py_None) : ssde_raise_status(st, "masked_update");
    }
    ssde_args_release(t, n);
    return result;
}

PyMethodDef ssde_steps_methods[] = {
    {"ddim_coefficients", py_ddim_coefficients, METH_VARARGS,
     "ddim_coefficients(abar_t, abar_s, eta=0) -> (c_x, c_eps, sigma, gamma)"},
    {"lincomb2", py_lincomb2, METH_VARARGS, "lincomb2(out, x, y, a, b): out = a x + b y"},
    {"masked_update", py_masked_update, METH_VARARGS,
     "masked_update(out, x, mask, y, w, c, a, b): out = (1 - c mask) x + mask (a y + b w); "
     "w may be None"},
    {"lincomb3", py_lincomb3, METH_VARARGS,
     "lincomb3(out, x, y, z, a, b, c): out = a x + b y + c z"},
    {"syncsde_update", py_syncsde_update, METH_VARARGS,
     "syncsde_update(out, x, eps, ref, mask, noise|None, c_x, c_eps, c_z, pull):\n"
     "out = c_x x + c_eps eps + c_z noise - pull * mask * (x - ref)"},
    {NULL, NULL, 0, NULL},
};
