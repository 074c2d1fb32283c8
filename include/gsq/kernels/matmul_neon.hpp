// matmul_neon.hpp: the GSE matmul micro-kernel for AArch64 with the dot-product extension (sdot).
#pragma once

#include "gsq/kernels/matmul_scalar.hpp"

#if GSQ_ARM64
#include <arm_neon.h>

namespace gsq::kernels {

// A 4 x 8 tile.  sdot multiplies signed bytes directly, 4 per int32 lane, so A needs no bias.
// One vector holds the 4 K positions of all 4 rows; the by-element form of sdot broadcasts one
// row's 4 bytes from it.  8 int32 and 8 float accumulators, 2 B vectors and the A
// vector use 19 of the 32 registers.
template <>
struct MatmulKernel<Isa::kNeonDot> {
  static constexpr int kMr = 4;
  static constexpr int kNr = 8;
  static constexpr bool kBiasedRhs = false;

  template <int GroupSize>
  GSQ_TARGET_NEON_DOT static void run(const MatmulTile& t) noexcept {
    float32x4_t acc[kMr][2];
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
    const std::uint8_t* b = t.b;
    for (Index g = 0; g < t.groups; ++g) {
      int32x4_t d[kMr][2];
      for (int r = 0; r < kMr; ++r) d[r][0] = d[r][1] = vdupq_n_s32(0);
      const std::int8_t* a = t.a + g * GroupSize;
      for (int s = 0; s < GroupSize / 4; ++s) {
        // The 4 K positions of the 4 rows, gathered into one vector for the by-element sdot.
        const int32x4_t rows = {
            detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + 4 * s)),
            detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + t.lda + 4 * s)),
            detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + 2 * t.lda + 4 * s)),
            detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + 3 * t.lda + 4 * s))};
        const int8x16_t av = vreinterpretq_s8_s32(rows);
        const int8x16_t b0 = vld1q_s8(reinterpret_cast<const std::int8_t*>(b + s * kNr * 4));
        const int8x16_t b1 = vld1q_s8(reinterpret_cast<const std::int8_t*>(b + s * kNr * 4 + 16));
        d[0][0] = vdotq_laneq_s32(d[0][0], b0, av, 0);
        d[0][1] = vdotq_laneq_s32(d[0][1], b1, av, 0);
        d[1][0] = vdotq_laneq_s32(d[1][0], b0, av, 1);
        d[1][1] = vdotq_laneq_s32(d[1][1], b1, av, 1);
        d[2][0] = vdotq_laneq_s32(d[2][0], b0, av, 2);
        d[2][1] = vdotq_laneq_s32(d[2][1], b1, av, 2);
        d[3][0] = vdotq_laneq_s32(d[3][0], b0, av, 3);
        d[3][1] = vdotq_laneq_s32(d[3][1], b1, av, 3);
      }
      const std::uint8_t* eb = b + GroupSize * kNr;
      const int32x4_t eb0 = vld1q_s32(reinterpret_cast<const std::int32_t*>(eb));
      const int32x4_t eb1 = vld1q_s32(reinterpret_cast<const std::int32_t*>(eb + 16));
      for (int r = 0; r < kMr; ++r) {
        const int32x4_t er = vdupq_n_s32(std::int32_t{t.ea[r * t.lde + g]} << 23);
        acc[r][0] =
            vfmaq_f32(acc[r][0], vcvtq_f32_s32(d[r][0]), vreinterpretq_f32_s32(vaddq_s32(eb0, er)));
        acc[r][1] =
            vfmaq_f32(acc[r][1], vcvtq_f32_s32(d[r][1]), vreinterpretq_f32_s32(vaddq_s32(eb1, er)));
      }
      b += rhs_group_bytes(GroupSize, kNr);
    }
    // Epilogue: widen to double so the scaling is exact, narrow once (as in the scalar kernel).
    const float64x2_t scale = vdupq_n_f64(t.scale);
    for (int r = 0; r < t.rows; ++r) {
      float out[kNr];
      for (int v = 0; v < 2; ++v) {
        const float64x2_t lo = vmulq_f64(vcvt_f64_f32(vget_low_f32(acc[r][v])), scale);
        const float64x2_t hi = vmulq_f64(vcvt_high_f64_f32(acc[r][v]), scale);
        vst1q_f32(out + 4 * v, vcvt_high_f32_f64(vcvt_f32_f64(lo), hi));
      }
      float* c = t.c + r * t.ldc;
      for (int j = 0; j < t.cols; ++j)
        c[j] = t.beta == 0.0f ? out[j] : std::fma(t.beta, c[j], out[j]);
    }
  }
};

}  // namespace gsq::kernels

#endif  // GSQ_ARM64
