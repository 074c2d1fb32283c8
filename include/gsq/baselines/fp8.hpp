// fp8.hpp: OCP FP8 (E4M3, E5M2) scalars and per-tensor scaled FP8 tensors, the comparison formats.
//
// Format policy (both formats, OCP OFP8 v1.0 "saturation mode"):
//   Encoding from float rounds to nearest, ties to even (kNearestEven), bit-exactly, using integer
//   operations on the float bits only. It never depends on the floating-point environment.
//   - Finite values whose magnitude is at or above the largest finite FP8 value give +-kMaxFinite.
//   - +-Inf also gives +-kMaxFinite, in both formats. E5M2 has infinities, but a saturating
//     encoder must not create them from finite data, and treating Inf as "very large" keeps
//     one rule.
//   - NaN gives the format's canonical NaN (kNanBits) with the input's sign bit. Payloads are
//     dropped.
//   - The sign of zero is kept: -0.0f and negative values that round to zero give -0 (0x80).
//   - Float subnormal inputs are rounded like any other value (almost all of them give +-0).
//   Decoding is exact: every FP8 value, subnormals included, is a float. Every NaN code decodes to
//   the float quiet NaN 0x7FC00000 with the code's sign; E5M2 +-Inf decodes to +-Inf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/per_tensor.hpp"
#include "gsq/half.hpp"

namespace gsq {

/// OCP FP8 E4M3: 1 sign, 4 exponent and 3 mantissa bits, bias 7. No infinities; S.1111.111 is
/// the only NaN (two codes with the sign); max finite +-448 (S.1111.110); subnormals down to 2^-9.
/// Relative spacing of normal values is 2^-3. Used for forward activations and weights.
struct Fp8E4M3 {
  static constexpr int kExpBits = 4;
  static constexpr int kManBits = 3;
  static constexpr int kBias = 7;
  static constexpr bool kHasInf = false;
  static constexpr float kMaxFinite = 448.0f;           // 1.75 * 2^8
  static constexpr float kMinNormal = 0x1p-6f;          // 2^(1 - kBias)
  static constexpr float kMinSubnormal = 0x1p-9f;       // 2^(1 - kBias - kManBits)
  static constexpr std::uint8_t kMaxFiniteBits = 0x7E;  // S.1111.110
  static constexpr std::uint8_t kNanBits = 0x7F;        // S.1111.111
  std::uint8_t bits;
};

/// OCP FP8 E5M2: 1 sign, 5 exponent and 2 mantissa bits, bias 15, IEEE-like. S.11111.00 is
/// +-Inf, S.11111.{01,10,11} are NaN; max finite +-57344 (S.11110.11); subnormals down to 2^-16.
/// Relative spacing of normal values is 2^-2. Used for backward gradients.
struct Fp8E5M2 {
  static constexpr int kExpBits = 5;
  static constexpr int kManBits = 2;
  static constexpr int kBias = 15;
  static constexpr bool kHasInf = true;
  static constexpr float kMaxFinite = 57344.0f;         // 1.75 * 2^15
  static constexpr float kMinNormal = 0x1p-14f;         // 2^(1 - kBias)
  static constexpr float kMinSubnormal = 0x1p-16f;      // 2^(1 - kBias - kManBits)
  static constexpr std::uint8_t kMaxFiniteBits = 0x7B;  // S.11110.11
  static constexpr std::uint8_t kNanBits = 0x7E;        // S.11111.10, the quiet-NaN pattern
  std::uint8_t bits;
};

static_assert(sizeof(Fp8E4M3) == 1 && alignof(Fp8E4M3) == 1, "Fp8E4M3 must be one byte");
static_assert(sizeof(Fp8E5M2) == 1 && alignof(Fp8E5M2) == 1, "Fp8E5M2 must be one byte");
static_assert(std::is_trivially_copyable<Fp8E4M3>::value && std::is_standard_layout<Fp8E4M3>::value,
              "Fp8E4M3 must be a plain byte");
static_assert(std::is_trivially_copyable<Fp8E5M2>::value && std::is_standard_layout<Fp8E5M2>::value,
              "Fp8E5M2 must be a plain byte");

namespace detail {

template <class F>
struct IsFp8 : std::false_type {};
template <>
struct IsFp8<Fp8E4M3> : std::true_type {};
template <>
struct IsFp8<Fp8E5M2> : std::true_type {};

/// Float bit pattern of F::kMaxFinite, derived from F::kMaxFiniteBits.
template <class F>
constexpr std::uint32_t fp8_max_finite_f32_bits() noexcept {
  constexpr std::uint32_t kExp = static_cast<std::uint32_t>(F::kMaxFiniteBits) >> F::kManBits;
  constexpr std::uint32_t kMan = F::kMaxFiniteBits & ((1u << F::kManBits) - 1u);
  return ((kExp + 127u - F::kBias) << 23) | (kMan << (23 - F::kManBits));
}

// Encoder. One path serves normal and subnormal results: a float's significand m (implicit bit
// included) is shifted right by 23 - kManBits, plus one more bit for each step the target exponent
// lies below the smallest normal exponent, and rounded to nearest even. Adding the result to
// (biased exponent - 1) << kManBits gives the code: for normal results the implicit bit lands in
// the exponent field and adds the missing 1, and a carry out of the mantissa rolls into the
// exponent, which is exactly how rounding up to the next binade must behave. The base is a
// multiple of 2^kManBits, so the parity the tie rule looks at is the code's parity. Saturation and
// NaN are two selects at the end. Magnitudes below the saturation threshold never round above
// kMaxFinite, so the arithmetic result is always a finite code when it is used.
template <class F>
inline std::uint8_t fp8_encode_bits(float x) noexcept {
  constexpr int kM = F::kManBits;
  const std::uint32_t u = float_bits(x);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::uint32_t a = u & 0x7FFFFFFFu;
  const std::uint32_t ef = a >> 23;  // float exponent field; float subnormals (0) act as 1
  const std::uint32_t m = (a & 0x7FFFFFu) | (static_cast<std::uint32_t>(ef != 0) << 23);
  const int e = static_cast<int>(ef | static_cast<std::uint32_t>(ef == 0)) - 127 + F::kBias;
  const int below = e < 1 ? 1 - e : 0;
  int shift = 23 - kM + below;
  shift = shift < 31 ? shift : 31;  // m < 2^24, so any shift >= 25 already rounds to 0
  const std::uint32_t base = static_cast<std::uint32_t>(e < 1 ? 0 : e - 1) << kM;
  // m + (half - 1) + lsb, all below 2^31: rounds up above the half, and at the half only if odd.
  const std::uint32_t q = (m + ((1u << (shift - 1)) - 1u) + ((m >> shift) & 1u)) >> shift;
  std::uint32_t code = base + q;
  code = a >= fp8_max_finite_f32_bits<F>() ? F::kMaxFiniteBits : code;  // also +-Inf
  code = a > 0x7F800000u ? F::kNanBits : code;
  return static_cast<std::uint8_t>(sign | code);
}

// Decoder: normal codes rebias the exponent and left-align the mantissa; subnormal codes are a
// 2- or 3-bit integer times a power of two, which a float multiply produces exactly.
template <class F>
inline float fp8_decode_bits(std::uint8_t c) noexcept {
  constexpr int kM = F::kManBits;
  constexpr std::uint32_t kExpAll = (1u << F::kExpBits) - 1u;
  constexpr std::uint32_t kFirstSpecial = F::kMaxFiniteBits + 1u;  // Inf in E5M2, NaN in E4M3
  const std::uint32_t sign = static_cast<std::uint32_t>(c & 0x80u) << 24;
  const std::uint32_t mag7 = c & 0x7Fu;
  const std::uint32_t e = (mag7 >> kM) & kExpAll;
  const std::uint32_t man = mag7 & ((1u << kM) - 1u);
  std::uint32_t mag = ((e + 127u - F::kBias) << 23) | (man << (23 - kM));
  mag = e == 0 ? float_bits(static_cast<float>(man) * F::kMinSubnormal) : mag;
  mag = (F::kHasInf && mag7 == kFirstSpecial) ? 0x7F800000u : mag;
  mag = mag7 >= kFirstSpecial + (F::kHasInf ? 1u : 0u) ? 0x7FC00000u : mag;
  return bits_float(sign | mag);
}

}  // namespace detail

/// Encodes `x` as FP8 format F (Fp8E4M3 or Fp8E5M2). Rounding: kNearestEven, bit-exact.
/// Saturating: |x| >= F::kMaxFinite and +-Inf give +-F::kMaxFinite; NaN gives F::kNanBits with
/// x's sign; -0 stays -0 (see "Format policy" at the top of this file). Branch-free integer code.
template <class F>
inline F fp8_from_float(float x) noexcept {
  static_assert(detail::IsFp8<F>::value, "fp8_from_float: F must be Fp8E4M3 or Fp8E5M2");
  return F{detail::fp8_encode_bits<F>(x)};
}

/// Decodes `x` exactly. NaN codes give a quiet float NaN with the code's sign; E5M2 Inf gives Inf.
template <class F>
inline float fp8_to_float(F x) noexcept {
  static_assert(detail::IsFp8<F>::value, "fp8_to_float: F must be Fp8E4M3 or Fp8E5M2");
  return detail::fp8_decode_bits<F>(x.bits);
}

/// Row-major FP8 tensor with one per-tensor scale: element (r, c) stands for
/// fp8_to_float(data[r * cols + c]) * scale. Owns its codes; `data.size() == rows * cols`.
template <class F>
struct Fp8Tensor {
  static_assert(detail::IsFp8<F>::value, "Fp8Tensor: F must be Fp8E4M3 or Fp8E5M2");
  std::vector<F> data;
  float scale = 1.0f;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;

  /// Dequantized element (r, c), one float multiply. Precondition (unchecked): 0 <= r < rows,
  /// 0 <= c < cols.
  float at(std::ptrdiff_t r, std::ptrdiff_t c) const noexcept {
    GSQ_DASSERT(r >= 0 && r < rows && c >= 0 && c < cols);
    return fp8_to_float(data[static_cast<std::size_t>(r * cols + c)]) * scale;
  }
};

/// Quantizes the rows x cols row-major matrix at `src` (leading dimension `ld` >= cols) to FP8
/// with one per-tensor scale: scale = amax / F::kMaxFinite, so the largest |x| maps to
/// +-kMaxFinite; scale = 1 if every element is zero, and scale is never below FLT_MIN (the
/// smallest normal float), so for amax < kMaxFinite * FLT_MIN the largest |x| maps below
/// kMaxFinite. code = fp8_from_float<F>(x / scale) (float division, then kNearestEven).
/// Error: |x - at(r, c)| <= 2^-(kManBits + 1) |x| for x / scale >= F::kMinNormal, and
/// <= F::kMinSubnormal / 2 * scale below it, each up to a few float roundings (2^-24 relative).
/// Throws std::invalid_argument for a negative shape, ld < cols, a null src with elements, or a
/// NaN or Inf in the matrix; the message names the first one's row and column (zero-based).
/// Elements between cols and ld are never read. Cost: two passes over src, one allocation.
template <class F>
Fp8Tensor<F> quantize_fp8(const float* src, std::ptrdiff_t rows, std::ptrdiff_t cols,
                          std::ptrdiff_t ld) {
  static_assert(detail::IsFp8<F>::value, "quantize_fp8: F must be Fp8E4M3 or Fp8E5M2");
  const float amax = detail::checked_amax("quantize_fp8", src, rows, cols, ld);
  Fp8Tensor<F> t;
  t.rows = rows;
  t.cols = cols;
  t.scale = detail::per_tensor_scale(amax, F::kMaxFinite);
  t.data.resize(static_cast<std::size_t>(rows * cols));
  F* out = t.data.data();
  const float scale = t.scale;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const float* row = src + r * ld;
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      out[r * cols + c] = fp8_from_float<F>(row[c] / scale);
    }
  }
  return t;
}

/// Writes fp8_to_float(code) * scale (one float rounding) for every element of `t` into the
/// row-major matrix at `dst` with leading dimension `ld` >= t.cols; entries between cols and ld
/// are left untouched. Throws std::invalid_argument if t.data.size() != rows * cols, ld < cols,
/// or dst is null while t has elements.
template <class F>
void dequantize_fp8(const Fp8Tensor<F>& t, float* dst, std::ptrdiff_t ld) {
  detail::check_dequantize_shape("dequantize_fp8", t.data.size(), t.rows, t.cols, dst, ld);
  const F* in = t.data.data();
  for (std::ptrdiff_t r = 0; r < t.rows; ++r) {
    for (std::ptrdiff_t c = 0; c < t.cols; ++c) {
      dst[r * ld + c] = fp8_to_float(in[r * t.cols + c]) * t.scale;
    }
  }
}

/// Returns the dequantized tensor as a dense row-major vector of rows * cols floats.
template <class F>
std::vector<float> dequantize_fp8(const Fp8Tensor<F>& t) {
  std::vector<float> out(t.data.size());
  dequantize_fp8(t, out.data(), t.cols);
  return out;
}

}  // namespace gsq
