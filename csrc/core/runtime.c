/* Status strings, dtype facts and the threading runtime of the core. */
#include "ssde/ssde.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "ssde/half.h"
#include "ssde/half_convert.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements one thread is faster than waking a team: measured with
 * benchmarks/ops.py on 2 cores, 131072 instead of 32768 turned 4x64x64 x 2-view crops from
 * 0.24x to 0.65x of torch and tweedie from 0.65x to 1.99x (waking the second thread costs
 * more than it saves below ~0.5 MB). */
#define SSDE_PARALLEL_THRESHOLD 131072

static int ssde_threads = 1;
static volatile int ssde_forked = 0;
static pthread_once_t ssde_once = PTHREAD_ONCE_INIT;

static void
on_fork_child(void)
{
    ssde_forked = 1;
}

float ssde_half_table[65536];

static void
register_atfork(void)
{
    for (uint32_t h = 0; h < 65536u; h++) {
        ssde_half_table[h] = ssde_half_to_float_bits((uint16_t)h);
    }
    ssde_half_convert_init();
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* Registers the fork handler and fills the float16 table; idempotent. */
void
ssde_runtime_init(void)
{
    pthread_once(&ssde_once, register_atfork);
}

void
ssde_set_num_threads(int n)
{
    int cap = ssde_max_threads();
    ssde_threads = n < 1 ? 1 : n > cap ? cap : n;
}

int
ssde_get_num_threads(void)
{
    return ssde_threads;
}

int
ssde_effective_threads(int64_t work_items)
{
    if (ssde_forked || ssde_threads <= 1 || work_items < SSDE_PARALLEL_THRESHOLD) {
        return 1;
    }
    return ssde_threads;
}

int
ssde_max_threads(void)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) {
        ncpu = 1;
    }
    long cap = 4 * (ncpu > 65536 ? 65536 : ncpu);
    return (int)(cap > 1024 ? cap : 1024);
}

int
ssde_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *
ssde_strerror(int status)
{
    switch (status) {
        case SSDE_OK:
            return "ok";
        case SSDE_ERR_SHAPE:
            return "shape mismatch";
        case SSDE_ERR_DTYPE:
            return "unsupported dtype";
        case SSDE_ERR_VALUE:
            return "argument out of range";
        case SSDE_ERR_NOMEM:
            return "out of memory";
        case SSDE_ERR_ALIAS:
            return "output overlaps an input";
        case SSDE_ERR_INDEX:
            return "index out of range";
        case SSDE_ERR_LAYOUT:
            return "invalid tensor layout (negative shape, size or extent overflow, or "
                   "misaligned data)";
        default:
            return "unknown error";
    }
}

size_t
ssde_dtype_size(int dtype)
{
    switch (dtype) {
        case SSDE_F32:
        case SSDE_I32:
            return 4;
        case SSDE_F64:
        case SSDE_I64:
            return 8;
        case SSDE_F16:
        case SSDE_BF16:
            return 2;
        default:
            return 0;
    }
}

const char *
ssde_dtype_name(int dtype)
{
    static const char *names[SSDE_NUM_DTYPES] = {"float32", "float64", "float16",
                                                 "bfloat16", "int64", "int32"};
    if (dtype < 0 || dtype >= SSDE_NUM_DTYPES) {
        return "unknown";
    }
    return names[dtype];
}

int64_t
ssde_numel(const ssde_tensor *t)
{
    int64_t n = 1;
    int overflow = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) {
            return 0;
        }
        if (overflow || ssde_mul_nonneg_i64(n, t->shape[d], &n) < 0) {
            overflow = 1; /* keep looking for a zero dim */
        }
    }
    return overflow ? -1 : n;
}

void *
ssde_malloc_array(size_t n, size_t item)
{
    size_t bytes;
    if (ssde_mul_size(n, item, &bytes) < 0 || bytes > (size_t)SSDE_MAX_EXTENT_BYTES) {
        return NULL;
    }
    return malloc(bytes > 0 ? bytes : 1);
}

void *
ssde_calloc_array(size_t n, size_t item)
{
    size_t bytes;
    if (ssde_mul_size(n, item, &bytes) < 0 || bytes > (size_t)SSDE_MAX_EXTENT_BYTES) {
        return NULL;
    }
    return bytes > 0 ? calloc(n, item) : calloc(1, 1);
}

int
ssde_tensor_layout_problem(const ssde_tensor *t)
{
    if (t->ndim < 0 || t->ndim > SSDE_MAX_DIMS) {
        return SSDE_LAYOUT_NDIM;
    }
    const int64_t item = (int64_t)ssde_dtype_size(t->dtype);
    if (item == 0) {
        return SSDE_LAYOUT_DTYPE;
    }
    /* the product of the non-zero dims (in bytes), and the extent below and above data */
    int64_t size = item, below = 0, above = 0;
    int empty = 0;
    for (int d = 0; d < t->ndim; d++) {
        const int64_t n = t->shape[d], s = t->stride[d];
        if (n < 0) {
            return SSDE_LAYOUT_NEGATIVE_SHAPE;
        }
        if (n == 0) {
            empty = 1;
            continue;
        }
        if (ssde_mul_nonneg_i64(size, n, &size) < 0 || size > SSDE_MAX_EXTENT_BYTES) {
            return SSDE_LAYOUT_SIZE_OVERFLOW;
        }
        if (s == INT64_MIN) {
            return SSDE_LAYOUT_EXTENT_OVERFLOW;
        }
        int64_t span;
        if (ssde_mul_nonneg_i64(n - 1, s < 0 ? -s : s, &span) < 0 ||
            ssde_mul_nonneg_i64(span, item, &span) < 0) {
            return SSDE_LAYOUT_EXTENT_OVERFLOW;
        }
        int64_t *side = s < 0 ? &below : &above;
        if (span > SSDE_MAX_EXTENT_BYTES - *side) {
            return SSDE_LAYOUT_EXTENT_OVERFLOW;
        }
        *side += span;
    }
    if (below > SSDE_MAX_EXTENT_BYTES - item - above) { /* below + above + item, no overflow */
        return SSDE_LAYOUT_EXTENT_OVERFLOW;
    }
    if (empty) {
        return SSDE_LAYOUT_OK; /* nothing is read or written */
    }
    const uintptr_t p = (uintptr_t)t->data;
    if (p == 0) {
        return SSDE_LAYOUT_NULL_DATA;
    }
    if (p % (uintptr_t)item != 0) {
        return SSDE_LAYOUT_MISALIGNED;
    }
    if ((uintptr_t)below > p || (uintptr_t)(above + item) > UINTPTR_MAX - p) {
        return SSDE_LAYOUT_EXTENT_OVERFLOW; /* the view wraps around the address space */
    }
    return SSDE_LAYOUT_OK;
}

int
ssde_tensor_check(const ssde_tensor *t)
{
    int p = ssde_tensor_layout_problem(t);
    return p == SSDE_LAYOUT_OK ? SSDE_OK : p == SSDE_LAYOUT_DTYPE ? SSDE_ERR_DTYPE : SSDE_ERR_LAYOUT;
}
