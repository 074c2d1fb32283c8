// kernels_test.cpp: every SIMD conversion path against the scalar reference, bit for bit.
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "gsq/convert.hpp"
#include "reference.hpp"

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::Isa;
using gsq::MatrixRef;
using gsq::Rounding;

template <int Bits, int G>
void require_same_as_scalar(Isa isa, Index rows, Index cols, std::uint32_t seed, int lo, int hi) {
  auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), seed, lo, hi);
  if (x.size() > 3) x[x.size() / 2] = std::numeric_limits<float>::infinity();  // kZero path too
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    for (Rounding rounding : {Rounding::kNearestEven, Rounding::kNearestAway, Rounding::kTowardZero,
                              Rounding::kStochastic}) {
      gsq::QuantizeOptions opt;
      opt.rounding = rounding;
      opt.seed = seed * 7919u;
      opt.non_finite = gsq::NonFinitePolicy::kZero;
      opt.isa = Isa::kScalar;
      gsq::ConversionStats ss, vs;
      const auto src = MatrixRef<const float>::row_major(x.data(), rows, cols);
      const auto s = gsq::quantize<Bits, G>(src, axis, opt, &ss);
      opt.isa = isa;
      const auto v = gsq::quantize<Bits, G>(src, axis, opt, &vs);
      INFO(gsq::to_string(isa) << " Bits " << Bits << " G " << G << " " << rows << "x" << cols
                               << " " << gsq::to_string(axis) << " " << gsq::to_string(rounding));
      REQUIRE(s.offset() == v.offset());
      const auto sv = s.view(), vv = v.view();
      REQUIRE(std::memcmp(sv.line_codes(0), vv.line_codes(0),
                          static_cast<std::size_t>(sv.lines() * sv.padded_length())) == 0);
      REQUIRE(std::memcmp(sv.line_exponents(0), vv.line_exponents(0),
                          static_cast<std::size_t>(sv.lines() * sv.groups_per_line())) == 0);
      REQUIRE(ss.saturated == vs.saturated);
      REQUIRE(ss.clamped_groups == vs.clamped_groups);
      REQUIRE(ss.zero_groups == vs.zero_groups);
      REQUIRE(ss.non_finite == vs.non_finite);
      // Dequantization, including the two-step scale of tiny quanta.
      std::vector<float> a(x.size()), b(x.size());
      gsq::dequantize_into(sv, MatrixRef<float>::row_major(a.data(), rows, cols), Isa::kScalar);
      gsq::dequantize_into(sv, MatrixRef<float>::row_major(b.data(), rows, cols), isa);
      REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
  }
}

}  // namespace

TEST_CASE("SIMD conversion kernels are bit-identical to scalar", "[kernels]") {
  const Isa isa = GENERATE(Isa::kAvx2, Isa::kAvx512, Isa::kNeon);
  if (!gsq::cpu_supports(isa)) {  // not a skip: the other ISAs of this case still run
    WARN(gsq::to_string(isa) << " is not available here; the aarch64 preset or GSQ_ISA covers it");
    return;
  }
  const Index n = GENERATE(1, 15, 16, 17, 31, 32, 33, 64, 255, 257);
  require_same_as_scalar<8, 32>(isa, 7, n, static_cast<std::uint32_t>(n), -20, 20);
  require_same_as_scalar<8, 32>(isa, n, 9, static_cast<std::uint32_t>(n + 1), -70, 70);
  require_same_as_scalar<7, 16>(isa, 5, n, static_cast<std::uint32_t>(n + 2), -8, 8);
  require_same_as_scalar<6, 64>(isa, 3, n, static_cast<std::uint32_t>(n + 3), -40, 40);
  require_same_as_scalar<5, 32>(isa, 4, n, static_cast<std::uint32_t>(n + 4), -5, 5);
  require_same_as_scalar<4, 128>(isa, 6, n, static_cast<std::uint32_t>(n + 5), -12, 12);
  require_same_as_scalar<3, 32>(isa, 2, n, static_cast<std::uint32_t>(n + 6), -3, 3);
  require_same_as_scalar<2, 256>(isa, 3, n, static_cast<std::uint32_t>(n + 7), -2, 2);
}

TEST_CASE("SIMD kernels agree with scalar on every bf16 bit pattern", "[kernels]") {
  const Isa isa = GENERATE(Isa::kAvx2, Isa::kAvx512, Isa::kNeon);
  if (!gsq::cpu_supports(isa)) {  // not a skip: the other ISAs of this case still run
    WARN(gsq::to_string(isa) << " is not available here; the aarch64 preset or GSQ_ISA covers it");
    return;
  }
  std::vector<float> x(65536);
  for (std::uint32_t p = 0; p < 65536; ++p)
    x[p] = gsq::to_float(gsq::Bf16{static_cast<std::uint16_t>(p)});
  for (Rounding rounding : {Rounding::kNearestEven, Rounding::kStochastic}) {
    for (const Index cols : {Index{1}, Index{32}}) {  // alone (no clamping) and in groups
      gsq::QuantizeOptions opt;
      opt.rounding = rounding;
      opt.non_finite = gsq::NonFinitePolicy::kZero;
      opt.isa = Isa::kScalar;
      const auto src = MatrixRef<const float>::row_major(x.data(), 65536 / cols, cols);
      const auto s = gsq::quantize<8>(src, Axis::kCols, opt);
      opt.isa = isa;
      const auto v = gsq::quantize<8>(src, Axis::kCols, opt);
      REQUIRE(s.offset() == v.offset());
      for (Index i = 0; i < src.rows; ++i) {
        for (Index j = 0; j < cols; ++j) REQUIRE(s.code(i, j) == v.code(i, j));
      }
    }
  }
}

TEST_CASE("the ISA in use is reported and GSQ_ISA can only lower it", "[kernels]") {
  const Isa best = gsq::conversion_isa();
  INFO("conversion ISA: " << gsq::to_string(best));
  REQUIRE(gsq::cpu_supports(best));
  REQUIRE(gsq::cpu_supports(Isa::kScalar));
#if defined(__aarch64__) && !defined(GSQ_DISABLE_SIMD)
  if (gsq::cpu_supports(Isa::kNeon)) REQUIRE(best == Isa::kNeon);
#endif
  gsq::QuantizeOptions opt;
  opt.isa = Isa::kNeonDot;
  const float one = 1.0f;
  if (!gsq::cpu_supports(Isa::kNeonDot)) {
    REQUIRE_THROWS_AS(
        gsq::quantize<8>(MatrixRef<const float>::row_major(&one, 1, 1), Axis::kCols, opt),
        std::invalid_argument);
  }
}
