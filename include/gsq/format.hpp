// format.hpp: the GSE-INT (group-shared exponent integer) number format, specified to the bit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gsq {

/// Sizes and indices: signed, as in Eigen.
using Index = std::ptrdiff_t;

// ---------------------------------------------------------------------------------------------
// The GSE-INT format
// ---------------------------------------------------------------------------------------------
//
// A GSE tensor is a rows x cols matrix whose values are cut into *lines* along one axis, the
// group axis (the reduction axis of the matmul the tensor feeds), and each line into *groups* of
// GroupSize consecutive values.  Axis::kCols: line i is row i.  Axis::kRows: line j is column j.
//
// Fields
//   code    c   per value, a two's-complement integer of Bits bits restricted to the symmetric
//               range [-kQMax, kQMax], kQMax = 2^(Bits-1) - 1.  The most negative pattern
//               -2^(Bits-1) is never produced and is rejected on input.  There is no implicit
//               leading one: c is the whole significand.
//   E           per group, a 5-bit unsigned shared exponent, 0..31.
//   T           per tensor, a signed exponent offset (int32).
//
// Value
//   value = c * 2^(T + E)
//   so a dot product of two groups is sum(c_a * c_b) * 2^((T_a + E_a) + (T_b + E_b)): an integer
//   multiply-accumulate followed by one shift.
//
// Encoding from float32 (bf16 and fp16 are first widened to float32, which is exact)
//   1. For each group g let amax_g be the largest |x| and X_g = floor(log2(amax_g)), read off the
//      exponent field (for subnormals, the position of the leading significand bit).  The group's
//      quantum exponent is q_g = X_g - (Bits - 2), which puts amax_g / 2^q_g in
//      [2^(Bits-2), 2^(Bits-1)): the codes have Bits-1 magnitude bits, as in OCP MXINT (for
//      Bits = 8 a code is the 1.6 fixed-point element of MXINT8 and 2^X_g its shared scale).
//   2. T = max_g q_g - 31.  Every group g gets E_g = clamp(q_g - T, 0, 31) and quantum
//      s_g = T + E_g.  The tensor's largest group always has E = 31, so the offset lets a tensor of
//      any magnitude (gradients near 1e-8, activations near 1e4) keep full precision.
//   3. A group more than 31 binades below the largest one (q_g < T) is *clamped*: it is encoded at
//      s_g = T > q_g, i.e. with fewer significant bits, possibly all zero.  ConversionStats counts
//      such groups.  This is the only place where GSE-INT loses more than rounding.
//   4. Each value x = (-1)^S * M * 2^(e' - 150), with M the 24-bit significand (implicit one
//      included for normals) and e' = max(biased exponent, 1).  With sh = s_g + 150 - e':
//        sh <= 0: |c| = M << -sh, exact (only tiny subnormals; the result still fits, see 1.).
//        sh >  0: |c| = round(M / 2^sh), where the rounding looks at f, the 32 bits of M / 2^sh
//                 below the binary point (exact when sh <= 32; for sh > 32, f < 2^31 and no tie
//                 is possible).
//      Rounding::kNearestEven  |c| = floor + (f > 2^31 or (f == 2^31 and floor is odd))
//      Rounding::kNearestAway  |c| = floor + (f >= 2^31)               (OCP MX rounding)
//      Rounding::kTowardZero   |c| = floor                             (a plain right shift)
//      Rounding::kStochastic   |c| = floor + (f + r >= 2^32), r a uniform 32-bit random number,
//                              so P(round up) = f / 2^32: unbiased up to 2^-32 of a step.
//      Then |c| = min(|c|, kQMax) (saturation: only amax_g can round up to 2^(Bits-1)), and
//      c = S ? -|c| : |c|.
//   The algorithm uses integer operations only (exponent bits, shifts, compares); every ISA
//   computes it bit-identically.  An equivalent float definition is
//      c = clamp(round(x / 2^s_g), -kQMax, kQMax)   evaluated exactly (e.g. in double).
//
// Special values (the format policy; convert.hpp applies it)
//   - All-zero group (every x is +-0): E = 0 and all codes 0.  Signs of zeros are not kept.
//   - All-zero tensor: T = 0 and every E = 0.
//   - NaN or +-Inf: NonFinitePolicy::kThrow (default) rejects the tensor with
//     std::invalid_argument naming the row and column; NonFinitePolicy::kZero encodes them as
//     code 0, leaves them out of amax, and counts them in ConversionStats::non_finite.
//   - Subnormal inputs are ordinary values (no flush-to-zero).
//   - Partial last group: a line whose length is not a multiple of GroupSize is padded with
//     code 0 up to the next multiple in the compute form (GseTensor).  Padding codes are always 0,
//     so they add nothing to any dot product; the packed form (PackedGseTensor) does not store
//     them.
//
// Decoding to float32
//   value = c * 2^(T + E), rounded once to nearest-even float32.  It is exact whenever the value
//   is a float32, which includes every value produced by encoding a float32 (round trip exact up
//   to the rounding of step 4).
//
// Ranges
//   X_g lies in [-149, 127], so q_g in [-149 - (Bits-2), 127 - (Bits-2)] and
//   T in [kMinOffset, kMaxOffset].  A tensor assembled from raw parts is checked against these
//   ranges, against E <= 31 and against |c| <= kQMax.
//
// Storage
//   Compute form (GseTensor): int8 codes, line-major, each line padded to a multiple of
//   GroupSize; one uint8 per group exponent.  Packed form (PackedGseTensor): Bits per value and
//   5 bits per group exponent, bit-packed LSB-first into 64-bit words, i.e.
//   Bits + 5 / GroupSize bits per value (4.156 for GSE-INT4 with groups of 32).

/// The axis along which groups run: the reduction axis of the matmul the tensor feeds.
/// For C = A * B with A (M x K) and B (K x N): A uses Axis::kCols, B uses Axis::kRows.
enum class Axis : std::uint8_t { kRows, kCols };

/// How a value is rounded to its code.  See "Encoding from float32" above.
enum class Rounding : std::uint8_t { kNearestEven, kNearestAway, kTowardZero, kStochastic };

/// What conversion does with NaN and +-Inf.  See "Special values" above.
enum class NonFinitePolicy : std::uint8_t { kThrow, kZero };

/// Width of the per-group exponent field, in bits.
inline constexpr int kExponentBits = 5;
/// Largest per-group exponent E.
inline constexpr int kMaxGroupExponent = (1 << kExponentBits) - 1;

/// Compile-time description of one GSE-INT format: Bits per code (sign included) and values per
/// group.
template <int Bits, int GroupSize = 32>
struct GseFormat {
  static_assert(Bits >= 2 && Bits <= 8, "GSE-INT codes are 2..8 bits, sign included");
  static_assert(GroupSize > 0 && GroupSize % 16 == 0 && GroupSize <= 4096,
                "GroupSize must be a positive multiple of 16, at most 4096");

  static constexpr int kBits = Bits;
  static constexpr int kGroupSize = GroupSize;
  /// Codes lie in [-kQMax, kQMax].
  static constexpr int kQMax = (1 << (Bits - 1)) - 1;
  /// q_g = X_g - kFractionBits: the number of code bits right of the group's leading one.
  static constexpr int kFractionBits = Bits - 2;
  /// Smallest and largest quantum exponent q_g of a finite nonzero float32 group.
  static constexpr int kMinQuantum = -149 - kFractionBits;
  static constexpr int kMaxQuantum = 127 - kFractionBits;
  /// Range of the tensor offset T produced by encoding float32 (and accepted from raw parts).
  static constexpr int kMinOffset = kMinQuantum - kMaxGroupExponent;
  static constexpr int kMaxOffset = kMaxQuantum - kMaxGroupExponent;
  /// Bits per value in the packed form, exponent share included.
  static constexpr double kPackedBitsPerValue =
      Bits + static_cast<double>(kExponentBits) / GroupSize;
};

/// Human-readable names, for messages and reports.
constexpr const char* to_string(Axis axis) noexcept {
  return axis == Axis::kRows ? "rows" : "cols";
}
constexpr const char* to_string(Rounding rounding) noexcept {
  switch (rounding) {
    case Rounding::kNearestEven:
      return "nearest-even";
    case Rounding::kNearestAway:
      return "nearest-away";
    case Rounding::kTowardZero:
      return "toward-zero";
    case Rounding::kStochastic:
      return "stochastic";
  }
  return "?";
}

}  // namespace gsq
