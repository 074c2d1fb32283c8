// matmul.cpp: README "Integer matmul": the forward product with a packed weight, and dX = dY W^T
// with W regrouped; checks both against a double-precision reference with a derived bound.
// [readme]
#include <gsq/gsq.hpp>
// [/readme]

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "snippet.hpp"

namespace {

/// The largest |C - A B| that kernels/matmul_scalar.hpp allows, with A B and sum |a| |b| in double:
/// n group sums added in float (gamma_(n-1) of the sum of magnitudes) and one rounding of the
/// scaled result, within gamma_(n+1) * sum |a| |b| (u = 2^-24, gamma_k = k u / (1 - k u)).
/// Returns true when every element of C is within it.
template <int BitsA, int BitsB>
bool within_bound(const gsq::GseView<BitsA>& a, const gsq::GseView<BitsB>& b,
                  const std::vector<float>& c) {
  const double u = std::ldexp(1.0, -24);
  const double n = static_cast<double>(a.groups_per_line()) + 1;
  const double gamma = n * u / (1 - n * u);
  for (gsq::Index i = 0; i < a.rows(); ++i) {
    for (gsq::Index j = 0; j < b.cols(); ++j) {
      double exact = 0, magnitude = 0;
      for (gsq::Index k = 0; k < a.cols(); ++k) {
        const double t = double{a.value(i, k)} * double{b.value(k, j)};
        exact += t;  // exact in double here: 11-bit products over a few binades
        magnitude += std::fabs(t);
      }
      if (std::fabs(c[static_cast<std::size_t>(i * b.cols() + j)] - exact) > gamma * magnitude)
        return false;
    }
  }
  return true;
}

}  // namespace

int main() {
  snippet::Checks check("matmul");
  const gsq::Index M = 64, K = 256, N = 96;
  const std::vector<float> x_data = snippet::normal(M * K, 11);
  const std::vector<float> w_data = snippet::normal(K * N, 12, 0.05f);
  const std::vector<float> dy_data = snippet::normal(M * N, 13, 1e-3f);
  const auto x = gsq::MatrixRef<const float>::row_major(x_data.data(), M, K);
  const auto w = gsq::MatrixRef<const float>::row_major(w_data.data(), K, N);
  const auto dy = gsq::MatrixRef<const float>::row_major(dy_data.data(), M, N);
  std::vector<float> y(M * N), dx(M * K), dx_streamed(M * K);

  // clang-format off
  // [readme]
  // x: M x K activations, w: K x N weight, dy: M x N gradient (gsq::MatrixRef<const float>)
  auto xq = gsq::quantize<8>(x, gsq::Axis::kCols);         // A: M x K, groups along K
  auto wq = gsq::quantize<4>(w, gsq::Axis::kRows);         // B: K x N, groups along K
  auto wp = gsq::PackedMatmulRhs<32>::pack(wq.view());     // pack a frozen weight once
  gsq::matmul(xq.view(), wp, gsq::MatrixRef<float>::row_major(y.data(), M, N),
              /*alpha=*/1.0f, /*beta=*/0.0f);              // C = alpha A B + beta C

  // dX = dY W^T reduces along N, but wq's groups run along K.  A transposed view keeps its
  // groups, so wq.view().transposed() is grouped along K and matmul rejects it: regroup first.
  auto dyq = gsq::quantize<8>(dy, gsq::Axis::kCols);       // dY: M x N, groups along N
  auto wn = gsq::regroup<8>(wq.view(), gsq::Axis::kCols);  // W re-encoded in integers along N
  gsq::matmul(dyq.view(), wn.view().transposed(),          // W^T: N x K, groups along N
              gsq::MatrixRef<float>::row_major(dx.data(), M, K));
  // Or stream a bit-packed frozen weight, regrouped tile by tile inside the product:
  auto w4 = gsq::PackedGseTensor<4>::pack(wq.view());
  gsq::matmul(dyq.view(), gsq::TransposedRegroupedRhs<4, 32>(w4),
              gsq::MatrixRef<float>::row_major(dx_streamed.data(), M, K));  // the same bits
  // [/readme]
  // clang-format on

  check(within_bound(xq.view(), wq.view(), y),
        "Y = Xq Wq within the bound of kernels/matmul_scalar.hpp");
  std::vector<float> y_view(y.size());
  gsq::matmul(xq.view(), wq.view(), gsq::MatrixRef<float>::row_major(y_view.data(), M, N));
  check(std::memcmp(y.data(), y_view.data(), y.size() * sizeof(float)) == 0,
        "the prepacked weight gives the same bits as the view");

  bool rejected = false;
  try {
    gsq::matmul(dyq.view(), wq.view().transposed(),
                gsq::MatrixRef<float>::row_major(dx.data(), M, K));
  } catch (const std::invalid_argument&) {
    rejected = true;
  }
  check(rejected, "matmul rejects wq.view().transposed() (grouped along K) for dY W^T");

  // Regrouping this 4-bit weight into 8-bit codes along N loses nothing (the README's claim for
  // Gaussian weights), so dX is checked against the 4-bit weight's own values.
  bool lossless = true;
  for (gsq::Index k = 0; k < K; ++k) {
    for (gsq::Index n = 0; n < N; ++n) lossless = lossless && wn.value(k, n) == wq.value(k, n);
  }
  check(lossless, "regroup<8>(wq, kCols) holds exactly wq's values");
  check(within_bound(dyq.view(), wq.view().transposed(), dx),
        "dX = dYq Wq^T within the bound of kernels/matmul_scalar.hpp");
  check(std::memcmp(dx.data(), dx_streamed.data(), dx.size() * sizeof(float)) == 0,
        "TransposedRegroupedRhs gives the same bits as regroup + transposed view");
  return check.exit_code();
}
