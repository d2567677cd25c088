/*
 * Per-dtype load/store helpers for kernels written once as macros.
 * Each floating dtype has a storage type T, an accumulation type ACC
 * (float32 for the 16-bit types) and LD/ST converting between them.
 */
#ifndef SSDE_DTYPE_DISPATCH_H
#define SSDE_DTYPE_DISPATCH_H

#include "ssde/half.h"
#include "ssde/ssde.h"

#define SSDE_LD_f32(p) (*(const float *)(p))
#define SSDE_ST_f32(p, v) (*(float *)(p) = (float)(v))
#define SSDE_LD_f64(p) (*(const double *)(p))
#define SSDE_ST_f64(p, v) (*(double *)(p) = (double)(v))
#define SSDE_LD_f16(p) ssde_half_to_float(*(const uint16_t *)(p))
#define SSDE_ST_f16(p, v) (*(uint16_t *)(p) = ssde_float_to_half((float)(v)))
#define SSDE_LD_bf16(p) ssde_bf16_to_float(*(const uint16_t *)(p))
#define SSDE_ST_bf16(p, v) (*(uint16_t *)(p) = ssde_float_to_bf16((float)(v)))

/* X(suffix, storage type, accumulation type) for every floating dtype. */
#define SSDE_FOR_EACH_FLOAT(X) \
    X(f32, float, float)       \
    X(f64, double, double)     \
    X(f16, uint16_t, float)    \
    X(bf16, uint16_t, float)

/* Picks fn_f32 / fn_f64 / fn_f16 / fn_bf16 by dtype, NULL otherwise. */
#define SSDE_PICK_FLOAT(dtype, prefix)                   \
    ((dtype) == SSDE_F32    ? prefix##_f32               \
     : (dtype) == SSDE_F64  ? prefix##_f64               \
     : (dtype) == SSDE_F16  ? prefix##_f16               \
     : (dtype) == SSDE_BF16 ? prefix##_bf16              \
                            : NULL)

static inline int
ssde_is_float(int dtype)
{
    return dtype == SSDE_F32 || dtype == SSDE_F64 || dtype == SSDE_F16 || dtype == SSDE_BF16;
}

#endif
