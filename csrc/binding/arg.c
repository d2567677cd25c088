/* DLPack consumer and argument validation for the binding (see arg.h). */
#include "arg.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL ssde_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdio.h>
#include <string.h>

#include "ssde/dlpack_abi.h"

static const char *
device_name(int32_t type)
{
    switch (type) {
        case kDLCPU:
            return "cpu";
        case kDLCUDA:
            return "cuda";
        case kDLCUDAHost:
            return "cuda_host";
        case kDLROCM:
            return "rocm";
        case kDLMetal:
            return "mps";
        case kDLCUDAManaged:
            return "cuda_managed";
        case kDLOneAPI:
            return "xpu";
        default:
            return "non-cpu";
    }
}

void
ssde_format_shape(const ssde_tensor *t, char *buf, size_t n)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "(");
    for (int d = 0; d < t->ndim && used < n; d++) {
        used += (size_t)snprintf(buf + used, n - used, d ? ", %lld" : "%lld",
                                 (long long)t->shape[d]);
    }
    if (used < n) {
        used += (size_t)snprintf(buf + used, n - used, t->ndim == 1 ? ",)" : ")");
    }
}

static int
device_error(const char *name, long type, long id)
{
    PyErr_Format(PyExc_ValueError,
                 "argument '%s' is on device %s:%ld; the syncsde C core reads host "
                 "memory only (expected cpu). Use the syncsde.ops wrappers, which "
                 "stage device tensors through the host, or call .cpu() first",
                 name, device_name((int32_t)type), id);
    return -1;
}

/* torch's Tensor.__dlpack__ is a Python-level method costing ~3 us per call, while the
 * exporter behind it, torch._C._to_dlpack_versioned, costs ~0.2 us. For torch tensors we call
 * the exporter directly after the checks __dlpack__ would make (grad, device): a versioned
 * DLPack capsule all the same, from a Python function looked up at run time (nothing is
 * compiled against torch). Any other object goes through __dlpack__. */
static PyObject *torch_tensor_type = NULL;
static PyObject *torch_exporter = NULL;
static int torch_lookup_done = 0;

static PyObject *
torch_fast_export(PyObject *obj, const char *name, int *handled)
{
    *handled = 0;
    if (!torch_lookup_done) {
        PyObject *modname = PyUnicode_InternFromString("torch");
        PyObject *torch = modname ? PyImport_GetModule(modname) : NULL;
        Py_XDECREF(modname);
        if (torch != NULL) {
            PyObject *tensor = PyObject_GetAttrString(torch, "Tensor");
            PyObject *tc = PyObject_GetAttrString(torch, "_C");
            PyObject *exp = tc ? PyObject_GetAttrString(tc, "_to_dlpack_versioned") : NULL;
            if (tensor != NULL && exp != NULL && PyType_Check(tensor)) {
                torch_tensor_type = tensor;
                torch_exporter = exp;
                tensor = exp = NULL;
            }
            Py_XDECREF(tensor);
            Py_XDECREF(exp);
            Py_XDECREF(tc);
            Py_DECREF(torch);
            torch_lookup_done = 1; /* torch is imported: its answer is final */
        }
        PyErr_Clear();
    }
    if (torch_tensor_type == NULL ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)torch_tensor_type)) {
        return NULL;
    }
    *handled = 1;
    PyObject *rg = PyObject_GetAttrString(obj, "requires_grad");
    if (rg == NULL) {
        return NULL;
    }
    int needs_grad = PyObject_IsTrue(rg);
    Py_DECREF(rg);
    if (needs_grad) {
        PyErr_Format(PyExc_ValueError,
                     "argument '%s' requires grad; pass tensor.detach() (syncsde writes and reads "
                     "raw memory behind autograd's back)",
                     name);
        return NULL;
    }
    return PyObject_CallOneArg(torch_exporter, obj);
}

static PyObject *
export_capsule(PyObject *obj, const char *name, int *not_exportable)
{
    static PyObject *kwargs = NULL, *empty = NULL, *dlpack_str = NULL;
    *not_exportable = 0;
    int handled;
    PyObject *cap = torch_fast_export(obj, name, &handled);
    if (handled || cap != NULL) {
        return cap;
    }
    if (kwargs == NULL) {
        kwargs = Py_BuildValue("{s:(ii)}", "max_version", SSDE_DLPACK_MAJOR, SSDE_DLPACK_MINOR);
        empty = PyTuple_New(0);
        dlpack_str = PyUnicode_InternFromString("__dlpack__");
        if (kwargs == NULL || empty == NULL || dlpack_str == NULL) {
            return NULL;
        }
    }
    PyObject *meth = PyObject_GetAttr(obj, dlpack_str);
    if (meth == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            *not_exportable = 1;
        }
        return NULL;
    }
    cap = PyObject_Call(meth, empty, kwargs);
    if (cap == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* an older producer that does not know max_version */
        PyErr_Clear();
        cap = PyObject_Call(meth, empty, NULL);
    }
    Py_DECREF(meth);
    return cap;
}

static int
map_dtype(DLDataType dt, int *out)
{
    if (dt.lanes != 1) {
        return -1;
    }
    if (dt.code == kDLFloat && dt.bits == 32) {
        *out = SSDE_F32;
    }
    else if (dt.code == kDLFloat && dt.bits == 64) {
        *out = SSDE_F64;
    }
    else if (dt.code == kDLFloat && dt.bits == 16) {
        *out = SSDE_F16;
    }
    else if (dt.code == kDLBfloat && dt.bits == 16) {
        *out = SSDE_BF16;
    }
    else if (dt.code == kDLInt && dt.bits == 64) {
        *out = SSDE_I64;
    }
    else if (dt.code == kDLInt && dt.bits == 32) {
        *out = SSDE_I32;
    }
    else {
        return -1;
    }
    return 0;
}

/* An output must be writable through every index without two indices
 * meeting: no zero strides and no overlap between dimensions. */
static int
check_output_layout(const ssde_arg *a)
{
    const ssde_tensor *t = &a->t;
    int order[SSDE_MAX_DIMS];
    int n = 0;
    if (ssde_numel(t) == 0) {
        return 0; /* nothing is written (numpy gives empty arrays zero strides) */
    }
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] > 1) {
            if (t->stride[d] == 0) {
                PyErr_Format(PyExc_ValueError,
                             "argument '%s' has a zero stride in dimension %d (an expanded or "
                             "broadcast view); outputs need one memory location per element: "
                             "pass a contiguous tensor",
                             a->name, d);
                return -1;
            }
            order[n++] = d;
        }
    }
    /* sort the non-trivial dims by |stride| and require each to step past the
     * extent of all smaller ones */
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0; j--) {
            int64_t sa = t->stride[order[j - 1]], sb = t->stride[order[j]];
            if ((sa < 0 ? -sa : sa) > (sb < 0 ? -sb : sb)) {
                int tmp = order[j];
                order[j] = order[j - 1];
                order[j - 1] = tmp;
            }
        }
    }
    int64_t extent = 1;
    for (int i = 0; i < n; i++) {
        int64_t s = t->stride[order[i]];
        s = s < 0 ? -s : s;
        if (s < extent) {
            PyErr_Format(PyExc_ValueError,
                         "argument '%s' has strides that may overlap (interleaved "
                         "dimensions); outputs need one memory location per element: pass a "
                         "contiguous tensor",
                         a->name);
            return -1;
        }
        extent = s * t->shape[order[i]];
    }
    return 0;
}

static PyObject *
index_sequence_to_array(PyObject *obj, const char *name)
{
    PyObject *arr = PyArray_FROMANY(obj, NPY_INT64, 0, SSDE_MAX_DIMS, NPY_ARRAY_IN_ARRAY);
    if (arr == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' must be an integer tensor or a sequence of integers, "
                     "got %.100s",
                     name, Py_TYPE(obj)->tp_name);
    }
    return arr;
}

int
ssde_arg_borrow(PyObject *obj, ssde_arg *arg, int flags)
{
    PyObject *converted = NULL;
    arg->capsule = NULL;
    if (obj == NULL || obj == Py_None) {
        PyErr_Format(PyExc_TypeError, "argument '%s' is required, got None", arg->name);
        return -1;
    }
    int not_exportable = 0;
    PyObject *cap = export_capsule(obj, arg->name, &not_exportable);
    if (cap == NULL && not_exportable) {
        if (!(flags & SSDE_ARG_INDEX)) {
            PyErr_Format(PyExc_TypeError,
                         "argument '%s' must be a tensor supporting DLPack (torch.Tensor, "
                         "numpy.ndarray, ...), got %.100s",
                         arg->name, Py_TYPE(obj)->tp_name);
            return -1;
        }
        converted = index_sequence_to_array(obj, arg->name);
        if (converted == NULL) {
            return -1;
        }
        cap = export_capsule(converted, arg->name, &not_exportable);
        Py_DECREF(converted); /* the capsule keeps the array alive */
    }
    if (cap == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BufferError) ||
            PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_Format(PyExc_ValueError, "argument '%s' cannot be exported via DLPack: %S",
                         arg->name, value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return -1;
    }
    DLTensor *dl = NULL;
    uint64_t dlflags = 0;
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
        if (m->version.major != SSDE_DLPACK_MAJOR) {
            PyErr_Format(PyExc_BufferError,
                         "argument '%s': DLPack major version %u is not supported (expected %d)",
                         arg->name, (unsigned)m->version.major, SSDE_DLPACK_MAJOR);
            Py_DECREF(cap);
            return -1;
        }
        dl = &m->dl_tensor;
        dlflags = m->flags;
    }
    else if (PyCapsule_IsValid(cap, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        dl = &m->dl_tensor;
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "argument '%s': __dlpack__ did not return an unconsumed DLPack capsule",
                     arg->name);
        Py_DECREF(cap);
        return -1;
    }
    arg->capsule = cap;
    if (dl->device.device_type != kDLCPU && dl->device.device_type != kDLCUDAHost) {
        device_error(arg->name, dl->device.device_type, dl->device.device_id);
        goto fail;
    }
    if ((flags & SSDE_ARG_OUTPUT) && (dlflags & SSDE_DLPACK_FLAG_READ_ONLY)) {
        PyErr_Format(PyExc_ValueError,
                     "argument '%s' is read-only; outputs are written in place and must be "
                     "writable",
                     arg->name);
        goto fail;
    }
    if ((flags & SSDE_ARG_OUTPUT) && (dlflags & SSDE_DLPACK_FLAG_IS_COPIED)) {
        PyErr_Format(PyExc_ValueError,
                     "argument '%s' was exported as a copy; writes would be lost", arg->name);
        goto fail;
    }
    if (dl->ndim < 0 || dl->ndim > SSDE_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "argument '%s' has %d dimensions; at most %d supported",
                     arg->name, (int)dl->ndim, SSDE_MAX_DIMS);
        goto fail;
    }
    if (map_dtype(dl->dtype, &arg->t.dtype) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' has an unsupported dtype (DLPack code %d, %d bits, %d "
                     "lanes); expected float32, float64, float16 or bfloat16 (int64/int32 for "
                     "indices)",
                     arg->name, (int)dl->dtype.code, (int)dl->dtype.bits,
                     (int)dl->dtype.lanes);
        goto fail;
    }
    if ((flags & SSDE_ARG_INDEX) && arg->t.dtype != SSDE_I64 && arg->t.dtype != SSDE_I32) {
        PyErr_Format(PyExc_TypeError, "argument '%s' has dtype %s; expected int64 or int32",
                     arg->name, ssde_dtype_name(arg->t.dtype));
        goto fail;
    }
    arg->t.ndim = dl->ndim;
    arg->t.data = (char *)dl->data + dl->byte_offset;
    int64_t running = 1;
    for (int d = dl->ndim - 1; d >= 0; d--) {
        arg->t.shape[d] = dl->shape[d];
        arg->t.stride[d] = dl->strides ? dl->strides[d] : running;
        running *= dl->shape[d];
    }
    if (running > 0 && arg->t.data == NULL) {
        PyErr_Format(PyExc_ValueError, "argument '%s' has a NULL data pointer", arg->name);
        goto fail;
    }
    if ((flags & SSDE_ARG_OUTPUT) && check_output_layout(arg) < 0) {
        goto fail;
    }
    return 0;
fail:
    Py_CLEAR(arg->capsule);
    return -1;
}

void
ssde_arg_release(ssde_arg *arg)
{
    Py_CLEAR(arg->capsule);
}

void
ssde_args_release(ssde_arg *args, int n)
{
    for (int i = 0; i < n; i++) {
        ssde_arg_release(&args[i]);
    }
}

int
ssde_expect_float(const ssde_arg *a)
{
    int dt = a->t.dtype;
    if (dt != SSDE_F32 && dt != SSDE_F64 && dt != SSDE_F16 && dt != SSDE_BF16) {
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' has dtype %s; expected float32, float64, float16 or "
                     "bfloat16",
                     a->name, ssde_dtype_name(dt));
        return -1;
    }
    return 0;
}

int
ssde_expect_dtype_like(const ssde_arg *a, const ssde_arg *like)
{
    if (a->t.dtype != like->t.dtype) {
        PyErr_Format(PyExc_TypeError, "argument '%s' has dtype %s; expected %s like '%s'",
                     a->name, ssde_dtype_name(a->t.dtype), ssde_dtype_name(like->t.dtype),
                     like->name);
        return -1;
    }
    return 0;
}

int
ssde_expect_int_dtype(const ssde_arg *a)
{
    if (a->t.dtype != SSDE_I64 && a->t.dtype != SSDE_I32) {
        PyErr_Format(PyExc_TypeError, "argument '%s' has dtype %s; expected int64 or int32",
                     a->name, ssde_dtype_name(a->t.dtype));
        return -1;
    }
    return 0;
}

int
ssde_expect_ndim(const ssde_arg *a, int ndim_min, int ndim_max, const char *layout)
{
    if (a->t.ndim < ndim_min || a->t.ndim > ndim_max) {
        char got[160];
        ssde_format_shape(&a->t, got, sizeof got);
        if (ndim_min == ndim_max) {
            PyErr_Format(PyExc_ValueError,
                         "argument '%s' must have %d dimensions (%s); got shape %s", a->name,
                         ndim_min, layout, got);
        }
        else {
            PyErr_Format(PyExc_ValueError,
                         "argument '%s' must have %d to %d dimensions (%s); got shape %s",
                         a->name, ndim_min, ndim_max, layout, got);
        }
        return -1;
    }
    return 0;
}

int
ssde_expect_shape(const ssde_arg *a, int ndim, const int64_t *shape)
{
    int ok = a->t.ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) {
        ok = a->t.shape[d] == shape[d];
    }
    if (!ok) {
        ssde_tensor want = {0};
        want.ndim = ndim;
        for (int d = 0; d < ndim; d++) {
            want.shape[d] = shape[d];
        }
        char got[160], exp[160];
        ssde_format_shape(&a->t, got, sizeof got);
        ssde_format_shape(&want, exp, sizeof exp);
        PyErr_Format(PyExc_ValueError, "argument '%s' has shape %s; expected %s", a->name, got,
                     exp);
        return -1;
    }
    return 0;
}

int
ssde_expect_shape_like(const ssde_arg *a, const ssde_arg *like)
{
    int ok = a->t.ndim == like->t.ndim;
    for (int d = 0; ok && d < a->t.ndim; d++) {
        ok = a->t.shape[d] == like->t.shape[d];
    }
    if (!ok) {
        char got[160], exp[160];
        ssde_format_shape(&a->t, got, sizeof got);
        ssde_format_shape(&like->t, exp, sizeof exp);
        PyErr_Format(PyExc_ValueError, "argument '%s' has shape %s; expected %s like '%s'",
                     a->name, got, exp, like->name);
        return -1;
    }
    return 0;
}

int
ssde_broadcast_like(ssde_arg *a, const ssde_arg *like)
{
    ssde_tensor *t = &a->t;
    const ssde_tensor *L = &like->t;
    if (t->ndim > L->ndim) {
        goto bad;
    }
    ssde_tensor b = *t;
    b.ndim = L->ndim;
    int off = L->ndim - t->ndim;
    for (int d = 0; d < L->ndim; d++) {
        int src = d - off;
        if (src < 0) {
            b.shape[d] = L->shape[d];
            b.stride[d] = 0;
        }
        else if (t->shape[src] == L->shape[d]) {
            b.shape[d] = L->shape[d];
            b.stride[d] = t->stride[src];
        }
        else if (t->shape[src] == 1) {
            b.shape[d] = L->shape[d];
            b.stride[d] = 0;
        }
        else {
            goto bad;
        }
    }
    *t = b;
    return 0;
bad:;
    char got[160], exp[160];
    ssde_format_shape(t, got, sizeof got);
    ssde_format_shape(L, exp, sizeof exp);
    PyErr_Format(PyExc_ValueError,
                 "argument '%s' has shape %s, which does not broadcast to %s of '%s'", a->name,
                 got, exp, like->name);
    return -1;
}

/* Byte range [lo, hi) touched by a tensor. */
static void
byte_extent(const ssde_tensor *t, intptr_t *lo, intptr_t *hi)
{
    intptr_t a = (intptr_t)t->data, b = (intptr_t)t->data;
    int64_t item = (int64_t)ssde_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) {
            *lo = *hi = a;
            return;
        }
        int64_t span = (t->shape[d] - 1) * t->stride[d] * item;
        if (span < 0) {
            a += span;
        }
        else {
            b += span;
        }
    }
    *lo = a;
    *hi = b + item;
}

int
ssde_expect_no_overlap(const ssde_arg *out, const ssde_arg *in, int allow_identical)
{
    intptr_t olo, ohi, ilo, ihi;
    byte_extent(&out->t, &olo, &ohi);
    byte_extent(&in->t, &ilo, &ihi);
    if (olo >= ihi || ilo >= ohi || olo == ohi || ilo == ihi) {
        return 0;
    }
    if (allow_identical && out->t.data == in->t.data && out->t.ndim == in->t.ndim &&
        out->t.dtype == in->t.dtype) {
        int same = 1;
        for (int d = 0; d < out->t.ndim; d++) {
            if (out->t.shape[d] != in->t.shape[d] ||
                (out->t.shape[d] > 1 && out->t.stride[d] != in->t.stride[d])) {
                same = 0;
            }
        }
        if (same) {
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "argument '%s' overlaps input '%s' in memory%s; pass a separate output",
                 out->name, in->name,
                 allow_identical ? " (only an exact in-place alias is allowed)" : "");
    return -1;
}

PyObject *
ssde_raise_status(int status, const char *op)
{
    PyObject *exc = PyExc_RuntimeError;
    switch (status) {
        case SSDE_ERR_SHAPE:
        case SSDE_ERR_VALUE:
        case SSDE_ERR_ALIAS:
            exc = PyExc_ValueError;
            break;
        case SSDE_ERR_INDEX:
            exc = PyExc_IndexError;
            break;
        case SSDE_ERR_DTYPE:
            exc = PyExc_TypeError;
            break;
        case SSDE_ERR_NOMEM:
            return PyErr_NoMemory();
        default:
            break;
    }
    PyErr_Format(exc, "syncsde.%s: %s", op, ssde_strerror(status));
    return NULL;
}
