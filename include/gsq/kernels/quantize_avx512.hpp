// quantize_avx512.hpp: float32 <-> GSE-INT line kernels for AVX-512 (F, BW, VL, DQ).
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

// The trick: one variable shift pair per vector computes both the truncated magnitude and its
// 32 fraction bits for every shift count the format produces.  vpsrlvd/vpsllvd treat a negative
// count as a huge unsigned one and return 0, so
//   mag = (m >> sh) | (m << -sh)          covers sh > 0 and sh <= 0 in one expression, and
//   f   = (m << (32 - sh)) | (m >> (sh - 32))
// yields the fraction bits for sh <= 32 (the left shift drops the integer part) and for sh > 32
// (the right shift), exactly as the scalar 64-bit shift does.  Rounding is then a compare on f.
template <>
struct LineKernels<Isa::kAvx512> {
  GSQ_TARGET_AVX512 static inline __m512i mix32(__m512i x) noexcept {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846CA68Bu)));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  }

  /// Encodes 16 values at quantum s; returns the saturation mask.
  template <int Bits, Rounding R>
  GSQ_TARGET_AVX512 static inline __mmask16 encode16(const float* src, int s, std::uint32_t key,
                                                     std::uint32_t pos,
                                                     std::int8_t* codes) noexcept {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i u = _mm512_loadu_si512(src);
    const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i biased = _mm512_srli_epi32(a, 23);
    const __m512i man = _mm512_and_si512(a, _mm512_set1_epi32(0x7FFFFF));
    const __m512i m = _mm512_mask_or_epi32(man, _mm512_cmpneq_epi32_mask(biased, zero), man,
                                           _mm512_set1_epi32(0x800000));
    const __m512i sh = _mm512_sub_epi32(_mm512_set1_epi32(s + 150), _mm512_max_epu32(biased, one));
    __m512i mag =
        _mm512_or_si512(_mm512_srlv_epi32(m, sh), _mm512_sllv_epi32(m, _mm512_sub_epi32(zero, sh)));
    const __m512i f =
        _mm512_or_si512(_mm512_sllv_epi32(m, _mm512_sub_epi32(_mm512_set1_epi32(32), sh)),
                        _mm512_srlv_epi32(m, _mm512_sub_epi32(sh, _mm512_set1_epi32(32))));
    const __m512i half = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    __mmask16 up = 0;
    if constexpr (R == Rounding::kNearestEven) {
      const __mmask16 odd = _mm512_test_epi32_mask(mag, one);
      up = _mm512_cmpgt_epu32_mask(f, half) | (_mm512_cmpeq_epi32_mask(f, half) & odd);
    } else if constexpr (R == Rounding::kNearestAway) {
      up = _mm512_cmpge_epu32_mask(f, half);
    } else if constexpr (R == Rounding::kStochastic) {
      const __m512i lanes = _mm512_mullo_epi32(
          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
          _mm512_set1_epi32(static_cast<int>(gsq::detail::kPositionStep)));
      const __m512i r = mix32(_mm512_add_epi32(
          _mm512_set1_epi32(static_cast<int>(key + pos * gsq::detail::kPositionStep)), lanes));
      up = _mm512_cmpgt_epu32_mask(f, _mm512_xor_si512(r, _mm512_set1_epi32(-1)));
    } else {
      (void)key, (void)pos, (void)half;
    }
    mag = _mm512_mask_add_epi32(mag, up, mag, one);
    const __m512i qmax = _mm512_set1_epi32(GseFormat<Bits>::kQMax);
    const __mmask16 saturated = _mm512_cmpgt_epu32_mask(mag, qmax);
    mag = _mm512_min_epu32(mag, qmax);
    const __m512i c = _mm512_mask_sub_epi32(mag, _mm512_movepi32_mask(u), zero, mag);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(c));
    return saturated;
  }

  template <int Bits, int GroupSize, Rounding R>
  GSQ_TARGET_AVX512 static LineResult quantize(const float* src, int n, std::uint32_t key,
                                               std::uint32_t pos0, std::int8_t* codes,
                                               std::int16_t* quantum) noexcept {
    LineResult result;
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
    for (int g = 0; g * GroupSize < n; ++g) {
      const float* x = src + g * GroupSize;
      __m512i amax = _mm512_setzero_si512();
      for (int i = 0; i < GroupSize; i += 16) {
        amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
      }
      const std::uint32_t a_max = _mm512_reduce_max_epu32(amax);
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
      for (int i = 0; i < GroupSize; i += 16) {
        const __mmask16 sat =
            encode16<Bits, R>(x + i, q, key, pos + static_cast<std::uint32_t>(i), c + i);
        result.saturated += __builtin_popcount(sat);
      }
    }
    return result;
  }

  GSQ_TARGET_AVX512 static void dequantize(const std::int8_t* codes, int n, int s,
                                           float* dst) noexcept {
    const bool split = s < -126;
    const __m512 pre = _mm512_set1_ps(detail::pow2_float(split ? s + 64 : s));
    const __m512 post = _mm512_set1_ps(detail::pow2_float(-64));
    int i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m128i c8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c8)), pre);
      if (split) v = _mm512_mul_ps(v, post);
      _mm512_storeu_ps(dst + i, v);
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
