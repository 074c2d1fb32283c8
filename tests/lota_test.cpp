// lota_test.cpp: LoTA-QAF: markers stay on the grid, the merge is exact, the quantile is right,
// and t-SignSGD lowers a loss.
#include "gsq/nn/lota.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/optim/tsign_sgd.hpp"
#include "testing.hpp"

namespace {

using gsq::Index;
using gsq::MatrixRef;
using Lota = gsq::LotaLinear<4, 8, 8, 32>;

using gsq::test::normal_vector;

void random_ternary(gsq::TernaryMatrix& m, unsigned seed) {
  gsq::detail::Rng rng(seed);
  for (Index r = 0; r < m.rows(); ++r) {
    for (Index c = 0; c < m.cols(); ++c) m.set(r, c, static_cast<int>(rng.below(3)) - 1);
  }
}

/// The markers by their integer definition (lota.hpp): dW = (B A)^T from the adapters' values,
/// M = +1 where dW > omega and the base code is below kQMax, -1 where dW < -omega and the code is
/// above -kQMax, else 0.  In x out, row-major.
std::vector<int> reference_markers(const Lota& layer, double omega) {
  const Index in = layer.in_features(), out = layer.out_features();
  const int rank = layer.rank(), q = gsq::GseFormat<4>::kQMax;
  const auto at = layer.a().to_int8(), bt = layer.b().to_int8();
  const auto base = layer.base().unpack();
  std::vector<int> m(static_cast<std::size_t>(in * out), 0);
  for (Index i = 0; i < in; ++i) {
    for (Index o = 0; o < out; ++o) {
      int dw = 0;
      for (int k = 0; k < rank; ++k) dw += at[i * rank + k] * bt[o * rank + k];
      const int c = base.code(i, o);
      int& mark = m[static_cast<std::size_t>(i * out + o)];
      if (dw > omega && c < q) mark = 1;
      if (dw < -omega && c > -q) mark = -1;
    }
  }
  return m;
}

}  // namespace

TEST_CASE("LoTA: markers never push a code outside the grid", "[lota]") {
  const Index in = 64, out = 48;
  // Heavy-tailed weights: many groups have codes at +-kQMax.
  auto w = normal_vector(static_cast<std::size_t>(in * out), 1, 1.0f);
  for (std::size_t k = 0; k < w.size(); k += 5) w[k] *= 8.0f;
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 4, 2, 0.5);
  random_ternary(layer.a(), 3);
  random_ternary(layer.b(), 4);
  const auto want = reference_markers(layer, 0.5);
  const auto m = layer.markers();
  const auto e = layer.effective();
  const auto base = layer.base().unpack();
  Index at_edge = 0, moved = 0;
  for (Index i = 0; i < in; ++i) {
    for (Index o = 0; o < out; ++o) {
      const int c = base.code(i, o), mark = want[static_cast<std::size_t>(i * out + o)];
      INFO("(" << i << ", " << o << "): base code " << c << ", reference marker " << mark);
      REQUIRE(m[static_cast<std::size_t>(i * out + o)] == mark);
      REQUIRE(std::abs(e.code(i, o)) <= gsq::GseFormat<4>::kQMax);
      REQUIRE(e.code(i, o) == c + mark);
      REQUIRE(e.view().quantum(o, i) == base.view().quantum(o, i));
      at_edge += std::abs(c) == gsq::GseFormat<4>::kQMax;
      moved += mark != 0;
    }
  }
  CHECK(at_edge > 0);  // the test reaches the edge of the grid
  CHECK(moved > 0);
}

TEST_CASE("LoTA: the merge is exact", "[lota]") {
  const Index t = 16, in = 96, out = 40;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 5, 0.1f);
  const auto x = normal_vector(static_cast<std::size_t>(t * in), 6, 1.0f);
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 8, 7, 1.0);
  random_ternary(layer.b(), 8);
  std::vector<float> before(static_cast<std::size_t>(t * out)), after(before.size());
  const auto xr = MatrixRef<const float>::row_major(x.data(), t, in);
  layer.forward(xr, MatrixRef<float>::row_major(before.data(), t, out));
  const auto markers = reference_markers(layer, 1.0);
  REQUIRE(std::count_if(markers.begin(), markers.end(), [](int v) { return v != 0; }) > 0);
  const auto base = layer.base().unpack();
  layer.merge();
  // The merged base holds c + M with M from the integer definition, not from the layer's own
  // effective(), which merge() packs; the quanta do not change.
  const auto merged = layer.base().unpack();
  for (Index i = 0; i < in; ++i) {
    for (Index o = 0; o < out; ++o) {
      const int want = base.code(i, o) + markers[static_cast<std::size_t>(i * out + o)];
      INFO("(" << i << ", " << o << "): base code " << int{base.code(i, o)} << ", merged "
               << int{merged.code(i, o)} << ", want " << want);
      REQUIRE(merged.code(i, o) == want);
      REQUIRE(merged.view().quantum(o, i) == base.view().quantum(o, i));
    }
  }
  layer.forward(xr, MatrixRef<float>::row_major(after.data(), t, out));
  REQUIRE(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);
  for (auto v : layer.markers()) REQUIRE(v == 0);
}

TEST_CASE("LoTA: the quantile threshold matches a sort-based reference", "[lota]") {
  std::vector<float> scratch;
  for (std::size_t n : {1u, 2u, 7u, 100u, 1001u}) {
    const auto g = normal_vector(n, static_cast<unsigned>(n), 1.0f);
    std::vector<float> sorted(n);
    for (std::size_t i = 0; i < n; ++i) sorted[i] = std::fabs(g[i]);
    std::sort(sorted.begin(), sorted.end());
    for (double q : {0.0, 0.5, 0.95, 0.999, 1.0}) {
      const auto k = static_cast<std::size_t>(q * static_cast<double>(n - 1));
      REQUIRE(gsq::abs_quantile(g.data(), n, q, scratch) == sorted[k]);
    }
  }
  const gsq::TSignSchedule s{0.95, 0.999, 0.9999, 0.8, 100};
  REQUIRE(s(0) == 0.95);
  REQUIRE(std::abs(s(80) - 0.999) < 1e-12);
  REQUIRE(std::abs(s(100) - 0.9999) < 1e-12);
}

TEST_CASE("LoTA: TSignSgd steps every tensor at the scheduled quantile", "[lota]") {
  gsq::TernaryMatrix a(10, 10), b(4, 5);
  std::vector<std::int64_t> ga(100), gb(20);
  for (std::size_t k = 0; k < ga.size(); ++k) ga[k] = static_cast<std::int64_t>(k) - 40;
  for (std::size_t k = 0; k < gb.size(); ++k) gb[k] = k % 2 ? 1000 : -3;
  gsq::TSignSchedule schedule{0.9, 0.95, 0.99, 0.8, 10};
  gsq::TSignSgd<std::int64_t> opt({{&a, ga.data()}, {&b, gb.data()}}, schedule);
  // Step 0, q = 0.9: for A, |g| at rank floor(0.9 * 99) = 89 of the sorted magnitudes is 49, so
  // only the ten entries with g >= 50 move (down, to -1).  For B, the threshold is 1000: none.
  REQUIRE(opt.step() == 10);
  for (Index k = 0; k < 100; ++k) REQUIRE(a.get(k / 10, k % 10) == (k - 40 >= 50 ? -1 : 0));
  REQUIRE(b.to_int8() == std::vector<std::int8_t>(20, 0));
  REQUIRE(opt.steps() == 1);
  // Again: the same entries are already at -1 and stay there.
  REQUIRE(opt.step() == 0);
}

TEST_CASE("LoTA: t-SignSGD fine-tuning lowers the loss", "[lota]") {
  // Regression onto a layer whose base moved: the target is W4 plus a ternary shift of the
  // codes, which LoTA can represent exactly.
  const Index t = 64, in = 64, out = 32;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 11, 0.1f);
  // Teacher and student share A, drawn here from the portable generator (the layer's own draw
  // uses std::normal_distribution, whose values differ between standard libraries).
  Lota teacher(MatrixRef<const float>::row_major(w.data(), in, out), 8, 12, 2.0);
  random_ternary(teacher.a(), 12);
  random_ternary(teacher.b(), 13);
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 8, 12, 2.0);
  random_ternary(layer.a(), 12);
  gsq::TSignSgd<std::int64_t> optimizer(layer.parameters(), {0.9, 0.99, 0.999, 0.8, 150});
  auto batch_loss = [&](int step, bool train) {
    const auto x =
        normal_vector(static_cast<std::size_t>(t * in), 100u + static_cast<unsigned>(step), 1.0f);
    const auto xr = MatrixRef<const float>::row_major(x.data(), t, in);
    std::vector<float> y(static_cast<std::size_t>(t * out)), want(y.size()), dy(y.size());
    teacher.forward(xr, MatrixRef<float>::row_major(want.data(), t, out));
    layer.forward(xr, MatrixRef<float>::row_major(y.data(), t, out));
    double loss = 0;
    for (std::size_t k = 0; k < y.size(); ++k) {
      const double d = y[k] - want[k];
      loss += d * d / static_cast<double>(y.size());
      dy[k] = static_cast<float>(2 * d / static_cast<double>(y.size()));
    }
    if (train) {
      layer.backward(MatrixRef<const float>::row_major(dy.data(), t, out), MatrixRef<float>{},
                     static_cast<std::uint64_t>(step));
      optimizer.step();  // q = schedule(step): one step per training call
    }
    return loss;
  };
  const double first = batch_loss(0, false);
  for (int step = 0; step < 150; ++step) batch_loss(step, true);
  const double last = batch_loss(1000, false);
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.43 * first);  // measured 0.0197 -> 0.00564 (0.29 of the start)
}

TEST_CASE("LoTA: ternary storage is 2 bits per value and round-trips", "[lota]") {
  for (Index rows : {1, 3, 17}) {
    for (Index cols : {1, 8, 63, 64, 65, 130}) {
      gsq::TernaryMatrix m(rows, cols);
      random_ternary(m, static_cast<unsigned>(rows * 1000 + cols));
      std::vector<int> want;
      for (Index r = 0; r < rows; ++r) {
        for (Index c = 0; c < cols; ++c) want.push_back(m.get(r, c));
      }
      const auto bytes = m.to_int8();
      REQUIRE(std::equal(want.begin(), want.end(), bytes.begin()));
      // Chunks read back the same values at any start and length.
      for (Index r = 0; r < rows; ++r) {
        for (Index first = 0; first < cols; first += 5) {
          const int count = static_cast<int>(std::min<Index>(64, cols - first));
          std::uint64_t plus = 0, minus = 0;
          m.chunk(r, first, count, plus, minus);
          for (int j = 0; j < count; ++j) {
            const int v = static_cast<int>((plus >> j) & 1u) - static_cast<int>((minus >> j) & 1u);
            REQUIRE(v == m.get(r, first + j));
          }
          if (count < 64) REQUIRE(((plus | minus) >> count) == 0);
        }
      }
      // 2 bits per value, plus one spare word per plane.
      const auto values = static_cast<std::size_t>(rows * cols);
      REQUIRE(m.bytes() == 2 * 8 * ((values + 63) / 64 + 1));
    }
  }
  gsq::TernaryMatrix m(2, 2);
  REQUIRE_THROWS_WITH(m.set(0, 1, 2), Catch::Contains("value 2 is not in {-1, 0, 1}"));
  const std::vector<float> w(64 * 8, 0.5f);
  const auto wr = MatrixRef<const float>::row_major(w.data(), 64, 8);
  REQUIRE(Lota(wr, 8).omega() == 6);  // 0.75 r
  REQUIRE_THROWS_WITH(Lota(wr, 8, 0, 9.0), Catch::Contains("omega 9 is outside [0, rank 8]"));
  REQUIRE_THROWS_WITH(Lota(wr, 8, 0, std::nan("")), Catch::Contains("omega nan is outside"));
}

TEST_CASE("LoTA: markers from bit-plane popcounts match the integer definition", "[lota]") {
  for (int rank : {3, 8, 64, 70}) {
    const Index in = 40, out = 24;
    const auto w = normal_vector(static_cast<std::size_t>(in * out), 21, 1.0f);
    const double omega = std::sqrt(static_cast<double>(rank));  // about 1.2 sigma of dW
    Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), rank, 22, omega);
    random_ternary(layer.a(), 23);
    random_ternary(layer.b(), 24);
    const auto want = reference_markers(layer, omega);
    const auto m = layer.markers();
    Index moved = 0;
    for (std::size_t k = 0; k < want.size(); ++k) {
      REQUIRE(m[k] == want[k]);
      moved += want[k] != 0;
    }
    CHECK(moved > 0);
  }
}

TEST_CASE("LoTA: the integer gradients equal the exact straight-through gradients", "[lota]") {
  const Index t = 80, in = 96, out = 40;  // 80 tokens: 3 groups along tokens, the last partial
  const int rank = 6;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 31, 0.1f);
  auto x = normal_vector(static_cast<std::size_t>(t * in), 32, 1.0f);
  auto dy = normal_vector(static_cast<std::size_t>(t * out), 33, 1e-3f);
  for (std::size_t k = 0; k < dy.size(); k += 7) dy[k] *= 100.0f;  // exponents spread
  gsq::LoraOptions options;
  options.rank = rank;
  options.seed = 34;
  options.gradient_rounding = gsq::Rounding::kNearestEven;  // the test rebuilds dY's codes
  gsq::LotaLinear<4, 8, 8, 32> layer(MatrixRef<const float>::row_major(w.data(), in, out), options);
  random_ternary(layer.b(), 35);
  std::vector<float> y(static_cast<std::size_t>(t * out));
  const auto xr = MatrixRef<const float>::row_major(x.data(), t, in);
  const auto dyr = MatrixRef<const float>::row_major(dy.data(), t, out);
  layer.forward(xr, MatrixRef<float>::row_major(y.data(), t, out));
  layer.backward(dyr, MatrixRef<float>{});
  // The exact gradients of the same GSE operands, in double: G = 2^qw (X^T dY).
  const auto xq =
      gsq::regroup<8>(gsq::quantize<8, 32>(xr, gsq::Axis::kCols).view(), gsq::Axis::kRows);
  const auto dyq = gsq::quantize<8, 32>(dyr, gsq::Axis::kRows);
  const auto base = layer.base().unpack();
  const auto at = layer.a().to_int8(), bt = layer.b().to_int8();
  std::vector<double> ga(static_cast<std::size_t>(in * rank)),
      gb(static_cast<std::size_t>(out * rank));
  for (Index i = 0; i < in; ++i) {
    for (Index o = 0; o < out; ++o) {
      double p = 0;
      for (Index s = 0; s < t; ++s) p += double{xq.value(s, i)} * dyq.value(s, o);
      p = std::ldexp(p, base.view().quantum(o, i));
      for (int k = 0; k < rank; ++k) {
        ga[static_cast<std::size_t>(i * rank + k)] += p * bt[o * rank + k];
        gb[static_cast<std::size_t>(o * rank + k)] += p * at[i * rank + k];
      }
    }
  }
  auto compare = [&](const std::vector<std::int64_t>& got, const std::vector<double>& want) {
    double err = 0, big = 0;
    for (std::size_t k = 0; k < want.size(); ++k) {
      err = std::max(
          err,
          std::abs(std::ldexp(static_cast<double>(got[k]), layer.gradient_exponent()) - want[k]));
      big = std::max(big, std::abs(want[k]));
    }
    INFO("largest error " << err << " of largest gradient " << big);
    REQUIRE(big > 0);
    // Only terms below the fixed point's unit are rounded: at most half a unit per term.
    REQUIRE(err <= 1e-6 * big);
  };
  compare(layer.grad_a(), ga);
  compare(layer.grad_b(), gb);
}

TEST_CASE("LoTA: dX is the same before and after the merge, and close to the exact product",
          "[lota]") {
  const Index t = 40, in = 72, out = 56;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 51, 0.1f);
  const auto x = normal_vector(static_cast<std::size_t>(t * in), 52, 1.0f);
  const auto dy = normal_vector(static_cast<std::size_t>(t * out), 53, 1e-2f);
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 8, 54, 2.0);
  random_ternary(layer.a(), 54);  // portable, unlike the layer's std::normal_distribution draw
  random_ternary(layer.b(), 55);
  REQUIRE(layer.markers() != std::vector<std::int8_t>(static_cast<std::size_t>(in * out), 0));
  const auto xr = MatrixRef<const float>::row_major(x.data(), t, in);
  const auto dyr = MatrixRef<const float>::row_major(dy.data(), t, out);
  std::vector<float> y(static_cast<std::size_t>(t * out)), before(static_cast<std::size_t>(t * in)),
      after(before.size());
  layer.forward(xr, MatrixRef<float>::row_major(y.data(), t, out));
  layer.backward(dyr, MatrixRef<float>::row_major(before.data(), t, in), 7);
  const std::vector<float> weff = layer.effective_weight();  // in x out
  layer.merge();  // now dX streams W^T from the packed merged base
  layer.forward(xr, MatrixRef<float>::row_major(y.data(), t, out));
  layer.backward(dyr, MatrixRef<float>::row_major(after.data(), t, in), 7);
  REQUIRE(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);
  // Against dY W_eff^T in double: only dY's 8-bit rounding (and W_eff's lossless regroup) apart.
  double err = 0, norm = 0;
  for (Index s = 0; s < t; ++s) {
    for (Index i = 0; i < in; ++i) {
      double want = 0;
      for (Index o = 0; o < out; ++o)
        want += double{dy[static_cast<std::size_t>(s * out + o)]} *
                weff[static_cast<std::size_t>(i * out + o)];
      const double d = before[static_cast<std::size_t>(s * in + i)] - want;
      err += d * d;
      norm += want * want;
    }
  }
  INFO("relative error " << std::sqrt(err / norm));
  REQUIRE(std::sqrt(err / norm) < 0.018);  // measured 0.0117
}

TEST_CASE("LoTA: the layer's memory is its packed base, 2-bit adapters and codes", "[lota]") {
  const Index t = 64, in = 128, out = 96;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 41, 0.1f);
  const auto x = normal_vector(static_cast<std::size_t>(t * in), 42, 1.0f);
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 16, 43);
  std::vector<float> y(static_cast<std::size_t>(t * out));
  layer.forward(MatrixRef<const float>::row_major(x.data(), t, in),
                MatrixRef<float>::row_major(y.data(), t, out));
  const gsq::LoraMemory m = layer.memory();
  const double adapter_bits = 8.0 * m.adapter_master / static_cast<double>((in + out) * 16);
  INFO("adapters " << adapter_bits << " bits per value, base " << 8.0 * m.base / (in * out));
  REQUIRE(adapter_bits >= 2.0);
  REQUIRE(adapter_bits <= 2.1);
  REQUIRE(8.0 * m.base / (in * out) < 4.3);
  REQUIRE(m.saved_activations >= static_cast<std::size_t>(t * in));  // 8-bit codes of X
}

static_assert(gsq::is_linear_v<Lota>, "LotaLinear models Linear (nn/linear.hpp)");

TEST_CASE("LoTA: forward of an already quantized X equals the float forward, bit for bit",
          "[lota]") {
  const Index t = 11, in = 64, out = 40;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 31, 0.05f);
  const auto x = normal_vector(static_cast<std::size_t>(t * in), 32);
  const auto dy = normal_vector(static_cast<std::size_t>(t * out), 33);
  const auto wref = MatrixRef<const float>::row_major(w.data(), in, out);
  const auto xref = MatrixRef<const float>::row_major(x.data(), t, in);
  for (const bool trained : {false, true}) {  // B = 0 streams the base; B != 0 the effective W
    Lota from_float(wref, 4, 5), from_codes(wref, 4, 5);
    if (trained) {
      random_ternary(from_float.b(), 34);
      random_ternary(from_codes.b(), 34);
    }
    std::vector<float> y1(static_cast<std::size_t>(t * out)), y2(y1.size());
    std::vector<float> dx1(static_cast<std::size_t>(t * in)), dx2(dx1.size());
    from_float.forward(xref, MatrixRef<float>::row_major(y1.data(), t, out));
    from_codes.forward(
        gsq::quantize<8, 32>(xref, gsq::Axis::kCols, from_codes.options().quantize()),
        MatrixRef<float>::row_major(y2.data(), t, out));
    from_float.backward(MatrixRef<const float>::row_major(dy.data(), t, out),
                        MatrixRef<float>::row_major(dx1.data(), t, in), 9);
    from_codes.backward(MatrixRef<const float>::row_major(dy.data(), t, out),
                        MatrixRef<float>::row_major(dx2.data(), t, in), 9);
    REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(float)) == 0);
    REQUIRE(from_float.grad_a() == from_codes.grad_a());
    REQUIRE(from_float.grad_b() == from_codes.grad_b());
  }
}
