/* Step kernels: linear combinations behind Tweedie / DDIM / CFG, and the fused
 * SyncSDE update (see ssde/steps.h for the math). */
#include "ssde/steps.h"

#include <math.h>

#include "ssde/dtype_dispatch.h"
#include "ssde/elementwise.h"
#include "ssde/half_convert.h"

/* float16 kernels stage blocks through float32 buffers (bulk conversion, F16C where the CPU
 * has it) and run the float32 kernel on them: one rounding per stored value, as before. */
#define SSDE_STAGE 256

static void
stage_f16(ssde_inner_fn f32fn, int nops, int64_t n, char *const *p, const int64_t *s,
          const void *prm)
{
    float buf[SSDE_MAX_OPERANDS][SSDE_STAGE];
    char *ptrs[SSDE_MAX_OPERANDS];
    int64_t fs[SSDE_MAX_OPERANDS];
    for (int i = 0; i < nops; i++) {
        ptrs[i] = (char *)buf[i];
        fs[i] = (int64_t)sizeof(float);
    }
    for (int64_t off = 0; off < n; off += SSDE_STAGE) {
        int64_t m = n - off < SSDE_STAGE ? n - off : SSDE_STAGE;
        for (int i = 1; i < nops; i++) {
            ssde_half_to_float_n(p[i] + off * s[i], s[i], buf[i], m);
        }
        f32fn(m, ptrs, fs, prm);
        ssde_float_to_half_n(buf[0], p[0] + off * s[0], s[0], m);
    }
}

int
ssde_ddim_coefficients(double abar_t, double abar_s, double eta, ssde_ddim_coeffs *out)
{
    if (!(abar_t > 0.0 && abar_t <= 1.0) || !(abar_s > 0.0 && abar_s <= 1.0) ||
        !(eta >= 0.0)) {
        return SSDE_ERR_VALUE;
    }
    double var = 0.0;
    if (eta > 0.0 && abar_t < 1.0) {
        /* DDIM's sigma^2 = (1-abar_s)/(1-abar_t) * (1 - abar_t/abar_s) */
        var = eta * eta * (1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s);
        if (var < 0.0) {
            var = 0.0;
        }
    }
    double dir = 1.0 - abar_s - var;
    if (dir < 0.0) {
        dir = 0.0;
    }
    double sqrt_t = sqrt(abar_t);
    double sqrt_1mt = sqrt(1.0 - abar_t);
    out->sigma = sqrt(var);
    out->c_x = sqrt(abar_s) / sqrt_t;
    out->c_eps = sqrt(dir) - sqrt(abar_s) * sqrt_1mt / sqrt_t;
    /* gamma = -c_eps / sqrt(1-abar_t); at abar_t = 1 there is no noise left to pull. */
    out->gamma = abar_t < 1.0 ? -out->c_eps / sqrt_1mt : 0.0;
    return SSDE_OK;
}

typedef struct {
    double a, b, c;
} lincomb_params;

/* ---- out = a x + b y ---------------------------------------------------- */
#define DEF_LINCOMB2(SUF, T, ACC)                                                        \
    static void lincomb2_##SUF(int64_t n, char *const *p, const int64_t *s,            \
                               const void *prm)                                         \
    {                                                                                   \
        const lincomb_params *P = prm;                                                  \
        const ACC a = (ACC)P->a, b = (ACC)P->b;                                         \
        const int64_t z = (int64_t)sizeof(T);                                           \
        if (s[0] == z && s[1] == z && s[2] == z) {                                      \
            T *o = (T *)p[0];                                                           \
            const T *x = (const T *)p[1], *y = (const T *)p[2];                         \
            for (int64_t i = 0; i < n; i++) {                                           \
                SSDE_ST_##SUF(o + i, a * SSDE_LD_##SUF(x + i) + b * SSDE_LD_##SUF(y + i)); \
            }                                                                           \
        }                                                                               \
        else {                                                                          \
            for (int64_t i = 0; i < n; i++) {                                           \
                ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                \
                ACC yv = SSDE_LD_##SUF(p[2] + i * s[2]);                                \
                SSDE_ST_##SUF(p[0] + i * s[0], a * xv + b * yv);                        \
            }                                                                           \
        }                                                                               \
    }
SSDE_FOR_EACH_FLOAT(DEF_LINCOMB2)

static void
lincomb2_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(lincomb2_f32, 3, n, p, s, prm);
}

/* ---- out = a x + b y + c w ---------------------------------------------- */
#define DEF_LINCOMB3(SUF, T, ACC)                                                        \
    static void lincomb3_##SUF(int64_t n, char *const *p, const int64_t *s,            \
                               const void *prm)                                         \
    {                                                                                   \
        const lincomb_params *P = prm;                                                  \
        const ACC a = (ACC)P->a, b = (ACC)P->b, c = (ACC)P->c;                          \
        const int64_t z = (int64_t)sizeof(T);                                           \
        if (s[0] == z && s[1] == z && s[2] == z && s[3] == z) {                         \
            T *o = (T *)p[0];                                                           \
            const T *x = (const T *)p[1], *y = (const T *)p[2], *w = (const T *)p[3];   \
            for (int64_t i = 0; i < n; i++) {                                           \
                SSDE_ST_##SUF(o + i, a * SSDE_LD_##SUF(x + i) + b * SSDE_LD_##SUF(y + i) + \
                                         c * SSDE_LD_##SUF(w + i));                     \
            }                                                                           \
        }                                                                               \
        else {                                                                          \
            for (int64_t i = 0; i < n; i++) {                                           \
                ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                \
                ACC yv = SSDE_LD_##SUF(p[2] + i * s[2]);                                \
                ACC wv = SSDE_LD_##SUF(p[3] + i * s[3]);                                \
                SSDE_ST_##SUF(p[0] + i * s[0], a * xv + b * yv + c * wv);               \
            }                                                                           \
        }                                                                               \
    }
SSDE_FOR_EACH_FLOAT(DEF_LINCOMB3)

static void
lincomb3_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(lincomb3_f32, 4, n, p, s, prm);
}

/* ---- fused SyncSDE: out = cx x + ce e + cz w - g m (x - r) --------------- */
typedef struct {
    double cx, ce, cz, pull;
} sync_params;

#define SYNC_BODY(ACC, xv, ev, rv, mv, wv) \
    ((ACC)cx * (xv) + (ACC)ce * (ev) + (ACC)cz * (wv) - (ACC)g * (mv) * ((xv) - (rv)))

/* Operands: 0 out, 1 x, 2 eps, 3 ref, 4 mask, (5 noise). The mask is often a
 * per-pixel map broadcast over channels; after coalescing its inner stride is
 * still one element, so the fast path covers it. */
#define DEF_SYNC(SUF, T, ACC)                                                            \
    static void sync4_##SUF(int64_t n, char *const *p, const int64_t *s, const void *prm) \
    {                                                                                   \
        const sync_params *P = prm;                                                     \
        const ACC cx = (ACC)P->cx, ce = (ACC)P->ce, g = (ACC)P->pull, cz = 0;           \
        const int64_t z = (int64_t)sizeof(T);                                           \
        if (s[0] == z && s[1] == z && s[2] == z && s[3] == z && s[4] == z) {            \
            T *o = (T *)p[0];                                                           \
            const T *x = (const T *)p[1], *e = (const T *)p[2];                         \
            const T *r = (const T *)p[3], *m = (const T *)p[4];                         \
            for (int64_t i = 0; i < n; i++) {                                           \
                ACC xv = SSDE_LD_##SUF(x + i);                                          \
                SSDE_ST_##SUF(o + i, SYNC_BODY(ACC, xv, SSDE_LD_##SUF(e + i),           \
                                               SSDE_LD_##SUF(r + i), SSDE_LD_##SUF(m + i), 0)); \
            }                                                                           \
        }                                                                               \
        else {                                                                          \
            for (int64_t i = 0; i < n; i++) {                                           \
                ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                \
                ACC ev = SSDE_LD_##SUF(p[2] + i * s[2]);                                \
                ACC rv = SSDE_LD_##SUF(p[3] + i * s[3]);                                \
                ACC mv = SSDE_LD_##SUF(p[4] + i * s[4]);                                \
                SSDE_ST_##SUF(p[0] + i * s[0], SYNC_BODY(ACC, xv, ev, rv, mv, 0));      \
            }                                                                           \
        }                                                                               \
        (void)cz;                                                                       \
    }                                                                                   \
    static void sync5_##SUF(int64_t n, char *const *p, const int64_t *s, const void *prm) \
    {                                                                                   \
        const sync_params *P = prm;                                                     \
        const ACC cx = (ACC)P->cx, ce = (ACC)P->ce, g = (ACC)P->pull, cz = (ACC)P->cz;  \
        for (int64_t i = 0; i < n; i++) {                                               \
            ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                    \
            ACC ev = SSDE_LD_##SUF(p[2] + i * s[2]);                                    \
            ACC rv = SSDE_LD_##SUF(p[3] + i * s[3]);                                    \
            ACC mv = SSDE_LD_##SUF(p[4] + i * s[4]);                                    \
            ACC wv = SSDE_LD_##SUF(p[5] + i * s[5]);                                    \
            SSDE_ST_##SUF(p[0] + i * s[0], SYNC_BODY(ACC, xv, ev, rv, mv, wv));         \
        }                                                                               \
    }
SSDE_FOR_EACH_FLOAT(DEF_SYNC)

static void
sync4_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(sync4_f32, 5, n, p, s, prm);
}

static void
sync5_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(sync5_f32, 6, n, p, s, prm);
}

/* Picks the kernel for a dtype; float16 goes through the staged float32 kernel. */
#define PICK(dtype, prefix) ((dtype) == SSDE_F16 ? prefix##_f16_staged : SSDE_PICK_FLOAT(dtype, prefix))

static int
same_float_dtype(int n, const ssde_tensor *ops)
{
    if (!ssde_is_float(ops[0].dtype)) {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if (ops[i].dtype != ops[0].dtype) {
            return 0;
        }
    }
    return 1;
}

int
ssde_lincomb2(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *y, double a, double b)
{
    ssde_tensor ops[3] = {*out, *x, *y};
    if (!same_float_dtype(3, ops)) {
        return SSDE_ERR_DTYPE;
    }
    lincomb_params P = {a, b, 0.0};
    return ssde_elementwise(3, ops, PICK(out->dtype, lincomb2), &P);
}

int
ssde_lincomb3(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *y, const ssde_tensor *z,
              double a, double b, double c)
{
    ssde_tensor ops[4] = {*out, *x, *y, *z};
    if (!same_float_dtype(4, ops)) {
        return SSDE_ERR_DTYPE;
    }
    lincomb_params P = {a, b, c};
    return ssde_elementwise(4, ops, PICK(out->dtype, lincomb3), &P);
}

int
ssde_syncsde_update(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *eps,
                    const ssde_tensor *ref, const ssde_tensor *mask, const ssde_tensor *z,
                    double c_x, double c_eps, double c_z, double pull)
{
    ssde_tensor ops[6] = {*out, *x, *eps, *ref, *mask};
    int nops = 5;
    if (z != NULL) {
        ops[5] = *z;
        nops = 6;
    }
    if (!same_float_dtype(nops, ops)) {
        return SSDE_ERR_DTYPE;
    }
    sync_params P = {c_x, c_eps, c_z, pull};
    if (nops == 5) {
        return ssde_elementwise(5, ops, PICK(out->dtype, sync4), &P);
    }
    return ssde_elementwise(6, ops, PICK(out->dtype, sync5), &P);
}

/* ---- masked update: out = (1 - c m) x + m (a y + b w) --------------------
 * Operands: 0 out, 1 x, 2 mask (broadcast), 3 y, (4 w). With c = 1, a = 1, b = 0 it is the
 * replacement of x by y where m = 1 (exact there: (1 - 1) x = 0 for finite x); with c = 0 a
 * masked move x + m (a y + b w), e.g. a Langevin step on the unknown pixels only. */
typedef struct {
    double c, a, b;
} masked_params;

#define MASKED_BODY(ACC, xv, mv, yv, wv) \
    (((ACC)1 - c * (mv)) * (xv) + (mv) * (a * (yv) + b * (wv)))

#define DEF_MASKED(SUF, T, ACC)                                                          \
    static void masked4_##SUF(int64_t n, char *const *p, const int64_t *s, const void *prm) \
    {                                                                                   \
        const masked_params *P = prm;                                                   \
        const ACC c = (ACC)P->c, a = (ACC)P->a, b = 0;                                  \
        for (int64_t i = 0; i < n; i++) {                                               \
            ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                    \
            ACC mv = SSDE_LD_##SUF(p[2] + i * s[2]);                                    \
            ACC yv = SSDE_LD_##SUF(p[3] + i * s[3]);                                    \
            SSDE_ST_##SUF(p[0] + i * s[0], MASKED_BODY(ACC, xv, mv, yv, 0));            \
        }                                                                               \
        (void)b;                                                                        \
    }                                                                                   \
    static void masked5_##SUF(int64_t n, char *const *p, const int64_t *s, const void *prm) \
    {                                                                                   \
        const masked_params *P = prm;                                                   \
        const ACC c = (ACC)P->c, a = (ACC)P->a, b = (ACC)P->b;                          \
        for (int64_t i = 0; i < n; i++) {                                               \
            ACC xv = SSDE_LD_##SUF(p[1] + i * s[1]);                                    \
            ACC mv = SSDE_LD_##SUF(p[2] + i * s[2]);                                    \
            ACC yv = SSDE_LD_##SUF(p[3] + i * s[3]);                                    \
            ACC wv = SSDE_LD_##SUF(p[4] + i * s[4]);                                    \
            SSDE_ST_##SUF(p[0] + i * s[0], MASKED_BODY(ACC, xv, mv, yv, wv));           \
        }                                                                               \
    }
SSDE_FOR_EACH_FLOAT(DEF_MASKED)

static void
masked4_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(masked4_f32, 4, n, p, s, prm);
}

static void
masked5_f16_staged(int64_t n, char *const *p, const int64_t *s, const void *prm)
{
    stage_f16(masked5_f32, 5, n, p, s, prm);
}

int
ssde_masked_update(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *mask,
                   const ssde_tensor *y, const ssde_tensor *w, double c, double a, double b)
{
    ssde_tensor ops[5] = {*out, *x, *mask, *y};
    int nops = 4;
    if (w != NULL) {
        ops[4] = *w;
        nops = 5;
    }
    if (!same_float_dtype(nops, ops)) {
        return SSDE_ERR_DTYPE;
    }
    masked_params P = {c, a, b};
    if (nops == 4) {
        return ssde_elementwise(4, ops, PICK(out->dtype, masked4), &P);
    }
    return ssde_elementwise(5, ops, PICK(out->dtype, masked5), &P);
}
