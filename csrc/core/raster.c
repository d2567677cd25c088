/* Triangle rasterization over 16 x 16 tiles (see ssde/raster.h). */
#include "ssde/raster.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* a * b into *out; 0 when it overflows (operands >= 0). */
static int
mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) {
        return 0;
    }
    if (a != 0 && b > INT64_MAX / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

/* bytes = n * elem, refusing counts that do not fit in size_t or int64. */
static int
bytes_ok(int64_t n, size_t elem, size_t *out)
{
    int64_t b;
    if (!mul_ok(n, (int64_t)elem, &b) || (uint64_t)b > (uint64_t)SIZE_MAX) {
        return 0;
    }
    *out = (size_t)b;
    return 1;
}

static inline double
edge(double ux, double uy, double vx, double vy, double px, double py)
{
    return (vx - ux) * (py - uy) - (vy - uy) * (px - ux);
}

/* Pixel index range [lo, hi] whose centres k + 0.5 lie in [a, b], clamped to
 * [0, n - 1]; returns 0 when empty. */
static int
pixel_range(double a, double b, int64_t n, int64_t *lo, int64_t *hi)
{
    double l = ceil(a - 0.5), h = floor(b - 0.5);
    if (!(l <= h) || h < 0.0 || l > (double)(n - 1)) {
        return 0;
    }
    *lo = l < 0.0 ? 0 : (int64_t)l;
    *hi = h > (double)(n - 1) ? n - 1 : (int64_t)h;
    return *lo <= *hi;
}

/* Whether a face takes part and its pixel bounding box (inclusive). */
static int
face_box(const double *c, int perspective, double near, int64_t H, int64_t W, int64_t box[4])
{
    for (int k = 0; k < 9; k++) {
        if (!isfinite(c[k])) {
            return 0;
        }
    }
    if (perspective && (c[2] <= near || c[5] <= near || c[8] <= near)) {
        return 0;
    }
    double A = edge(c[0], c[1], c[3], c[4], c[6], c[7]);
    if (!(fabs(A) > 0.0)) {
        return 0;
    }
    double xmin = fmin(c[0], fmin(c[3], c[6])), xmax = fmax(c[0], fmax(c[3], c[6]));
    double ymin = fmin(c[1], fmin(c[4], c[7])), ymax = fmax(c[1], fmax(c[4], c[7]));
    return pixel_range(xmin, xmax, W, &box[0], &box[1]) &&
           pixel_range(ymin, ymax, H, &box[2], &box[3]);
}

/* Rasterizes face f into the pixels [j0, j1] x [i0, i1] of the tile whose
 * top-left pixel is (ti, tj); zbuf is the tile's float64 depth buffer (+inf
 * where empty) so the depth test does not see float32 rounding. */
static void
raster_face(const double *c, int64_t f, int perspective, int64_t W, int64_t ti, int64_t tj,
            int64_t j0, int64_t j1, int64_t i0, int64_t i1, double *zbuf, int64_t *face_id,
            float *bary, float *depth)
{
    double ax = c[0], ay = c[1], az = c[2], bx = c[3], by = c[4], bz = c[5];
    double cx = c[6], cy = c[7], cz = c[8];
    double A = edge(ax, ay, bx, by, cx, cy);
    double sgn = A > 0.0 ? 1.0 : -1.0, absA = fabs(A);
    for (int64_t i = i0; i <= i1; i++) {
        double py = (double)i + 0.5;
        for (int64_t j = j0; j <= j1; j++) {
            double px = (double)j + 0.5;
            double e0 = edge(bx, by, cx, cy, px, py) * sgn;
            double e1 = edge(cx, cy, ax, ay, px, py) * sgn;
            double e2 = edge(ax, ay, bx, by, px, py) * sgn;
            if (e0 < 0.0 || e1 < 0.0 || e2 < 0.0) {
                continue;
            }
            double b0 = e0 / absA, b1 = e1 / absA, b2 = e2 / absA;
            double z;
            if (perspective) {
                double q0 = b0 / az, q1 = b1 / bz, q2 = b2 / cz;
                z = 1.0 / (q0 + q1 + q2);
                b0 = q0 * z;
                b1 = q1 * z;
                b2 = q2 * z;
            }
            else {
                z = b0 * az + b1 * bz + b2 * cz;
            }
            double *zb = zbuf + (i - ti) * SSDE_RASTER_TILE + (j - tj);
            if (!(z < *zb)) {
                continue; /* farther, equal (the lower face id stays) or NaN */
            }
            *zb = z;
            int64_t p = i * W + j;
            face_id[p] = f;
            depth[p] = (float)z;
            bary[3 * p] = (float)b0;
            bary[3 * p + 1] = (float)b1;
            bary[3 * p + 2] = (float)b2;
        }
    }
}

int
ssde_rasterize(const double *corners, int64_t n_faces, int64_t height, int64_t width,
               int perspective, double near, int64_t *face_id, float *bary, float *depth)
{
    if (n_faces < 0 || height < 0 || width < 0 || !isfinite(near)) {
        return SSDE_ERR_VALUE;
    }
    int64_t npix, nb3;
    size_t sz;
    if (!mul_ok(height, width, &npix) || !mul_ok(npix, 3, &nb3) || !bytes_ok(nb3, sizeof(float), &sz) ||
        !bytes_ok(npix, sizeof(int64_t), &sz)) {
        return SSDE_ERR_VALUE;
    }
    if (npix == 0) {
        return SSDE_OK;
    }
    const int64_t T = SSDE_RASTER_TILE;
    int64_t ntx = (width + T - 1) / T, nty = (height + T - 1) / T, ntiles = ntx * nty;
    size_t box_bytes, cnt_bytes;
    int64_t nbox;
    if (!mul_ok(n_faces, 4, &nbox) || !bytes_ok(nbox, sizeof(int64_t), &box_bytes) ||
        !bytes_ok(ntiles + 1, sizeof(int64_t), &cnt_bytes)) {
        return SSDE_ERR_VALUE;
    }
    int64_t *box = (int64_t *)malloc(box_bytes > 0 ? box_bytes : 1);
    int64_t *start = (int64_t *)calloc((size_t)(ntiles + 1), sizeof(int64_t));
    if (box == NULL || start == NULL) {
        free(box);
        free(start);
        return SSDE_ERR_NOMEM;
    }
    /* bin faces: count per tile, prefix sum, fill in increasing face order */
    for (int64_t f = 0; f < n_faces; f++) {
        int64_t *b = box + 4 * f;
        if (!face_box(corners + 9 * f, perspective, near, height, width, b)) {
            b[0] = -1;
            continue;
        }
        for (int64_t ty = b[2] / T; ty <= b[3] / T; ty++) {
            for (int64_t tx = b[0] / T; tx <= b[1] / T; tx++) {
                start[ty * ntx + tx + 1]++;
            }
        }
    }
    for (int64_t k = 0; k < ntiles; k++) {
        if (start[k + 1] > INT64_MAX - start[k]) {
            free(box);
            free(start);
            return SSDE_ERR_VALUE;
        }
        start[k + 1] += start[k];
    }
    size_t list_bytes, fill_bytes;
    if (!bytes_ok(start[ntiles], sizeof(int64_t), &list_bytes) ||
        !bytes_ok(ntiles, sizeof(int64_t), &fill_bytes)) {
        free(box);
        free(start);
        return SSDE_ERR_VALUE;
    }
    int64_t *list = (int64_t *)malloc(list_bytes > 0 ? list_bytes : 1);
    int64_t *fill = (int64_t *)malloc(fill_bytes);
    if (list == NULL || fill == NULL) {
        free(box);
        free(start);
        free(list);
        free(fill);
        return SSDE_ERR_NOMEM;
    }
    memcpy(fill, start, fill_bytes);
    for (int64_t f = 0; f < n_faces; f++) {
        const int64_t *b = box + 4 * f;
        if (b[0] < 0) {
            continue;
        }
        for (int64_t ty = b[2] / T; ty <= b[3] / T; ty++) {
            for (int64_t tx = b[0] / T; tx <= b[1] / T; tx++) {
                list[fill[ty * ntx + tx]++] = f;
            }
        }
    }
    free(fill);
    int64_t work = start[ntiles] * T * T + npix;
    int nthreads = ssde_effective_threads(work);
    (void)nthreads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1)
    for (int64_t k = 0; k < ntiles; k++) {
        int64_t ty = k / ntx, tx = k % ntx;
        int64_t i0 = ty * T, j0 = tx * T;
        int64_t i1 = i0 + T - 1 < height - 1 ? i0 + T - 1 : height - 1;
        int64_t j1 = j0 + T - 1 < width - 1 ? j0 + T - 1 : width - 1;
        for (int64_t i = i0; i <= i1; i++) {
            for (int64_t j = j0; j <= j1; j++) {
                int64_t p = i * width + j;
                face_id[p] = -1;
                depth[p] = 0.0f;
                bary[3 * p] = bary[3 * p + 1] = bary[3 * p + 2] = 0.0f;
            }
        }
        double zbuf[SSDE_RASTER_TILE * SSDE_RASTER_TILE];
        for (int64_t q = 0; q < T * T; q++) {
            zbuf[q] = INFINITY;
        }
        for (int64_t e = start[k]; e < start[k + 1]; e++) {
            int64_t f = list[e];
            const int64_t *b = box + 4 * f;
            int64_t a0 = b[0] > j0 ? b[0] : j0, a1 = b[1] < j1 ? b[1] : j1;
            int64_t c0 = b[2] > i0 ? b[2] : i0, c1 = b[3] < i1 ? b[3] : i1;
            raster_face(corners + 9 * f, f, perspective, width, i0, j0, a0, a1, c0, c1, zbuf,
                        face_id, bary, depth);
        }
    }
    free(list);
    free(box);
    free(start);
    return SSDE_OK;
}
