// quick_start.cpp: README "Quick start": quantize, read values back, pack a 4-bit weight,
// round gradients stochastically; checks each comment's claim.
// [readme]
#include <gsq/gsq.hpp>
// [/readme]

#include <cmath>
#include <cstdint>
#include <vector>

#include "snippet.hpp"

int main() {
  snippet::Checks check("quick_start");
  const gsq::Index tokens = 64, in = 256, out = 96;
  const std::uint64_t step = 7;
  const std::vector<float> x = snippet::normal(tokens * in, 1);
  const std::vector<float> w = snippet::normal(in * out, 2, 0.05f);
  const std::vector<float> dy = snippet::normal(tokens * out, 3, 1e-6f);

  // clang-format off
  // [readme]
  // x: tokens x in activations, w: in x out weights, dy: tokens x out gradients (row-major)
  auto xq = gsq::quantize<8>(                           // GSE-INT8, groups of 32
      gsq::MatrixRef<const float>::row_major(x.data(), tokens, in),
      gsq::Axis::kCols);                                // groups run along the reduction axis
  float v = xq.value(3, 17);                            // code * 2^(T + E)
  std::vector<float> y = gsq::dequantize(xq);           // exact wherever the value is a float

  auto w4 = gsq::quantize<4>(                           // GSE-INT4 weight, W is in x out:
      gsq::MatrixRef<const float>::row_major(w.data(), in, out),
      gsq::Axis::kRows);                                // groups run down the columns (along in)
  auto packed = gsq::PackedGseTensor<4>::pack(w4);      // 4 + 5/32 bits per value

  gsq::QuantizeOptions opt;                             // gradients: stochastic rounding
  opt.rounding = gsq::Rounding::kStochastic;
  opt.seed = step;                                      // a new seed per step
  auto dyq = gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(dy.data(), tokens, out),
                              gsq::Axis::kCols, opt);   // the same codes on every ISA
  // [/readme]
  // clang-format on

  // value(i, j) is code * 2^(T + E), and dequantize gives every value exactly; nearest-even
  // rounding moves a value by at most half its quantum (or, for a group's largest value that
  // saturated, by its excess over kQMax quanta).
  bool exact = true, close = true;
  for (gsq::Index i = 0; i < tokens; ++i) {
    for (gsq::Index j = 0; j < in; ++j) {
      const int s = xq.view().quantum(i, j);
      const double want = std::ldexp(static_cast<double>(xq.code(i, j)), s);
      const double got = y[static_cast<std::size_t>(i * in + j)];
      const double orig = x[static_cast<std::size_t>(i * in + j)];
      exact = exact && got == want && double{xq.value(i, j)} == want;
      close = close && std::fabs(got - orig) <=
                           std::max(std::ldexp(0.5, s), std::fabs(orig) - std::ldexp(127.0, s));
    }
  }
  check(double{v} == std::ldexp(static_cast<double>(xq.code(3, 17)), xq.view().quantum(3, 17)),
        "xq.value(3, 17) is code * 2^(T + E)");
  check(exact, "dequantize(xq) is every code * 2^(T + E), exactly");
  check(close, "each value is within half a quantum of x (nearest-even)");

  // The packed weight unpacks to the same codes and exponents, at 4 + 5/32 bits per value.
  const auto unpacked = packed.unpack();
  bool same = unpacked.offset() == w4.offset();
  for (gsq::Index i = 0; i < in; ++i) {
    for (gsq::Index j = 0; j < out; ++j)
      same = same && unpacked.code(i, j) == w4.code(i, j) &&
             unpacked.view().quantum(j, i) == w4.view().quantum(j, i);
  }
  check(same, "PackedGseTensor<4>::pack(w4) unpacks to w4");
  const double bits = 64.0 * static_cast<double>(packed.words().size());
  check(bits <= static_cast<double>(in * out) * (4 + 5.0 / 32) + 128,
        "the packed weight holds 4 + 5/32 bits per value (up to two partial words)");

  // The stochastic stream depends on the seed only: the scalar kernel gives the same codes.
  gsq::QuantizeOptions scalar = opt;
  scalar.isa = gsq::Isa::kScalar;
  const auto again = gsq::quantize<8>(
      gsq::MatrixRef<const float>::row_major(dy.data(), tokens, out), gsq::Axis::kCols, scalar);
  gsq::QuantizeOptions other = opt;
  other.seed = step + 1;
  const auto reseeded = gsq::quantize<8>(
      gsq::MatrixRef<const float>::row_major(dy.data(), tokens, out), gsq::Axis::kCols, other);
  bool reproducible = again.offset() == dyq.offset();
  gsq::Index moved = 0;
  for (gsq::Index i = 0; i < tokens; ++i) {
    for (gsq::Index j = 0; j < out; ++j) {
      reproducible = reproducible && again.code(i, j) == dyq.code(i, j) &&
                     again.view().quantum(i, j) == dyq.view().quantum(i, j);
      moved += reseeded.code(i, j) != dyq.code(i, j);
    }
  }
  check(reproducible, "stochastic rounding gives the same codes on the scalar kernel");
  check(moved > 0, "another seed rounds some values the other way");
  return check.exit_code();
}
