// int8_test.cpp: per-tensor INT8 against a double-precision reference, ties and errors exactly.
#include "gsq/baselines/int8.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"
#include "testing.hpp"

namespace {

using gsq::test::contains;
using gsq::test::error_message;
using gsq::test::spread_matrix;

}  // namespace

TEST_CASE("quantize_int8: exact codes for known values", "[int8]") {
  // amax 127 gives scale 1 exactly, so the codes are the rounded inputs.
  const float src[10] = {127.0f, -127.0f, 0.5f, 1.5f, 2.5f, -0.5f, 63.5f, -63.5f, 1.4999999f, 0.0f};
  const gsq::Int8Tensor t = gsq::quantize_int8(src, 2, 5, 5);
  REQUIRE(t.scale == 1.0f);
  const std::vector<std::int8_t> want = {127, -127, 0, 2, 2, 0, 64, -64, 1, 0};
  REQUIRE(t.data == want);
  // amax 254 gives scale 2: 3 -> 1.5 -> 2, 5 -> 2.5 -> 2, -7 -> -3.5 -> -4, 9 -> 4.5 -> 4.
  const float src2[5] = {254.0f, 3.0f, 5.0f, -7.0f, 9.0f};
  const gsq::Int8Tensor t2 = gsq::quantize_int8(src2, 1, 5, 5);
  REQUIRE(t2.scale == 2.0f);
  const std::vector<std::int8_t> want2 = {127, 2, 2, -4, 4};
  REQUIRE(t2.data == want2);
  REQUIRE(gsq::dequantize_int8(t2) == std::vector<float>{254.0f, 4.0f, 4.0f, -8.0f, 8.0f});
  // An all-zero tensor has scale 1.
  const float zeros[3] = {0.0f, -0.0f, 0.0f};
  const gsq::Int8Tensor z = gsq::quantize_int8(zeros, 3, 1, 1);
  REQUIRE(z.scale == 1.0f);
  REQUIRE(z.data == std::vector<std::int8_t>{0, 0, 0});
}

TEST_CASE("quantize_int8: exact ties of x / scale round to even", "[int8]") {
  // amax = 127 * 63 gives scale 63; x = 63 * (k + 0.5) divides exactly to the tie k + 0.5.
  // Multiplying by the rounded 1 / 63 instead misses most ties (checked below).
  const float s = 63.0f;
  std::vector<float> src = {127.0f * s};
  int reciprocal_misses = 0;
  for (int k = 0; k < 127; ++k) {
    const float tie = static_cast<float>(k) + 0.5f;
    src.push_back(s * tie);
    reciprocal_misses += static_cast<int>(src.back() * (1.0f / s) != tie);
    src.push_back(-src.back());
  }
  REQUIRE(reciprocal_misses > 0);
  const auto n = static_cast<std::ptrdiff_t>(src.size());
  const gsq::Int8Tensor t = gsq::quantize_int8(src.data(), 1, n, n);
  REQUIRE(t.scale == s);
  for (int k = 0; k < 127; ++k) {
    const int even = (k % 2 == 0) ? k : k + 1;
    INFO("tie at " << k << ".5");
    REQUIRE(t.data[static_cast<std::size_t>(2 * k + 1)] == even);
    REQUIRE(t.data[static_cast<std::size_t>(2 * k + 2)] == -even);
  }
}

TEST_CASE("quantize_int8: |x - x^| <= scale / 2 and kNearestEven codes", "[int8]") {
  const std::ptrdiff_t rows = GENERATE(1, 9, 33);
  const std::ptrdiff_t cols = GENERATE(1, 17, 64);
  const std::ptrdiff_t ld = cols + 3;
  const std::vector<float> src =
      spread_matrix(rows, cols, ld, 1000u + static_cast<unsigned>(rows * cols));
  const gsq::Int8Tensor t = gsq::quantize_int8(src.data(), rows, cols, ld);
  float amax = 0.0f;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      amax = std::max(amax, std::fabs(src[static_cast<std::size_t>(r * ld + c)]));
    }
  }
  REQUIRE(t.scale == amax / 127.0f);
  // scale / 2, plus the float roundings of x / scale and code * scale: each at most
  // 2^-24 * 127 * scale (|x / scale| and |code| are at most 127, up to one rounding).
  const double bound = t.scale * (0.5 + 2 * 128 * std::ldexp(1.0, -24));
  const std::vector<float> dense = gsq::dequantize_int8(t);
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      const float x = src[static_cast<std::size_t>(r * ld + c)];
      const int code = t.data[static_cast<std::size_t>(r * cols + c)];
      const float xq = dense[static_cast<std::size_t>(r * cols + c)];
      INFO("row " << r << ", column " << c << ": x = " << x << ", code " << code);
      const double y = static_cast<double>(x / t.scale);
      const double nearest = gsq::test::round_as(y, gsq::Rounding::kNearestEven);
      REQUIRE(code == static_cast<int>(std::min(127.0, std::max(-127.0, nearest))));
      REQUIRE(xq == static_cast<float>(code) * t.scale);
      REQUIRE(xq == t.at(r, c));
      REQUIRE(std::fabs(static_cast<double>(xq) - x) <= bound);
      if (std::fabs(x) == amax) REQUIRE(std::abs(code) == 127);
    }
  }
}

TEST_CASE("quantize_int8: errors name the element or the shape", "[int8]") {
  std::vector<float> m(4 * 6, 0.25f);
  m[1 * 6 + 2] = std::nanf("");
  REQUIRE(contains(error_message([&] { gsq::quantize_int8(m.data(), 4, 6, 6); }),
                   "quantize_int8: NaN at row 1, column 2"));
  m[1 * 6 + 2] = std::numeric_limits<float>::infinity();
  REQUIRE(contains(error_message([&] { gsq::quantize_int8(m.data(), 4, 6, 6); }),
                   "quantize_int8: Inf at row 1, column 2"));
  REQUIRE(contains(error_message([&] { gsq::quantize_int8(m.data(), 3, -2, 6); }),
                   "quantize_int8: rows (3) and cols (-2) must be non-negative"));
  REQUIRE(contains(error_message([&] { gsq::quantize_int8(m.data(), 2, 6, 4); }),
                   "quantize_int8: ld (4) must be at least cols (6)"));
  m[1 * 6 + 2] = 1.0f;
  gsq::Int8Tensor t = gsq::quantize_int8(m.data(), 4, 6, 6);
  t.rows = 5;
  std::vector<float> out(5 * 6);
  REQUIRE(contains(error_message([&] { gsq::dequantize_int8(t, out.data(), 6); }),
                   "dequantize_int8: data holds 24 codes but the tensor is 5x6"));
  t.rows = 4;
  REQUIRE(contains(error_message([&] { gsq::dequantize_int8(t, nullptr, 6); }),
                   "dequantize_int8: dst is null for a 4x6 tensor"));
}
