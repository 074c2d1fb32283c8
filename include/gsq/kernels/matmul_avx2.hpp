// matmul_avx2.hpp: the GSE matmul micro-kernel for AVX2 (vpmaddubsw + vpmaddwd).
#pragma once

#include "gsq/kernels/matmul_scalar.hpp"

#if GSQ_X86
#include <immintrin.h>

namespace gsq::kernels {

namespace detail {

/// The epilogue for the first `cols` outputs of one row (see epilogue16 in
/// matmul_avx512_vnni.hpp).
GSQ_TARGET_AVX2 inline void epilogue8(__m256 acc, const MatmulTile& t, float* c,
                                      int cols) noexcept {
  __m256 r;
  if (t.float_scale) {
    r = _mm256_mul_ps(acc, _mm256_set1_ps(t.scale_f));
  } else {
    const __m256d scale = _mm256_set1_pd(t.scale);
    const __m128 lo =
        _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(acc)), scale));
    const __m128 hi =
        _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(acc, 1)), scale));
    r = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
  }
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  if (t.beta != 0.0f) r = _mm256_fmadd_ps(_mm256_set1_ps(t.beta), _mm256_maskload_ps(c, mask), r);
  _mm256_maskstore_ps(c, mask, r);
}

}  // namespace detail

// A 4 x 8 tile.  AVX2 has no byte dot product into int32, so each K step of 4 uses the sign
// trick: vpmaddubsw(|a|, sign(b, a)) multiplies unsigned |a| by b with a's sign moved onto it,
// which is exact because codes are symmetric (|a| <= 127 fits u8, and -(-127) is representable),
// and its int16 pair sums stay below 2 * 127 * 127 = 32258 < 2^15, so never saturate.
// vpmaddwd by ones then adds the pairs into int32 lanes, one per column.
template <>
struct MatmulKernel<Isa::kAvx2> {
  static constexpr int kMr = 4;
  static constexpr int kNr = 8;
  static constexpr bool kBiasedRhs = false;

  template <int GroupSize>
  GSQ_TARGET_AVX2 static void run(const MatmulTile& t) noexcept {
    __m256 acc[kMr];
    for (int r = 0; r < kMr; ++r) acc[r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    const std::uint8_t* b = t.b;
    for (Index g = 0; g < t.groups; ++g) {
      __m256i d[kMr];
      for (int r = 0; r < kMr; ++r) d[r] = _mm256_setzero_si256();
      const std::int8_t* a = t.a + g * GroupSize;
#pragma GCC unroll 16
      for (int s = 0; s < GroupSize / 4; ++s) {
        const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + s * kNr * 4));
        for (int r = 0; r < kMr; ++r) {
          const __m256i av = _mm256_set1_epi32(
              detail::load_i32(reinterpret_cast<const std::uint8_t*>(a + r * t.lda + 4 * s)));
          const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(av), _mm256_sign_epi8(bv, av));
          d[r] = _mm256_add_epi32(d[r], _mm256_madd_epi16(pairs, ones));
        }
      }
      const __m256i eb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + GroupSize * kNr));
      for (int r = 0; r < kMr; ++r) {
        const __m256i er = _mm256_set1_epi32(std::int32_t{t.ea[r * t.lde + g]} << 23);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]),
                                 _mm256_castsi256_ps(_mm256_add_epi32(eb, er)), acc[r]);
      }
      b += rhs_group_bytes(GroupSize, kNr);
    }
    for (int r = 0; r < t.rows; ++r) detail::epilogue8(acc[r], t, t.c + r * t.ldc, t.cols);
  }
};

}  // namespace gsq::kernels

#endif  // GSQ_X86
