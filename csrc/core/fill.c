/* Nearest-seed fill: exact Euclidean nearest-feature transform (Felzenszwalb
 * and Huttenlocher 2012, "Distance transforms of sampled functions"), run once
 * over the whole image and once per labelled island (see ssde/raster.h). */
#include "ssde/raster.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define FILL_MAX_SIDE (INT64_C(1) << 24)

static int
mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) {
        return 0;
    }
    *out = a * b;
    return 1;
}

/* A rectangle [r0, r0 + h) x [c0, c0 + w) of the image and the label it works
 * on (-1: every seed counts and every texel is written). */
typedef struct {
    int64_t r0, c0, h, w;
    int32_t label;
} region;

static inline int
is_seed(const int32_t *seeds, const int32_t *labels, int32_t label, int64_t p)
{
    return seeds[p] != 0 && (label < 0 || labels[p] == label);
}

/* Pass 1, one column c of the region: srow[r * w + c] = row (image coords) of
 * the nearest seed in that column, -1 when the column has none. */
static void
column_pass(const region *g, int64_t W, const int32_t *seeds, const int32_t *labels, int64_t c,
            int64_t *srow)
{
    int64_t last = -1;
    for (int64_t r = 0; r < g->h; r++) {
        int64_t p = (g->r0 + r) * W + g->c0 + c;
        if (is_seed(seeds, labels, g->label, p)) {
            last = g->r0 + r;
        }
        srow[r * g->w + c] = last;
    }
    last = -1;
    for (int64_t r = g->h - 1; r >= 0; r--) {
        int64_t p = (g->r0 + r) * W + g->c0 + c;
        if (is_seed(seeds, labels, g->label, p)) {
            last = g->r0 + r;
        }
        int64_t *s = srow + r * g->w + c;
        int64_t y = g->r0 + r;
        if (last >= 0 && (*s < 0 || last - y < y - *s)) {
            *s = last;
        }
    }
}

/* Pass 2, one row r of the region: the lower envelope of the parabolas
 * (x - q)^2 + f(q), f(q) = (y - srow[q])^2, gives every x its nearest seed.
 * v (w entries) and z (w + 1 entries) are scratch. */
static void
row_pass(const region *g, int64_t W, const int32_t *labels, int64_t r, const int64_t *srow,
         int64_t *v, double *z, int64_t *nearest)
{
    const int64_t *s = srow + r * g->w;
    int64_t y = g->r0 + r;
    int64_t k = -1;
    for (int64_t q = 0; q < g->w; q++) {
        if (s[q] < 0) {
            continue;
        }
        double fq = (double)((y - s[q]) * (y - s[q])) + (double)(q * q);
        while (k >= 0) {
            int64_t u = v[k];
            double fu = (double)((y - s[u]) * (y - s[u])) + (double)(u * u);
            double x = (fq - fu) / (2.0 * (double)(q - u));
            if (x <= z[k]) {
                k--;
            }
            else {
                k++;
                v[k] = q;
                z[k] = x;
                break;
            }
        }
        if (k < 0) {
            k = 0;
            v[0] = q;
            z[0] = -INFINITY;
        }
    }
    int64_t n = k + 1; /* parabolas in the envelope */
    k = 0;
    for (int64_t x = 0; x < g->w; x++) {
        int64_t p = y * W + g->c0 + x;
        if (g->label >= 0 && labels[p] != g->label) {
            continue;
        }
        if (n == 0) {
            nearest[p] = -1;
            continue;
        }
        while (k + 1 < n && z[k + 1] < (double)x) {
            k++;
        }
        int64_t q = v[k];
        nearest[p] = s[q] * W + g->c0 + q;
    }
}

/* Runs both passes over one region with scratch of h * w + 2 w + 1 slots. */
static int
fill_region(const region *g, int64_t W, const int32_t *seeds, const int32_t *labels,
            int64_t *nearest, int nthreads)
{
    int64_t area;
    if (!mul_ok(g->h, g->w, &area) || (uint64_t)area > SIZE_MAX / sizeof(int64_t)) {
        return SSDE_ERR_VALUE;
    }
    int64_t *srow = (int64_t *)malloc((size_t)area * sizeof(int64_t) + 1);
    if (srow == NULL) {
        return SSDE_ERR_NOMEM;
    }
    int status = SSDE_OK;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < g->w; c++) {
            column_pass(g, W, seeds, labels, c, srow);
        }
        int64_t *v = (int64_t *)malloc((size_t)g->w * sizeof(int64_t) + 1);
        double *z = (double *)malloc((size_t)(g->w + 1) * sizeof(double));
        int ok = v != NULL && z != NULL;
        if (!ok) {
#pragma omp atomic write
            status = SSDE_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < g->h; r++) {
            if (ok) {
                row_pass(g, W, labels, r, srow, v, z, nearest);
            }
        }
        free(v);
        free(z);
    }
    free(srow);
    return status;
}

int
ssde_nearest_seed(const int32_t *seeds, const int32_t *labels, int64_t n_labels, int64_t height,
                  int64_t width, int64_t *nearest)
{
    if (height < 0 || width < 0 || height > FILL_MAX_SIDE || width > FILL_MAX_SIDE ||
        n_labels < 0 || n_labels > INT32_MAX) {
        return SSDE_ERR_VALUE;
    }
    int64_t npix = height * width; /* < 2^48: no overflow */
    if (npix == 0) {
        return SSDE_OK;
    }
    int64_t *bbox = NULL;
    int64_t *has_seed = NULL;
    if (labels != NULL && n_labels > 0) {
        if ((uint64_t)n_labels > SIZE_MAX / (5 * sizeof(int64_t))) {
            return SSDE_ERR_VALUE;
        }
        bbox = (int64_t *)malloc((size_t)n_labels * 4 * sizeof(int64_t));
        has_seed = (int64_t *)calloc((size_t)n_labels, sizeof(int64_t));
        if (bbox == NULL || has_seed == NULL) {
            free(bbox);
            free(has_seed);
            return SSDE_ERR_NOMEM;
        }
        for (int64_t l = 0; l < n_labels; l++) {
            bbox[4 * l] = height;
            bbox[4 * l + 1] = -1;
            bbox[4 * l + 2] = width;
            bbox[4 * l + 3] = -1;
        }
    }
    if (labels != NULL) { /* check every label before writing anything */
        for (int64_t p = 0; p < npix; p++) {
            int32_t l = labels[p];
            if (l < -1 || (int64_t)l >= n_labels) {
                free(bbox);
                free(has_seed);
                return SSDE_ERR_INDEX;
            }
            if (l >= 0) {
                int64_t r = p / width, c = p % width, *b = bbox + 4 * l;
                b[0] = r < b[0] ? r : b[0];
                b[1] = r > b[1] ? r : b[1];
                b[2] = c < b[2] ? c : b[2];
                b[3] = c > b[3] ? c : b[3];
                if (seeds[p] != 0) {
                    has_seed[l] = 1;
                }
            }
        }
    }
    int nthreads = ssde_effective_threads(npix);
    region all = {0, 0, height, width, -1};
    int status = fill_region(&all, width, seeds, labels, nearest, nthreads);
    /* islands: the texels of label L take the nearest seed of label L */
    for (int64_t l = 0; status == SSDE_OK && bbox != NULL && l < n_labels; l++) {
        const int64_t *b = bbox + 4 * l;
        if (!has_seed[l]) {
            continue;
        }
        region g = {b[0], b[2], b[1] - b[0] + 1, b[3] - b[2] + 1, (int32_t)l};
        int64_t area = g.h * g.w;
        status = fill_region(&g, width, seeds, labels, nearest, ssde_effective_threads(area));
    }
    free(bbox);
    free(has_seed);
    return status;
}
