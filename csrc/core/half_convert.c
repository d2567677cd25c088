/* Bulk float16 conversion with a run-time F16C path (see ssde/half_convert.h). */
#include "ssde/half_convert.h"

#include "ssde/half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SSDE_HAVE_F16C_PATH 1
#include <immintrin.h>

__attribute__((target("avx,f16c"))) static void
half_to_float_f16c(const uint16_t *src, float *dst, int64_t n)
{
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + k));
        _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(h));
    }
    for (; k < n; k++) {
        dst[k] = ssde_half_to_float(src[k]);
    }
}

__attribute__((target("avx,f16c"))) static void
float_to_half_f16c(const float *src, uint16_t *dst, int64_t n)
{
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + k), h);
    }
    for (; k < n; k++) {
        dst[k] = ssde_float_to_half(src[k]);
    }
}
#endif

static int use_f16c = 0;

void
ssde_half_convert_init(void)
{
#ifdef SSDE_HAVE_F16C_PATH
    __builtin_cpu_init();
    use_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}

void
ssde_half_to_float_n(const char *src, int64_t stride_bytes, float *dst, int64_t n)
{
    if (stride_bytes == 0) {
        float v = ssde_half_to_float(*(const uint16_t *)src);
        for (int64_t k = 0; k < n; k++) {
            dst[k] = v;
        }
        return;
    }
#ifdef SSDE_HAVE_F16C_PATH
    if (use_f16c && stride_bytes == 2) {
        half_to_float_f16c((const uint16_t *)src, dst, n);
        return;
    }
#endif
    for (int64_t k = 0; k < n; k++) {
        dst[k] = ssde_half_to_float(*(const uint16_t *)(src + k * stride_bytes));
    }
}

void
ssde_float_to_half_n(const float *src, char *dst, int64_t stride_bytes, int64_t n)
{
#ifdef SSDE_HAVE_F16C_PATH
    if (use_f16c && stride_bytes == 2) {
        float_to_half_f16c(src, (uint16_t *)dst, n);
        return;
    }
#endif
    for (int64_t k = 0; k < n; k++) {
        *(uint16_t *)(dst + k * stride_bytes) = ssde_float_to_half(src[k]);
    }
}
