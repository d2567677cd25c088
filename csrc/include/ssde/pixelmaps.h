/*
 * Pixel-map view kernels: dihedral maps (rotations, flips, transposes), the
 * column skew, index-map permutations of pixels and CSR sparse linear maps.
 *
 * The image kernels act on the last two dimensions [..., H, W] of a tensor;
 * every leading dimension (batch, views, channels) is mapped the same way.
 * The CSR kernels act on the last dimension only. Data tensors have one
 * floating dtype (float32/float64/float16/bfloat16); the pure data moves
 * (dihedral, skew, permutation) copy bits and so are exact for every dtype,
 * the CSR maps accumulate 16-bit types in float32.
 *
 * Outputs must not overlap inputs (the binding checks it). Every check of an
 * index map's data happens before the first write: a kernel that returns an
 * error has not touched its output.
 */
#ifndef SSDE_PIXELMAPS_H
#define SSDE_PIXELMAPS_H

#include "ssde/ssde.h"

/* ---- dihedral maps ------------------------------------------------------ */
/* On an H x W image (the NumPy equivalents on the last two axes):
 *   IDENTITY       out[i,j] = in[i, j]                 x
 *   ROT90_CW       out[i,j] = in[H-1-j, i]   (W x H)   np.rot90(x, -1, (-2,-1))
 *   ROT90_CCW      out[i,j] = in[j, W-1-i]   (W x H)   np.rot90(x,  1, (-2,-1))
 *   ROT180         out[i,j] = in[H-1-i, W-1-j]         np.rot90(x,  2, (-2,-1))
 *   HFLIP          out[i,j] = in[i, W-1-j]             x[..., :, ::-1]
 *   VFLIP          out[i,j] = in[H-1-i, j]             x[..., ::-1, :]
 *   TRANSPOSE      out[i,j] = in[j, i]       (W x H)   np.swapaxes(x, -1, -2)
 *   ANTITRANSPOSE  out[i,j] = in[H-1-j, W-1-i] (W x H) np.swapaxes(x[..., ::-1, ::-1], -1, -2)
 * (the reflection across the anti-diagonal). */
typedef enum {
    SSDE_DIH_IDENTITY = 0,
    SSDE_DIH_ROT90_CW = 1,
    SSDE_DIH_ROT90_CCW = 2,
    SSDE_DIH_ROT180 = 3,
    SSDE_DIH_HFLIP = 4,
    SSDE_DIH_VFLIP = 5,
    SSDE_DIH_TRANSPOSE = 6,
    SSDE_DIH_ANTITRANSPOSE = 7,
    SSDE_DIH_COUNT = 8
} ssde_dihedral_op;

/* "identity", "rot90_cw", ...; NULL for an unknown code. */
const char *ssde_dihedral_name(int op);
/* The code of a name, or -1. */
int ssde_dihedral_from_name(const char *name);
/* 1 when the op's output is W x H. */
int ssde_dihedral_swaps_axes(int op);
/* The op undoing `op` (rot90_cw <-> rot90_ccw; the others are involutions). */
int ssde_dihedral_inverse(int op);

/* The integer index map of `op` on an H x W input, in the form taken by
 * ssde_index_map2d: out[i,j] = in[m[0] i + m[1] j + m[2], m[3] i + m[4] j + m[5]].
 * Returns SSDE_ERR_VALUE for an unknown op or a negative H or W. */
int ssde_dihedral_index_map(int op, int64_t H, int64_t W, int64_t m[6]);

/* out[..., i, j] = in[..., m[0] i + m[1] j + m[2], m[3] i + m[4] j + m[5]] for
 * every (i, j) of out's last two dims. Leading dims of out and in must agree
 * (SSDE_ERR_SHAPE); a map reaching outside in gives SSDE_ERR_INDEX. The copy
 * is tiled when the map transposes (cache-friendly), row-wise otherwise. */
int ssde_index_map2d(ssde_tensor *out, const ssde_tensor *in, const int64_t m[6]);

/* ssde_index_map2d with the map of `op`; out must be [..., H, W] or
 * [..., W, H] as the op says. */
int ssde_dihedral(ssde_tensor *out, const ssde_tensor *in, int op);

/* ---- skew --------------------------------------------------------------- */
/* Column w rolled circularly along the height by
 *   d_w = (int64_t)(factor * (double)(w - H/2))   (C truncation toward zero):
 *   out[..., i, w] = in[..., (i - d_w) mod H, w]     (inverse = 0)
 *   out[..., i, w] = in[..., (i + d_w) mod H, w]     (inverse = 1, the exact inverse)
 * out has in's shape. A non-finite factor, or one whose shifts do not fit in
 * 2^62, gives SSDE_ERR_VALUE. */
int ssde_skew(ssde_tensor *out, const ssde_tensor *in, double factor, int inverse);
/* The shift d_w of column w (the formula above). */
int64_t ssde_skew_shift(double factor, int64_t H, int64_t w);

/* ---- errors of index-map data ------------------------------------------- */
typedef enum {
    SSDE_MAPERR_NONE = 0,
    SSDE_MAPERR_INDEX_RANGE = 1,    /* index[pos] = value outside [0, limit) */
    SSDE_MAPERR_DUPLICATE = 2,      /* index[pos] = value, also at index[other] */
    SSDE_MAPERR_INDPTR_START = 3,   /* indptr[0] = value, must be 0 */
    SSDE_MAPERR_INDPTR_ORDER = 4,   /* indptr[pos] = value < indptr[pos-1] = other */
    SSDE_MAPERR_INDPTR_END = 5,     /* indptr[pos] = value (the last), must be limit = nnz */
    SSDE_MAPERR_INDICES_RANGE = 6,  /* indices[pos] = value outside [0, limit) */
} ssde_maperr_kind;

typedef struct {
    int kind; /* ssde_maperr_kind */
    int64_t pos;
    int64_t value;
    int64_t other;
    int64_t limit;
} ssde_map_error;

/* ---- pixel permutations ------------------------------------------------- */
/* Over the flattened last two dims (P = H W, row-major p = i W + j):
 *   gather  (scatter = 0): out.flat[p] = in.flat[index[p]]
 *   scatter (scatter = 1): out.flat[index[p]] = in.flat[p]
 * index is a 1-D (or H x W) int64/int32 tensor of P entries (any strides).
 * Entries outside [0, P) give SSDE_ERR_INDEX; a scatter index that is not a
 * permutation gives SSDE_ERR_VALUE; details go to *err when err != NULL.
 * out has in's shape. A scatter runs as a gather through the inverse
 * permutation, so threads never write the same element. */
int ssde_permute_pixels(ssde_tensor *out, const ssde_tensor *in, const ssde_tensor *index,
                        int scatter, ssde_map_error *err);

/* ---- CSR sparse linear maps --------------------------------------------- */
/* A = (indptr, indices, values) is an n_rows x n_cols CSR matrix with
 * n_rows = len(indptr) - 1 (indptr/indices int64 or int32, values of x's
 * floating dtype; all 1-D, any strides).
 *   forward (adjoint = 0): x [..., n_cols] -> out [..., n_rows],
 *       out[..., r] = sum_{k in [indptr[r], indptr[r+1])} values[k] x[..., indices[k]]
 *   adjoint (adjoint = 1): x [..., n_rows] -> out [..., n_cols],  out = A^T x
 * Checks (before any write; details in *err): indptr[0] == 0 (SSDE_ERR_VALUE),
 * indptr non-decreasing (SSDE_ERR_VALUE), indptr[-1] == len(indices) ==
 * len(values) (SSDE_ERR_VALUE / SSDE_ERR_SHAPE), indices in [0, n_cols)
 * (SSDE_ERR_INDEX). The forward map copies blocks of up to 8 slices of x
 * transposed into scratch and runs each output row as a sparse dot product
 * over contiguous 8-vectors (threads own output rows); the adjoint scatters
 * each block of slices into its thread's own accumulator (threads own
 * slices). Every output element sums its terms in increasing entry order, so
 * results do not depend on the blocking or the thread count. */
int ssde_csr_apply(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *indptr,
                   const ssde_tensor *indices, const ssde_tensor *values, int64_t n_cols,
                   int adjoint, ssde_map_error *err);

/* out [n_cols] = A^T 1 (the column sums of A, in values' dtype); equal to
 * ssde_csr_apply(adjoint = 1) on a tensor of ones, bit for bit. */
int ssde_csr_coverage(ssde_tensor *out, const ssde_tensor *indptr, const ssde_tensor *indices,
                      const ssde_tensor *values, int64_t n_cols, ssde_map_error *err);

#endif
