/*
 * syncsde C core: shared types, status codes and the threading runtime.
 *
 * The core is plain C11 with no Python in it. Every kernel reads and writes
 * host memory through `ssde_tensor` views (data pointer, dtype, shape and
 * strides in elements), returns an `ssde_status`, never allocates the tensors
 * it is given, and never draws random numbers (noise is an input).
 */
#ifndef SSDE_SSDE_H
#define SSDE_SSDE_H

#include <stddef.h>
#include <stdint.h>

#define SSDE_MAX_DIMS 8

typedef enum {
    SSDE_F32 = 0,
    SSDE_F64 = 1,
    SSDE_F16 = 2,
    SSDE_BF16 = 3,
    SSDE_I64 = 4,
    SSDE_I32 = 5,
    SSDE_NUM_DTYPES
} ssde_dtype;

typedef enum {
    SSDE_OK = 0,
    SSDE_ERR_SHAPE = -1,   /* shapes do not agree */
    SSDE_ERR_DTYPE = -2,   /* dtype not supported by this kernel */
    SSDE_ERR_VALUE = -3,   /* a scalar or index argument is out of range */
    SSDE_ERR_NOMEM = -4,   /* scratch allocation failed */
    SSDE_ERR_ALIAS = -5,   /* output overlaps an input where it may not */
    SSDE_ERR_INDEX = -6,   /* an index map holds an out-of-range entry */
} ssde_status;

/* A strided view of host memory. Strides are in elements, may be zero or
 * negative for inputs; the binding refuses such strides for outputs. */
typedef struct {
    char *data;
    int dtype; /* ssde_dtype */
    int ndim;
    int64_t shape[SSDE_MAX_DIMS];
    int64_t stride[SSDE_MAX_DIMS];
} ssde_tensor;

const char *ssde_strerror(int status);
size_t ssde_dtype_size(int dtype);
const char *ssde_dtype_name(int dtype);
int64_t ssde_numel(const ssde_tensor *t);

/* Threading. `ssde_set_num_threads(n)` with n >= 1 fixes the OpenMP team size
 * used by every kernel; after fork() the child runs every kernel on one thread
 * (libgomp cannot be used on both sides of a fork). */
void ssde_runtime_init(void);
void ssde_set_num_threads(int n);
int ssde_get_num_threads(void);
int ssde_effective_threads(int64_t work_items);
int ssde_has_openmp(void);

#endif
