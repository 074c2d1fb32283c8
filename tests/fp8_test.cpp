// fp8_test.cpp: FP8 E4M3/E5M2 scalars and per-tensor FP8 against independent references.
#include "gsq/baselines/fp8.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "testing.hpp"

namespace {

using gsq::test::contains;
using gsq::test::error_message;
using gsq::test::spread_matrix;

using gsq::Fp8E4M3;
using gsq::Fp8E5M2;

float from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

std::uint32_t to_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// The two formats as the OFP8 v1.0 specification writes them, typed in here rather than taken
// from the traits under test.
struct Spec {
  int exp_bits;
  int man_bits;
  int bias;
  bool ieee_specials;  // E5M2: exponent all ones is Inf/NaN. E4M3: only S.1111.111 is NaN.
};

template <class F>
Spec spec_of();
template <>
Spec spec_of<Fp8E4M3>() {
  return {4, 3, 7, false};
}
template <>
Spec spec_of<Fp8E5M2>() {
  return {5, 2, 15, true};
}

// Value of code c by the definition, in double: NaN, +-Inf, or (-1)^s * 2^(e - bias) * 1.m for
// e > 0 and (-1)^s * 2^(1 - bias) * 0.m for e == 0.
template <class F>
double reference_decode(unsigned c) {
  const Spec s = spec_of<F>();
  const int e = static_cast<int>(c >> s.man_bits) & ((1 << s.exp_bits) - 1);
  const int man = static_cast<int>(c) & ((1 << s.man_bits) - 1);
  const double sign = (c & 0x80u) ? -1.0 : 1.0;
  const int e_all = (1 << s.exp_bits) - 1;
  if (s.ieee_specials && e == e_all) {
    return man == 0 ? sign * std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::quiet_NaN();
  }
  if (!s.ieee_specials && e == e_all && man == (1 << s.man_bits) - 1) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (e == 0) return sign * std::ldexp(static_cast<double>(man), 1 - s.bias - s.man_bits);
  return sign * std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -s.man_bits), e - s.bias);
}

// Reference encoder: nearest value in the table of positive finite values (code k has value
// mags[k], ascending, checked below), ties to the even code, which is the even mantissa.
// Saturating: |x| >= the largest value, Inf included, gives the largest code.
template <class F>
struct ReferenceEncoder {
  std::vector<double> mags;
  unsigned nan_code = 0;

  ReferenceEncoder() {
    for (unsigned c = 0; c < 0x80; ++c) {
      const double v = reference_decode<F>(c);
      if (!std::isfinite(v)) break;
      mags.push_back(v);
    }
    nan_code = spec_of<F>().ieee_specials ? 0x7E : 0x7F;
  }

  std::uint8_t encode(float x) const {
    const unsigned sign = std::signbit(x) ? 0x80u : 0u;
    if (std::isnan(x)) return static_cast<std::uint8_t>(sign | nan_code);
    const double ax = std::fabs(static_cast<double>(x));
    const unsigned max_code = static_cast<unsigned>(mags.size() - 1);
    unsigned code;
    if (ax >= mags.back()) {
      code = max_code;
    } else {
      const auto k =
          static_cast<unsigned>(std::lower_bound(mags.begin(), mags.end(), ax) - mags.begin());
      if (mags[k] == ax) {
        code = k;
      } else {
        const double mid = (mags[k - 1] + mags[k]) / 2;  // exact: few significant bits
        code = ax < mid ? k - 1 : ax > mid ? k : ((k - 1) % 2 == 0 ? k - 1 : k);
      }
    }
    return static_cast<std::uint8_t>(sign | code);
  }
};

template <class F>
const ReferenceEncoder<F>& reference_encoder() {
  static const ReferenceEncoder<F> enc;
  return enc;
}

// Counts inputs where the encoder disagrees with the reference; reports the first few.
template <class F>
std::uint64_t count_mismatches(std::uint64_t begin, std::uint64_t end, std::uint64_t step,
                               std::uint32_t low_bits) {
  const ReferenceEncoder<F>& ref = reference_encoder<F>();
  std::uint64_t bad = 0;
  for (std::uint64_t i = begin; i < end; i += step) {
    const auto u = static_cast<std::uint32_t>(i) | low_bits;
    const float x = from_bits(u);
    const std::uint8_t got = gsq::fp8_from_float<F>(x).bits;
    const std::uint8_t want = ref.encode(x);
    if (got != want) {
      if (++bad <= 5) {
        INFO("input bits 0x" << std::hex << u << " (" << x << "): got 0x" << unsigned{got}
                             << ", want 0x" << unsigned{want});
        CHECK(got == want);
      }
    }
  }
  return bad;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

TEST_CASE("FP8 traits match the OFP8 specification", "[fp8]") {
  STATIC_REQUIRE(sizeof(Fp8E4M3) == 1);
  STATIC_REQUIRE(sizeof(Fp8E5M2) == 1);
  REQUIRE(Fp8E4M3::kExpBits == 4);
  REQUIRE(Fp8E4M3::kManBits == 3);
  REQUIRE(Fp8E4M3::kBias == 7);
  REQUIRE(Fp8E4M3::kMaxFinite == 448.0f);
  REQUIRE(Fp8E4M3::kMinNormal == std::ldexp(1.0f, -6));
  REQUIRE(Fp8E4M3::kMinSubnormal == std::ldexp(1.0f, -9));
  REQUIRE(Fp8E5M2::kExpBits == 5);
  REQUIRE(Fp8E5M2::kManBits == 2);
  REQUIRE(Fp8E5M2::kBias == 15);
  REQUIRE(Fp8E5M2::kMaxFinite == 57344.0f);
  REQUIRE(Fp8E5M2::kMinNormal == std::ldexp(1.0f, -14));
  REQUIRE(Fp8E5M2::kMinSubnormal == std::ldexp(1.0f, -16));
  REQUIRE(reference_decode<Fp8E4M3>(Fp8E4M3::kMaxFiniteBits) == 448.0);
  REQUIRE(reference_decode<Fp8E5M2>(Fp8E5M2::kMaxFiniteBits) == 57344.0);
  REQUIRE(std::isnan(reference_decode<Fp8E4M3>(Fp8E4M3::kNanBits)));
  REQUIRE(std::isnan(reference_decode<Fp8E5M2>(Fp8E5M2::kNanBits)));
  // Known points of both tables, so a wrong reference cannot pass unnoticed.
  REQUIRE(reference_decode<Fp8E4M3>(0x38) == 1.0);
  REQUIRE(reference_decode<Fp8E4M3>(0x01) == std::ldexp(1.0, -9));
  REQUIRE(reference_decode<Fp8E4M3>(0x08) == std::ldexp(1.0, -6));
  REQUIRE(reference_decode<Fp8E4M3>(0xC4) == -3.0);
  REQUIRE(reference_decode<Fp8E5M2>(0x3C) == 1.0);
  REQUIRE(reference_decode<Fp8E5M2>(0x01) == std::ldexp(1.0, -16));
  REQUIRE(reference_decode<Fp8E5M2>(0x04) == std::ldexp(1.0, -14));
  REQUIRE(reference_decode<Fp8E5M2>(0x7C) == std::numeric_limits<double>::infinity());
  REQUIRE(reference_decode<Fp8E5M2>(0xFC) == -std::numeric_limits<double>::infinity());
  REQUIRE(reference_decode<Fp8E5M2>(0xC2) == -3.0);
}

TEMPLATE_TEST_CASE("FP8: all 256 codes decode to the specified value", "[fp8]", Fp8E4M3, Fp8E5M2) {
  int nan_codes = 0;
  for (unsigned c = 0; c < 256; ++c) {
    INFO("code 0x" << std::hex << c);
    const float got = gsq::fp8_to_float(TestType{static_cast<std::uint8_t>(c)});
    const double want = reference_decode<TestType>(c);
    if (std::isnan(want)) {
      ++nan_codes;
      REQUIRE(std::isnan(got));
      REQUIRE((to_bits(got) & 0x7FFFFFFFu) == 0x7FC00000u);  // the canonical quiet NaN
    } else {
      REQUIRE(static_cast<double>(got) == want);
    }
    REQUIRE(std::signbit(got) == ((c & 0x80u) != 0));  // -0 and the NaN sign included
  }
  REQUIRE(nan_codes == (spec_of<TestType>().ieee_specials ? 6 : 2));
}

TEMPLATE_TEST_CASE("FP8: encode(decode(c)) == c for every code", "[fp8]", Fp8E4M3, Fp8E5M2) {
  const ReferenceEncoder<TestType>& ref = reference_encoder<TestType>();
  for (std::size_t k = 1; k < ref.mags.size(); ++k) REQUIRE(ref.mags[k - 1] < ref.mags[k]);
  for (unsigned c = 0; c < 256; ++c) {
    INFO("code 0x" << std::hex << c);
    const float x = gsq::fp8_to_float(TestType{static_cast<std::uint8_t>(c)});
    const unsigned got = gsq::fp8_from_float<TestType>(x).bits;
    const double v = reference_decode<TestType>(c);
    if (std::isnan(v)) {
      REQUIRE(got == ((c & 0x80u) | TestType::kNanBits));  // canonical NaN, sign kept
    } else if (std::isinf(v)) {
      REQUIRE(got == ((c & 0x80u) | TestType::kMaxFiniteBits));  // Inf saturates
    } else {
      REQUIRE(got == c);
    }
  }
}

TEMPLATE_TEST_CASE("FP8: every rounding boundary between neighbours", "[fp8]", Fp8E4M3, Fp8E5M2) {
  // For each pair of neighbouring finite values lo < hi: the midpoint goes to the even code, one
  // float below it to lo, one float above it to hi. Both signs.
  const ReferenceEncoder<TestType>& ref = reference_encoder<TestType>();
  for (unsigned k = 1; k < ref.mags.size(); ++k) {
    const auto mid = static_cast<float>((ref.mags[k - 1] + ref.mags[k]) / 2);
    REQUIRE(static_cast<double>(mid) == (ref.mags[k - 1] + ref.mags[k]) / 2);
    const unsigned even = (k % 2 == 0) ? k : k - 1;
    for (const float sign : {1.0f, -1.0f}) {
      const unsigned s = sign < 0 ? 0x80u : 0u;
      INFO("between codes " << k - 1 << " and " << k << ", sign " << sign);
      REQUIRE(gsq::fp8_from_float<TestType>(sign * mid).bits == (s | even));
      REQUIRE(gsq::fp8_from_float<TestType>(sign * std::nextafter(mid, 0.0f)).bits ==
              (s | (k - 1)));
      REQUIRE(gsq::fp8_from_float<TestType>(sign * std::nextafter(mid, 1e30f)).bits == (s | k));
    }
  }
}

TEMPLATE_TEST_CASE("FP8: encoder matches the reference on a sweep of float32", "[fp8]", Fp8E4M3,
                   Fp8E5M2) {
  // Every pattern of the upper 20 bits (all signs, exponents and the top 11 mantissa bits),
  // with several low parts: exact ties for normal results and both neighbours of them.
  for (const std::uint32_t low : {0x000u, 0x001u, 0x800u, 0xFFFu}) {
    REQUIRE(count_mismatches<TestType>(0, std::uint64_t{1} << 32, 1 << 12, low) == 0);
  }
  // A prime stride over all 2^32 patterns reaches every low-bit pattern (about 4.2 million).
  REQUIRE(count_mismatches<TestType>(0, std::uint64_t{1} << 32, 1021, 0) == 0);
}

TEMPLATE_TEST_CASE("FP8: encoder matches the reference on all 2^32 float32 patterns",
                   "[fp8][.slow]", Fp8E4M3, Fp8E5M2) {
  REQUIRE(count_mismatches<TestType>(0, std::uint64_t{1} << 32, 1, 0) == 0);
}

TEST_CASE("FP8: max finite, saturation and infinities", "[fp8]") {
  const float inf = std::numeric_limits<float>::infinity();
  const float big = std::numeric_limits<float>::max();
  // E4M3: 448 is max; 464, the tie with the would-be 480, stays at 448 (even); beyond saturates.
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(448.0f).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-448.0f).bits == 0xFE);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(416.0f).bits == 0x7D);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(447.9f).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(464.0f).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(480.0f).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(1e6f).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(big).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-big).bits == 0xFE);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(inf).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-inf).bits == 0xFE);
  REQUIRE(gsq::fp8_to_float(Fp8E4M3{0x7E}) == 448.0f);
  // E5M2: 57344 is max; 61440 (the tie with 2^16) and beyond saturate; Inf saturates too.
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(57344.0f).bits == 0x7B);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(-57344.0f).bits == 0xFB);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(49152.0f).bits == 0x7A);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(61440.0f).bits == 0x7B);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(65536.0f).bits == 0x7B);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(big).bits == 0x7B);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(inf).bits == 0x7B);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(-inf).bits == 0xFB);
  REQUIRE(gsq::fp8_to_float(Fp8E5M2{0x7B}) == 57344.0f);
  REQUIRE(gsq::fp8_to_float(Fp8E5M2{0x7C}) == inf);
  REQUIRE(gsq::fp8_to_float(Fp8E5M2{0xFC}) == -inf);
  // Rounding up into the next binade carries from the mantissa into the exponent.
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(1.9999f).bits == 0x40);  // 2.0
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(1.9999f).bits == 0x40);  // 2.0
}

TEST_CASE("FP8: subnormals, zeros and NaN", "[fp8]") {
  const float tiny = std::numeric_limits<float>::denorm_min();
  // E4M3 subnormals are k * 2^-9, k = 1..7; 2^-6 is the smallest normal (0x08).
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::ldexp(1.0f, -9)).bits == 0x01);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::ldexp(7.0f, -9)).bits == 0x07);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::ldexp(7.5f, -9)).bits == 0x08);   // tie, to even
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::ldexp(1.0f, -10)).bits == 0x00);  // tie, to even
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::ldexp(3.0f, -10)).bits == 0x02);  // tie, to even
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(std::nextafter(std::ldexp(1.0f, -10), 1.0f)).bits == 0x01);
  REQUIRE(gsq::fp8_to_float(Fp8E4M3{0x03}) == std::ldexp(3.0f, -9));
  REQUIRE(gsq::fp8_to_float(Fp8E4M3{0x87}) == -std::ldexp(7.0f, -9));
  // E5M2 subnormals are k * 2^-16, k = 1..3.
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(std::ldexp(1.0f, -16)).bits == 0x01);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(std::ldexp(3.5f, -16)).bits == 0x04);  // tie, to even
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(std::ldexp(2.5f, -16)).bits == 0x02);  // tie, to even
  REQUIRE(gsq::fp8_to_float(Fp8E5M2{0x83}) == -std::ldexp(3.0f, -16));
  // Float subnormal inputs flush to a signed zero; the sign of zero survives both ways.
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(tiny).bits == 0x00);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-tiny).bits == 0x80);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(-std::numeric_limits<float>::min()).bits == 0x80);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(0.0f).bits == 0x00);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-0.0f).bits == 0x80);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(-0.0f).bits == 0x80);
  REQUIRE(std::signbit(gsq::fp8_to_float(Fp8E4M3{0x80})));
  REQUIRE(gsq::fp8_to_float(Fp8E4M3{0x80}) == 0.0f);
  REQUIRE(std::signbit(gsq::fp8_to_float(Fp8E5M2{0x80})));
  // NaN, quiet or signalling, with either sign, gives the canonical NaN with that sign.
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  const float snan = from_bits(0x7F800001u);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(qnan).bits == 0x7F);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(-qnan).bits == 0xFF);
  REQUIRE(gsq::fp8_from_float<Fp8E4M3>(snan).bits == 0x7F);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(qnan).bits == 0x7E);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(from_bits(0xFFFFFFFFu)).bits == 0xFE);
  REQUIRE(gsq::fp8_from_float<Fp8E5M2>(snan).bits == 0x7E);
  REQUIRE(std::isnan(gsq::fp8_to_float(Fp8E4M3{0x7F})));
  REQUIRE(std::isnan(gsq::fp8_to_float(Fp8E5M2{0x7D})));
}

// ---------------------------------------------------------------------------------------------
// Per-tensor FP8
// ---------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("quantize_fp8: scale, codes and the derived error bound", "[fp8]", Fp8E4M3,
                   Fp8E5M2) {
  const std::ptrdiff_t rows = GENERATE(1, 7, 37);
  const std::ptrdiff_t cols = GENERATE(1, 16, 53);
  const std::ptrdiff_t ld = cols + 5;
  const std::vector<float> src = spread_matrix(rows, cols, ld, static_cast<unsigned>(rows * cols));
  const gsq::Fp8Tensor<TestType> t = gsq::quantize_fp8<TestType>(src.data(), rows, cols, ld);
  REQUIRE(t.rows == rows);
  REQUIRE(t.cols == cols);
  REQUIRE(t.data.size() == static_cast<std::size_t>(rows * cols));

  float amax = 0.0f;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      amax = std::max(amax, std::fabs(src[static_cast<std::size_t>(r * ld + c)]));
    }
  }
  REQUIRE(t.scale == amax / TestType::kMaxFinite);

  // Bound, from the format: kNearestEven on y = fl(x / scale) is off by at most half a step,
  // 2^-(kManBits + 1) |y| where y is normal, and kMinSubnormal / 2 below kMinNormal. Three float
  // roundings of 2^-24 each (the division, the dequantizing multiply, and y vs x / scale) add at
  // most 4 * 2^-24 (|x| + kMinNormal * scale).
  const double half_step_rel = std::ldexp(1.0, -(TestType::kManBits + 1));
  const double half_step_abs = static_cast<double>(TestType::kMinSubnormal) / 2 * t.scale;
  const double u4 = std::ldexp(4.0, -24);
  const std::vector<float> dense = gsq::dequantize_fp8(t);
  bool amax_at_max = false;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      const float x = src[static_cast<std::size_t>(r * ld + c)];
      const TestType code = t.data[static_cast<std::size_t>(r * cols + c)];
      const float xq = dense[static_cast<std::size_t>(r * cols + c)];
      INFO("row " << r << ", column " << c << ": x = " << x << ", x^ = " << xq);
      REQUIRE(code.bits == gsq::fp8_from_float<TestType>(x / t.scale).bits);
      REQUIRE(xq == gsq::fp8_to_float(code) * t.scale);
      REQUIRE(xq == t.at(r, c));
      const double ax = std::fabs(static_cast<double>(x));
      const double bound = std::max(half_step_rel * ax, half_step_abs) +
                           u4 * (ax + static_cast<double>(TestType::kMinNormal) * t.scale);
      REQUIRE(std::fabs(static_cast<double>(xq) - x) <= bound);
      if (std::fabs(x) == amax) amax_at_max = (code.bits & 0x7F) == TestType::kMaxFiniteBits;
    }
  }
  REQUIRE(amax_at_max);  // the largest |x| maps to +-kMaxFinite
}

TEMPLATE_TEST_CASE("quantize_fp8: all-zero, tiny and huge tensors", "[fp8]", Fp8E4M3, Fp8E5M2) {
  SECTION("all zeros give scale 1 and keep the sign of zero") {
    const float src[4] = {0.0f, -0.0f, 0.0f, 0.0f};
    const auto t = gsq::quantize_fp8<TestType>(src, 2, 2, 2);
    REQUIRE(t.scale == 1.0f);
    REQUIRE(t.data[0].bits == 0x00);
    REQUIRE(t.data[1].bits == 0x80);
  }
  SECTION("the extreme finite values do not overflow") {
    const float big = std::numeric_limits<float>::max();
    const float src[3] = {big, -big, 1.0f};
    const auto t = gsq::quantize_fp8<TestType>(src, 1, 3, 3);
    REQUIRE(t.data[0].bits == TestType::kMaxFiniteBits);
    REQUIRE(t.data[1].bits == (0x80 | TestType::kMaxFiniteBits));
    REQUIRE(std::isfinite(t.at(0, 0)));
    REQUIRE(t.at(0, 0) <= big);
    REQUIRE(t.at(0, 0) >= big * (1 - std::ldexp(1.0f, -20)));
  }
  SECTION("a subnormal amax clamps the scale to FLT_MIN") {
    const float tiny = std::ldexp(1.0f, -134);
    const float src[2] = {tiny, -tiny / 2};
    const auto t = gsq::quantize_fp8<TestType>(src, 1, 2, 2);
    REQUIRE(t.scale == std::numeric_limits<float>::min());
    REQUIRE(t.at(0, 0) == tiny);  // x / scale = 2^-8 and 2^-9, FP8 values in both formats
    REQUIRE(t.at(0, 1) == -tiny / 2);
  }
  SECTION("an empty tensor") {
    const auto t = gsq::quantize_fp8<TestType>(nullptr, 0, 5, 5);
    REQUIRE(t.data.empty());
    REQUIRE(t.scale == 1.0f);
    REQUIRE(gsq::dequantize_fp8(t).empty());
  }
}

TEST_CASE("quantize_fp8: errors name the element or the shape", "[fp8]") {
  std::vector<float> m(5 * 20, 1.0f);
  m[3 * 20 + 17] = std::nanf("");
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E4M3>(m.data(), 5, 20, 20); }),
                   "quantize_fp8: NaN at row 3, column 17"));
  m[3 * 20 + 17] = 1.0f;
  m[1 * 20 + 2] = -std::numeric_limits<float>::infinity();
  m[4 * 20 + 0] = std::numeric_limits<float>::infinity();
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E5M2>(m.data(), 5, 20, 20); }),
                   "quantize_fp8: -Inf at row 1, column 2"));
  // With ld = 10 the same buffer is a 9x10 matrix: the -Inf is now row 2, column 2.
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E5M2>(m.data(), 9, 10, 10); }),
                   "-Inf at row 2, column 2"));
  m[1 * 20 + 2] = 1.0f;
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E4M3>(m.data(), 5, 20, 20); }),
                   "quantize_fp8: Inf at row 4, column 0"));
  // The padding beyond cols is not read: a 5x19 view skips nothing but column 19.
  m[4 * 20 + 0] = 1.0f;
  m[2 * 20 + 19] = std::nanf("");
  REQUIRE_NOTHROW(gsq::quantize_fp8<Fp8E4M3>(m.data(), 5, 19, 20));

  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E4M3>(m.data(), -1, 4, 4); }),
                   "quantize_fp8: rows (-1) and cols (4) must be non-negative"));
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E4M3>(m.data(), 2, 8, 5); }),
                   "quantize_fp8: ld (5) must be at least cols (8)"));
  REQUIRE(contains(error_message([&] { gsq::quantize_fp8<Fp8E4M3>(nullptr, 2, 3, 3); }),
                   "quantize_fp8: src is null for a 2x3 tensor"));

  gsq::Fp8Tensor<Fp8E4M3> t = gsq::quantize_fp8<Fp8E4M3>(m.data(), 2, 3, 20);
  std::vector<float> out(6);
  REQUIRE(contains(error_message([&] { gsq::dequantize_fp8(t, out.data(), 2); }),
                   "dequantize_fp8: ld (2) must be at least cols (3)"));
  t.data.pop_back();
  REQUIRE(contains(error_message([&] { gsq::dequantize_fp8(t, out.data(), 3); }),
                   "dequantize_fp8: data holds 5 codes but the tensor is 2x3"));
}

TEMPLATE_TEST_CASE("quantize_fp8: exact ties of x / scale round to even", "[fp8]", Fp8E4M3,
                   Fp8E5M2) {
  // amax = 63 * kMaxFinite gives scale 63, not a power of two. x = 63 * (a midpoint) is exact,
  // so x / scale is exactly the midpoint, and the contract (divide, then kNearestEven) picks the
  // even code. Multiplying by the rounded 1 / 63 instead misses almost every tie (checked below).
  const float s = 63.0f;
  const ReferenceEncoder<TestType>& ref = reference_encoder<TestType>();
  std::vector<float> src = {s * TestType::kMaxFinite};
  int reciprocal_misses = 0;
  for (std::size_t k = 1; k < ref.mags.size(); ++k) {
    const auto mid = static_cast<float>((ref.mags[k - 1] + ref.mags[k]) / 2);
    src.push_back(s * mid);
    REQUIRE(static_cast<double>(src.back()) == 63.0 * static_cast<double>(mid));
    reciprocal_misses += static_cast<int>(src.back() * (1.0f / s) != mid);
    src.push_back(-src.back());
  }
  REQUIRE(reciprocal_misses > 0);
  const auto n = static_cast<std::ptrdiff_t>(src.size());
  const auto t = gsq::quantize_fp8<TestType>(src.data(), 1, n, n);
  REQUIRE(t.scale == s);
  for (std::size_t k = 1; k < ref.mags.size(); ++k) {
    const unsigned even = (k % 2 == 0) ? static_cast<unsigned>(k) : static_cast<unsigned>(k - 1);
    INFO("tie between codes " << k - 1 << " and " << k);
    REQUIRE(t.data[2 * k - 1].bits == even);
    REQUIRE(t.data[2 * k].bits == (0x80u | even));
  }
}

TEST_CASE("dequantize_fp8 honours ld and leaves the padding alone", "[fp8]") {
  const float src[6] = {1.0f, -2.0f, 3.0f, 0.5f, 0.0f, -448.0f};
  const auto t = gsq::quantize_fp8<Fp8E4M3>(src, 2, 3, 3);
  REQUIRE(t.scale == 1.0f);
  std::vector<float> out(2 * 4, 99.0f);
  gsq::dequantize_fp8(t, out.data(), 4);
  const std::vector<float> want = {1.0f, -2.0f, 3.0f, 99.0f, 0.5f, 0.0f, -448.0f, 99.0f};
  REQUIRE(out == want);
}
