// convert_test.cpp: float/bf16/fp16 -> GSE-INT against the float definition, exactly.
#include "gsq/convert.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/nn/options.hpp"  // detail::stream_seed, the seeds of a LoRA layer's gradient streams
#include "reference.hpp"
#include "testing.hpp"

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::MatrixRef;
using gsq::Rounding;

constexpr Rounding kDeterministic[] = {Rounding::kNearestEven, Rounding::kNearestAway,
                                       Rounding::kTowardZero};

/// Checks every code, exponent and the offset of `t` against the double-precision definition.
template <int Bits, int G>
void require_matches_reference(const gsq::GseTensor<Bits, G>& t, const std::vector<float>& x,
                               Index rows, Index cols, Axis axis, Rounding rounding,
                               const gsq::ConversionStats& stats) {
  const auto ref = gsq::test::ref_quantize(x, rows, cols, axis, Bits, G, rounding);
  REQUIRE(t.offset() == ref.offset);
  CHECK(stats.clamped_groups == ref.clamped_groups);
  CHECK(stats.saturated == ref.saturated);
  const auto v = t.view();
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      const auto k = static_cast<std::size_t>(i * cols + j);
      const Index line = t.shape().line_of(i, j);
      const Index pos = t.shape().pos_of(i, j);
      if (t.code(i, j) != ref.codes[k] ||
          (ref.codes[k] != 0 && v.quantum(line, pos) != ref.quantum[k])) {
        INFO("x = " << x[k] << " at (" << i << ", " << j << "), rounding "
                    << gsq::to_string(rounding) << ", Bits " << Bits << ", G " << G);
        REQUIRE(int{t.code(i, j)} == ref.codes[k]);
        REQUIRE(v.quantum(line, pos) == ref.quantum[k]);
      }
    }
  }
  // Padding codes are zero.
  for (Index line = 0; line < v.lines(); ++line) {
    for (Index p = v.length(); p < v.padded_length(); ++p) REQUIRE(v.line_codes(line)[p] == 0);
  }
}

template <int Bits, int G>
void check_against_reference(Index rows, Index cols, std::uint32_t seed, int lo, int hi) {
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), seed, lo, hi);
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    for (Rounding rounding : kDeterministic) {
      gsq::ConversionStats stats;
      gsq::QuantizeOptions opt;
      opt.rounding = rounding;
      const auto t = gsq::quantize<Bits, G>(MatrixRef<const float>::row_major(x.data(), rows, cols),
                                            axis, opt, &stats);
      require_matches_reference(t, x, rows, cols, axis, rounding, stats);
    }
  }
}

}  // namespace

TEST_CASE("quantize matches the float definition for every deterministic rounding", "[convert]") {
  // Shapes with partial groups on both axes; magnitudes within and beyond 31 binades.
  check_against_reference<8, 32>(37, 70, 1, -20, 20);
  check_against_reference<8, 32>(33, 65, 2, -60, 60);  // clamped groups
  check_against_reference<7, 16>(19, 50, 3, -10, 10);
  check_against_reference<6, 64>(70, 130, 4, -30, 30);
  check_against_reference<5, 32>(9, 100, 5, -5, 5);
  check_against_reference<4, 32>(64, 96, 6, -20, 20);
  check_against_reference<3, 128>(5, 300, 7, -3, 3);
  check_against_reference<2, 16>(16, 33, 8, -8, 8);
  check_against_reference<8, 256>(3, 600, 9, -12, 12);
}

TEST_CASE("every bf16 and fp16 bit pattern quantizes as the float definition says", "[convert]") {
  for (const bool fp16 : {false, true}) {
    std::vector<float> x;
    std::vector<std::uint16_t> patterns;
    for (std::uint32_t p = 0; p < 65536; ++p) {
      const auto bits = static_cast<std::uint16_t>(p);
      const float v = fp16 ? gsq::to_float(gsq::Fp16{bits}) : gsq::to_float(gsq::Bf16{bits});
      if (!std::isfinite(v)) continue;
      x.push_back(v);
      patterns.push_back(bits);
    }
    INFO((fp16 ? "fp16" : "bf16") << ", " << x.size() << " finite patterns");
    // (a) Each pattern alone: its own group, its own tensor, no clamping.
    for (Rounding rounding : kDeterministic) {
      gsq::QuantizeOptions opt;
      opt.rounding = rounding;
      for (std::size_t k = 0; k < x.size(); ++k) {
        const std::vector<float> one{x[k]};
        gsq::ConversionStats stats;
        gsq::GseTensor<8, 32> t;
        if (fp16) {
          const gsq::Fp16 h{patterns[k]};
          t = gsq::quantize<8, 32>(MatrixRef<const gsq::Fp16>::row_major(&h, 1, 1), Axis::kCols,
                                   opt, &stats);
        } else {
          const gsq::Bf16 h{patterns[k]};
          t = gsq::quantize<8, 32>(MatrixRef<const gsq::Bf16>::row_major(&h, 1, 1), Axis::kCols,
                                   opt, &stats);
        }
        const auto ref = gsq::test::ref_quantize(one, 1, 1, Axis::kCols, 8, 32, rounding);
        if (t.code(0, 0) != ref.codes[0] ||
            (x[k] != 0 && t.view().quantum(0, 0) != ref.quantum[0])) {
          INFO("pattern 0x" << std::hex << patterns[k] << std::dec << " = " << x[k]);
          REQUIRE(int{t.code(0, 0)} == ref.codes[0]);
          REQUIRE(t.view().quantum(0, 0) == ref.quantum[0]);
        }
      }
    }
    // (b) All patterns in one tensor, neighbours sharing groups, with heavy clamping.
    const auto rows = static_cast<Index>(x.size() / 32);
    for (Rounding rounding : kDeterministic) {
      gsq::QuantizeOptions opt;
      opt.rounding = rounding;
      gsq::ConversionStats stats;
      const auto t = gsq::quantize<8, 32>(MatrixRef<const float>::row_major(x.data(), rows, 32),
                                          Axis::kCols, opt, &stats);
      const std::vector<float> head(x.begin(), x.begin() + rows * 32);
      require_matches_reference(t, head, rows, 32, Axis::kCols, rounding, stats);
      CHECK(stats.clamped_groups > 0);
    }
  }
}

TEST_CASE("bf16 and fp16 inputs quantize exactly like their float32 widening", "[convert]") {
  const Index rows = 40, cols = 75;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), 11, -10, 10);
  std::vector<gsq::Bf16> b;
  std::vector<gsq::Fp16> h;
  std::vector<float> wb, wh;
  for (float v : x) {
    b.push_back(gsq::to_bf16(v));
    h.push_back(gsq::to_fp16(v));
    wb.push_back(gsq::to_float(b.back()));
    wh.push_back(gsq::to_float(h.back()));
  }
  gsq::QuantizeOptions opt;
  opt.rounding = Rounding::kStochastic;
  opt.seed = 99;
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    const auto tb =
        gsq::quantize<6>(MatrixRef<const gsq::Bf16>::row_major(b.data(), rows, cols), axis, opt);
    const auto tf =
        gsq::quantize<6>(MatrixRef<const float>::row_major(wb.data(), rows, cols), axis, opt);
    const auto th =
        gsq::quantize<6>(MatrixRef<const gsq::Fp16>::row_major(h.data(), rows, cols), axis, opt);
    const auto tg =
        gsq::quantize<6>(MatrixRef<const float>::row_major(wh.data(), rows, cols), axis, opt);
    REQUIRE(tb.offset() == tf.offset());
    REQUIRE(th.offset() == tg.offset());
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) {
        REQUIRE(tb.code(i, j) == tf.code(i, j));
        REQUIRE(th.code(i, j) == tg.code(i, j));
        REQUIRE(tb.view().quantum(tb.shape().line_of(i, j), tb.shape().pos_of(i, j)) ==
                tf.view().quantum(tf.shape().line_of(i, j), tf.shape().pos_of(i, j)));
      }
    }
  }
}

TEST_CASE("round trip error is within the bound the format gives", "[convert]") {
  // The step 2^s of each element is the float definition's (reference.hpp), not the tested
  // tensor's.  Nearest modes: |x - x^| <= 2^(s-1), half a step, except where |x| > (kQMax + 1/2)
  // 2^s and the code saturates (off by |x| - kQMax 2^s, under one step).  Toward zero and
  // stochastic: < one step.  Rounding toward zero where nearest was asked for breaks the first.
  constexpr int kBits = 5;
  constexpr double kQMax = gsq::GseFormat<kBits>::kQMax;
  const Index rows = 64, cols = 256;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), 21, -12, 12);
  // Quanta do not depend on the rounding mode.
  const auto ref =
      gsq::test::ref_quantize(x, rows, cols, Axis::kCols, kBits, 32, Rounding::kNearestEven);
  for (Rounding rounding : {Rounding::kNearestEven, Rounding::kNearestAway, Rounding::kTowardZero,
                            Rounding::kStochastic}) {
    gsq::QuantizeOptions opt;
    opt.rounding = rounding;
    opt.seed = 5;
    const auto t = gsq::quantize<kBits>(MatrixRef<const float>::row_major(x.data(), rows, cols),
                                        Axis::kCols, opt);
    const auto y = gsq::dequantize(t);
    const bool nearest = rounding == Rounding::kNearestEven || rounding == Rounding::kNearestAway;
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double step = std::ldexp(1.0, ref.quantum[k]);
      const double ax = std::fabs(double{x[k]});
      const double err = std::fabs(double{x[k]} - double{y[k]});
      INFO("x = " << x[k] << " at " << k << ", step 2^" << ref.quantum[k] << ", rounding "
                  << gsq::to_string(rounding) << ", x^ = " << y[k]);
      if (nearest) REQUIRE(err <= std::max(step / 2, ax - kQMax * step));
      REQUIRE(err < step);
    }
  }
}

TEST_CASE("GSE-INT8 with nearest-away equals OCP MXINT8 bit for bit", "[convert][mx]") {
  // Our own implementation of the OCP MX v1.0 rule for MXINT8: blocks of 32, shared scale
  // X = 2^(floor(log2(amax)) - emax) with emax = 0 for INT8, elements 1.6 fixed point rounded half
  // away from zero and clamped to +-127/64.
  auto mxint8 = [](const float* block) {
    double amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double{block[i]}));
    std::vector<double> out(32, 0.0);
    if (amax == 0) return out;
    const int shared = std::clamp(static_cast<int>(std::floor(std::log2(amax))), -127, 127);
    const double scale = std::ldexp(1.0, shared);
    for (int i = 0; i < 32; ++i) {
      double e = std::round(double{block[i]} / scale * 64.0) / 64.0;
      e = std::clamp(e, -127.0 / 64.0, 127.0 / 64.0);
      out[static_cast<std::size_t>(i)] = e * scale;
    }
    return out;
  };
  gsq::detail::Rng rng(7);
  const Index rows = 128, cols = 256;
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (Index i = 0; i < rows; ++i) {
    for (Index b = 0; b < cols / 32; ++b) {
      const int k = -25 + static_cast<int>(rng.below(31));  // within 31 binades: none clamped
      for (Index j = b * 32; j < b * 32 + 32; ++j) {
        x[static_cast<std::size_t>(i * cols + j)] = std::ldexp(rng.normal(), k);
      }
    }
  }
  for (Index j = 0; j < 32; ++j) x[static_cast<std::size_t>(j)] = std::ldexp(rng.normal(), -3);
  x[0] = 1.9999999f;  // rounds up to 128/64 and saturates in both
  gsq::QuantizeOptions opt;
  opt.rounding = Rounding::kNearestAway;
  gsq::ConversionStats stats;
  const auto t = gsq::quantize<8, 32>(MatrixRef<const float>::row_major(x.data(), rows, cols),
                                      Axis::kCols, opt, &stats);
  REQUIRE(stats.clamped_groups == 0);
  REQUIRE(stats.saturated >= 1);
  const auto y = gsq::dequantize(t);
  for (Index i = 0; i < rows; ++i) {
    for (Index b = 0; b < cols / 32; ++b) {
      const auto mx = mxint8(&x[static_cast<std::size_t>(i * cols + b * 32)]);
      for (Index j = 0; j < 32; ++j) {
        REQUIRE(double{y[static_cast<std::size_t>(i * cols + b * 32 + j)]} ==
                mx[static_cast<std::size_t>(j)]);
      }
    }
  }
}

TEST_CASE("stochastic rounding is reproducible and unbiased", "[convert][stochastic]") {
  // Each group holds 1.0 (fixing the quantum at 2^-6 for GSE-INT8) and 31 copies of v, which
  // lies a fraction p of a step above a grid point; E[code] must be floor + p.
  const Index groups = 8192;
  for (const double p : {0.5, 0.125, 0.9, 1.0 / 1024}) {
    const double v = (17 + p) / 64.0;
    std::vector<float> x(static_cast<std::size_t>(groups * 32), static_cast<float>(v));
    for (Index g = 0; g < groups; ++g) x[static_cast<std::size_t>(g * 32)] = 1.0f;
    gsq::QuantizeOptions opt;
    opt.rounding = Rounding::kStochastic;
    opt.seed = 1234;
    const auto t = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, groups * 32),
                                    Axis::kCols, opt);
    double sum = 0;
    Index n = 0;
    for (Index j = 0; j < groups * 32; ++j) {
      if (j % 32 == 0) continue;
      const int c = t.code(0, j);
      REQUIRE((c == 17 || c == 18));
      sum += c - 17;
      ++n;
    }
    const double mean = sum / static_cast<double>(n);
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
    INFO("p = " << p << ", mean = " << mean << ", sigma = " << sigma);
    REQUIRE(std::fabs(mean - p) <= 5 * sigma + 1e-12);
    // Same seed: identical.  Another seed: a different draw.
    const auto again = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, groups * 32),
                                        Axis::kCols, opt);
    opt.seed = 1235;
    const auto other = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, groups * 32),
                                        Axis::kCols, opt);
    Index same = 0, differ = 0;
    for (Index j = 0; j < groups * 32; ++j) {
      same += t.code(0, j) == again.code(0, j);
      differ += t.code(0, j) != other.code(0, j);
    }
    REQUIRE(same == groups * 32);
    if (p > 0.01) REQUIRE(differ > 0);
  }
}

namespace {

/// The round-up decisions (0 or 1, row-major) of stochastic rounding to GSE-INT8 of a rows x cols
/// tensor whose every value lies exactly halfway between two codes: 100.5 * 2^-10, whose group
/// quantum is 2^-10, so each code is 100 or 101, up with probability 1/2 (the top bit of the
/// element's random number).  `bad` counts codes that are neither.
std::vector<int> halfway_decisions(Index rows, Index cols, Axis axis, std::uint64_t seed,
                                   std::optional<gsq::Isa> isa, Index& bad) {
  const std::vector<float> x(static_cast<std::size_t>(rows * cols), 100.5f / 1024.0f);
  gsq::QuantizeOptions opt;
  opt.rounding = Rounding::kStochastic;
  opt.seed = seed;
  opt.isa = isa;
  const auto t =
      gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), rows, cols), axis, opt);
  std::vector<int> up(x.size());
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      const int c = t.code(i, j);
      bad += c != 100 && c != 101;
      up[static_cast<std::size_t>(i * cols + j)] = c - 100;
    }
  }
  return up;
}

/// The correlation (phi coefficient) of the 0/1 pairs (a[k], b[k]).  For independent fair
/// decisions it is about normal with mean 0 and standard deviation 1 / sqrt(n).
double correlation(const std::vector<int>& a, const std::vector<int>& b) {
  double sa = 0, sb = 0, sab = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    sa += a[k];
    sb += b[k];
    sab += a[k] * b[k];
  }
  const auto n = static_cast<double>(a.size());
  const double pa = sa / n, pb = sb / n;
  return (sab / n - pa * pb) / std::sqrt(pa * (1 - pa) * pb * (1 - pb));
}

}  // namespace

TEST_CASE("stochastic-rounding streams are independent across lines, operands and steps",
          "[convert][stochastic]") {
  // Decisions on halfway values are fair coins; any two streams that should be independent must
  // correlate by less than 3 / sqrt(n), n the number of decision pairs.  A hash that ignores the
  // line, the step or the operand correlates them fully (1.0; each planted and seen to fail).
  // Measured, as multiples of 1 / sqrt(n) (identical on every ISA): lines at most 2.81 (seed
  // 0x0123..., kCols, lines 32 apart: 0.0078 over 131072 pairs), operands at most 1.82, steps at
  // most 0.86 (over 262144 pairs); over 4096 x 4096 pairs the same line distances stay under 2.1,
  // so the 2.81 is chance, not structure.
  const Index rows = 64, cols = 4096;
  const auto lines_of = [&](const std::vector<int>& up, Axis axis, Index first, Index count) {
    // Lines [first, first + count) of a rows x cols decision matrix, one after another.
    std::vector<int> out;
    const Index len = axis == Axis::kCols ? cols : rows;
    for (Index l = first; l < first + count; ++l) {
      for (Index p = 0; p < len; ++p) {
        out.push_back(
            up[static_cast<std::size_t>(axis == Axis::kCols ? l * cols + p : p * cols + l)]);
      }
    }
    return out;
  };
  const std::uint64_t seed = GENERATE(std::uint64_t{0}, std::uint64_t{0x0123456789ABCDEFu});
  // The default ISA's kernels and the scalar one's compute the hash separately.
  for (const std::optional<gsq::Isa> isa :
       {std::optional<gsq::Isa>{}, std::optional(gsq::Isa::kScalar)}) {
    INFO("seed " << seed << ", ISA " << (isa ? gsq::to_string(*isa) : "default"));
    Index bad = 0;
    // Lines: line l against line l + 1, and against line l + half, along both axes.
    for (Axis axis : {Axis::kCols, Axis::kRows}) {
      const auto up = halfway_decisions(rows, cols, axis, seed, isa, bad);
      const Index lines = axis == Axis::kCols ? rows : cols;
      for (const Index apart : {Index{1}, lines / 2}) {
        const auto a = lines_of(up, axis, 0, lines - apart);
        const auto b = lines_of(up, axis, apart, lines - apart);
        const double r = correlation(a, b);
        INFO(gsq::to_string(axis) << ", lines " << apart << " apart: correlation " << r << " over "
                                  << a.size());
        REQUIRE(std::fabs(r) < 3 / std::sqrt(static_cast<double>(a.size())));
      }
    }
    // Operands and steps: the seeds LoraLinear derives for the four quantizations of a backward
    // pass (operand 0..3) and for consecutive steps.
    const double bound = 3 / std::sqrt(static_cast<double>(rows * cols));
    std::vector<std::vector<int>> by_operand, by_step;
    for (std::uint32_t op = 0; op < 4; ++op) {
      by_operand.push_back(halfway_decisions(rows, cols, Axis::kCols,
                                             gsq::detail::stream_seed(seed, 7, op), isa, bad));
    }
    for (std::int64_t step = 0; step < 4; ++step) {
      by_step.push_back(halfway_decisions(rows, cols, Axis::kCols,
                                          gsq::detail::stream_seed(seed, step, 2), isa, bad));
    }
    for (std::size_t i = 0; i < 4; ++i) {
      for (std::size_t j = i + 1; j < 4; ++j) {
        const double ro = correlation(by_operand[i], by_operand[j]);
        const double rs = correlation(by_step[i], by_step[j]);
        INFO("operands " << i << " and " << j << ": " << ro << "; steps " << i << " and " << j
                         << ": " << rs << " (bound " << bound << ")");
        REQUIRE(std::fabs(ro) < bound);
        REQUIRE(std::fabs(rs) < bound);
      }
    }
    REQUIRE(bad == 0);
  }
}

TEST_CASE("edge groups follow the format policy", "[convert][edge]") {
  using T8 = gsq::GseTensor<8, 32>;
  SECTION("all-zero tensor and all-zero group") {
    std::vector<float> x(64, 0.0f);
    x[40] = -0.0f;
    gsq::ConversionStats stats;
    const T8 t = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, 64), Axis::kCols,
                                  {}, &stats);
    REQUIRE(t.offset() == 0);
    REQUIRE(stats.zero_groups == 2);
    for (Index j = 0; j < 64; ++j) REQUIRE(t.code(0, j) == 0);
    x[3] = 3.0f;
    const T8 u = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, 64), Axis::kCols,
                                  {}, &stats);
    REQUIRE(stats.zero_groups == 1);
    REQUIRE(u.view().line_exponents(0)[1] == 0);
    REQUIRE(u.value(0, 3) == 3.0f);
  }
  SECTION("NaN and Inf throw naming row and column, or become zero under kZero") {
    std::vector<float> x(6 * 40, 1.0f);
    x[3 * 40 + 17] = std::numeric_limits<float>::quiet_NaN();
    for (Axis axis : {Axis::kCols, Axis::kRows}) {
      try {
        (void)gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 6, 40), axis);
        FAIL("no exception");
      } catch (const std::invalid_argument& e) {
        REQUIRE(std::string(e.what()).find("NaN at row 3, column 17") != std::string::npos);
      }
    }
    x[5 * 40 + 39] = -std::numeric_limits<float>::infinity();
    try {
      const gsq::Bf16 inf{0xFF80};
      (void)gsq::quantize<8>(MatrixRef<const gsq::Bf16>::row_major(&inf, 1, 1), Axis::kCols);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      REQUIRE(std::string(e.what()).find("Inf at row 0, column 0") != std::string::npos);
    }
    gsq::QuantizeOptions opt;
    opt.non_finite = gsq::NonFinitePolicy::kZero;
    gsq::ConversionStats stats;
    const T8 t = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 6, 40), Axis::kCols,
                                  opt, &stats);
    REQUIRE(stats.non_finite == 2);
    REQUIRE(t.code(3, 17) == 0);
    REQUIRE(t.code(5, 39) == 0);
    REQUIRE(t.value(3, 16) == 1.0f);
  }
  SECTION("extreme exponents: FLT_MAX saturates, the smallest subnormal is exact") {
    const float big[2] = {std::numeric_limits<float>::max(), -1.5f};
    gsq::ConversionStats stats;
    const T8 t =
        gsq::quantize<8>(MatrixRef<const float>::row_major(big, 1, 2), Axis::kCols, {}, &stats);
    REQUIRE(stats.saturated == 1);
    REQUIRE(t.code(0, 0) == 127);
    REQUIRE(t.offset() == gsq::GseFormat<8>::kMaxOffset);
    REQUIRE(t.value(0, 0) == std::ldexp(127.0f, 121));
    const float tiny = std::numeric_limits<float>::denorm_min();
    const T8 u = gsq::quantize<8>(MatrixRef<const float>::row_major(&tiny, 1, 1), Axis::kCols);
    REQUIRE(u.offset() == gsq::GseFormat<8>::kMinOffset);
    REQUIRE(u.code(0, 0) == 64);
    REQUIRE(u.value(0, 0) == tiny);
  }
  SECTION("a tensor scaled by 2^-27 keeps every code: the offset absorbs the scale") {
    const auto x = gsq::test::mixed_data(50 * 64, 31, -3, 3);
    std::vector<float> small(x.size());
    for (std::size_t k = 0; k < x.size(); ++k) small[k] = std::ldexp(x[k], -27);  // ~1e-8
    const T8 a = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 50, 64), Axis::kCols);
    const T8 b =
        gsq::quantize<8>(MatrixRef<const float>::row_major(small.data(), 50, 64), Axis::kCols);
    REQUIRE(b.offset() == a.offset() - 27);
    for (Index i = 0; i < 50; ++i) {
      for (Index j = 0; j < 64; ++j) REQUIRE(a.code(i, j) == b.code(i, j));
    }
  }
  SECTION("groups more than 31 binades below the largest are clamped and counted") {
    std::vector<float> x(64, 0.0f);
    x[0] = 1.0f;
    x[32] = std::ldexp(1.0f, -33);  // q = -39, T = -6 - 31 = -37: clamped, codes shift by 2
    x[33] = std::ldexp(1.0f, -39);  // a quarter of the clamped step: rounds to 0
    gsq::ConversionStats stats;
    const T8 t = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), 1, 64), Axis::kCols,
                                  {}, &stats);
    REQUIRE(stats.clamped_groups == 1);
    REQUIRE(t.view().line_exponents(0)[1] == 0);
    REQUIRE(t.code(0, 32) == 16);
    REQUIRE(t.code(0, 33) == 0);
    REQUIRE(t.value(0, 32) == x[32]);
  }
  SECTION("empty tensors") {
    gsq::ConversionStats stats;
    const T8 a =
        gsq::quantize<8>(MatrixRef<const float>::row_major(nullptr, 0, 5), Axis::kCols, {}, &stats);
    REQUIRE(stats.groups == 0);
    REQUIRE(a.rows() == 0);
    const T8 b =
        gsq::quantize<8>(MatrixRef<const float>::row_major(nullptr, 5, 0), Axis::kCols, {}, &stats);
    REQUIRE(b.view().groups_per_line() == 0);
    REQUIRE(gsq::dequantize(b).empty());
  }
}

TEST_CASE("strided sources: column-major and kRows agree with the transposed kCols", "[convert]") {
  const Index rows = 45, cols = 70;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), 41, -9, 9);
  std::vector<float> xt(x.size());  // column-major copy = row-major transpose
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      xt[static_cast<std::size_t>(j * rows + i)] = x[static_cast<std::size_t>(i * cols + j)];
    }
  }
  gsq::QuantizeOptions opt;
  opt.rounding = Rounding::kStochastic;
  opt.seed = 3;
  const auto a =
      gsq::quantize<7>(MatrixRef<const float>::row_major(x.data(), rows, cols), Axis::kRows, opt);
  const auto b =
      gsq::quantize<7>(MatrixRef<const float>::col_major(xt.data(), rows, cols), Axis::kRows, opt);
  const auto c =
      gsq::quantize<7>(MatrixRef<const float>::row_major(xt.data(), cols, rows), Axis::kCols, opt);
  REQUIRE(a.offset() == b.offset());
  REQUIRE(a.offset() == c.offset());
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      REQUIRE(a.code(i, j) == b.code(i, j));
      REQUIRE(a.code(i, j) == c.code(j, i));
    }
  }
  // Strided output.
  std::vector<float> out(static_cast<std::size_t>(rows * cols * 2), -1.0f);
  gsq::dequantize_into(a.view(), MatrixRef<float>::col_major(out.data(), rows, cols, 2 * rows));
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j)
      REQUIRE(out[static_cast<std::size_t>(j * 2 * rows + i)] == a.value(i, j));
  }
}

TEST_CASE("dequantize: threads split lines, never results (contiguous and strided output)",
          "[convert]") {
  const Index rows = 150, cols = 97;  // lines in several 16-line blocks, a partial last group
  const auto x = gsq::test::normal_vector(static_cast<std::size_t>(rows * cols), 77);
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    const auto t = gsq::quantize<8>(MatrixRef<const float>::row_major(x.data(), rows, cols), axis);
    std::vector<float> want(static_cast<std::size_t>(rows * cols));
    gsq::dequantize_into(t.view(), MatrixRef<float>::row_major(want.data(), rows, cols));
    for (int threads : {0, 2, 3}) {
      INFO(gsq::to_string(axis) << ", " << threads << " threads");
      std::vector<float> got(want.size(), -1.0f), strided(2 * want.size(), -1.0f);
      gsq::dequantize_into(t.view(), MatrixRef<float>::row_major(got.data(), rows, cols),
                           std::nullopt, threads);
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
      // Column-major with a padded stride: the lines of one axis are strided.
      gsq::dequantize_into(t.view(), MatrixRef<float>::col_major(strided.data(), rows, cols,
                                                                 2 * rows),
                           std::nullopt, threads);
      int wrong = 0;
      for (Index i = 0; i < rows; ++i) {
        for (Index j = 0; j < cols; ++j)
          wrong += strided[static_cast<std::size_t>(j * 2 * rows + i)] !=
                   want[static_cast<std::size_t>(i * cols + j)];
      }
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("dequantize rejects a destination of another shape", "[convert][errors]") {
  const auto t = gsq::GseTensor<8, 32>(4, 64, Axis::kCols);
  std::vector<float> out(4 * 63);
  try {
    gsq::dequantize_into(t.view(), MatrixRef<float>::row_major(out.data(), 4, 63));
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    REQUIRE(std::string(e.what()) == "dequantize: destination is 4x63 but the tensor is 4x64");
  }
}

TEST_CASE("quantize: threads split lines, never results (non-finite lines included)",
          "[convert]") {
  constexpr Index kRows = 203, kCols = 1000;
  std::vector<float> x = gsq::test::uniform_vector(kRows * kCols, 31, -3.0f, 3.0f);
  x[5 * kCols + 7] = std::numeric_limits<float>::quiet_NaN();
  x[150 * kCols + 999] = -std::numeric_limits<float>::infinity();
  x[17 * kCols + 3] = 1e30f;  // a clamped neighbourhood, re-encoded after the threads
  const auto src = MatrixRef<const float>::row_major(x.data(), kRows, kCols);
  for (const Axis axis : {Axis::kCols, Axis::kRows}) {
    gsq::QuantizeOptions o;
    o.rounding = Rounding::kStochastic;
    o.seed = 9;
    o.non_finite = gsq::NonFinitePolicy::kZero;
    gsq::ConversionStats s1, s3;
    o.threads = 1;
    const auto one = gsq::quantize<8, 32>(src, axis, o, &s1);
    o.threads = 3;
    const auto three = gsq::quantize<8, 32>(src, axis, o, &s3);
    CAPTURE(gsq::to_string(axis));
    REQUIRE(one.offset() == three.offset());
    REQUIRE(std::memcmp(one.view().line_codes(0), three.view().line_codes(0),
                        static_cast<std::size_t>(one.view().lines() *
                                                 one.view().padded_length())) == 0);
    REQUIRE(std::memcmp(one.view().line_exponents(0), three.view().line_exponents(0),
                        static_cast<std::size_t>(one.view().lines() *
                                                 one.view().groups_per_line())) == 0);
    CHECK(s1.non_finite == 2);
    CHECK(s3.non_finite == 2);
    CHECK(s1.saturated == s3.saturated);
    CHECK(s1.clamped_groups == s3.clamped_groups);
    CHECK(s1.clamped_groups > 0);
    // The first non-finite value in line order is the one reported, with any thread count.
    o.non_finite = gsq::NonFinitePolicy::kThrow;
    auto run = [&] { return gsq::quantize<8, 32>(src, axis, o); };
    REQUIRE_THROWS_WITH(run(), Catch::Contains("NaN at row 5, column 7"));
  }
}
