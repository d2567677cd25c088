/* The CPython module syncsde._C: joins the method tables of the binding files,
 * imports the NumPy C API and sets up the threading runtime. */
#include "arg.h"

#define PY_ARRAY_UNIQUE_SYMBOL ssde_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

static PyObject *
py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    int cap = ssde_max_threads();
    if (PyBool_Check(arg) || !PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "num_threads must be an int in [1, %d], got %.100s", cap,
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow != 0 || n < 1 || n > cap) {
        PyErr_Format(PyExc_ValueError,
                     "num_threads must be in [1, %d] (max(1024, 4 x the CPU count)), got %R",
                     cap, arg);
        return NULL;
    }
    ssde_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *
py_get_num_threads(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(ssde_get_num_threads());
}

static PyObject *
py_max_num_threads(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(ssde_max_threads());
}

static PyObject *
py_has_openmp(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyBool_FromLong(ssde_has_openmp());
}

static PyMethodDef runtime_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_O, "Set the OpenMP team size of every kernel."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "The OpenMP team size."},
    {"max_num_threads", py_max_num_threads, METH_NOARGS,
     "The largest team size set_num_threads accepts: max(1024, 4 x the CPU count)."},
    {"has_openmp", py_has_openmp, METH_NOARGS, "Whether the core was built with OpenMP."},
    {NULL, NULL, 0, NULL},
};

static int
add_methods(PyObject *module, PyMethodDef *table)
{
    return PyModule_AddFunctions(module, table);
}

static int
module_exec(PyObject *module)
{
    if (PyArray_ImportNumPyAPI() < 0) {
        return -1;
    }
    ssde_runtime_init();
    if (add_methods(module, runtime_methods) < 0 || add_methods(module, ssde_steps_methods) < 0 ||
        add_methods(module, ssde_views_methods) < 0 ||
        add_methods(module, ssde_composite_methods) < 0) {
        return -1;
    }
    if (add_methods(module, ssde_raster_methods) < 0) { return -1; }
    return PyModule_AddIntConstant(module, "MAX_DIMS", SSDE_MAX_DIMS);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "syncsde._C",
    "C core of syncsde: diffusion synchronization kernels on DLPack tensors.",
    0,
    NULL,
    module_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__C(void)
{
    return PyModuleDef_Init(&module_def);
}
