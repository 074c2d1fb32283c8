// matmul_test.cpp: the GSE matmul against its bit-level specification, every kernel and thread
// count against scalar, and against a double-precision reference with derived error bounds.
#include "gsq/matmul.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "matmul_spec.hpp"
#include "reference.hpp"
#include "testing.hpp"

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::Isa;
using gsq::MatrixRef;
using gsq::test::matmul_isas;
using gsq::test::random_operand;
using gsq::test::same_bits;
using gsq::test::spec_matmul;

template <int BA, int BB, int G>
void check_all_kernels(Index m, Index n, Index k, std::uint32_t seed, float alpha, float beta) {
  const auto a = random_operand<BA, G>(m, k, Axis::kCols, seed);
  const auto b = random_operand<BB, G>(k, n, Axis::kRows, seed + 1);
  const std::vector<float> c0 = gsq::test::normal_vector(static_cast<std::size_t>(m * n), seed);
  const auto expect = spec_matmul(a.view(), b.view(), c0, alpha, beta);
  for (Isa isa : matmul_isas()) {
    for (int threads : {1, 2, 3}) {
      auto c = c0;
      gsq::MatmulOptions opt;
      opt.isa = isa;
      opt.threads = threads;
      gsq::matmul(a.view(), b.view(), MatrixRef<float>::row_major(c.data(), m, n), alpha, beta,
                  opt);
      INFO(gsq::to_string(isa) << ", " << threads << " threads, W" << BA << "xA" << BB << " G" << G
                               << ", M N K = " << m << " " << n << " " << k);
      REQUIRE(same_bits(c, expect));
    }
  }
}

}  // namespace

TEST_CASE("matmul: every kernel and thread count equals the specification bit for bit",
          "[matmul]") {
  // Edge sizes: 1, around the group (32), around the tiles (Mr 4/6, Nr 8/16/32), primes.
  const Index m = GENERATE(1, 3, 4, 5, 6, 7, 13, 31, 50);
  const Index n = GENERATE(1, 7, 8, 9, 16, 17, 31, 32, 33, 67);
  const Index k = GENERATE(1, 31, 32, 33, 97);
  check_all_kernels<8, 8, 32>(m, n, k, static_cast<std::uint32_t>(m * 10007 + n * 101 + k), 1.0f,
                              0.0f);
}

TEST_CASE("matmul: alpha, beta, mixed widths and group sizes", "[matmul]") {
  check_all_kernels<8, 8, 32>(37, 45, 130, 1, 0.375f, 0.0f);
  check_all_kernels<8, 8, 32>(37, 45, 130, 2, -1.5f, 0.75f);
  check_all_kernels<8, 8, 32>(37, 45, 130, 3, 1.0f, 1.0f);
  check_all_kernels<4, 8, 32>(29, 70, 200, 4, 1.0f, 0.0f);
  check_all_kernels<2, 5, 32>(29, 70, 200, 5, 1.0f, 0.0f);
  check_all_kernels<8, 8, 16>(29, 70, 100, 6, 1.0f, 0.0f);
  check_all_kernels<8, 8, 64>(29, 70, 200, 7, 1.0f, 0.0f);
  check_all_kernels<6, 7, 128>(17, 40, 300, 8, 2.0f, -0.5f);
  check_all_kernels<8, 8, 32>(64, 96, 512, 9, 1.0f, 0.0f);
}

TEST_CASE("matmul: extreme offsets, clamped and zero groups", "[matmul]") {
  // Tiny times huge, and a product that underflows to float subnormals: the epilogue rounds once.
  for (auto [lo_a, hi_a, lo_b, hi_b] :
       {std::array<int, 4>{-140, -100, 60, 100}, std::array<int, 4>{-120, -60, -100, -60},
        std::array<int, 4>{60, 100, 20, 60}}) {
    const Index m = 11, n = 19, k = 70;
    const auto xa = gsq::test::mixed_data(static_cast<std::size_t>(m * k), 3, lo_a, hi_a);
    const auto xb = gsq::test::mixed_data(static_cast<std::size_t>(k * n), 4, lo_b, hi_b);
    const auto a =
        gsq::quantize<8, 32>(MatrixRef<const float>::row_major(xa.data(), m, k), Axis::kCols);
    const auto b =
        gsq::quantize<8, 32>(MatrixRef<const float>::row_major(xb.data(), k, n), Axis::kRows);
    const std::vector<float> zero(static_cast<std::size_t>(m * n), 0.0f);
    const auto expect = spec_matmul(a.view(), b.view(), zero, 1.0f, 0.0f);
    for (Isa isa : matmul_isas()) {
      std::vector<float> c(zero.size(), std::nanf(""));  // beta == 0: C is never read
      gsq::MatmulOptions opt;
      opt.isa = isa;
      gsq::matmul(a.view(), b.view(), MatrixRef<float>::row_major(c.data(), m, n), 1.0f, 0.0f, opt);
      INFO(gsq::to_string(isa) << " binades " << lo_a << ".." << hi_a << " x " << lo_b << ".."
                               << hi_b);
      REQUIRE(same_bits(c, expect));
    }
  }
}

TEST_CASE("matmul: strided and transposed outputs, prepacked B", "[matmul]") {
  const Index m = 23, n = 41, k = 75;
  const auto a = random_operand<8, 32>(m, k, Axis::kCols, 11);
  const auto b = random_operand<8, 32>(k, n, Axis::kRows, 12);
  std::vector<float> row(static_cast<std::size_t>(m * n));
  gsq::matmul(a.view(), b.view(), MatrixRef<float>::row_major(row.data(), m, n));
  // Column-major C with padding between columns; the padding must stay untouched.
  const Index ld = m + 5;
  std::vector<float> col(static_cast<std::size_t>(ld * n), 7.0f);
  const auto packed = gsq::PackedMatmulRhs<32>::pack(b.view());
  gsq::matmul(a.view(), packed, MatrixRef<float>::col_major(col.data(), m, n, ld));
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      REQUIRE(col[static_cast<std::size_t>(j * ld + i)] ==
              row[static_cast<std::size_t>(i * n + j)]);
    }
  }
  for (Index j = 0; j < n; ++j) {
    for (Index i = m; i < ld; ++i) REQUIRE(col[static_cast<std::size_t>(j * ld + i)] == 7.0f);
  }
  // C^T = B^T A^T: the transposed views swap roles with no copy, and the result is the same
  // integers summed in the same group order, so it is bit-identical.
  std::vector<float> ct(static_cast<std::size_t>(n * m));
  gsq::matmul(b.view().transposed(), a.view().transposed(),
              MatrixRef<float>::row_major(ct.data(), n, m));
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      REQUIRE(ct[static_cast<std::size_t>(j * m + i)] == row[static_cast<std::size_t>(i * n + j)]);
    }
  }
  REQUIRE(packed.bytes() >= static_cast<std::size_t>(k * n));
}

TEST_CASE("matmul: within the derived bounds of the exact and the unquantized product",
          "[matmul]") {
  const Index m = 40, n = 50, k = 1000;
  const auto xa = gsq::test::normal_vector(static_cast<std::size_t>(m * k), 5);
  const auto xb = gsq::test::normal_vector(static_cast<std::size_t>(k * n), 6, 1e-3f);
  const auto ra = MatrixRef<const float>::row_major(xa.data(), m, k);
  const auto rb = MatrixRef<const float>::row_major(xb.data(), k, n);
  const auto a = gsq::quantize<8, 32>(ra, Axis::kCols);
  const auto b = gsq::quantize<8, 32>(rb, Axis::kRows);
  std::vector<float> c(static_cast<std::size_t>(m * n));
  gsq::matmul(a.view(), b.view(), MatrixRef<float>::row_major(c.data(), m, n));

  const double u = std::ldexp(1.0, -24);
  const Index groups = a.view().groups_per_line();
  const double gamma = (groups - 1) * u / (1 - (groups - 1) * u);
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      double exact = 0, abs_sum = 0, plain = 0, quant_bound = 0;
      for (Index p = 0; p < k; ++p) {
        const double qa = a.value(i, p), qb = b.value(p, j);
        exact += qa * qb;
        abs_sum += std::abs(qa * qb);
        plain += double{ra(i, p)} * double{rb(p, j)};
        // Nearest rounding: each code is within half a quantum of its input.
        const double da = std::ldexp(0.5, a.view().quantum(i, p));
        const double db = std::ldexp(0.5, b.view().quantum(j, p));
        quant_bound += da * std::abs(qb) + std::abs(qa) * db + da * db;
      }
      const double got = c[static_cast<std::size_t>(i * n + j)];
      // Float accumulation of the group terms (gamma_(n-1)) plus the final rounding, plus the
      // double evaluation of the reference (relatively 2^-50 of the absolute sum).
      const double bound = gamma * abs_sum + u * std::abs(got) + std::ldexp(abs_sum, -50);
      INFO("C(" << i << ", " << j << ") = " << got << ", exact " << exact);
      REQUIRE(std::abs(got - exact) <= bound);
      REQUIRE(std::abs(got - plain) <= bound + quant_bound * (1 + 1e-12));
    }
  }
}

TEST_CASE("matmul: bad input names the shapes", "[matmul]") {
  const auto a = random_operand<8, 32>(4, 64, Axis::kCols, 1);
  const auto b = random_operand<8, 32>(60, 5, Axis::kRows, 2);
  std::vector<float> c(100);
  const auto out = MatrixRef<float>::row_major(c.data(), 4, 5);
  using gsq::test::contains;
  using gsq::test::error_message;
  const auto msg = error_message([&] { gsq::matmul(a.view(), b.view(), out); });
  REQUIRE(contains(msg, "4x64"));
  REQUIRE(contains(msg, "60x5"));
  const auto b_ok = random_operand<8, 32>(64, 5, Axis::kRows, 2);
  REQUIRE(contains(error_message([&] {
                     gsq::matmul(a.view(), b_ok.view(),
                                 MatrixRef<float>::row_major(c.data(), 5, 5));
                   }),
                   "C is 5x5 but A * B is 4x5"));
  const auto b_cols = random_operand<8, 32>(64, 5, Axis::kCols, 2);
  REQUIRE(contains(error_message([&] { gsq::matmul(a.view(), b_cols.view(), out); }),
                   "grouped along its rows"));
  const auto a_rows = random_operand<8, 32>(4, 64, Axis::kRows, 1);
  REQUIRE(contains(error_message([&] { gsq::matmul(a_rows.view(), b_ok.view(), out); }),
                   "grouped along its columns"));
  REQUIRE(
      contains(error_message([&] { gsq::matmul(a.view(), b_ok.view(), out, std::nanf(""), 0.0f); }),
               "must be finite"));
  // Empty shapes are fine: K = 0 gives beta * C.
  const auto a0 = random_operand<8, 32>(3, 0, Axis::kCols, 1);
  const auto b0 = random_operand<8, 32>(0, 2, Axis::kRows, 1);
  std::vector<float> c0 = {1, 2, 3, 4, 5, 6};
  gsq::matmul(a0.view(), b0.view(), MatrixRef<float>::row_major(c0.data(), 3, 2), 1.0f, 2.0f);
  REQUIRE(c0 == std::vector<float>{2, 4, 6, 8, 10, 12});
}

TEST_CASE("matmul_quantized and quantize_matmul equal their two-step definitions", "[matmul]") {
  const Index m = 21, n = 37, k = 100;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(m * k), 31, -4, 4);
  const auto xa = MatrixRef<const float>::row_major(x.data(), m, k);
  const auto a = gsq::quantize<8, 32>(xa, Axis::kCols);
  const auto b = random_operand<8, 32>(k, n, Axis::kRows, 32);
  std::vector<float> c(static_cast<std::size_t>(m * n));
  const auto cref = MatrixRef<float>::row_major(c.data(), m, n);
  gsq::matmul(a.view(), b.view(), cref);

  gsq::QuantizeOptions q;
  q.rounding = gsq::Rounding::kStochastic;
  q.seed = 99;
  gsq::GseTensor<6, 32> out;
  gsq::matmul_quantized(a.view(), b.view(), Axis::kRows, out, q);
  const auto want = gsq::quantize<6, 32>(MatrixRef<const float>(cref), Axis::kRows, q);
  REQUIRE(out.offset() == want.offset());
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) REQUIRE(out.code(i, j) == want.code(i, j));
  }

  std::vector<float> c2(c.size());
  gsq::quantize_matmul<8>(xa, gsq::PackedMatmulRhs<32>::pack(b.view()),
                          MatrixRef<float>::row_major(c2.data(), m, n));
  REQUIRE(same_bits(c2, c));
}

TEST_CASE("matmul from bit-packed storage and from a weight regrouped on the fly", "[matmul]") {
  auto run = [](auto bits_tag, Index m, Index r, Index cols, int lo, int hi) {
    constexpr int kBits = decltype(bits_tag)::value;
    // W is r x cols, grouped along its rows (as a frozen weight in x out is).
    const auto xw = gsq::test::mixed_data(static_cast<std::size_t>(r * cols), 41, lo, hi);
    const auto w = gsq::quantize<kBits, 32>(MatrixRef<const float>::row_major(xw.data(), r, cols),
                                            Axis::kRows);
    const auto packed = gsq::PackedGseTensor<kBits, 32>::pack(w.view());
    for (Isa isa : matmul_isas()) {
      for (int threads : {1, 2}) {
        gsq::MatmulOptions opt;
        opt.isa = isa;
        opt.threads = threads;
        INFO(gsq::to_string(isa) << ", " << threads << " threads, W" << kBits << " " << r << "x"
                                 << cols << ", M " << m);
        // Y = X W straight from the packed weight.
        const auto x = random_operand<8, 32>(m, r, Axis::kCols, 42);
        std::vector<float> want(static_cast<std::size_t>(m * cols)), got(want.size());
        gsq::matmul(x.view(), w.view(), MatrixRef<float>::row_major(want.data(), m, cols), 1.0f,
                    0.0f, opt);
        gsq::matmul(x.view(), gsq::PackedStorageRhs<kBits, 32>(packed),
                    MatrixRef<float>::row_major(got.data(), m, cols), 1.0f, 0.0f, opt);
        REQUIRE(same_bits(got, want));
        // dX = dY W^T with W regrouped along its columns, without holding the regrouped copy.
        const auto dy = random_operand<8, 32>(m, cols, Axis::kCols, 43);
        const auto wt = gsq::regroup<8>(w.view(), Axis::kCols);
        std::vector<float> want_t(static_cast<std::size_t>(m * r)), got_t(want_t.size());
        gsq::matmul(dy.view(), wt.view().transposed(),
                    MatrixRef<float>::row_major(want_t.data(), m, r), 1.0f, 0.0f, opt);
        gsq::matmul(dy.view(), gsq::TransposedRegroupedRhs<kBits, 32>(packed),
                    MatrixRef<float>::row_major(got_t.data(), m, r), 1.0f, 0.0f, opt);
        REQUIRE(same_bits(got_t, want_t));
      }
    }
  };
  run(std::integral_constant<int, 4>{}, 13, 70, 45, -4, 4);
  run(std::integral_constant<int, 4>{}, 7, 96, 64, -4, 4);
  run(std::integral_constant<int, 4>{}, 11, 45, 33, -4, 4);  // odd 4-bit lines: nibble starts
  run(std::integral_constant<int, 8>{}, 9, 33, 100, -4, 4);
  run(std::integral_constant<int, 5>{}, 9, 65, 31, -4, 4);
  run(std::integral_constant<int, 4>{}, 9, 64, 70, -60, 10);  // clamped groups, lossy regroup
}

TEST_CASE("the weight regrouped on the fly: every ISA's tile has the same bytes", "[matmul]") {
  // detail::regroup_tile_kernel picks its ISA from the machine, so the suite above runs one of
  // them per process; here every ISA this CPU runs is called on every tile of a weight and
  // compared with the portable build, byte for byte.
  auto run = [](auto bits_tag, Index r, Index cols, int lo, int hi, std::uint32_t seed) {
    constexpr int kBits = decltype(bits_tag)::value;
    const auto xw = gsq::test::mixed_data(static_cast<std::size_t>(r * cols), seed, lo, hi);
    const auto packed = gsq::PackedGseTensor<kBits, 32>::pack(
        gsq::quantize<kBits, 32>(MatrixRef<const float>::row_major(xw.data(), r, cols),
                                 Axis::kRows)
            .view());
    const int offset = gsq::TransposedRegroupedRhs<kBits, 32>::offset_of(packed);
    const auto generic = gsq::detail::regroup_tile_kernel<kBits, 32>(Isa::kScalar);
    for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
      if (!gsq::cpu_supports(isa)) continue;
      const auto kernel = gsq::detail::regroup_tile_kernel<kBits, 32>(isa);
      INFO(gsq::to_string(isa) << ", W" << kBits << " " << r << "x" << cols << ", exponents "
                               << lo << ".." << hi);
      gsq::detail::RegroupTile<32> want, got;
      for (Index o0 = 0; o0 < cols; o0 += 32) {
        for (Index i0 = 0; i0 < r; i0 += 32) {
          const Index members = std::min<Index>(32, cols - o0), width = std::min<Index>(32, r - i0);
          generic(packed, offset, want, o0, members, i0, width);
          kernel(packed, offset, got, o0, members, i0, width);
          REQUIRE(got.fresh == want.fresh);
          REQUIRE(got.exponent == want.exponent);
        }
      }
    }
  };
  run(std::integral_constant<int, 4>{}, 70, 45, -4, 4, 51);
  run(std::integral_constant<int, 4>{}, 96, 64, -60, 10, 52);  // clamped groups: rounding
  run(std::integral_constant<int, 8>{}, 64, 96, -30, 30, 53);
  run(std::integral_constant<int, 8>{}, 40, 33, -90, 5, 54);
}
