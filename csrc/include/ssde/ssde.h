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
    SSDE_ERR_LAYOUT = -7,  /* a view no memory can hold: negative shape, size or extent
                              overflow, misaligned data (ssde_tensor_check) */
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
/* Product of the shape; -1 when a shape is negative or the product overflows
 * (never for a view that passed ssde_tensor_check). */
int64_t ssde_numel(const ssde_tensor *t);

/* ---- overflow-checked size arithmetic -------------------------------------
 * Every size computed from shapes, strides or counts goes through these: they
 * return 0 and store the result, or -1 (nothing stored) when it does not fit. */
static inline int
ssde_mul_size(size_t a, size_t b, size_t *r)
{
    if (b != 0 && a > SIZE_MAX / b) {
        return -1;
    }
    *r = a * b;
    return 0;
}

static inline int
ssde_add_size(size_t a, size_t b, size_t *r)
{
    if (a > SIZE_MAX - b) {
        return -1;
    }
    *r = a + b;
    return 0;
}

/* a * b for a, b >= 0 */
static inline int
ssde_mul_nonneg_i64(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || (b != 0 && a > INT64_MAX / b)) {
        return -1;
    }
    *r = a * b;
    return 0;
}

/* a * b for a, b >= 0, saturating at INT64_MAX: for work estimates only */
static inline int64_t
ssde_sat_mul(int64_t a, int64_t b)
{
    int64_t r;
    return ssde_mul_nonneg_i64(a, b, &r) < 0 ? INT64_MAX : r;
}

/* malloc / calloc of n items of `item` bytes; NULL when n * item overflows or
 * memory is short (a request of 0 bytes allocates 1). */
void *ssde_malloc_array(size_t n, size_t item);
void *ssde_calloc_array(size_t n, size_t item);

/* Largest byte extent a view may span (2^62): offsets, strides times the item
 * size and their sums stay far from int64 overflow in every kernel. */
#define SSDE_MAX_EXTENT_BYTES ((int64_t)1 << 62)

/* Checks that a view can describe real memory: 0 <= ndim <= SSDE_MAX_DIMS, a
 * known dtype, shape[d] >= 0, the product of the non-zero dims times the item
 * size <= SSDE_MAX_EXTENT_BYTES (so every partial product of the shape fits),
 * the byte extent sum_d (shape[d] - 1) |stride[d]| item <= SSDE_MAX_EXTENT_BYTES
 * and within the address space, and data aligned to the item size. Returns
 * SSDE_OK or SSDE_ERR_LAYOUT (SSDE_ERR_DTYPE for an unknown dtype). Every
 * kernel runs it on each of its tensors before anything else. */
int ssde_tensor_check(const ssde_tensor *t);

/* Details of a failed ssde_tensor_check for error messages: which rule broke. */
typedef enum {
    SSDE_LAYOUT_OK = 0,
    SSDE_LAYOUT_NDIM = 1,
    SSDE_LAYOUT_NEGATIVE_SHAPE = 2,
    SSDE_LAYOUT_SIZE_OVERFLOW = 3,
    SSDE_LAYOUT_EXTENT_OVERFLOW = 4,
    SSDE_LAYOUT_MISALIGNED = 5,
    SSDE_LAYOUT_NULL_DATA = 6,
    SSDE_LAYOUT_DTYPE = 7,
} ssde_layout_problem;
int ssde_tensor_layout_problem(const ssde_tensor *t);

/* Returns from the enclosing kernel with ssde_tensor_check's status when `t` fails it. */
#define SSDE_CHECK_TENSOR(t)                            \
    do {                                                \
        int ssde__check = ssde_tensor_check(t);         \
        if (ssde__check != SSDE_OK) {                   \
            return ssde__check;                         \
        }                                               \
    } while (0)

/* Threading. `ssde_set_num_threads(n)` with n >= 1 fixes the OpenMP team size
 * used by every kernel; after fork() the child runs every kernel on one thread
 * (libgomp cannot be used on both sides of a fork). */
void ssde_runtime_init(void);
void ssde_set_num_threads(int n);
int ssde_get_num_threads(void);
int ssde_effective_threads(int64_t work_items);
int ssde_has_openmp(void);
/* The largest team size ssde_set_num_threads accepts: max(1024, 4 x online CPUs). */
int ssde_max_threads(void);

#endif
