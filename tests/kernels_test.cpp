// kernels_test.cpp: every SIMD conversion path against the scalar reference, bit for bit.
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/convert.hpp"
#include "gsq/kernels/float_rows.hpp"
#include "reference.hpp"
#include "testing.hpp"

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

// One test case per ISA, so that an ISA this CPU lacks is reported as skipped, not as passed.
TEMPLATE_TEST_CASE_SIG("SIMD conversion kernels are bit-identical to scalar", "[kernels]",
                       ((Isa I), I), Isa::kAvx2, Isa::kAvx512, Isa::kNeon) {
  if (!gsq::cpu_supports(I)) {
    GSQ_SKIP(gsq::to_string(I) << " is not available on this CPU, or GSQ_ISA rules it out");
  }
  const Index n = GENERATE(1, 15, 16, 17, 31, 32, 33, 64, 255, 257);
  require_same_as_scalar<8, 32>(I, 7, n, static_cast<std::uint32_t>(n), -20, 20);
  require_same_as_scalar<8, 32>(I, n, 9, static_cast<std::uint32_t>(n + 1), -70, 70);
  require_same_as_scalar<7, 16>(I, 5, n, static_cast<std::uint32_t>(n + 2), -8, 8);
  require_same_as_scalar<6, 64>(I, 3, n, static_cast<std::uint32_t>(n + 3), -40, 40);
  require_same_as_scalar<5, 32>(I, 4, n, static_cast<std::uint32_t>(n + 4), -5, 5);
  require_same_as_scalar<4, 128>(I, 6, n, static_cast<std::uint32_t>(n + 5), -12, 12);
  require_same_as_scalar<3, 32>(I, 2, n, static_cast<std::uint32_t>(n + 6), -3, 3);
  require_same_as_scalar<2, 256>(I, 3, n, static_cast<std::uint32_t>(n + 7), -2, 2);
}

// The float tile kernel of attention (kernels/float_rows.hpp): every column count its blocking
// splits differently, strided and transposed A, fresh and accumulated C, and zero, negative,
// tiny and huge operands, against the plain loops.
TEMPLATE_TEST_CASE_SIG("SIMD float_rows kernels are bit-identical to the plain loops", "[kernels]",
                       ((Isa I), I), Isa::kAvx2, Isa::kAvx512, Isa::kNeon) {
  if (!gsq::cpu_supports(I)) {
    GSQ_SKIP(gsq::to_string(I) << " is not available on this CPU, or GSQ_ISA rules it out");
  }
  const gsq::kernels::FloatRowsKernel kernel = gsq::kernels::float_rows_kernel(I);
  REQUIRE(kernel != gsq::kernels::float_rows_kernel(Isa::kScalar));
  const Index n = GENERATE(16, 32, 48, 64, 80, 112, 128, 256);
  const Index depth = GENERATE(0, 1, 7, 48, 100);
  for (int transposed = 0; transposed < 2; ++transposed) {
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
      const auto seed = static_cast<std::uint32_t>(n * 131 + depth * 7 + transposed * 2 + accumulate);
      const Index lda = transposed ? 5 : depth + 3;  // A[r][k] at r * a_row + k * a_col
      auto a = gsq::test::mixed_data(static_cast<std::size_t>((depth + 1) * 8 + 8), seed, -30, 30);
      auto b = gsq::test::mixed_data(static_cast<std::size_t>((depth + 1) * (n + 5)), seed + 1, -30, 30);
      const auto c0 = gsq::test::mixed_data(static_cast<std::size_t>(4 * (n + 3)), seed + 2, -10, 10);
      for (std::size_t i = 0; i < a.size(); i += 5) a[i] = 0.0f;  // zero products, as P's triangle
      std::vector<float> want = c0, got = c0;
      gsq::kernels::FloatRows p;
      p.ldc = n + 3;
      p.a = a.data();
      p.a_row = transposed ? 1 : lda;
      p.a_col = transposed ? lda : 1;
      p.b = b.data();
      p.ldb = n + 5;
      p.n = n;
      p.depth = depth;
      p.accumulate = accumulate != 0;
      p.scale = accumulate ? 1.0f : 0.125f;
      p.c = want.data();
      gsq::kernels::float_rows_spec(p);
      p.c = got.data();
      kernel(p);
      INFO(gsq::to_string(I) << " n " << n << " depth " << depth << " transposed " << transposed
                             << " accumulate " << accumulate);
      REQUIRE(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
    }
  }
}

TEMPLATE_TEST_CASE_SIG("SIMD kernels agree with scalar on every bf16 bit pattern", "[kernels]",
                       ((Isa I), I), Isa::kAvx2, Isa::kAvx512, Isa::kNeon) {
  if (!gsq::cpu_supports(I)) {
    GSQ_SKIP(gsq::to_string(I) << " is not available on this CPU, or GSQ_ISA rules it out");
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
      opt.isa = I;
      const auto v = gsq::quantize<8>(src, Axis::kCols, opt);
      REQUIRE(s.offset() == v.offset());
      for (Index i = 0; i < src.rows; ++i) {
        for (Index j = 0; j < cols; ++j) REQUIRE(s.code(i, j) == v.code(i, j));
      }
    }
  }
}

namespace {

constexpr Isa kAllIsas[] = {Isa::kScalar,     Isa::kAvx2, Isa::kAvx512,
                            Isa::kAvx512Vnni, Isa::kNeon, Isa::kNeonDot};

/// Whether GSQ_ISA = `env` (null: unset) allows `isa`, restated from cpu.hpp's contract: an
/// unknown value is no cap; "scalar" allows only kScalar; any other cap names one architecture
/// and allows kScalar plus that architecture's levels up to itself (x86: avx2 < avx512 <
/// avx512-vnni; ARM: neon < neon-dotprod).
bool cap_allows(const char* env, Isa isa) {
  if (env == nullptr || isa == Isa::kScalar) return true;
  const Isa* cap = nullptr;
  for (const Isa& c : kAllIsas) {
    if (std::strcmp(env, gsq::to_string(c)) == 0) cap = &c;
  }
  if (cap == nullptr) return true;  // unknown: no cap
  if (*cap == Isa::kScalar) return false;
  auto arm = [](Isa i) { return i == Isa::kNeon || i == Isa::kNeonDot; };
  return arm(isa) == arm(*cap) && static_cast<int>(isa) <= static_cast<int>(*cap);
}

}  // namespace

// GSQ_ISA is read once per process, so this test checks the cap this process runs under: none
// in the default ctest run, avx2 and scalar in the isa-caps presets (release-avx2,
// release-scalar), which rerun the whole suite.  ctest's isa.cap.* tests check from outside that
// a cap changes the kernels that actually run (gsq_isa_report).
TEST_CASE("cpu_supports and conversion_isa obey the GSQ_ISA of this process", "[kernels]") {
  const char* env = std::getenv("GSQ_ISA");
  INFO("GSQ_ISA = " << (env == nullptr ? "(unset)" : env));
  for (Isa isa : kAllIsas) {
    INFO(gsq::to_string(isa));
    REQUIRE(gsq::cpu_supports(isa) ==
            (gsq::detail::hardware_supports(isa) && cap_allows(env, isa)));
  }
  // The best conversion kernel allowed: AVX-512 (VNNI shares its kernel), AVX2, NEON, scalar.
  Isa want = Isa::kScalar;
  for (Isa isa : {Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (gsq::detail::hardware_supports(isa) && cap_allows(env, isa)) want = isa;
  }
  INFO("conversion ISA: " << gsq::to_string(gsq::conversion_isa()));
  REQUIRE(gsq::conversion_isa() == want);
  REQUIRE(gsq::cpu_supports(Isa::kScalar));
  // An ISA that is not allowed is an error naming it; an allowed one converts.
  const float one = 1.0f;
  for (Isa isa : kAllIsas) {
    gsq::QuantizeOptions opt;
    opt.isa = isa;
    auto convert = [&] {
      (void)gsq::quantize<8>(MatrixRef<const float>::row_major(&one, 1, 1), Axis::kCols, opt);
    };
    if (gsq::cpu_supports(isa)) {
      REQUIRE(gsq::test::error_message(convert) == "(no exception)");
    } else {
      const std::string message = gsq::test::error_message(convert);
      INFO(message);
      REQUIRE(gsq::test::contains(
          message, std::string("conversion: ISA ") + gsq::to_string(isa) + " is not available"));
    }
  }
}
