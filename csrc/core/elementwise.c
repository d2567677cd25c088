/* The strided elementwise engine (see ssde/elementwise.h). */
#include "ssde/elementwise.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Target number of elements per block when one row is split between threads. */
#define SSDE_BLOCK_ELEMS 16384

typedef struct {
    int ndim;
    int64_t shape[SSDE_MAX_DIMS];
    int64_t stride[SSDE_MAX_OPERANDS][SSDE_MAX_DIMS]; /* bytes */
} ew_layout;

/* Drops size-1 dimensions and merges neighbours that are contiguous for every
 * operand, so a dense tensor becomes one long row. */
static void
coalesce(int nops, const ssde_tensor *ops, ew_layout *L)
{
    const ssde_tensor *o = &ops[0];
    L->ndim = 0;
    for (int d = 0; d < o->ndim; d++) {
        if (o->shape[d] == 1) {
            continue;
        }
        int k = L->ndim;
        int merge = k > 0;
        for (int i = 0; merge && i < nops; i++) {
            int64_t item = (int64_t)ssde_dtype_size(ops[i].dtype);
            int64_t inner = ops[i].stride[d] * item;
            if (L->stride[i][k - 1] != inner * o->shape[d]) {
                merge = 0;
            }
        }
        if (merge) {
            L->shape[k - 1] *= o->shape[d];
            for (int i = 0; i < nops; i++) {
                L->stride[i][k - 1] = ops[i].stride[d] * (int64_t)ssde_dtype_size(ops[i].dtype);
            }
        }
        else {
            L->shape[k] = o->shape[d];
            for (int i = 0; i < nops; i++) {
                L->stride[i][k] = ops[i].stride[d] * (int64_t)ssde_dtype_size(ops[i].dtype);
            }
            L->ndim = k + 1;
        }
    }
    if (L->ndim == 0) { /* a single element */
        L->ndim = 1;
        L->shape[0] = 1;
        for (int i = 0; i < nops; i++) {
            L->stride[i][0] = 0;
        }
    }
}

int
ssde_elementwise(int nops, const ssde_tensor *ops, ssde_inner_fn fn, const void *params)
{
    if (nops < 1 || nops > SSDE_MAX_OPERANDS) {
        return SSDE_ERR_VALUE;
    }
    for (int i = 0; i < nops; i++) {
        SSDE_CHECK_TENSOR(&ops[i]);
    }
    for (int i = 1; i < nops; i++) {
        if (ops[i].ndim != ops[0].ndim) {
            return SSDE_ERR_SHAPE;
        }
        for (int d = 0; d < ops[0].ndim; d++) {
            if (ops[i].shape[d] != ops[0].shape[d]) {
                return SSDE_ERR_SHAPE;
            }
        }
    }
    int64_t total = ssde_numel(&ops[0]);
    if (total == 0) {
        return SSDE_OK;
    }
    ew_layout L;
    coalesce(nops, ops, &L);
    int last = L.ndim - 1;
    int64_t inner = L.shape[last];
    int64_t rows = total / inner;
    int nthreads = ssde_effective_threads(total);
    /* Split rows into pieces when there are too few rows to feed the team. */
    int64_t pieces = 1;
    if (nthreads > 1 && rows < 4 * nthreads) {
        pieces = (inner + SSDE_BLOCK_ELEMS - 1) / SSDE_BLOCK_ELEMS;
        int64_t want = (4 * nthreads + rows - 1) / rows;
        if (pieces > want) {
            pieces = want;
        }
        if (pieces < 1) {
            pieces = 1;
        }
    }
    int64_t piece_len = (inner + pieces - 1) / pieces;
    int64_t nblocks = rows * pieces;
    int64_t inner_strides[SSDE_MAX_OPERANDS];
    for (int i = 0; i < nops; i++) {
        inner_strides[i] = L.stride[i][last];
    }

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t row = b / pieces;
        int64_t start = (b % pieces) * piece_len;
        int64_t len = inner - start < piece_len ? inner - start : piece_len;
        char *ptrs[SSDE_MAX_OPERANDS];
        for (int i = 0; i < nops; i++) {
            ptrs[i] = ops[i].data + start * inner_strides[i];
        }
        int64_t r = row;
        for (int d = last - 1; d >= 0; d--) {
            int64_t idx = r % L.shape[d];
            r /= L.shape[d];
            for (int i = 0; i < nops; i++) {
                ptrs[i] += idx * L.stride[i][d];
            }
        }
        if (len > 0) {
            fn(len, ptrs, inner_strides, params);
        }
    }
    return SSDE_OK;
}
