// half.hpp: bfloat16 and IEEE float16 as bit patterns, with exact widening to float32.
#pragma once

#include <cstdint>
#include <cstring>

namespace gsq {

/// A bfloat16 value held as its bit pattern (no compiler half type needed).
struct Bf16 {
  std::uint16_t bits;
};
/// An IEEE 754 binary16 value held as its bit pattern.
struct Fp16 {
  std::uint16_t bits;
};
static_assert(sizeof(Bf16) == 2 && sizeof(Fp16) == 2, "half types are exactly two bytes");

/// The bit pattern of a float32.
inline std::uint32_t float_bits(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
/// The float32 with bit pattern `u`.
inline float bits_float(std::uint32_t u) noexcept {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// Widens bf16 to float32. Exact (bf16 is the top half of a float32).
inline float to_float(Bf16 h) noexcept { return bits_float(std::uint32_t{h.bits} << 16); }

/// Widens fp16 to float32. Exact for every pattern: subnormals become normals, Inf stays Inf,
/// NaN stays NaN with its payload shifted into the top of the float32 payload.
inline float to_float(Fp16 h) noexcept {
  const std::uint32_t sign = std::uint32_t{h.bits & 0x8000u} << 16;
  const std::uint32_t exp = (h.bits >> 10) & 0x1Fu;
  std::uint32_t man = h.bits & 0x3FFu;
  if (exp == 0x1F) return bits_float(sign | 0x7F800000u | (man << 13));
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (man << 13));
  if (man == 0) return bits_float(sign);
  // Subnormal: value = man * 2^-24.  Normalise so the leading one becomes the implicit bit.
  int e = 113;  // biased float32 exponent of 2^-14, the fp16 subnormal scale with man in [1, 2)
  while ((man & 0x400u) == 0) {
    man <<= 1;
    --e;
  }
  return bits_float(sign | (static_cast<std::uint32_t>(e) << 23) | ((man & 0x3FFu) << 13));
}

/// Narrows float32 to bf16 with round-to-nearest-even; NaN stays a (quiet) NaN.
inline Bf16 to_bf16(float x) noexcept {
  const std::uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return Bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return Bf16{static_cast<std::uint16_t>(rounded >> 16)};
}

/// Narrows float32 to fp16 with round-to-nearest-even; overflow gives Inf, NaN stays NaN.
inline Fp16 to_fp16(float x) noexcept {
  const std::uint32_t u = float_bits(x);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return Fp16{static_cast<std::uint16_t>(sign | 0x7E00u)};
  if (a >= 0x477FF000u) return Fp16{static_cast<std::uint16_t>(sign | 0x7C00u)};  // >= 65520
  const int exp = static_cast<int>(a >> 23) - 127;
  if (exp >= -14) {  // normal fp16: drop 13 significand bits with nearest-even
    const std::uint32_t r = a + 0xFFFu + ((a >> 13) & 1u) - (112u << 23);
    return Fp16{static_cast<std::uint16_t>(sign | (r >> 13))};
  }
  if (exp < -25) return Fp16{sign};  // below half the smallest subnormal: rounds to zero
  // Subnormal fp16: value / 2^-24 rounded to nearest-even.
  const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const int shift = -exp - 1;  // 14..24: m * 2^(exp-23) / 2^-24 = m >> (-exp - 1)
  const std::uint32_t q = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  const std::uint32_t up = (rem > half || (rem == half && (q & 1u))) ? 1u : 0u;
  return Fp16{static_cast<std::uint16_t>(sign | (q + up))};
}

}  // namespace gsq
