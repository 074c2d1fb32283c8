// matmul_avx512_vnni.hpp: the GSE matmul micro-kernel for AVX-512 VNNI (vpdpbusd).
#pragma once

#include "gsq/kernels/matmul_scalar.hpp"

#if GSQ_X86
#include <immintrin.h>

// See quantize_avx512.hpp: GCC 12 false positive on unmasked AVX-512 intrinsics (PR 105593).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define GSQ_POP_GCC12_PR105593
#endif

namespace gsq::kernels {

namespace detail {

/// r = acc * scale rounded once, for 16 outputs: one float multiply when the scale is an exact
/// normal float (see MatmulTile::scale_f), else through double, where the product is exact.
GSQ_TARGET_AVX512 inline __m512 scale16(__m512 acc, const MatmulTile& t) noexcept {
  if (t.float_scale) return _mm512_mul_ps(acc, _mm512_set1_ps(t.scale_f));
  const __m512d scale = _mm512_set1_pd(t.scale);
  const __m512d lo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(acc)), scale);
  const __m512d hi = _mm512_mul_pd(
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))), scale);
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

/// The epilogue for the lanes of one row in `mask`: C = r, or fma(beta, C, r).
GSQ_TARGET_AVX512 inline void epilogue16(__m512 acc, const MatmulTile& t, float* c,
                                         __mmask16 mask) noexcept {
  __m512 r = scale16(acc, t);
  if (t.beta != 0.0f)
    r = _mm512_fmadd_ps(_mm512_set1_ps(t.beta), _mm512_maskz_loadu_ps(mask, c), r);
  _mm512_mask_storeu_ps(c, mask, r);
}

}  // namespace detail

// A 6 x 32 tile: 12 int32 accumulators for the current group and 12 float accumulators for the
// running sum, two B vectors and one broadcast register (27 of 32 zmm).  Per K step of 4, two
// 64-byte loads of B and six 4-byte broadcasts of A feed 12 vpdpbusd (768 multiply-adds).
//
// vpdpbusd multiplies unsigned by signed bytes, so B is packed as b + 128 and each row's int32
// accumulator starts from the compensation -128 * sum(a) (matmul_scalar.hpp): the group sum
// comes out exact.  Per group and accumulator the scale costs one integer add (the exponent
// bits of 2^(Ea + Eb)), one int -> float conversion and one FMA, against 8 vpdpbusd for G = 32.
template <>
struct MatmulKernel<Isa::kAvx512Vnni> {
  static constexpr int kMr = 6;
  static constexpr int kNr = 32;
  static constexpr bool kBiasedRhs = true;

  template <int GroupSize>
  GSQ_TARGET_AVX512VNNI static void run(const MatmulTile& t) noexcept {
    __m512 acc[kMr][2];
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const std::uint8_t* b = t.b;
    for (Index g = 0; g < t.groups; ++g) {
      __m512i d[kMr][2];
      for (int r = 0; r < kMr; ++r) d[r][0] = d[r][1] = _mm512_set1_epi32(t.comp[r * t.lde + g]);
      const std::int8_t* a = t.a + g * GroupSize;
#pragma GCC unroll 16
      for (int s = 0; s < GroupSize / 4; ++s) {
        const __m512i b0 = _mm512_loadu_si512(b + s * kNr * 4);
        const __m512i b1 = _mm512_loadu_si512(b + s * kNr * 4 + 64);
        for (int r = 0; r < kMr; ++r) {
          const __m512i av = _mm512_set1_epi32(
              detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + r * t.lda + 4 * s)));
          d[r][0] = _mm512_dpbusd_epi32(d[r][0], b0, av);
          d[r][1] = _mm512_dpbusd_epi32(d[r][1], b1, av);
        }
      }
      const __m512i eb0 = _mm512_loadu_si512(b + GroupSize * kNr);
      const __m512i eb1 = _mm512_loadu_si512(b + GroupSize * kNr + 64);
      for (int r = 0; r < kMr; ++r) {
        const __m512i er = _mm512_set1_epi32(std::int32_t{t.ea[r * t.lde + g]} << 23);
        acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][0]),
                                    _mm512_castsi512_ps(_mm512_add_epi32(eb0, er)), acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][1]),
                                    _mm512_castsi512_ps(_mm512_add_epi32(eb1, er)), acc[r][1]);
      }
      b += rhs_group_bytes(GroupSize, kNr);
    }
    const int cols0 = std::min(t.cols, 16);
    const int cols1 = std::max(t.cols - 16, 0);
    const auto mask0 = static_cast<__mmask16>((1u << cols0) - 1u);
    const auto mask1 = static_cast<__mmask16>((1u << cols1) - 1u);
    for (int r = 0; r < t.rows; ++r) {
      float* c = t.c + r * t.ldc;
      detail::epilogue16(acc[r][0], t, c, mask0);
      if (mask1 != 0) detail::epilogue16(acc[r][1], t, c + 16, mask1);
    }
  }
};

}  // namespace gsq::kernels

#ifdef GSQ_POP_GCC12_PR105593
#pragma GCC diagnostic pop
#undef GSQ_POP_GCC12_PR105593
#endif

#endif  // GSQ_X86
