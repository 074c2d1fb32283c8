// lora_test.cpp: the LoRA layer's gradients against finite differences and a double-precision
// implementation, its reproducibility and its memory accounting.
#include "gsq/nn/lora.hpp"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"
#include "gsq/nn/linear.hpp"
#include "testing.hpp"

namespace {

using gsq::Index;
using gsq::LoraMode;
using gsq::MatrixRef;

using gsq::test::normal_vector;

struct Problem {
  Index t, in, out;
  int rank;
  std::vector<float> w, x, r;  // r: dL/dY of the loss L = sum(Y .* R)
};

Problem make_problem(Index t, Index in, Index out, int rank, std::uint32_t seed) {
  return {t,
          in,
          out,
          rank,
          normal_vector(static_cast<std::size_t>(in * out), seed, 0.05f),
          normal_vector(static_cast<std::size_t>(t * in), seed + 1),
          normal_vector(static_cast<std::size_t>(t * out), seed + 2)};
}

template <typename Layer>
Layer make_layer(const Problem& p, LoraMode mode, std::uint64_t seed = 7) {
  gsq::LoraOptions opt;
  opt.rank = p.rank;
  opt.alpha = 2.0f * static_cast<float>(p.rank);
  opt.mode = mode;
  opt.seed = seed;
  Layer layer(MatrixRef<const float>::row_major(p.w.data(), p.in, p.out), opt);
  // A nonzero B, so that every gradient path carries signal.
  const auto b = normal_vector(layer.b().size(), 99, 0.05f);
  layer.b() = b;
  return layer;
}

struct Grads {
  std::vector<float> y, dx, da, db;
};

template <typename Layer>
Grads run(Layer& layer, const Problem& p) {
  Grads g;
  g.y.resize(static_cast<std::size_t>(p.t * p.out));
  g.dx.resize(static_cast<std::size_t>(p.t * p.in));
  layer.zero_grad();
  layer.forward(MatrixRef<const float>::row_major(p.x.data(), p.t, p.in),
                MatrixRef<float>::row_major(g.y.data(), p.t, p.out));
  layer.backward(MatrixRef<const float>::row_major(p.r.data(), p.t, p.out),
                 MatrixRef<float>::row_major(g.dx.data(), p.t, p.in));
  g.da = layer.grad_a();
  g.db = layer.grad_b();
  return g;
}

/// The exact math in double on the layer's dequantized base: Y, dX, dA, dB.
template <typename Layer>
Grads exact(const Layer& layer, const Problem& p) {
  const auto w = layer.base_float();
  const auto& a = layer.a();
  const auto& b = layer.b();
  const double s = layer.scale();
  const Index t = p.t, in = p.in, out = p.out, r = p.rank;
  std::vector<double> h(static_cast<std::size_t>(t * r)), g(static_cast<std::size_t>(t * r));
  Grads e;
  e.y.assign(static_cast<std::size_t>(t * out), 0);
  e.dx.assign(static_cast<std::size_t>(t * in), 0);
  e.da.assign(static_cast<std::size_t>(in * r), 0);
  e.db.assign(static_cast<std::size_t>(r * out), 0);
  auto at = [](const auto& v, Index i, Index j, Index ld) {
    return double{v[static_cast<std::size_t>(i * ld + j)]};
  };
  for (Index i = 0; i < t; ++i) {
    for (Index k = 0; k < r; ++k) {
      double acc = 0;
      for (Index q = 0; q < in; ++q) acc += at(p.x, i, q, in) * at(a, q, k, r);
      h[static_cast<std::size_t>(i * r + k)] = acc;
    }
    for (Index j = 0; j < out; ++j) {
      double acc = 0;
      for (Index q = 0; q < in; ++q) acc += at(p.x, i, q, in) * at(w, q, j, out);
      for (Index k = 0; k < r; ++k)
        acc += s * h[static_cast<std::size_t>(i * r + k)] * at(b, k, j, out);
      e.y[static_cast<std::size_t>(i * out + j)] = static_cast<float>(acc);
    }
    for (Index k = 0; k < r; ++k) {
      double acc = 0;
      for (Index j = 0; j < out; ++j) acc += at(p.r, i, j, out) * at(b, k, j, out);
      g[static_cast<std::size_t>(i * r + k)] = acc;
    }
    for (Index q = 0; q < in; ++q) {
      double acc = 0;
      for (Index j = 0; j < out; ++j) acc += at(p.r, i, j, out) * at(w, q, j, out);
      for (Index k = 0; k < r; ++k)
        acc += s * g[static_cast<std::size_t>(i * r + k)] * at(a, q, k, r);
      e.dx[static_cast<std::size_t>(i * in + q)] = static_cast<float>(acc);
    }
  }
  for (Index q = 0; q < in; ++q) {
    for (Index k = 0; k < r; ++k) {
      double acc = 0;
      for (Index i = 0; i < t; ++i)
        acc += at(p.x, i, q, in) * g[static_cast<std::size_t>(i * r + k)];
      e.da[static_cast<std::size_t>(q * r + k)] = static_cast<float>(s * acc);
    }
  }
  for (Index k = 0; k < r; ++k) {
    for (Index j = 0; j < out; ++j) {
      double acc = 0;
      for (Index i = 0; i < t; ++i)
        acc += h[static_cast<std::size_t>(i * r + k)] * at(p.r, i, j, out);
      e.db[static_cast<std::size_t>(k * out + j)] = static_cast<float>(s * acc);
    }
  }
  return e;
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, norm = 0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    err += (double{got[k]} - want[k]) * (double{got[k]} - want[k]);
    norm += double{want[k]} * want[k];
  }
  return std::sqrt(err / norm);
}

template <int B>
using Layer = gsq::LoraLinear<4, B, B, B, 32>;

template <int B>
std::array<double, 4> gse_errors(const Problem& p) {
  auto layer = make_layer<Layer<B>>(p, LoraMode::kGse);
  const Grads got = run(layer, p);
  const Grads want = exact(layer, p);
  return {rel_error(got.y, want.y), rel_error(got.dx, want.dx), rel_error(got.da, want.da),
          rel_error(got.db, want.db)};
}

}  // namespace

TEST_CASE("LoRA float mode matches central finite differences", "[lora]") {
  const Problem p = make_problem(5, 40, 36, 4, 1);
  auto layer = make_layer<Layer<8>>(p, LoraMode::kFloat);
  const Grads g = run(layer, p);
  auto loss = [&]() {
    std::vector<float> y(static_cast<std::size_t>(p.t * p.out));
    layer.forward(MatrixRef<const float>::row_major(p.x.data(), p.t, p.in),
                  MatrixRef<float>::row_major(y.data(), p.t, p.out));
    double l = 0;
    for (std::size_t k = 0; k < y.size(); ++k) l += double{y[k]} * p.r[k];
    return l;
  };
  // L is linear in each of X, A and B, so central differences have no truncation error; what
  // remains is float rounding of the forward pass, about 1e-7 of sum |Y R| / eps.
  const float eps = 1e-2f;
  const double tol = 2e-3;
  auto check = [&](std::vector<float>& param, const std::vector<float>& grad, const char* name) {
    for (std::size_t k = 0; k < param.size(); k += 7) {
      const float keep = param[k];
      param[k] = keep + eps;
      const double up = loss();
      param[k] = keep - eps;
      const double down = loss();
      param[k] = keep;
      const double fd = (up - down) / (2 * eps);
      INFO(name << "[" << k << "]: analytic " << grad[k] << ", finite difference " << fd);
      REQUIRE(std::abs(fd - grad[k]) <= tol * (1 + std::abs(fd)));
    }
  };
  check(layer.a(), g.da, "dA");
  check(layer.b(), g.db, "dB");
  Problem px = p;
  for (std::size_t k = 0; k < px.x.size(); k += 5) {
    const float keep = px.x[k];
    auto fx = [&](float v) {
      px.x[k] = v;
      std::vector<float> y(static_cast<std::size_t>(p.t * p.out));
      layer.forward(MatrixRef<const float>::row_major(px.x.data(), p.t, p.in),
                    MatrixRef<float>::row_major(y.data(), p.t, p.out));
      double l = 0;
      for (std::size_t q = 0; q < y.size(); ++q) l += double{y[q]} * p.r[q];
      return l;
    };
    const double fd = (fx(keep + eps) - fx(keep - eps)) / (2 * eps);
    px.x[k] = keep;
    INFO("dX[" << k << "]: analytic " << g.dx[k] << ", finite difference " << fd);
    REQUIRE(std::abs(fd - g.dx[k]) <= tol * (1 + std::abs(fd)));
  }
}

TEST_CASE("LoRA GSE gradients against the exact math, within bounds that shrink with bits",
          "[lora]") {
  // Bound: a nearest-rounded group has rms error q / sqrt(12), stochastic q / sqrt(6), with the
  // quantum q <= amax * 2^(2 - B), and amax of a Gaussian group of 32 is about 2.5 sigma.  So each
  // quantized operand carries a relative rms error of at most about 1.1 * 2^(2 - B), and a
  // product of up to three such operands (dX through the adapter) at most about
  // sqrt(3) * 1.1 * 2^(2 - B) < 2^(3 - B).  The tests assert 2^(3 - B) for Y, dA, dB and dX.
  const Problem p = make_problem(64, 96, 80, 8, 2);
  const auto e5 = gse_errors<5>(p);
  const auto e6 = gse_errors<6>(p);
  const auto e8 = gse_errors<8>(p);
  const char* names[] = {"Y", "dX", "dA", "dB"};
  for (int k = 0; k < 4; ++k) {
    INFO(names[k] << ": relative error 5-5-5 " << e5[k] << ", 6-6-6 " << e6[k] << ", 8-8-8 "
                  << e8[k]);
    CHECK(e5[k] <= std::ldexp(1.0, 3 - 5));
    CHECK(e6[k] <= std::ldexp(1.0, 3 - 6));
    CHECK(e8[k] <= std::ldexp(1.0, 3 - 8));
    CHECK(e8[k] < e6[k]);
    CHECK(e6[k] < e5[k]);
  }
}

TEST_CASE("LoRA FP8 mode stays close to float mode", "[lora]") {
  const Problem p = make_problem(32, 64, 48, 4, 3);
  auto fl = make_layer<Layer<8>>(p, LoraMode::kFloat);
  auto f8 = make_layer<Layer<8>>(p, LoraMode::kFp8);
  const Grads a = run(fl, p), b = run(f8, p);
  // E4M3 has 3 mantissa bits (relative rounding <= 2^-4), E5M2 2 bits (<= 2^-3).
  CHECK(rel_error(b.y, a.y) < 0.1);
  CHECK(rel_error(b.dx, a.dx) < 0.15);
  CHECK(rel_error(b.da, a.da) < 0.15);
  CHECK(rel_error(b.db, a.db) < 0.15);
  CHECK(rel_error(b.db, a.db) > 0.0);  // the FP8 path really rounds
}

TEST_CASE("LoRA GSE training step is bit-reproducible across ISAs and threads", "[lora]") {
  const Problem p = make_problem(40, 70, 50, 4, 4);
  std::vector<Grads> runs;
  for (gsq::Isa isa : {gsq::Isa::kScalar, gsq::matmul_isa()}) {
    for (int threads : {1, 2}) {
      auto layer = make_layer<Layer<8>>(p, LoraMode::kGse);
      gsq::LoraOptions o;
      o.rank = p.rank;
      o.alpha = 2.0f * static_cast<float>(p.rank);
      o.seed = 7;
      o.matmul.isa = isa;
      o.matmul.threads = threads;
      Layer<8> l(MatrixRef<const float>::row_major(p.w.data(), p.in, p.out), o);
      l.b() = layer.b();
      runs.push_back(run(l, p));
    }
  }
  for (const Grads& g : runs) {
    REQUIRE(std::memcmp(g.dx.data(), runs[0].dx.data(), g.dx.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(g.da.data(), runs[0].da.data(), g.da.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(g.db.data(), runs[0].db.data(), g.db.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("LoRA memory accounting: saved activations are bit-packed", "[lora]") {
  const Problem p = make_problem(128, 256, 192, 16, 5);
  auto gse = make_layer<Layer<8>>(p, LoraMode::kGse);
  auto flt = make_layer<Layer<8>>(p, LoraMode::kFloat);
  run(gse, p);
  run(flt, p);
  const auto mg = gse.memory(), mf = flt.memory();
  const double floats = static_cast<double>((p.t * p.in + p.t * p.rank) * 4);
  REQUIRE(mf.saved_activations == static_cast<std::size_t>(floats));
  // (Bits + 5 / G) / 32 of a float copy, plus at most one 64-bit word of padding per tensor.
  const double expect = (8 + 5.0 / 32) / 32;
  const double ratio = static_cast<double>(mg.saved_activations) / floats;
  INFO("saved-activation ratio " << ratio << ", expected " << expect);
  CHECK(std::abs(ratio - expect) < 0.002);
  // The 4-bit base: about 4.16 bits per value.
  const double base_bits = 8.0 * static_cast<double>(mg.base) / static_cast<double>(p.in * p.out);
  CHECK(base_bits < 4.2);
  CHECK(base_bits > 4.15);
  CHECK(mg.largest_temporary > 0);
}

TEST_CASE("LoRA merge folds the adapter into the 4-bit base", "[lora]") {
  const Problem p = make_problem(16, 64, 64, 4, 6);
  auto layer = make_layer<Layer<8>>(p, LoraMode::kFloat);
  std::vector<float> before(static_cast<std::size_t>(p.t * p.out)), after(before.size());
  const auto x = MatrixRef<const float>::row_major(p.x.data(), p.t, p.in);
  layer.forward(x, MatrixRef<float>::row_major(before.data(), p.t, p.out));
  const double merge_error = layer.merge();
  layer.forward(x, MatrixRef<float>::row_major(after.data(), p.t, p.out));
  INFO("merge error (rms of requantization / rms of s A B): " << merge_error);
  CHECK(merge_error > 0.0);  // requantizing to 4 bits is lossy: LoTA-QAF exists to fix that
  CHECK(rel_error(after, before) < 0.2);
  for (float v : layer.b()) REQUIRE(v == 0.0f);
}

TEST_CASE("LoRA rejects bad shapes with both shapes named", "[lora]") {
  const Problem p = make_problem(4, 32, 16, 2, 8);
  auto layer = make_layer<Layer<8>>(p, LoraMode::kGse);
  std::vector<float> y(100), x(100);
  using gsq::test::contains;
  using gsq::test::error_message;
  REQUIRE(contains(error_message([&] {
                     layer.forward(MatrixRef<const float>::row_major(x.data(), 3, 31),
                                   MatrixRef<float>::row_major(y.data(), 3, 16));
                   }),
                   "X is 3x31"));
  REQUIRE(contains(error_message([&] {
                     layer.backward(MatrixRef<const float>::row_major(x.data(), 3, 16),
                                    MatrixRef<float>::row_major(y.data(), 3, 32));
                   }),
                   "no forward pass"));
}

TEST_CASE("LoRA from bf16 weights equals LoRA from the same values in float", "[lora]") {
  const Problem p = make_problem(8, 64, 48, 4, 12);
  std::vector<gsq::Bf16> wb(p.w.size());
  std::vector<float> wf(p.w.size());
  for (std::size_t k = 0; k < p.w.size(); ++k) {
    wb[k] = gsq::to_bf16(p.w[k]);
    wf[k] = gsq::to_float(wb[k]);  // exact widening
  }
  gsq::LoraOptions opt;
  opt.rank = 4;
  const Layer<8> from_bf16(MatrixRef<const gsq::Bf16>::row_major(wb.data(), p.in, p.out), opt);
  const Layer<8> from_float(MatrixRef<const float>::row_major(wf.data(), p.in, p.out), opt);
  REQUIRE(from_bf16.base().words() == from_float.base().words());
  REQUIRE(from_bf16.base().offset() == from_float.base().offset());
  REQUIRE(from_bf16.a() == from_float.a());
}

static_assert(gsq::is_linear_v<gsq::LoraLinear<>> && gsq::is_linear_v<gsq::LoraLinear<8, 8, 8, 8>>,
              "LoraLinear models Linear (nn/linear.hpp)");
static_assert(!gsq::is_linear_v<int> && !gsq::is_linear_v<gsq::FrozenBase<4>>,
              "Linear rejects what is not a layer");

TEST_CASE("LoRA forward of an already quantized X equals the float forward, bit for bit",
          "[lora]") {
  const auto p = make_problem(13, 96, 40, 4, 21);
  auto from_float = make_layer<gsq::LoraLinear<4, 8, 8, 8, 32>>(p, LoraMode::kGse);
  auto from_codes = make_layer<gsq::LoraLinear<4, 8, 8, 8, 32>>(p, LoraMode::kGse);
  const Grads want = run(from_float, p);
  const auto x = MatrixRef<const float>::row_major(p.x.data(), p.t, p.in);
  const auto xq = gsq::quantize<8, 32>(x, gsq::Axis::kCols, from_codes.options().quantize());
  Grads got;
  got.y.resize(want.y.size());
  got.dx.resize(want.dx.size());
  from_codes.zero_grad();
  from_codes.forward(xq, MatrixRef<float>::row_major(got.y.data(), p.t, p.out));
  from_codes.backward(MatrixRef<const float>::row_major(p.r.data(), p.t, p.out),
                      MatrixRef<float>::row_major(got.dx.data(), p.t, p.in));
  REQUIRE(std::memcmp(got.y.data(), want.y.data(), want.y.size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(got.dx.data(), want.dx.data(), want.dx.size() * sizeof(float)) == 0);
  REQUIRE(std::memcmp(from_codes.grad_a().data(), want.da.data(), want.da.size() * 4) == 0);
  REQUIRE(std::memcmp(from_codes.grad_b().data(), want.db.data(), want.db.size() * 4) == 0);
  REQUIRE(from_codes.memory().total() == from_float.memory().total());
  // The float modes need X in float; a wrongly grouped X is named.
  from_codes.set_mode(LoraMode::kFloat);
  REQUIRE(gsq::test::contains(gsq::test::error_message([&] {
                                from_codes.forward(
                                    xq, MatrixRef<float>::row_major(got.y.data(), p.t, p.out));
                              }),
                              "a quantized activation needs LoraMode::kGse"));
  from_codes.set_mode(LoraMode::kGse);
  const auto xq_rows = gsq::quantize<8, 32>(x, gsq::Axis::kRows);
  REQUIRE(gsq::test::contains(gsq::test::error_message([&] {
                                from_codes.forward(
                                    xq_rows, MatrixRef<float>::row_major(got.y.data(), p.t, p.out));
                              }),
                              "grouped along in_features"));
}
