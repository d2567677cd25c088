/*
 * Window kernels: crop views out of a canvas and paste them back.
 *
 * A canvas is a tensor [*L, H, W] (L = leading dims, possibly none); views are
 * [N, *L, h, w]. Window i has the offset (top_i, left_i) and covers canvas rows
 * top_i .. top_i+h-1. Its column j lands on canvas column left_i + j, or, with
 * `circular`, on (left_i + j) mod W (the width wraps, any integer left is
 * allowed; the height never wraps). Requirements (checked by
 * ssde_windows_first_invalid; kernels return SSDE_ERR_INDEX otherwise):
 *   1 <= h <= H, 1 <= w <= W (h == 0 or w == 0 is allowed: nothing is touched),
 *   0 <= top_i <= H - h, and without `circular` 0 <= left_i <= W - w.
 *
 * Let f_i be the crop of window i (canvas -> view). Then
 *   crop_windows:         views[i]  = f_i(canvas)
 *   paste_windows_add:    canvas   += sum_i f_i^T(weights_i * views_i)   (adjoint)
 *   paste_windows_on_top: canvas    = views[i] on window i, in order i = 0..N-1
 *                                     (window N-1 ends on top; pixels no window
 *                                     covers keep the canvas' value)
 *   window_coverage:      out[H, W] = sum_i f_i^T(weights_i)             (overwrites out)
 *
 * 16-bit data are accumulated in float32 (paste_add loads a canvas row into a
 * float32 scratch, adds every window, and rounds once). Work is split over
 * output rows (crop) or canvas rows x leading indices (paste, coverage), so no
 * two threads write the same element; windows are visited in order inside.
 */
#ifndef SSDE_WINDOWS_H
#define SSDE_WINDOWS_H

#include "ssde/ssde.h"

/* A set of windows of one size. `offsets` holds n (top, left) pairs. */
typedef struct {
    int64_t n;
    int64_t h, w;
    const int64_t *offsets; /* [n][2], contiguous */
    int circular;
} ssde_windows;

/* Copies an int64/int32 tensor of shape [n, 2] (any strides) into dst[2n].
 * Returns SSDE_ERR_DTYPE / SSDE_ERR_SHAPE on a bad tensor. */
int ssde_offsets_to_i64(const ssde_tensor *offsets, int64_t *dst);

/* Index of the first window that does not fit a canvas of H x W, or -1 when
 * all fit. A window size larger than the canvas (or negative) returns 0 when
 * n > 0; callers check sizes first for a precise message. */
int64_t ssde_windows_first_invalid(const ssde_windows *win, int64_t H, int64_t W);

/* SSDE_OK when n * prod(L) * h * w (the elements the windows touch, with the
 * leading dims *L of `canvas` [*L, H, W]) fits in 2^61, so that every work
 * count of the kernels fits in int64; SSDE_ERR_VALUE otherwise. */
int ssde_windows_check_size(const ssde_tensor *canvas, const ssde_windows *win);

/* (left mod W) in [0, W) for circular windows, left otherwise. */
int64_t ssde_window_left(const ssde_windows *win, int64_t i, int64_t W);

/* views [N, *L, h, w] = crop of canvas [*L, H, W]. */
int ssde_crop_windows(ssde_tensor *views, const ssde_tensor *canvas, const ssde_windows *win);

/* canvas [*L, H, W] += sum_i f_i^T(weights_i * views_i). `weights` is NULL or
 * has the views' shape (broadcast inputs carry zero strides). */
int ssde_paste_windows_add(ssde_tensor *canvas, const ssde_tensor *views,
                           const ssde_tensor *weights, const ssde_windows *win);

/* canvas [*L, H, W]: window i's pixels are set to views[i], i = 0..N-1 in order. */
int ssde_paste_windows_on_top(ssde_tensor *canvas, const ssde_tensor *views,
                              const ssde_windows *win);

/* out [H, W] = sum_i f_i^T(weights_i), or the count of covering windows when
 * `weights` is NULL. `weights` has shape [N, h, w] (broadcast inputs carry zero
 * strides) and out's dtype. */
int ssde_window_coverage(ssde_tensor *out, const ssde_tensor *weights, const ssde_windows *win);

/* ---- helpers shared with composite.c ------------------------------------ */

/* One contiguous run of a window row on the canvas: view columns
 * [vcol, vcol + len) land on canvas columns [ccol, ccol + len). A window row
 * has one run, or two when a circular window wraps. Returns the count. */
typedef struct {
    int64_t vcol, ccol, len;
} ssde_run;

static inline int
ssde_window_runs(int64_t left, int64_t w, int64_t W, ssde_run runs[2])
{
    /* left is already in [0, W - w] (plain) or [0, W) (circular) */
    int64_t first = W - left < w ? W - left : w;
    runs[0].vcol = 0;
    runs[0].ccol = left;
    runs[0].len = first;
    if (first == w) {
        return 1;
    }
    runs[1].vcol = first;
    runs[1].ccol = 0;
    runs[1].len = w - first;
    return 2;
}

/* Per-dtype row primitives on an accumulation buffer (float32 for float32,
 * float16 and bfloat16 data, float64 for float64). Strides in bytes. */
typedef struct {
    size_t item;     /* bytes per stored element */
    size_t acc_item; /* bytes per accumulator element */
    /* acc[k] = src[k] */
    void (*load)(void *acc, const char *src, int64_t ss, int64_t n);
    /* dst[k] = acc[k] */
    void (*store)(char *dst, int64_t ds, const void *acc, int64_t n);
    /* acc[k] += wt[k] * src[k]  (wt may be NULL: weight 1) */
    void (*add)(void *acc, const char *src, int64_t ss, const char *wt, int64_t ws, int64_t n);
    /* num[k] += wt[k] * src[k]; den[k] += wt[k] */
    void (*add_nd)(void *num, void *den, const char *src, int64_t ss, const char *wt, int64_t ws,
                   int64_t n);
    /* den[k] += wt[k] */
    void (*add_w)(void *den, const char *wt, int64_t ws, int64_t n);
    /* den[k] += 1 */
    void (*add_one)(void *den, int64_t n);
    /* dst[k] = num[k] / den[k] where den[k] > 0; elsewhere 0 when zero_uncovered,
     * else left alone. */
    void (*store_div)(char *dst, int64_t ds, const void *num, const void *den, int64_t n,
                      int zero_uncovered);
    /* number of k with !(den[k] > 0) */
    int64_t (*count_uncovered)(const void *den, int64_t n);
} ssde_row_ops;

/* The primitives of a floating dtype, NULL for other dtypes. */
const ssde_row_ops *ssde_row_ops_for(int dtype);

/* Byte offset of leading index l (row-major over shape[0..nlead-1]) given
 * strides in elements and the item size. */
static inline int64_t
ssde_lead_offset(int64_t l, int nlead, const int64_t *shape, const int64_t *stride,
                 int64_t item)
{
    int64_t off = 0;
    for (int d = nlead - 1; d >= 0; d--) {
        int64_t s = shape[d];
        off += (l % s) * stride[d];
        l /= s;
    }
    return off * item;
}

/* Strided copy of n items of `item` bytes (memcpy when both are dense). */
void ssde_copy_items(char *dst, int64_t ds, const char *src, int64_t ss, int64_t n, size_t item);

#endif
