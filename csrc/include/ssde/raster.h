/*
 * Triangle rasterization and nearest-seed fill for mesh texturing.
 *
 * The rasterizer works on triangles already placed on the pixel grid: each
 * face gives its three corners as (x, y, z), x and y in pixels (pixel (i, j)
 * has its centre at x = j + 0.5, y = i + 0.5), z the view depth. Corners are
 * per face, not shared, so the same kernel rasterizes camera views (screen
 * positions of the vertices) and UV space (texel positions of the UV corners,
 * where seams give one vertex several positions).
 *
 * Coverage: a pixel centre p is inside a face when its three edge functions
 *   e_0 = E(b, c, p), e_1 = E(c, a, p), e_2 = E(a, b, p),
 *   E(u, v, p) = (v.x - u.x)(p.y - u.y) - (v.y - u.y)(p.x - u.x),
 * all have the sign of the doubled area A = E(a, b, c) or are 0 (both windings
 * count: no back-face culling; edges are inclusive). Faces with A = 0, with a
 * non-finite corner, or (perspective) with a corner at z <= near are skipped.
 * Screen barycentrics are b_k = e_k / A.
 *   orthographic: depth = sum_k b_k z_k, barycentrics b_k;
 *   perspective:  depth = 1 / sum_k (b_k / z_k), barycentrics (b_k / z_k) depth
 *                 (perspective-correct: they interpolate view-space attributes).
 * The nearest depth wins; on equal depth the lower face id wins. Background
 * pixels get face -1, barycentrics 0 and depth 0.
 *
 * Work is split into 16 x 16 pixel tiles: faces are binned to the tiles their
 * bounding box touches (in increasing face order), then tiles run in parallel.
 * Results do not depend on the thread count.
 */
#ifndef SSDE_RASTER_H
#define SSDE_RASTER_H

#include "ssde/ssde.h"

#define SSDE_RASTER_TILE 16

/* corners: [n_faces, 3, 3] float64, contiguous (x, y, z per corner).
 * face_id [height, width] int64, bary [height, width, 3] float32 and depth
 * [height, width] float32, all contiguous, are written. perspective != 0 selects
 * the perspective rule above. height, width >= 0, n_faces >= 0; sizes whose
 * byte counts overflow give SSDE_ERR_VALUE, scratch failures SSDE_ERR_NOMEM
 * (outputs untouched in both cases). */
int ssde_rasterize(const double *corners, int64_t n_faces, int64_t height, int64_t width,
                   int perspective, double near, int64_t *face_id, float *bary, float *depth);

/*
 * Nearest-seed fill (exact Euclidean nearest-feature transform, Felzenszwalb
 * and Huttenlocher's two-pass lower envelope of parabolas).
 *
 * seeds [height, width] int32 (non-zero = seed), labels NULL or [height, width]
 * int32 in [-1, n_labels). nearest [height, width] int64 receives for every
 * texel the flat index r * width + c of a seed at the smallest Euclidean
 * distance (itself when it is a seed), or -1 when there is no seed at all.
 * With labels, a texel of label L >= 0 takes the nearest seed of label L when
 * island L has a seed, and the nearest seed of any label otherwise (texels of
 * label -1 lie outside every island and take the nearest seed of any label).
 * A label outside [-1, n_labels) gives SSDE_ERR_INDEX (nothing written);
 * height or width above 2^24 gives SSDE_ERR_VALUE.
 */
int ssde_nearest_seed(const int32_t *seeds, const int32_t *labels, int64_t n_labels,
                      int64_t height, int64_t width, int64_t *nearest);

#endif
