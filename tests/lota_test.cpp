// lota_test.cpp: LoTA-QAF: markers stay on the grid, the merge is exact, the quantile is right,
// and t-SignSGD lowers a loss.
#include "gsq/lota.hpp"

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"

namespace {

using gsq::Index;
using gsq::MatrixRef;
using Lota = gsq::LotaLinear<4, 8, 8, 32>;

std::vector<float> normal_vector(std::size_t n, unsigned seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void random_ternary(std::vector<std::int8_t>& v, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> t(-1, 1);
  for (auto& x : v) x = static_cast<std::int8_t>(t(rng));
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
  const auto m = layer.markers();
  const auto e = layer.effective();
  Index at_edge = 0, moved = 0;
  for (Index i = 0; i < in; ++i) {
    for (Index o = 0; o < out; ++o) {
      const int c = layer.base().code(i, o), mark = m[static_cast<std::size_t>(i * out + o)];
      REQUIRE(std::abs(e.code(i, o)) <= gsq::GseFormat<4>::kQMax);
      REQUIRE(e.code(i, o) == c + mark);
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
  const auto markers = layer.markers();
  REQUIRE(std::count_if(markers.begin(), markers.end(), [](std::int8_t v) { return v != 0; }) > 0);
  layer.merge();
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

TEST_CASE("LoTA: t-SignSGD fine-tuning lowers the loss", "[lota]") {
  // Regression onto a layer whose base moved: the target is W4 plus a ternary shift of the
  // codes, which LoTA can represent exactly.
  const Index t = 64, in = 64, out = 32;
  const auto w = normal_vector(static_cast<std::size_t>(in * out), 11, 0.1f);
  Lota teacher(MatrixRef<const float>::row_major(w.data(), in, out), 8, 12, 2.0);
  random_ternary(teacher.b(), 13);
  Lota layer(MatrixRef<const float>::row_major(w.data(), in, out), 8, 12, 2.0);
  const gsq::TSignSchedule schedule{0.9, 0.99, 0.999, 0.8, 150};
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
      layer.step(schedule(step));
    }
    return loss;
  };
  const double first = batch_loss(0, false);
  for (int step = 0; step < 150; ++step) batch_loss(step, true);
  const double last = batch_loss(1000, false);
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5 * first);
}
