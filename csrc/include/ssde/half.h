/*
 * float16 and bfloat16 conversions by bit manipulation (no compiler support
 * for _Float16 / __bf16 is assumed). Stores round to nearest, ties to even;
 * NaN stays NaN, infinities and subnormals are kept.
 */
#ifndef SSDE_HALF_H
#define SSDE_HALF_H

#include <stdint.h>
#include <string.h>

static inline float
ssde_bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t
ssde_float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* float32 value of every float16 bit pattern, filled once by ssde_runtime_init(); loads of
 * float16 data are one table lookup instead of a branchy bit conversion. */
extern float ssde_half_table[65536];

static inline float
ssde_half_to_float_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1fu) { /* inf or nan */
        return ssde_bits_to_float(sign | 0x7f800000u | (man << 13));
    }
    if (exp == 0) {
        if (man == 0) {
            return ssde_bits_to_float(sign);
        }
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return ssde_bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline float
ssde_half_to_float(uint16_t h)
{
    return ssde_half_table[h];
}

static inline uint16_t
ssde_float_to_half(float f)
{
    uint32_t u = ssde_float_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) { /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0u));
    }
    if (absu >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absu < 0x38800000u) { /* below the smallest normal half (2^-14) */
        /* value in units of 2^-24, rounded to nearest even */
        float a = ssde_bits_to_float(absu) * 16777216.0f;
        uint32_t q = (uint32_t)a;
        float rem = a - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1u))) {
            q += 1u;
        }
        return (uint16_t)(sign | q); /* q == 0x400 becomes the smallest normal */
    }
    /* normal: rebias exponent and round the 13 dropped mantissa bits */
    uint32_t v = absu - (112u << 23);
    uint32_t round = 0x0fffu + ((v >> 13) & 1u);
    v += round;
    return (uint16_t)(sign | (v >> 13));
}

static inline float
ssde_bf16_to_float(uint16_t b)
{
    return ssde_bits_to_float((uint32_t)b << 16);
}

static inline uint16_t
ssde_float_to_bf16(float f)
{
    uint32_t u = ssde_float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) { /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
