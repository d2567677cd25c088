/* Status strings, dtype facts and the threading runtime of the core. */
#include "ssde/ssde.h"

#include <pthread.h>

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
    ssde_threads = n < 1 ? 1 : n;
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
    for (int d = 0; d < t->ndim; d++) {
        n *= t->shape[d];
    }
    return n;
}
