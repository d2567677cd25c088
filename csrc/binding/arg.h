/*
 * Binding helpers: borrow DLPack tensors from Python objects as ssde_tensor
 * views, validate them with error messages that name the argument, and map
 * core status codes to Python exceptions.
 *
 * Life cycle of a call (design notes, section 3):
 *   parse args -> ssde_arg_borrow every tensor (capsules stay referenced) ->
 *   validate -> SSDE_RELEASE_GIL -> kernel -> SSDE_ACQUIRE_GIL ->
 *   ssde_args_release.
 */
#ifndef SSDE_BINDING_ARG_H
#define SSDE_BINDING_ARG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ssde/ssde.h"

typedef struct {
    const char *name;  /* argument name used in error messages */
    PyObject *capsule; /* owned: keeps the producer's memory alive */
    ssde_tensor t;
} ssde_arg;

#define SSDE_ARG_INIT(argname) {(argname), NULL, {0}}

/* Flags for ssde_arg_borrow. */
#define SSDE_ARG_INPUT 0
#define SSDE_ARG_OUTPUT 1   /* writable, dense, no zero strides, no self-overlap */
#define SSDE_ARG_INDEX 2    /* integer data; plain sequences go through numpy */

/* Borrows `obj` (anything with __dlpack__; with SSDE_ARG_INDEX also lists).
 * Returns 0 on success, -1 with a Python exception set. */
int ssde_arg_borrow(PyObject *obj, ssde_arg *arg, int flags);
void ssde_arg_release(ssde_arg *arg);
void ssde_args_release(ssde_arg *args, int n);

/* Validation; each returns 0 or -1 with TypeError/ValueError set. */
int ssde_expect_float(const ssde_arg *a);
int ssde_expect_dtype_like(const ssde_arg *a, const ssde_arg *like);
int ssde_expect_int_dtype(const ssde_arg *a); /* int64 or int32 */
int ssde_expect_ndim(const ssde_arg *a, int ndim_min, int ndim_max, const char *layout);
int ssde_expect_shape_like(const ssde_arg *a, const ssde_arg *like);
int ssde_expect_shape(const ssde_arg *a, int ndim, const int64_t *shape);
/* Broadcasts an input to `like`'s shape (numpy rules, right-aligned) by
 * setting zero strides; refuses incompatible shapes. */
int ssde_broadcast_like(ssde_arg *a, const ssde_arg *like);
/* Refuses any overlap between out and in, or (allow_identical) any overlap
 * other than the exact same pointer and strides (elementwise in-place). */
int ssde_expect_no_overlap(const ssde_arg *out, const ssde_arg *in, int allow_identical);

/* Formats a shape like "(2, 4, 64, 64)" into buf. */
void ssde_format_shape(const ssde_tensor *t, char *buf, size_t n);

/* Maps a core status to a Python exception; returns NULL for convenience. */
PyObject *ssde_raise_status(int status, const char *op);

/* Releases the GIL only when the work is big enough to be worth it. */
#define SSDE_GIL_THRESHOLD 4096
#define SSDE_RELEASE_GIL(work)                                           \
    PyThreadState *ssde__ts = NULL;                                       \
    if ((work) >= SSDE_GIL_THRESHOLD) {                                   \
        ssde__ts = PyEval_SaveThread();                                   \
    }
#define SSDE_ACQUIRE_GIL()              \
    if (ssde__ts != NULL) {             \
        PyEval_RestoreThread(ssde__ts); \
    }

/* Method tables of the binding files, joined in module.c. */
extern PyMethodDef ssde_steps_methods[];
extern PyMethodDef ssde_views_methods[];
extern PyMethodDef ssde_composite_methods[];
extern PyMethodDef ssde_raster_methods[];

#endif
