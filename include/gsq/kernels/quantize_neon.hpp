// quantize_neon.hpp: float32 <-> GSE-INT line kernels for AArch64 Advanced SIMD (NEON).
#pragma once

#include "gsq/kernels/quantize_scalar.hpp"

#if GSQ_ARM64
#include <arm_neon.h>

namespace gsq::kernels {

// USHL shifts left by a signed per-lane count and right when the count is negative, giving 0
// once the count reaches 32 either way.  So mag = m << -sh and f = m << (32 - sh) reproduce the
// scalar 64-bit shift for every sh.  The count is read from the lane's low byte as a signed
// value, hence the clamp of sh to [-64, 64], which changes no result (m < 2^24).
template <>
struct LineKernels<Isa::kNeon> {
  static inline uint32x4_t mix32(uint32x4_t x) noexcept {
    x = veorq_u32(x, vshrq_n_u32(x, 16));
    x = vmulq_u32(x, vdupq_n_u32(0x7FEB352Du));
    x = veorq_u32(x, vshrq_n_u32(x, 15));
    x = vmulq_u32(x, vdupq_n_u32(0x846CA68Bu));
    return veorq_u32(x, vshrq_n_u32(x, 16));
  }

  /// Encodes 4 values at quantum s into int32 codes; counts saturations into `saturated`.
  template <int Bits, Rounding R>
  static inline int32x4_t encode4(const float* src, int s, std::uint32_t key, std::uint32_t pos,
                                  uint32x4_t& saturated) noexcept {
    const uint32x4_t one = vdupq_n_u32(1);
    const uint32x4_t u = vreinterpretq_u32_f32(vld1q_f32(src));
    const uint32x4_t a = vandq_u32(u, vdupq_n_u32(0x7FFFFFFFu));
    const uint32x4_t biased = vshrq_n_u32(a, 23);
    const uint32x4_t implicit =
        vandq_u32(vcgtq_u32(biased, vdupq_n_u32(0)), vdupq_n_u32(0x800000u));
    const uint32x4_t m = vorrq_u32(vandq_u32(a, vdupq_n_u32(0x7FFFFFu)), implicit);
    int32x4_t sh = vsubq_s32(vdupq_n_s32(s + 150), vreinterpretq_s32_u32(vmaxq_u32(biased, one)));
    sh = vmaxq_s32(vminq_s32(sh, vdupq_n_s32(64)), vdupq_n_s32(-64));
    uint32x4_t mag = vshlq_u32(m, vnegq_s32(sh));
    const uint32x4_t f = vshlq_u32(m, vsubq_s32(vdupq_n_s32(32), sh));
    const uint32x4_t half = vdupq_n_u32(0x80000000u);
    uint32x4_t up = vdupq_n_u32(0);
    if constexpr (R == Rounding::kNearestEven) {
      const uint32x4_t odd = vtstq_u32(mag, one);
      up = vorrq_u32(vcgtq_u32(f, half), vandq_u32(vceqq_u32(f, half), odd));
    } else if constexpr (R == Rounding::kNearestAway) {
      up = vcgeq_u32(f, half);
    } else if constexpr (R == Rounding::kStochastic) {
      const uint32_t lane_init[4] = {0, 1, 2, 3};
      const uint32x4_t lanes =
          vmulq_u32(vld1q_u32(lane_init), vdupq_n_u32(gsq::detail::kPositionStep));
      const uint32x4_t r =
          mix32(vaddq_u32(vdupq_n_u32(key + pos * gsq::detail::kPositionStep), lanes));
      up = vcgtq_u32(f, vmvnq_u32(r));
    } else {
      (void)key, (void)pos, (void)half;
    }
    mag = vsubq_u32(mag, up);
    const uint32x4_t qmax = vdupq_n_u32(GseFormat<Bits>::kQMax);
    saturated = vaddq_u32(saturated, vshrq_n_u32(vcgtq_u32(mag, qmax), 31));
    mag = vminq_u32(mag, qmax);
    const int32x4_t sign = vshrq_n_s32(vreinterpretq_s32_u32(u), 31);
    return vsubq_s32(veorq_s32(vreinterpretq_s32_u32(mag), sign), sign);
  }

  template <int Bits, int GroupSize, Rounding R>
  static LineResult quantize(const float* src, int n, std::uint32_t key, std::uint32_t pos0,
                             std::int8_t* codes, std::int16_t* quantum) noexcept {
    LineResult result;
    const uint32x4_t abs_mask = vdupq_n_u32(0x7FFFFFFFu);
    for (int g = 0; g * GroupSize < n; ++g) {
      const float* x = src + g * GroupSize;
      uint32x4_t amax = vdupq_n_u32(0);
      for (int i = 0; i < GroupSize; i += 4) {
        amax = vmaxq_u32(amax, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i)), abs_mask));
      }
      const std::uint32_t a_max = vmaxvq_u32(amax);
      if (a_max >= 0x7F800000u) {
        result.finite = false;
        return result;
      }
      std::int8_t* c = codes + g * GroupSize;
      if (a_max == 0) {
        quantum[g] = kZeroGroup;
        for (int i = 0; i < GroupSize; i += 16) vst1q_s8(c + i, vdupq_n_s8(0));
        continue;
      }
      const int q = detail::group_quantum<Bits>(a_max);
      quantum[g] = static_cast<std::int16_t>(q);
      const auto pos = pos0 + static_cast<std::uint32_t>(g * GroupSize);
      uint32x4_t saturated = vdupq_n_u32(0);
      for (int i = 0; i < GroupSize; i += 16) {
        const auto p = pos + static_cast<std::uint32_t>(i);
        const int32x4_t c0 = encode4<Bits, R>(x + i, q, key, p, saturated);
        const int32x4_t c1 = encode4<Bits, R>(x + i + 4, q, key, p + 4, saturated);
        const int32x4_t c2 = encode4<Bits, R>(x + i + 8, q, key, p + 8, saturated);
        const int32x4_t c3 = encode4<Bits, R>(x + i + 12, q, key, p + 12, saturated);
        const int16x8_t lo = vcombine_s16(vmovn_s32(c0), vmovn_s32(c1));
        const int16x8_t hi = vcombine_s16(vmovn_s32(c2), vmovn_s32(c3));
        vst1q_s8(c + i, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
      }
      result.saturated += static_cast<std::int32_t>(vaddvq_u32(saturated));
    }
    return result;
  }

  static void dequantize(const std::int8_t* codes, int n, int s, float* dst) noexcept {
    const bool split = s < -126;
    const float32x4_t pre = vdupq_n_f32(detail::pow2_float(split ? s + 64 : s));
    const float32x4_t post = vdupq_n_f32(detail::pow2_float(-64));
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const int16x8_t c16 = vmovl_s8(vld1_s8(codes + i));
      float32x4_t lo = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(c16))), pre);
      float32x4_t hi = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(c16))), pre);
      if (split) {
        lo = vmulq_f32(lo, post);
        hi = vmulq_f32(hi, post);
      }
      vst1q_f32(dst + i, lo);
      vst1q_f32(dst + i + 4, hi);
    }
    if (i < n) LineKernels<Isa::kScalar>::dequantize(codes + i, n - i, s, dst + i);
  }
};

// The dot-product extension adds nothing to conversion.
template <>
struct LineKernels<Isa::kNeonDot> : LineKernels<Isa::kNeon> {};

}  // namespace gsq::kernels

#endif  // GSQ_ARM64
