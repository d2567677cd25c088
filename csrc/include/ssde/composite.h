/*
 * Compositing kernels: normalize an accumulated numerator by a denominator,
 * and the one-call canonical window average of MultiDiffusion / SyncTweedies.
 *
 *   normalize_accumulated: out = num / den       where den > 0
 *   window_average:        canvas = sum_i f_i^T(w_i y_i) / sum_i f_i^T(w_i)
 *                                                where the denominator > 0
 * (f_i = crop of window i, see ssde/windows.h; w_i = 1 without weights.)
 *
 * Uncovered pixels. A pixel is covered when its denominator is > 0; a
 * denominator that is 0, negative or NaN makes it uncovered, and the policy
 * decides what is written there:
 *   SSDE_UNCOVERED_KEEP  leave the output's existing value (pass the previous
 *                        state as the output to keep it);
 *   SSDE_UNCOVERED_ZERO  write 0;
 *   SSDE_UNCOVERED_ERROR return SSDE_ERR_VALUE (with the number of uncovered
 *                        elements in *n_uncovered) if any pixel is uncovered,
 *                        checked BEFORE anything is written.
 * Accumulation is in float32 for 16-bit data, float64 for float64.
 */
#ifndef SSDE_COMPOSITE_H
#define SSDE_COMPOSITE_H

#include "ssde/ssde.h"
#include "ssde/windows.h"

typedef enum {
    SSDE_UNCOVERED_KEEP = 0,
    SSDE_UNCOVERED_ZERO = 1,
    SSDE_UNCOVERED_ERROR = 2,
} ssde_uncovered_policy;

/* out = num / den where den > 0 (policy elsewhere). den has num's shape
 * (broadcast inputs carry zero strides) and dtype; out may alias num exactly.
 * With SSDE_UNCOVERED_ERROR, *n_uncovered (if not NULL) receives the number of
 * distinct den elements that are not > 0 (zero-stride dims counted once). */
int ssde_normalize_accumulated(ssde_tensor *out, const ssde_tensor *num, const ssde_tensor *den,
                               int policy, int64_t *n_uncovered);

/* canvas [*L, H, W] = sum_i f_i^T(w_i views_i) / sum_i f_i^T(w_i) where the
 * denominator > 0 (policy elsewhere). views [N, *L, h, w]; weights NULL or of
 * the views' shape (zero strides for broadcast) and dtype. With
 * SSDE_UNCOVERED_ERROR, *n_uncovered receives the number of uncovered canvas
 * elements (over [*L, H, W]). One pass per canvas row: numerator and
 * denominator of the row are built in a per-thread scratch, then written. */
int ssde_window_average(ssde_tensor *canvas, const ssde_tensor *views, const ssde_tensor *weights,
                        const ssde_windows *win, int policy, int64_t *n_uncovered);

#endif
