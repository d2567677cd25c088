/*
 * Bulk float16 <-> float32 conversion for kernels that stage 16-bit data through float32
 * buffers. On x86-64 CPUs with F16C (detected at run time) contiguous runs use the hardware
 * conversion, 8 values at a time; otherwise the scalar conversions of half.h. Both round to
 * nearest even, so the results are bit-identical either way.
 */
#ifndef SSDE_HALF_CONVERT_H
#define SSDE_HALF_CONVERT_H

#include <stdint.h>

/* dst[k] = float(src[k * stride_bytes]) for k < n */
void ssde_half_to_float_n(const char *src, int64_t stride_bytes, float *dst, int64_t n);
/* dst[k * stride_bytes] = half(src[k]) for k < n */
void ssde_float_to_half_n(const float *src, char *dst, int64_t stride_bytes, int64_t n);
/* Called once by ssde_runtime_init(). */
void ssde_half_convert_init(void);

#endif
