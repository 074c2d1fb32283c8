// lota.hpp: LoTA-QAF, ternary adapters on the GSE grid with a lossless merge, and t-SignSGD.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/matmul.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// The method (Chen et al. 2025, "Lossless Ternary Adaptation for Quantization-Aware
// Fine-Tuning"), in gsq's terms
// ---------------------------------------------------------------------------------------------
// W (in x out) is frozen as GSE-INT<WBits> grouped along in: codes c and quanta s.  The adapters
// are ternary, A (r x in) and B (out x r) in {-1, 0, +1}; dW = (B A)^T, an integer in [-r, r].
// Markers M = +1 where dW > omega and c < kQMax, -1 where dW < -omega and c > -kQMax, else 0
// (omega = 0.75 r by default), so the effective codes c + M stay inside the symmetric range.
// Forward multiplies by the effective weight s (c + M): the same GSE format as the base, so
// merge() writes c + M into the base codes and the merged layer computes bit-identical outputs
// at the base model's cost.  The optional offset mu of the paper (a per-group float shift) is
// not stored: it is the one part that is not lossless, and gsq keeps the merge exact.
//
// Backward: dL/dX = dY W_eff^T (W_eff regrouped along out in integers, as in lora.hpp).
// The adapters get the straight-through gradient G = s * (X^T dY) with respect to dW (the
// threshold passes gradients as if M = dW / omega; the constant 1 / omega does not matter to
// the sign-based optimizer): dA = (G B)^T, dB = G^T A^T.  X^T dY reduces over tokens, so both
// are GSE operands grouped along tokens.
//
// t-SignSGD (TSignSgd below) moves only the entries whose |gradient| exceeds the tensor's
// q-quantile, by one step against the gradient's sign, clamped to {-1, 0, +1}.

/// t-SignSGD's schedule of q: linear from q0 to q1 over the first `warm` fraction of the steps,
/// then linear to q2 at the end.
struct TSignSchedule {
  double q0 = 0.95, q1 = 0.999, q2 = 0.9999;
  double warm = 0.8;
  std::int64_t total_steps = 1000;
  double operator()(std::int64_t step) const {
    GSQ_CHECK(total_steps >= 1 && step >= 0, "TSignSchedule: step ", step, " of ", total_steps);
    const double f = std::min(1.0, static_cast<double>(step) / static_cast<double>(total_steps));
    if (f <= warm) return q0 + (q1 - q0) * (warm > 0 ? f / warm : 1.0);
    return q1 + (q2 - q1) * (f - warm) / (1.0 - warm);
  }
};

/// The q-quantile of |g| by selection (O(n), std::nth_element): the value at rank
/// floor(q * (n - 1)) of the sorted magnitudes.  `scratch` is reused.
inline float abs_quantile(const float* g, std::size_t n, double q, std::vector<float>& scratch) {
  GSQ_CHECK(n > 0 && q >= 0.0 && q <= 1.0, "abs_quantile: n ", n, ", q ", q);
  scratch.resize(n);
  for (std::size_t i = 0; i < n; ++i) scratch[i] = std::fabs(g[i]);
  const auto k = static_cast<std::size_t>(q * static_cast<double>(n - 1));
  std::nth_element(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(k),
                   scratch.end());
  return scratch[k];
}

/// One t-SignSGD step on a ternary tensor: entries with |g| > quantile_q(|g|) move to
/// clamp(p - sign(g), -1, 1).  Returns how many entries changed.  No learning rate, momentum or
/// weight decay; the update itself is integer.
inline std::size_t tsign_step(std::int8_t* p, const float* g, std::size_t n, double q,
                              std::vector<float>& scratch) {
  if (n == 0) return 0;
  const float sigma = abs_quantile(g, n, q, scratch);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!(std::fabs(g[i]) > sigma)) continue;
    const int next = std::clamp(p[i] - (g[i] > 0 ? 1 : -1), -1, 1);
    changed += next != p[i];
    p[i] = static_cast<std::int8_t>(next);
  }
  return changed;
}

/// A ternary adapter layer on a frozen GSE-INT<WBits> base.
template <int WBits = 4, int ABits = 8, int GBits = 8, int G = 32>
class LotaLinear {
 public:
  using Format = GseFormat<WBits, G>;

  /// W: in x out float, frozen and quantized along in.  A from a seeded Kaiming-normal draw
  /// ternarised at 0.75 mean|A|; B = 0.  omega defaults to 0.75 r.
  LotaLinear(MatrixRef<const float> w, int rank, std::uint64_t seed = 0, double omega = -1)
      : in_(w.rows), out_(w.cols), rank_(rank) {
    GSQ_CHECK(rank >= 1 && w.rows >= 1 && w.cols >= 1, "LotaLinear: rank ", rank, " and weight ",
              w.rows, "x", w.cols);
    base_ = quantize<WBits, G>(w, Axis::kRows);
    omega_ = omega >= 0 ? omega : 0.75 * rank;
    a_.assign(static_cast<std::size_t>(rank_ * in_), 0);
    b_.assign(static_cast<std::size_t>(out_ * rank_), 0);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, std::sqrt(2.0f / static_cast<float>(in_)));
    std::vector<float> draw(a_.size());
    double mean = 0;
    for (float& v : draw) mean += std::fabs(v = normal(rng));
    const float threshold = 0.75f * static_cast<float>(mean / static_cast<double>(draw.size()));
    for (std::size_t i = 0; i < draw.size(); ++i)
      a_[i] = static_cast<std::int8_t>(draw[i] > threshold ? 1 : draw[i] < -threshold ? -1 : 0);
    grad_a_.assign(a_.size(), 0.0f);
    grad_b_.assign(b_.size(), 0.0f);
  }

  Index in_features() const noexcept { return in_; }
  Index out_features() const noexcept { return out_; }
  std::vector<std::int8_t>& a() noexcept { return a_; }
  std::vector<std::int8_t>& b() noexcept { return b_; }
  const std::vector<float>& grad_a() const noexcept { return grad_a_; }
  const std::vector<float>& grad_b() const noexcept { return grad_b_; }
  const GseTensor<WBits, G>& base() const noexcept { return base_; }

  /// The markers M (in x out, row-major): see the top of this file.
  std::vector<std::int8_t> markers() const {
    std::vector<std::int8_t> m(static_cast<std::size_t>(in_ * out_), 0);
    const auto v = base_.view();
    for (Index o = 0; o < out_; ++o) {  // line o of the base: column o of W
      const std::int8_t* codes = v.line_codes(o);
      const std::int8_t* bo = b_.data() + o * rank_;
      for (Index i = 0; i < in_; ++i) {
        int dw = 0;
        for (Index k = 0; k < rank_; ++k) dw += bo[k] * a_[static_cast<std::size_t>(k * in_ + i)];
        const int c = codes[i];
        std::int8_t mark = 0;
        if (dw > omega_ && c < Format::kQMax) mark = 1;
        if (dw < -omega_ && c > -Format::kQMax) mark = -1;
        m[static_cast<std::size_t>(i * out_ + o)] = mark;
      }
    }
    return m;
  }

  /// The effective weight s (c + M) as a GSE tensor (base exponents, shifted codes).
  GseTensor<WBits, G> effective() const {
    GseTensor<WBits, G> e = base_;
    const auto m = markers();
    const auto v = e.view();
    for (Index o = 0; o < out_; ++o) {
      std::int8_t* codes = e.mutable_codes() + o * v.padded_length();
      for (Index i = 0; i < in_; ++i)
        codes[i] = static_cast<std::int8_t>(codes[i] + m[static_cast<std::size_t>(i * out_ + o)]);
    }
    return e;
  }

  /// Y = X W_eff for X (T x in), saving X (quantized to ABits) for backward.
  void forward(MatrixRef<const float> x, MatrixRef<float> y, const MatmulOptions& opt = {}) {
    GSQ_CHECK(x.cols == in_ && y.rows == x.rows && y.cols == out_, "LotaLinear::forward: X is ",
              x.rows, "x", x.cols, " and Y is ", y.rows, "x", y.cols, " for a ", in_, " -> ", out_,
              " layer");
    xq_ = quantize<ABits, G>(x, Axis::kCols);
    eff_ = effective();
    matmul(xq_.view(), eff_.view(), y, 1.0f, 0.0f, opt);
  }

  /// Given dY (T x out): dX (unless dx.data is null) and the straight-through gradients of A, B.
  void backward(MatrixRef<const float> dy, MatrixRef<float> dx, std::uint64_t seed,
                const MatmulOptions& opt = {}) {
    const Index t = xq_.rows();
    GSQ_CHECK(dy.rows == t && dy.cols == out_, "LotaLinear::backward: dY is ", dy.rows, "x",
              dy.cols, ", expected ", t, "x", out_);
    QuantizeOptions q;
    q.rounding = Rounding::kStochastic;
    q.seed = seed;
    if (dx.data != nullptr) {
      const auto dyq = quantize<GBits, G>(dy, Axis::kCols, q);
      matmul(dyq.view(), regroup<8>(eff_.view(), Axis::kCols).view().transposed(), dx, 1.0f, 0.0f,
             opt);
    }
    // G = X^T dY (in x out), reduced over tokens, then scaled per element by the base quantum.
    const auto xt = regroup<8>(xq_.view(), Axis::kRows);
    q.seed = seed ^ 0x5A5A5A5Aull;
    const auto dyt = quantize<GBits, G>(dy, Axis::kRows, q);
    std::vector<float> g(static_cast<std::size_t>(in_ * out_));
    matmul(xt.view().transposed(), dyt.view(), MatrixRef<float>::row_major(g.data(), in_, out_),
           1.0f, 0.0f, opt);
    const auto v = base_.view();
    for (Index i = 0; i < in_; ++i) {
      for (Index o = 0; o < out_; ++o)
        g[static_cast<std::size_t>(i * out_ + o)] *= std::ldexp(1.0f, v.quantum(o, i));
    }
    // dA[k][i] = sum_o G[i][o] B[o][k];  dB[o][k] = sum_i G[i][o] A[k][i].
    std::fill(grad_a_.begin(), grad_a_.end(), 0.0f);
    std::fill(grad_b_.begin(), grad_b_.end(), 0.0f);
    for (Index i = 0; i < in_; ++i) {
      for (Index o = 0; o < out_; ++o) {
        const float gio = g[static_cast<std::size_t>(i * out_ + o)];
        for (Index k = 0; k < rank_; ++k) {
          grad_a_[static_cast<std::size_t>(k * in_ + i)] +=
              gio * b_[static_cast<std::size_t>(o * rank_ + k)];
          grad_b_[static_cast<std::size_t>(o * rank_ + k)] +=
              gio * a_[static_cast<std::size_t>(k * in_ + i)];
        }
      }
    }
  }

  /// One t-SignSGD step on A and B with quantile q; returns the entries changed.
  std::size_t step(double q) {
    return tsign_step(a_.data(), grad_a_.data(), a_.size(), q, scratch_) +
           tsign_step(b_.data(), grad_b_.data(), b_.size(), q, scratch_);
  }

  /// Writes c + M into the base codes and zeroes B (so M becomes 0): the merged layer computes
  /// bit-identical outputs to the unmerged one, at the base's cost.
  void merge() {
    base_ = effective();
    std::fill(b_.begin(), b_.end(), std::int8_t{0});
  }

  /// Bytes the adapters take at 2 bits per ternary value (their storage form for checkpoints
  /// and memory budgets; in memory they are int8 for now).
  std::size_t packed_adapter_bytes() const noexcept { return (a_.size() + b_.size() + 3) / 4; }

 private:
  Index in_, out_;
  int rank_;
  double omega_ = 0;
  GseTensor<WBits, G> base_, eff_;
  GseTensor<ABits, G> xq_;
  std::vector<std::int8_t> a_, b_;
  std::vector<float> grad_a_, grad_b_, scratch_;
};

}  // namespace gsq
