// half_test.cpp: bf16 / fp16 bit patterns <-> float32, exhaustively.
#include "gsq/half.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

#include "catch.hpp"

TEST_CASE("every fp16 pattern widens to the value its fields define", "[half]") {
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto bits = static_cast<std::uint16_t>(p);
    const float v = gsq::to_float(gsq::Fp16{bits});
    const int sign = (p >> 15) ? -1 : 1;
    const int exp = (p >> 10) & 0x1F;
    const int man = p & 0x3FF;
    INFO("pattern " << p);
    if (exp == 31) {
      REQUIRE((man == 0 ? std::isinf(v) : std::isnan(v)));
      continue;
    }
    const double expected =
        sign * (exp == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, exp - 25));
    REQUIRE(double{v} == expected);
    REQUIRE(std::signbit(v) == (sign < 0));
    REQUIRE(gsq::to_fp16(v).bits == bits);  // narrowing is the exact inverse
  }
}

TEST_CASE("every bf16 pattern round-trips through float32", "[half]") {
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto bits = static_cast<std::uint16_t>(p);
    const float v = gsq::to_float(gsq::Bf16{bits});
    REQUIRE(gsq::float_bits(v) == p << 16);
    if (!std::isnan(v)) REQUIRE(gsq::to_bf16(v).bits == bits);
  }
}

TEST_CASE("float32 narrows with round-to-nearest-even", "[half]") {
  // Ties between adjacent fp16 / bf16 values go to the even pattern.
  REQUIRE(gsq::to_fp16(1.0f + std::ldexp(1.0f, -11)).bits == 0x3C00);      // tie, even below
  REQUIRE(gsq::to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)).bits == 0x3C02);  // tie, even above
  REQUIRE(gsq::to_fp16(65519.0f).bits == 0x7BFF);
  REQUIRE(gsq::to_fp16(65520.0f).bits == 0x7C00);               // overflow to Inf
  REQUIRE(gsq::to_fp16(std::ldexp(1.0f, -25)).bits == 0x0000);  // tie to 0
  REQUIRE(gsq::to_fp16(std::ldexp(1.5f, -25)).bits == 0x0001);
  REQUIRE(gsq::to_fp16(std::ldexp(3.0f, -25)).bits == 0x0002);  // tie, even above
  REQUIRE(std::isnan(gsq::to_float(gsq::to_fp16(std::numeric_limits<float>::quiet_NaN()))));
  REQUIRE(gsq::to_bf16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3F80);
  REQUIRE(gsq::to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3F82);
  REQUIRE(std::isnan(gsq::to_float(gsq::to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}
