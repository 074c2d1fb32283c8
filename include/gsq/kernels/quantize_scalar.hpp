// quantize_scalar.hpp: the reference float32 <-> GSE-INT line kernels; every ISA must match them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/detail/check.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/format.hpp"

namespace gsq::kernels {

/// Quantum-exponent marker of a group whose values are all zero.
inline constexpr std::int16_t kZeroGroup = INT16_MIN;

/// What a line kernel reports back to the driver.
struct LineResult {
  std::int32_t saturated = 0;  ///< codes that rounded up past kQMax and were clamped
  bool finite = true;          ///< false: a NaN or Inf was seen; outputs are then unspecified
};

/// Per-ISA line kernels.  Each specialisation provides
///   template <int Bits, int GroupSize, Rounding R>
///   static LineResult quantize(const float* src, int n, std::uint32_t key, std::uint32_t pos0,
///                              std::int8_t* codes, std::int16_t* quantum) noexcept;
///   static void dequantize(const std::int8_t* codes, int n, int s, float* dst) noexcept;
/// quantize: n is a multiple of GroupSize; for each group it writes the quantum exponent q_g (or
/// kZeroGroup) and the codes encoded at s = q_g (format.hpp, steps 1 and 4).  pos0 is the line
/// position of src[0], for the stochastic rounding stream.  dequantize: n values of one quantum
/// s = T + E.
template <Isa I>
struct LineKernels;

namespace detail {

inline int count_leading_zeros(std::uint32_t x) noexcept { return __builtin_clz(x); }

/// The quantum exponent q_g of a group whose largest magnitude has bit pattern a_max (nonzero,
/// finite): floor(log2(amax)) - (Bits - 2), read off the exponent bits.
template <int Bits>
constexpr int group_quantum(std::uint32_t a_max) noexcept {
  const int biased = static_cast<int>(a_max >> 23);
  const int x = biased != 0 ? biased - 127 : -149 + (31 - count_leading_zeros(a_max));
  return x - GseFormat<Bits>::kFractionBits;
}

/// The round-up decision of format.hpp step 4 for fraction bits f of the magnitude, truncated
/// magnitude q and random number r.
template <Rounding R>
constexpr std::uint32_t round_up(std::uint32_t f, std::uint32_t q, std::uint32_t r) noexcept {
  if constexpr (R == Rounding::kNearestEven) {
    return (f > 0x80000000u || (f == 0x80000000u && (q & 1u))) ? 1u : 0u;
  } else if constexpr (R == Rounding::kNearestAway) {
    return f >= 0x80000000u ? 1u : 0u;
  } else if constexpr (R == Rounding::kTowardZero) {
    (void)f, (void)q, (void)r;
    return 0u;
  } else {
    (void)q;
    return f > ~r ? 1u : 0u;  // f + r >= 2^32
  }
}

/// Multiplies a small integer by 2^s with one float rounding, for any s the format produces
/// (s in [kMinOffset, kMaxQuantum]).  For s < -126 the scale is not a normal float, so it is
/// applied in two steps of which only the second rounds.
inline float pow2_float(int e) noexcept {  // e in [-126, 127]
  std::uint32_t u = static_cast<std::uint32_t>(e + 127) << 23;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace detail

/// Encodes n values at quantum s (format.hpp, step 4).  Requires s >= q_g of the group the values
/// belong to.  Returns the number of saturated codes.  This is the specification of the encoding.
template <int Bits, Rounding R>
inline std::int32_t encode_values(const float* src, int n, int s, std::uint32_t key,
                                  std::uint32_t pos0, std::int8_t* codes) noexcept {
  constexpr auto kQMax = static_cast<std::uint32_t>(GseFormat<Bits>::kQMax);
  std::int32_t saturated = 0;
  for (int i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, src + i, sizeof u);
    const std::uint32_t a = u & 0x7FFFFFFFu;
    const std::uint32_t biased = a >> 23;
    const std::uint32_t m = biased != 0 ? (a & 0x7FFFFFu) | 0x800000u : a;
    const int sh = s + 150 - static_cast<int>(std::max(biased, 1u));
    std::uint32_t mag = 0;
    std::uint32_t f = 0;
    if (sh <= 0) {
      GSQ_DASSERT(sh > -32);
      mag = m << -sh;
    } else {
      const std::uint64_t t = (std::uint64_t{m} << 32) >> std::min(sh, 63);
      mag = static_cast<std::uint32_t>(t >> 32);
      f = static_cast<std::uint32_t>(t);
    }
    const std::uint32_t r = R == Rounding::kStochastic
                                ? gsq::detail::random_at(key, pos0 + static_cast<std::uint32_t>(i))
                                : 0u;
    mag += detail::round_up<R>(f, mag, r);
    if (mag > kQMax) {
      mag = kQMax;
      ++saturated;
    }
    const auto c = static_cast<std::int8_t>(mag);
    codes[i] = (u >> 31) != 0 ? static_cast<std::int8_t>(-c) : c;
  }
  return saturated;
}

template <>
struct LineKernels<Isa::kScalar> {
  template <int Bits, int GroupSize, Rounding R>
  static LineResult quantize(const float* src, int n, std::uint32_t key, std::uint32_t pos0,
                             std::int8_t* codes, std::int16_t* quantum) noexcept {
    LineResult result;
    for (int g = 0; g * GroupSize < n; ++g) {
      const float* x = src + g * GroupSize;
      std::uint32_t a_max = 0;
      for (int i = 0; i < GroupSize; ++i) {
        std::uint32_t u;
        std::memcpy(&u, x + i, sizeof u);
        a_max = std::max(a_max, u & 0x7FFFFFFFu);
      }
      if (a_max >= 0x7F800000u) {
        result.finite = false;
        return result;
      }
      std::int8_t* c = codes + g * GroupSize;
      if (a_max == 0) {
        quantum[g] = kZeroGroup;
        std::memset(c, 0, GroupSize);
        continue;
      }
      const int q = detail::group_quantum<Bits>(a_max);
      quantum[g] = static_cast<std::int16_t>(q);
      result.saturated += encode_values<Bits, R>(
          x, GroupSize, q, key, pos0 + static_cast<std::uint32_t>(g * GroupSize), c);
    }
    return result;
  }

  static void dequantize(const std::int8_t* codes, int n, int s, float* dst) noexcept {
    if (s >= -126) {
      const float scale = detail::pow2_float(s);
      for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(codes[i]) * scale;
    } else {
      const float pre = detail::pow2_float(s + 64);
      const float post = detail::pow2_float(-64);
      for (int i = 0; i < n; ++i) dst[i] = (static_cast<float>(codes[i]) * pre) * post;
    }
  }
};

}  // namespace gsq::kernels
