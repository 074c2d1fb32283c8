// lota.hpp: LoTA-QAF, ternary adapters on the GSE grid with a lossless merge.  Its optimizer,
// t-SignSGD, is optim/tsign_sgd.hpp; its ternary storage, nn/ternary.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/matmul.hpp"
#include "gsq/nn/frozen_base.hpp"
#include "gsq/nn/options.hpp"
#include "gsq/nn/ternary.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// The method (Chen et al. 2025, "Lossless Ternary Adaptation for Quantization-Aware
// Fine-Tuning"), in gsq's terms
// ---------------------------------------------------------------------------------------------
// W (in x out) is frozen as GSE-INT<WBits> grouped along in: codes c and quanta s.  The adapters
// are ternary, A (r x in) and B (out x r) in {-1, 0, +1}; dW = (B A)^T, an integer in [-r, r].
// Markers M = +1 where dW > omega and c < kQMax, -1 where dW < -omega and c > -kQMax, else 0
// (omega = 0.75 r by default; dW is an integer, so the test is dW > floor(omega)), so the
// effective codes c + M stay inside the symmetric range.
// Forward multiplies by the effective weight s (c + M): the same GSE format as the base, so
// merge() writes c + M into the base codes and the merged layer computes bit-identical outputs
// at the base model's cost.  The optional offset mu of the paper (a per-group float shift) is
// not stored: it is the one part that is not lossless, and gsq keeps the merge exact.
//
// Backward: dL/dX = dY W_eff^T (W_eff regrouped along out in integers, as in nn/lora.hpp).
// The adapters get the straight-through gradient G = s * (X^T dY) with respect to dW (the
// threshold passes gradients as if M = dW / omega; the constant 1 / omega does not matter to
// the sign-based optimizer): dA = (G B)^T, dB = G^T A^T.  X^T dY reduces over tokens, so both
// are GSE operands grouped along tokens.
//
// The whole update is integer.  G[i][o] = sum over token groups g of dot_g * 2^(qx + qdy + qw),
// dot_g the exact int32 dot product of the group's codes and q the three quanta.  Every term
// goes to one fixed point shared by the tensor: an int64 whose unit is 2^L, L = (the largest
// possible exponent) - F, with F as large as the int64 headroom allows after the sums over
// groups and over in/out (F >= 8 is checked; 26 bits for 256 tokens and 4096 features).
// Terms below the unit are rounded (half up) by an arithmetic shift.  dA and dB are sums of
// +-G (the adapters are ternary), the quantile is nth_element on int64 magnitudes, and the step
// moves codes by +-1.  Float appears only at the layer's boundary with the float parts of a
// model: X and dY arrive as float and are quantized to GSE, and Y and dX leave as float (the
// GSE matmul adds its exact int32 group sums in float, see kernels/matmul_scalar.hpp).  q is a
// control parameter in double; it only picks the integer rank floor(q (n - 1)).
//
// Storage: A and B are TernaryMatrix, two bit planes at exactly 2 bits per value, and the
// marker counts dW come from popcounts of the planes (TernaryRows, nn/ternary.hpp).
//
// t-SignSGD (TSignSgd, optim/tsign_sgd.hpp) moves only the entries whose |gradient| exceeds the
// tensor's q-quantile, by one step against the gradient's sign, clamped to {-1, 0, +1}.

namespace detail {

/// The number of bits of v > 0 (floor(log2 v) + 1).
constexpr int bit_width(std::uint64_t v) noexcept { return v == 0 ? 0 : 1 + bit_width(v >> 1); }

}  // namespace detail

/// A ternary adapter layer on a frozen GSE-INT<WBits> base.  Models Linear (nn/linear.hpp), so
/// Llama2LoraModel can hold it.
template <int WBits = 4, int ABits = 8, int GBits = 8, int G = 32>
class LotaLinear {
 public:
  using Format = GseFormat<WBits, G>;

  /// W: in x out float, frozen and quantized along in.  A from a seeded (options.seed)
  /// Kaiming-normal draw ternarised at 0.75 mean|A|; B = 0.  Rank: options.rank.  omega in
  /// [0, r]; a negative omega means the default, 0.75 r.  options.gradient_rounding rounds dY;
  /// alpha and mode are not used.
  LotaLinear(MatrixRef<const float> w, const LoraOptions& options, double omega = -1)
      : in_(w.rows), out_(w.cols), rank_(options.rank), options_(options) {
    GSQ_CHECK(rank_ >= 1 && w.rows >= 1 && w.cols >= 1, "LotaLinear: rank ", rank_, " and weight ",
              w.rows, "x", w.cols);
    base_ = FrozenBase<WBits, G>(w, options_.quantize());
    if (options_.cache_transposed_base) base_.cache_transposed(options_.matmul);
    set_omega(omega < 0 ? 0.75 * rank_ : omega);  // NaN or omega > rank: an error
    a_ = TernaryMatrix(in_, rank_);
    b_ = TernaryMatrix(out_, rank_);
    detail::Rng rng(options.seed);  // portable: the same A with every standard library
    const float sigma = std::sqrt(2.0f / static_cast<float>(in_));
    std::vector<float> draw(static_cast<std::size_t>(rank_ * in_));  // A[k][i] at k * in + i
    double mean = 0;
    for (float& v : draw) mean += std::fabs(v = rng.normal(sigma));
    const float threshold = 0.75f * static_cast<float>(mean / static_cast<double>(draw.size()));
    for (Index k = 0; k < rank_; ++k) {
      for (Index i = 0; i < in_; ++i) {
        const float v = draw[static_cast<std::size_t>(k * in_ + i)];
        a_.set(i, k, v > threshold ? 1 : v < -threshold ? -1 : 0);
      }
    }
    grad_a_.assign(static_cast<std::size_t>(in_ * rank_), 0);
    grad_b_.assign(static_cast<std::size_t>(out_ * rank_), 0);
  }
  /// The same with only a rank and a seed.
  LotaLinear(MatrixRef<const float> w, int rank, std::uint64_t seed = 0, double omega = -1)
      : LotaLinear(w, options_for(rank, seed), omega) {}

  Index in_features() const noexcept { return in_; }
  Index out_features() const noexcept { return out_; }
  int rank() const noexcept { return rank_; }
  const LoraOptions& options() const noexcept { return options_; }
  /// A, stored transposed: in x r, row i holds A[.][i].
  TernaryMatrix& a() noexcept { return a_; }
  const TernaryMatrix& a() const noexcept { return a_; }
  /// B: out x r.
  TernaryMatrix& b() noexcept { return b_; }
  const TernaryMatrix& b() const noexcept { return b_; }
  /// The straight-through gradients of the last backward, as integers in units of
  /// 2^gradient_exponent(): dA (in x r, like a()) and dB (out x r).
  const std::vector<std::int64_t>& grad_a() const noexcept { return grad_a_; }
  const std::vector<std::int64_t>& grad_b() const noexcept { return grad_b_; }
  int gradient_exponent() const noexcept { return gradient_exponent_; }
  /// The marker threshold: |dW| must exceed floor(omega), omega in [0, r].
  int omega() const noexcept { return omega_; }
  void set_omega(double omega) {
    GSQ_CHECK(omega >= 0 && omega <= rank_, "LotaLinear: omega ", omega, " is outside [0, rank ",
              rank_, "]");
    omega_ = static_cast<int>(std::floor(omega));
  }
  /// The frozen base (after merge(), the merged codes).
  const PackedGseTensor<WBits, G>& base() const noexcept { return base_.packed(); }

  /// The markers M (in x out, row-major): see the top of this file.
  std::vector<std::int8_t> markers() const {
    std::vector<std::int8_t> m(static_cast<std::size_t>(in_ * out_), 0);
    for_each_line_markers([&](Index o, const std::int8_t* line_markers) {
      for (Index i = 0; i < in_; ++i) m[static_cast<std::size_t>(i * out_ + o)] = line_markers[i];
    });
    return m;
  }

  /// The effective weight s (c + M) as a GSE tensor (base exponents, shifted codes).
  GseTensor<WBits, G> effective() const {
    GseTensor<WBits, G> e = base_.packed().unpack();
    const Index stride = e.view().padded_length();
    for_each_line_markers([&](Index o, const std::int8_t* line_markers) {
      std::int8_t* codes = e.mutable_codes() + o * stride;
      for (Index i = 0; i < in_; ++i)
        codes[i] = static_cast<std::int8_t>(codes[i] + line_markers[i]);
    });
    return e;
  }

  /// The effective weight in float (in x out, row-major), for a float export of a model.
  std::vector<float> effective_weight() const { return dequantize(effective()); }

  /// An activation quantized as this layer quantizes X: GSE-INT<ABits> along in_features.
  using Activation = GseTensor<ABits, G>;

  /// Quantizes x (T x in) as forward(x, y) does, into `out`: what forward(out, y) accepts.
  static void quantize_input(MatrixRef<const float> x, const LoraOptions& options,
                             Activation& out) {
    quantize_into(x, Axis::kCols, out, options.quantize());
  }

  /// Y = X W_eff for X (T x in), saving X (quantized to ABits) for backward.  With B = 0 (after
  /// merge(), or before training) this is the base model's product, streamed from the packed
  /// base: the merged layer costs what the base costs.
  void forward(MatrixRef<const float> x, MatrixRef<float> y) {
    check_forward(x.rows, x.cols, y);
    xq_ = quantize<ABits, G>(x, Axis::kCols, options_.quantize());
    forward_saved(y);
  }

  /// The same from X already quantized (T x in, grouped along in_features, e.g. by
  /// quantize<ABits, G>(x, Axis::kCols, options().quantize()), which gives what the float
  /// overload computes, bit for bit), so that layers reading the same input can share one
  /// quantization.  The layer keeps a copy for backward.
  void forward(const Activation& xq, MatrixRef<float> y) {
    GSQ_CHECK(xq.axis() == Axis::kCols,
              "LotaLinear::forward: Xq must be grouped along in_features");
    check_forward(xq.rows(), xq.cols(), y);
    xq_ = xq;
    forward_saved(y);
  }

  /// Given dY (T x out): dX (unless dx.data is null) and the integer straight-through
  /// gradients of A and B (replacing the previous ones).  Rounding streams from options.seed
  /// and a call counter.
  void backward(MatrixRef<const float> dy, MatrixRef<float> dx) {
    backward(dy, dx, detail::stream_seed(options_.seed, calls_++, 0));
  }
  /// The same with an explicit rounding seed.
  void backward(MatrixRef<const float> dy, MatrixRef<float> dx, std::uint64_t seed) {
    const Index t = xq_.rows();
    GSQ_CHECK(t > 0, "LotaLinear::backward: no forward to differentiate");
    GSQ_CHECK(dy.rows == t && dy.cols == out_, "LotaLinear::backward: dY is ", dy.rows, "x",
              dy.cols, ", expected ", t, "x", out_);
    QuantizeOptions q = options_.quantize(options_.gradient_rounding, seed);
    if (dx.data != nullptr) {
      GSQ_CHECK(dx.rows == t && dx.cols == in_, "LotaLinear::backward: dX is ", dx.rows, "x",
                dx.cols, ", expected ", t, "x", in_);
      const auto dyq = quantize<GBits, G>(dy, Axis::kCols, q);
      if (b_.all_zero()) {
        const MatmulOptions mm = matmul_options();
        base_.backward_input(dyq.view(), dx, mm);
        note_temporary(dyq.bytes() + mm.workspace->bytes());
      } else {
        const auto wt = regroup<8>(effective().view(), Axis::kCols);
        note_temporary(wt.bytes());
        matmul(dyq.view(), wt.view().transposed(), dx, 1.0f, 0.0f, matmul_options());
      }
    }
    q.seed = seed ^ 0x5A5A5A5Aull;
    integer_gradients(regroup<8>(xq_.view(), Axis::kRows).view(),
                      quantize<GBits, G>(dy, Axis::kRows, q).view());
  }

  void zero_grad() {
    std::fill(grad_a_.begin(), grad_a_.end(), 0);
    std::fill(grad_b_.begin(), grad_b_.end(), 0);
  }

  /// A and B with their gradients, for TSignSgd.
  std::vector<TernaryParameter<std::int64_t>> parameters() {
    return {{&a_, grad_a_.data()}, {&b_, grad_b_.data()}};
  }

  /// Writes c + M into the base codes and zeroes B (so M becomes 0): the merged layer computes
  /// bit-identical outputs to the unmerged one, at the base's cost.
  void merge() {
    base_.assign(effective().view());
    b_.clear();
  }

  /// Bytes held, by role: the packed base, the 2-bit adapters, their int64 gradients, the saved
  /// activations, and the largest temporary (the effective codes, or their regrouped copy).
  LoraMemory memory() const noexcept {
    LoraMemory m;
    m.base = base_.bytes();
    m.adapter_master = a_.bytes() + b_.bytes();
    m.adapter_gradients = (grad_a_.size() + grad_b_.size()) * sizeof(std::int64_t);
    m.saved_activations = xq_.bytes();
    m.largest_temporary = temporary_;
    return m;
  }

 private:
  void check_forward(Index rows, Index cols, MatrixRef<float> y) const {
    GSQ_CHECK(cols == in_ && y.rows == rows && y.cols == out_, "LotaLinear::forward: X is ", rows,
              "x", cols, " and Y is ", y.rows, "x", y.cols, " for a ", in_, " -> ", out_, " layer");
  }

  /// Y = Xq W_eff from the saved Xq.
  void forward_saved(MatrixRef<float> y) {
    if (b_.all_zero()) {
      const MatmulOptions mm = matmul_options();
      base_.forward(xq_.view(), y, mm);
      note_temporary(xq_.bytes() + mm.workspace->bytes());  // Xq and the streamed base's buffers
      return;
    }
    const GseTensor<WBits, G> eff = effective();
    note_temporary(eff.bytes());
    matmul(xq_.view(), eff.view(), y, 1.0f, 0.0f, matmul_options());
  }

  static LoraOptions options_for(int rank, std::uint64_t seed) {
    LoraOptions o;
    o.rank = rank;
    o.seed = seed;
    return o;
  }

  /// Calls fn(o, markers of line o) for every base line o (column o of W) that has a nonzero
  /// marker; the markers of line o are M[0..in)[o], from popcounts of the adapters' bit planes.
  template <typename Fn>
  void for_each_line_markers(Fn&& fn) const {
    if (b_.all_zero()) return;
    const TernaryRows ar(a_), br(b_);
    std::vector<std::int8_t> codes(static_cast<std::size_t>(in_)), marks(codes.size());
    for (Index o = 0; o < out_; ++o) {
      if (br.zero(o)) continue;  // B's row o is zero: dW[.][o] = 0
      base_.packed().codes_at(o, 0, in_, codes.data());
      for (Index i = 0; i < in_; ++i) {
        marks[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(ternary_marker(
            ar.dot(i, br, o), omega_, codes[static_cast<std::size_t>(i)], Format::kQMax));
      }
      fn(o, marks.data());
    }
  }

  /// G = s * (X^T dY) in fixed point, then dA = G B and dB = G^T A (see the top of this file).
  /// xt: X grouped along tokens (lines: in); dyt: dY grouped along tokens (lines: out).
  void integer_gradients(const GseView<8, G>& xt, const GseView<GBits, G>& dyt) {
    const Index groups = xt.groups_per_line();
    auto max_quantum = [groups](auto v) {
      int best = v.offset();
      for (Index line = 0; line < v.lines(); ++line) {
        for (Index g = 0; g < groups; ++g)
          best = std::max(best, v.offset() + v.line_exponents(line)[g]);
      }
      return best;
    };
    const PackedGseTensor<WBits, G>& base = base_.packed();
    const Index wgroups = base.groups_per_line();
    std::vector<int> qw(static_cast<std::size_t>(out_ * wgroups));
    int qw_max = base.offset();
    for (Index o = 0; o < out_; ++o) {
      for (Index g = 0; g < wgroups; ++g) {
        const int qv = base.offset() + base.exponent_at(o, g);
        qw[static_cast<std::size_t>(o * wgroups + g)] = qv;
        qw_max = std::max(qw_max, qv);
      }
    }
    // |dot_g| <= 127 * kQMax(GBits) * G; the sums over groups and over in or out need their
    // bits; the rest is fraction below the largest possible term.
    constexpr int kDotBits = detail::bit_width(std::uint64_t{127} * GseFormat<GBits, G>::kQMax * G);
    const int frac = 62 - kDotBits - detail::bit_width(static_cast<std::uint64_t>(groups)) -
                     detail::bit_width(static_cast<std::uint64_t>(std::max(in_, out_)));
    GSQ_CHECK(frac >= 8, "LotaLinear: ", groups, " token groups and ", std::max(in_, out_),
              " features leave ", frac, " fraction bits in int64 (8 needed)");
    const int unit = max_quantum(xt) + max_quantum(dyt) + qw_max - frac;
    gradient_exponent_ = unit;

    // Each G[i][o] goes straight into dA (row i) and dB (row o): exact integer sums, so the
    // order does not matter and G is never stored.
    const std::vector<std::int8_t> at = a_.to_int8(), bt = b_.to_int8();
    std::fill(grad_a_.begin(), grad_a_.end(), 0);
    std::fill(grad_b_.begin(), grad_b_.end(), 0);
    for (Index o = 0; o < out_; ++o) {
      const std::int8_t* dc = dyt.line_codes(o);
      const std::uint8_t* de = dyt.line_exponents(o);
      std::int64_t* gb = grad_b_.data() + o * rank_;
      const std::int8_t* bo = bt.data() + o * rank_;
      for (Index i = 0; i < in_; ++i) {
        const std::int8_t* xc = xt.line_codes(i);
        const std::uint8_t* xe = xt.line_exponents(i);
        const int base_shift =
            xt.offset() + dyt.offset() + qw[static_cast<std::size_t>(o * wgroups + i / G)] - unit;
        std::int64_t acc = 0;
        for (Index g = 0; g < groups; ++g) {
          std::int32_t dot = 0;
          for (Index k = g * G; k < (g + 1) * G; ++k) dot += xc[k] * dc[k];
          if (dot == 0) continue;
          const int shift = base_shift + xe[g] + de[g];  // <= frac by the choice of unit
          if (shift >= 0) {
            acc += std::int64_t{dot} * (std::int64_t{1} << shift);
          } else if (shift > -40) {  // |dot| < 2^20: 40 bits below the unit round to zero
            // Arithmetic right shift of a signed value: rounds half up (defined in C++20,
            // and what every supported compiler does before).
            acc += (std::int64_t{dot} + (std::int64_t{1} << (-shift - 1))) >> -shift;
          }
        }
        if (acc == 0) continue;
        std::int64_t* ga = grad_a_.data() + i * rank_;
        const std::int8_t* ai = at.data() + i * rank_;
        for (Index k = 0; k < rank_; ++k) {
          ga[k] += acc * bo[k];
          gb[k] += acc * ai[k];
        }
      }
    }
  }

  void note_temporary(std::size_t bytes) noexcept { temporary_ = std::max(temporary_, bytes); }
  /// The options of every matmul: the caller's, with the caller's workspace (a model shares one
  /// among its layers) or else this layer's own.
  MatmulOptions matmul_options() noexcept {
    MatmulOptions m = options_.matmul;
    if (m.workspace == nullptr) m.workspace = &workspace_;
    return m;
  }

  Index in_, out_;
  int rank_;
  LoraOptions options_;
  int omega_ = 0;  // floor(omega): dW is an integer
  FrozenBase<WBits, G> base_;
  GseTensor<ABits, G> xq_;
  TernaryMatrix a_, b_;
  std::vector<std::int64_t> grad_a_, grad_b_;
  int gradient_exponent_ = 0;
  std::int64_t calls_ = 0;
  std::size_t temporary_ = 0;
  MatmulWorkspace workspace_;  // used when options().matmul.workspace is null
};

}  // namespace gsq
