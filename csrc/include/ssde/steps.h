/*
 * Diffusion step kernels: Tweedie, DDIM (eta >= 0), classifier-free guidance
 * and the fused SyncSDE update. Scalars are explicit (abar values, not
 * scheduler state); all tensors share one shape (inputs may broadcast through
 * zero strides) and one floating dtype (float16/bfloat16 accumulate in float32).
 */
#ifndef SSDE_STEPS_H
#define SSDE_STEPS_H

#include "ssde/ssde.h"

/* Scalar coefficients of one DDIM step t -> s (design notes, section 2):
 *   x0  = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)                 (Tweedie)
 *   sigma = eta sqrt((1-abar_s)/(1-abar_t)) sqrt(1 - abar_t/abar_s)
 *   x_s = sqrt(abar_s) x0 + sqrt(1-abar_s-sigma^2) eps + sigma z
 *       = c_x x_t + c_eps eps + sigma z
 * gamma is the SyncSDE pull coefficient: substituting the correlation score
 * -M (x - ref) / (lambda (1-abar_t)) into the step moves x_s by
 * -gamma * (1/lambda) * M (x - ref), with
 *   gamma = sqrt(abar_s/abar_t) - sqrt((1-abar_s-sigma^2)/(1-abar_t)),
 * which for eta = 0 is the paper's gamma_t. */
typedef struct {
    double c_x;
    double c_eps;
    double sigma;
    double gamma;
} ssde_ddim_coeffs;

int ssde_ddim_coefficients(double abar_t, double abar_s, double eta, ssde_ddim_coeffs *out);

/* out = a x + b y */
int ssde_lincomb2(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *y, double a,
                  double b);

/* out = a x + b y + c z */
int ssde_lincomb3(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *y,
                  const ssde_tensor *z, double a, double b, double c);

/* Fused SyncSDE update in one pass:
 *   out = c_x x + c_eps eps + c_z z - pull * mask * (x - ref)
 * with pull = gamma_t * inv_lambda_t. `z` may be NULL (then c_z is ignored). */
int ssde_syncsde_update(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *eps,
                        const ssde_tensor *ref, const ssde_tensor *mask, const ssde_tensor *z,
                        double c_x, double c_eps, double c_z, double pull);

/* Masked update in one pass:
 *   out = (1 - c * mask) * x + mask * (a * y + b * w)
 * replacement (c = 1, a = 1, w = NULL: y where mask = 1, x where 0, exactly) or a masked move
 * (c = 0: x + mask * (a y + b w)). `w` may be NULL (then b is ignored). */
int ssde_masked_update(ssde_tensor *out, const ssde_tensor *x, const ssde_tensor *mask,
                       const ssde_tensor *y, const ssde_tensor *w, double c, double a, double b);

#endif
