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

/* Replaces the exception a producer raised (inside __dlpack__ or torch's exporter) by one
 * that names the argument, chained to the original (`raise ... from original`). TypeError
 * stays a TypeError, every other Exception becomes a ValueError; MemoryError and
 * non-Exception errors (KeyboardInterrupt, SystemExit) pass through unchanged. */
static void
rename_producer_error(const char *name)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *kind = PyErr_GivenExceptionMatches(type, PyExc_TypeError) ? PyExc_TypeError
                                                                         : PyExc_ValueError;
    PyErr_Format(kind, "argument '%s' cannot be exported via DLPack: %s: %S", name,
                 type != NULL ? ((PyTypeObject *)type)->tp_name : "error",
                 value != NULL ? value : Py_None);
    PyObject *t2, *v2, *tb2;
    PyErr_Fetch(&t2, &v2, &tb2);
    PyErr_NormalizeException(&t2, &v2, &tb2);
    if (v2 != NULL && value != NULL) {
        PyException_SetCause(v2, Py_NewRef(value));
        PyException_SetContext(v2, Py_NewRef(value));
    }
    PyErr_Restore(t2, v2, tb2);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Calls obj.<method>() and returns its truth value, or -1 with an exception set. */
static int
call_flag(PyObject *obj, PyObject *method)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, method);
    if (r == NULL) {
        return -1;
    }
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static PyObject *
torch_fast_export(PyObject *obj, const char *name, int flags, int *handled)
{
    static PyObject *is_neg_str = NULL, *resolve_neg_str = NULL;
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
    /* A lazy negation (the negative bit: z.conj().imag, torch._neg_view) is not part of
     * DLPack: exported as is, its memory holds the un-negated values. Inputs are resolved
     * (a negated copy); an output would be written un-negated, so it is refused. */
    if (is_neg_str == NULL) {
        is_neg_str = PyUnicode_InternFromString("is_neg");
        resolve_neg_str = PyUnicode_InternFromString("resolve_neg");
        if (is_neg_str == NULL || resolve_neg_str == NULL) {
            return NULL;
        }
    }
    int neg = call_flag(obj, is_neg_str);
    if (neg < 0) {
        return NULL;
    }
    PyObject *cap;
    if (neg) {
        if (flags & SSDE_ARG_OUTPUT) {
            PyErr_Format(PyExc_ValueError,
                         "argument '%s' has the negative bit set (a lazy negation view such as "
                         "z.conj().imag or torch._neg_view(t)); writes through it would land "
                         "un-negated: pass a materialized tensor (t.resolve_neg() is a copy)",
                         name);
            return NULL;
        }
        PyObject *resolved = PyObject_CallMethodNoArgs(obj, resolve_neg_str);
        if (resolved == NULL) {
            return NULL;
        }
        cap = PyObject_CallOneArg(torch_exporter, resolved); /* the capsule owns the copy */
        Py_DECREF(resolved);
    }
    else {
        cap = PyObject_CallOneArg(torch_exporter, obj);
    }
    if (cap == NULL) {
        rename_producer_error(name);
    }
    return cap;
}

static PyObject *
export_capsule(PyObject *obj, const char *name, int flags, int *not_exportable)
{
    static PyObject *kwargs = NULL, *empty = NULL, *dlpack_str = NULL;
    *not_exportable = 0;
    int handled;
    PyObject *cap = torch_fast_export(obj, name, flags, &handled);
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
        else {
            rename_producer_error(name);
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
    if (cap == NULL) {
        rename_producer_error(name);
    }
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

/* A plain sequence of integers as an int64 array. Floats and bools are refused (never
 * truncated: 2.5 is not an index, True is not 1 here); so are integers beyond int64. An
 * empty sequence is an empty int64 array. */
/* 0 when every leaf of a nested list/tuple is an int (not a bool); -1 with TypeError set
 * naming the first other leaf (numpy would turn True into 1 next to ints). */
static int
check_int_leaves(PyObject *obj, const char *name, int depth)
{
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        if (depth > SSDE_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "argument '%s' is nested deeper than %d levels",
                         name, SSDE_MAX_DIMS);
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (check_int_leaves(PySequence_Fast_GET_ITEM(obj, i), name, depth + 1) < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (PyBool_Check(obj) || PyArray_IsScalar(obj, Bool) ||
        !(PyLong_Check(obj) || PyArray_IsScalar(obj, Integer) || PyArray_Check(obj))) {
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' must hold integers; got %R (%.100s); floats and bools are "
                     "refused, not truncated",
                     name, obj, Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
index_sequence_to_array(PyObject *obj, const char *name)
{
    if (check_int_leaves(obj, name, 0) < 0) {
        return NULL;
    }
    PyObject *raw = PyArray_FromAny(obj, NULL, 0, SSDE_MAX_DIMS, 0, NULL);
    if (raw == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError)) {
            return NULL;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' must be an integer tensor or a sequence of integers, "
                     "got %.100s",
                     name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)raw;
    int type = PyArray_TYPE(a);
    int ok = PyArray_SIZE(a) == 0 ||
             (PyTypeNum_ISINTEGER(type) && !(type == NPY_UINT64 || type == NPY_ULONGLONG ||
                                             (type == NPY_ULONG && sizeof(long) == 8)));
    if (!ok) {
        PyErr_Format(PyExc_TypeError,
                     "argument '%s' must hold integers (int64 range); got a sequence of %s "
                     "(floats and bools are refused, not truncated)",
                     name, PyArray_DESCR(a)->typeobj->tp_name);
        Py_DECREF(raw);
        return NULL;
    }
    PyObject *arr = PyArray_FROMANY(raw, NPY_INT64, 0, SSDE_MAX_DIMS,
                                    NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(raw);
    return arr;
}

/* Broadcast (zero-stride) index tensors are copied into private memory by the kernels; their
 * logical size is capped so that a few bytes of real memory cannot ask for a huge copy. */
#define SSDE_MAX_BROADCAST_INDEX ((int64_t)1 << 24)

static const char *
layout_problem_text(int problem)
{
    switch (problem) {
        case SSDE_LAYOUT_NDIM:
            return "too many dimensions";
        case SSDE_LAYOUT_NEGATIVE_SHAPE:
            return "a negative dimension";
        case SSDE_LAYOUT_SIZE_OVERFLOW:
            return "more elements than any memory can hold (the size overflows 2^62 bytes)";
        case SSDE_LAYOUT_EXTENT_OVERFLOW:
            return "strides that span more than 2^62 bytes (or wrap the address space)";
        case SSDE_LAYOUT_MISALIGNED:
            return "a data pointer that is not aligned to its dtype's size; pass an aligned "
                   "copy";
        case SSDE_LAYOUT_NULL_DATA:
            return "a NULL data pointer";
        default:
            return "an invalid layout";
    }
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
    PyObject *cap = export_capsule(obj, arg->name, flags, &not_exportable);
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
        cap = export_capsule(converted, arg->name, flags, &not_exportable);
        Py_DECREF(converted); /* the capsule keeps the array alive */
    }
    if (cap == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "argument '%s': __dlpack__ returned NULL", arg->name);
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
    if (dl->ndim > 0 && dl->shape == NULL) {
        PyErr_Format(PyExc_ValueError, "argument '%s': the DLPack tensor has a NULL shape",
                     arg->name);
        goto fail;
    }
    arg->t.ndim = dl->ndim;
    arg->t.data = (char *)((uintptr_t)dl->data + (uintptr_t)dl->byte_offset);
    /* NULL strides mean compact row-major (the DLPack spec); computed with overflow checks */
    int64_t running = 1;
    int running_ok = 1;
    for (int d = dl->ndim - 1; d >= 0; d--) {
        arg->t.shape[d] = dl->shape[d];
        arg->t.stride[d] = dl->strides ? dl->strides[d] : running;
        if (dl->shape[d] < 0 || (running_ok && ssde_mul_nonneg_i64(running, dl->shape[d] > 0 ? dl->shape[d] : 1, &running) < 0)) {
            running_ok = 0;
        }
    }
    int problem = ssde_tensor_layout_problem(&arg->t);
    if (problem == SSDE_LAYOUT_OK && !running_ok && dl->strides == NULL) {
        problem = SSDE_LAYOUT_SIZE_OVERFLOW;
    }
    if (problem != SSDE_LAYOUT_OK) {
        char got[160];
        ssde_format_shape(&arg->t, got, sizeof got);
        PyErr_Format(PyExc_ValueError, "argument '%s' (shape %s) has %s", arg->name, got,
                     layout_problem_text(problem));
        goto fail;
    }
    if (flags & SSDE_ARG_INDEX) {
        int64_t n = ssde_numel(&arg->t);
        int broadcast = 0;
        for (int d = 0; d < arg->t.ndim; d++) {
            broadcast |= arg->t.shape[d] > 1 && arg->t.stride[d] == 0;
        }
        if (broadcast && n > SSDE_MAX_BROADCAST_INDEX) {
            PyErr_Format(PyExc_ValueError,
                         "argument '%s' is a broadcast (zero-stride) index tensor of %lld "
                         "entries; at most %lld are copied: pass a contiguous tensor",
                         arg->name, (long long)n, (long long)SSDE_MAX_BROADCAST_INDEX);
            goto fail;
        }
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
