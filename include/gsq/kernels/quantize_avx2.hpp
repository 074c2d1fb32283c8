// quantize_avx2.hpp: float32 <-> GSE-INT line kernels for AVX2.
#pragma once

#include "gsq/kernels/quantize_scalar.hpp"

#if GSQ_X86
#include <immintrin.h>

// GCC 12 reports the intentionally undefined pass-through operand of unmasked AVX-512
// intrinsics (_mm512_undefined_epi32) as maybe-uninitialized once they are inlined here: a false
// positive fixed in GCC 13 (PR 105593).  The pragma covers only these kernels.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define GSQ_POP_GCC12_PR105593
#endif

namespace gsq::kernels {

// Same shift trick as the AVX-512 kernel (vpsrlvd/vpsllvd return 0 for counts >= 32, negative
// counts included).  AVX2 has no unsigned compares, so they flip the sign bit first; masks are
// 0 / -1 lanes, and adding 1 is subtracting the mask.
template <>
struct LineKernels<Isa::kAvx2> {
  GSQ_TARGET_AVX2 static inline __m256i mix32(__m256i x) noexcept {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846CA68Bu)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  }

  /// Unsigned a > b, as a 0 / -1 lane mask.
  GSQ_TARGET_AVX2 static inline __m256i cmpgt_epu32(__m256i a, __m256i b) noexcept {
    const __m256i bias = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    return _mm256_cmpgt_epi32(_mm256_xor_si256(a, bias), _mm256_xor_si256(b, bias));
  }

  /// Encodes 8 values at quantum s; returns the number of saturated codes.
  template <int Bits, Rounding R>
  GSQ_TARGET_AVX2 static inline int encode8(const float* src, int s, std::uint32_t key,
                                            std::uint32_t pos, std::int8_t* codes) noexcept {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i biased = _mm256_srli_epi32(a, 23);
    const __m256i implicit =
        _mm256_andnot_si256(_mm256_cmpeq_epi32(biased, zero), _mm256_set1_epi32(0x800000));
    const __m256i m = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7FFFFF)), implicit);
    const __m256i sh = _mm256_sub_epi32(_mm256_set1_epi32(s + 150), _mm256_max_epu32(biased, one));
    __m256i mag =
        _mm256_or_si256(_mm256_srlv_epi32(m, sh), _mm256_sllv_epi32(m, _mm256_sub_epi32(zero, sh)));
    const __m256i f =
        _mm256_or_si256(_mm256_sllv_epi32(m, _mm256_sub_epi32(_mm256_set1_epi32(32), sh)),
                        _mm256_srlv_epi32(m, _mm256_sub_epi32(sh, _mm256_set1_epi32(32))));
    const __m256i half = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    __m256i up = zero;
    if constexpr (R == Rounding::kNearestEven) {
      const __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(mag, one), one);
      up =
          _mm256_or_si256(cmpgt_epu32(f, half), _mm256_and_si256(_mm256_cmpeq_epi32(f, half), odd));
    } else if constexpr (R == Rounding::kNearestAway) {
      up = _mm256_srai_epi32(f, 31);
    } else if constexpr (R == Rounding::kStochastic) {
      const __m256i lanes =
          _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                             _mm256_set1_epi32(static_cast<int>(gsq::detail::kPositionStep)));
      const __m256i r = mix32(_mm256_add_epi32(
          _mm256_set1_epi32(static_cast<int>(key + pos * gsq::detail::kPositionStep)), lanes));
      up = cmpgt_epu32(f, _mm256_xor_si256(r, _mm256_set1_epi32(-1)));
    } else {
      (void)key, (void)pos, (void)half;
    }
    mag = _mm256_sub_epi32(mag, up);
    const __m256i qmax = _mm256_set1_epi32(GseFormat<Bits>::kQMax);
    const __m256i saturated = _mm256_cmpgt_epi32(mag, qmax);  // mag <= 2^(Bits-1): signed is fine
    mag = _mm256_min_epi32(mag, qmax);
    const __m256i sign = _mm256_srai_epi32(u, 31);
    const __m256i c = _mm256_sub_epi32(_mm256_xor_si256(mag, sign), sign);
    const __m128i c16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), _mm_packs_epi16(c16, c16));
    return __builtin_popcount(
        static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(saturated))));
  }

  template <int Bits, int GroupSize, Rounding R>
  GSQ_TARGET_AVX2 static LineResult quantize(const float* src, int n, std::uint32_t key,
                                             std::uint32_t pos0, std::int8_t* codes,
                                             std::int16_t* quantum) noexcept {
    LineResult result;
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    for (int g = 0; g * GroupSize < n; ++g) {
      const float* x = src + g * GroupSize;
      __m256i amax = _mm256_setzero_si256();
      for (int i = 0; i < GroupSize; i += 8) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
        amax = _mm256_max_epu32(amax, _mm256_and_si256(v, abs_mask));
      }
      __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(amax), _mm256_extracti128_si256(amax, 1));
      m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
      m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
      const auto a_max = static_cast<std::uint32_t>(_mm_cvtsi128_si32(m4));
      if (a_max >= 0x7F800000u) {
        result.finite = false;
        return result;
      }
      std::int8_t* c = codes + g * GroupSize;
      if (a_max == 0) {
        quantum[g] = kZeroGroup;
        for (int i = 0; i < GroupSize; i += 16) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(c + i), _mm_setzero_si128());
        }
        continue;
      }
      const int q = detail::group_quantum<Bits>(a_max);
      quantum[g] = static_cast<std::int16_t>(q);
      const auto pos = pos0 + static_cast<std::uint32_t>(g * GroupSize);
      for (int i = 0; i < GroupSize; i += 8) {
        result.saturated +=
            encode8<Bits, R>(x + i, q, key, pos + static_cast<std::uint32_t>(i), c + i);
      }
    }
    return result;
  }

  GSQ_TARGET_AVX2 static void dequantize(const std::int8_t* codes, int n, int s,
                                         float* dst) noexcept {
    const bool split = s < -126;
    const __m256 pre = _mm256_set1_ps(detail::pow2_float(split ? s + 64 : s));
    const __m256 post = _mm256_set1_ps(detail::pow2_float(-64));
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c8)), pre);
      if (split) v = _mm256_mul_ps(v, post);
      _mm256_storeu_ps(dst + i, v);
    }
    if (i < n) LineKernels<Isa::kScalar>::dequantize(codes + i, n - i, s, dst + i);
  }
};

}  // namespace gsq::kernels

#ifdef GSQ_POP_GCC12_PR105593
#undef GSQ_POP_GCC12_PR105593
#pragma GCC diagnostic pop
#endif

#endif  // GSQ_X86
