// matmul_streamed_test.cpp: the driver paths that real layer sizes take, each memcmp'd against
// the specification: B streamed block by block (from a view, from a bit-packed W4, and as a W4
// regrouped on the fly), split over threads, the threaded prepack, strided C with beta, and a B
// packed for another ISA.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/matmul.hpp"
#include "gsq/regroup.hpp"
#include "matmul_spec.hpp"
#include "testing.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::Isa;
using gsq::MatrixRef;
using gsq::test::matmul_isas;
using gsq::test::random_operand;
using gsq::test::same_bits;
using gsq::test::spec_matmul;

// A layer-sized product: K spans 64 groups, so one B panel is 18-74 KiB and the default 512 KiB
// block holds 7-28 panels; M and N are not multiples of any kernel's tile (Mr 4/6, Nr 8/16/32).
constexpr Index kM = 203;
constexpr Index kK = 2048;
constexpr Index kN = 300;

/// One right operand of the test and what the specification gives for it: C = A B and
/// C = -0.5 A B + 0.75 C0.
struct Operand {
  const char* name;
  const gsq::RhsSource<32>* source;
  std::vector<float> expect, expect_beta;
};

/// The block budgets a product runs with: the default (streamed packs of several panels on one
/// thread), two panels and one panel per block (enough blocks that 2 and 4 threads stream too).
std::vector<Index> block_budgets(const gsq::RhsSource<32>& b, Isa isa) {
  const int nr = gsq::detail::panel_shape(gsq::detail::matmul_kernel_isa(isa)).nr;
  const Index panel = b.panel_bytes(nr);
  return {0, 2 * panel, panel};
}

}  // namespace

TEST_CASE("matmul: streamed B of layer size, every kernel, thread count and block size",
          "[matmul][streamed]") {
  const auto a = random_operand<8, 32>(kM, kK, Axis::kCols, 101);
  // B as a GSE-INT8 view, as a bit-packed W4 (K x N, grouped along K) and as W^T for a
  // bit-packed W4 of N x K grouped along N, regrouped along K on the fly.
  const auto b8 = random_operand<8, 32>(kK, kN, Axis::kRows, 102);
  const auto w4 = random_operand<4, 32>(kK, kN, Axis::kRows, 103);
  const auto w4_packed = gsq::PackedGseTensor<4, 32>::pack(w4.view());
  const auto w4t = random_operand<4, 32>(kN, kK, Axis::kRows, 104);
  const auto w4t_packed = gsq::PackedGseTensor<4, 32>::pack(w4t.view());
  const auto w4t_regrouped = gsq::regroup<8>(w4t.view(), Axis::kCols);
  const gsq::detail::ViewRhs<8, 32> view_source(b8.view());
  const gsq::PackedStorageRhs<4, 32> packed_source(w4_packed);
  const gsq::TransposedRegroupedRhs<4, 32> transposed_source(w4t_packed);

  const std::vector<float> zero(static_cast<std::size_t>(kM * kN), 0.0f);
  const std::vector<float> c0 = gsq::test::normal_vector(zero.size(), 105);
  auto spec = [&](const auto& b) {
    return std::make_pair(spec_matmul(a.view(), b, zero, 1.0f, 0.0f),
                          spec_matmul(a.view(), b, c0, -0.5f, 0.75f));
  };
  const auto [view_c, view_beta] = spec(b8.view());
  const auto [packed_c, packed_beta] = spec(w4.view());
  const auto [transposed_c, transposed_beta] = spec(w4t_regrouped.view().transposed());
  const Operand operands[] = {
      {"GseView B", &view_source, view_c, view_beta},
      {"bit-packed W4", &packed_source, packed_c, packed_beta},
      {"W4^T regrouped on the fly", &transposed_source, transposed_c, transposed_beta},
  };
  // Column-major C with padding, beta = 0.75: C is read, scaled and written through the
  // driver's scratch tile.
  std::vector<float> c0_cols(c0.size());
  for (Index i = 0; i < kM; ++i) {
    for (Index j = 0; j < kN; ++j)
      c0_cols[static_cast<std::size_t>(j * kM + i)] = c0[static_cast<std::size_t>(i * kN + j)];
  }
  for (const Operand& op : operands) {
    const std::vector<float>& expect = op.expect;
    const std::vector<float>& expect_beta = op.expect_beta;
    for (Isa isa : matmul_isas()) {
      for (int threads : {1, 2, 4}) {
        for (Index budget : block_budgets(*op.source, isa)) {
          INFO(op.name << ", " << gsq::to_string(isa) << ", " << threads << " threads, block "
                       << budget << " bytes");
          gsq::MatmulOptions opt;
          opt.isa = isa;
          opt.threads = threads;
          opt.rhs_block_bytes = budget;
          std::vector<float> c(zero.size(), std::nanf(""));  // beta == 0: never read
          gsq::matmul(a.view(), *op.source, MatrixRef<float>::row_major(c.data(), kM, kN), 1.0f,
                      0.0f, opt);
          REQUIRE(same_bits(c, expect));
          if (budget != 0) continue;
          const Index ld = kM + 3;
          std::vector<float> cc(static_cast<std::size_t>(ld * kN), 9.0f);
          for (Index j = 0; j < kN; ++j) {
            std::memcpy(cc.data() + j * ld, c0_cols.data() + j * kM,
                        static_cast<std::size_t>(kM) * sizeof(float));
          }
          gsq::matmul(a.view(), *op.source, MatrixRef<float>::col_major(cc.data(), kM, kN, ld),
                      -0.5f, 0.75f, opt);
          bool same = true, padding_kept = true;
          for (Index j = 0; j < kN; ++j) {
            for (Index i = 0; i < kM; ++i) {
              const float got = cc[static_cast<std::size_t>(j * ld + i)];
              const float want = expect_beta[static_cast<std::size_t>(i * kN + j)];
              same = same && std::memcmp(&got, &want, sizeof got) == 0;
            }
            for (Index i = kM; i < ld; ++i)
              padding_kept = padding_kept && cc[static_cast<std::size_t>(j * ld + i)] == 9.0f;
          }
          REQUIRE(same);
          REQUIRE(padding_kept);
        }
      }
    }
  }
}

TEST_CASE("PackedMatmulRhs: a threaded prepack equals the single-threaded one panel by panel",
          "[matmul][streamed]") {
  const auto b8 = random_operand<8, 32>(kK, kN, Axis::kRows, 111);
  const auto w4 = random_operand<4, 32>(kN, kK, Axis::kRows, 112);
  const auto w4_packed = gsq::PackedGseTensor<4, 32>::pack(w4.view());
  const gsq::detail::ViewRhs<8, 32> view_source(b8.view());
  const gsq::PackedStorageRhs<4, 32> packed_source(w4_packed);  // N x K: K = 300 here
  const gsq::TransposedRegroupedRhs<4, 32> transposed_source(w4_packed);
  const gsq::RhsSource<32>* sources[] = {&view_source, &packed_source, &transposed_source};
  for (const gsq::RhsSource<32>* source : sources) {
    for (Isa isa : matmul_isas()) {
      gsq::MatmulOptions one, four;
      one.isa = four.isa = isa;
      one.threads = 1;
      four.threads = 4;
      gsq::PackedMatmulRhs<32> serial, threaded;
      serial.assign(*source, one);
      threaded.assign(*source, four);
      const int nr = gsq::detail::panel_shape(serial.isa()).nr;
      const Index panels = (source->cols() + nr - 1) / nr;
      INFO(gsq::to_string(isa) << ", " << source->rows() << " x " << source->cols() << ", "
                               << panels << " panels");
      REQUIRE(threaded.isa() == serial.isa());
      REQUIRE(threaded.panel_bytes() == serial.panel_bytes());
      for (Index p = 0; p < panels; ++p) {
        INFO("panel " << p);
        REQUIRE(std::memcmp(threaded.panel(p), serial.panel(p),
                            static_cast<std::size_t>(serial.panel_bytes())) == 0);
      }
      // And the prepacked operand multiplies as the streamed one does.
      const auto a = random_operand<8, 32>(37, source->rows(), Axis::kCols, 113);
      std::vector<float> streamed(static_cast<std::size_t>(37 * source->cols()));
      std::vector<float> prepacked(streamed.size());
      gsq::matmul(a.view(), *source,
                  MatrixRef<float>::row_major(streamed.data(), 37, source->cols()), 1.0f, 0.0f,
                  one);
      gsq::matmul(a.view(), threaded,
                  MatrixRef<float>::row_major(prepacked.data(), 37, source->cols()), 1.0f, 0.0f,
                  four);
      REQUIRE(same_bits(prepacked, streamed));
    }
  }
}

TEST_CASE("matmul: a B packed for another ISA is rejected, naming both", "[matmul]") {
  const auto a = random_operand<8, 32>(8, 64, Axis::kCols, 121);
  const auto b = random_operand<8, 32>(64, 40, Axis::kRows, 122);
  const std::vector<Isa> isas = matmul_isas();
  for (Isa packed_for : isas) {
    gsq::MatmulOptions pack_opt;
    pack_opt.isa = packed_for;
    const auto packed = gsq::PackedMatmulRhs<32>::pack(b.view(), pack_opt);
    const Isa kernel = packed.isa();
    std::vector<float> c(8 * 40);
    const auto cref = MatrixRef<float>::row_major(c.data(), 8, 40);
    // Without an ISA the product runs on the one B was packed for.
    gsq::matmul(a.view(), packed, cref);
    for (Isa other : isas) {
      if (gsq::detail::matmul_kernel_isa(other) == kernel) continue;
      gsq::MatmulOptions run_opt;
      run_opt.isa = other;
      INFO("packed for " << gsq::to_string(kernel) << ", run on " << gsq::to_string(other));
      const std::string message = gsq::test::error_message(
          [&] { gsq::matmul(a.view(), packed, cref, 1.0f, 0.0f, run_opt); });
      REQUIRE(gsq::test::contains(message, std::string("packed for ") + gsq::to_string(kernel)));
    }
  }
  if (isas.size() < 2) WARN("one matmul ISA here: only the matching case ran");
}

TEST_CASE("matmul: rhs_block_bytes must not be negative", "[matmul]") {
  const auto a = random_operand<8, 32>(4, 64, Axis::kCols, 1);
  const auto b = random_operand<8, 32>(64, 5, Axis::kRows, 2);
  std::vector<float> c(4 * 5);
  gsq::MatmulOptions opt;
  opt.rhs_block_bytes = -1;
  REQUIRE(gsq::test::contains(gsq::test::error_message([&] {
                                gsq::matmul(a.view(), b.view(),
                                            MatrixRef<float>::row_major(c.data(), 4, 5), 1.0f, 0.0f,
                                            opt);
                              }),
                              "rhs_block_bytes"));
}

// CI builds configure with GSQ_REQUIRE_OPENMP=ON: there, every "threads" test of the suite
// must really run on several threads, so a build without OpenMP (or an OpenMP limited to one
// thread) fails here instead of passing every thread test on one thread.
#if defined(GSQ_REQUIRE_OPENMP) && GSQ_REQUIRE_OPENMP
constexpr bool kRequireOpenMp = true;
#else
constexpr bool kRequireOpenMp = false;
#endif

TEST_CASE("threads: parallel_for runs on several OpenMP threads", "[threads]") {
#if defined(_OPENMP)
  std::vector<int> who(64, -1);
  gsq::detail::parallel_for(
      64, 4, [&](Index i) { who[static_cast<std::size_t>(i)] = omp_get_thread_num(); });
  std::vector<int> seen;
  for (int t : who) {
    if (std::find(seen.begin(), seen.end(), t) == seen.end()) seen.push_back(t);
  }
  if (!kRequireOpenMp && seen.size() < 2) GSQ_SKIP("OpenMP gives this process one thread");
  INFO("OpenMP threads seen: " << seen.size() << " (thread limit " << omp_get_thread_limit()
                               << ")");
  REQUIRE(seen.size() == 4);
#else
  if (kRequireOpenMp) FAIL("GSQ_REQUIRE_OPENMP is set but the tests were compiled without OpenMP");
  GSQ_SKIP("compiled without OpenMP: every thread count runs on one thread");
#endif
}
