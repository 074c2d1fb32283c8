// lota.hpp: LoTA-QAF, ternary adapters on the GSE grid with a lossless merge, and t-SignSGD.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/matmul.hpp"
#include "gsq/nn/lora.hpp"
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
// marker counts dW come from popcounts of the planes.
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
    // The same q whether or not the compiler contracts (an explicit fma; a quotient is never
    // fused), so the quantile index floor(q (n - 1)) is the same on every platform.
    if (f <= warm) return std::fma(q1 - q0, warm > 0 ? f / warm : 1.0, q0);
    return q1 + (q2 - q1) * (f - warm) / (1.0 - warm);
  }
};

namespace detail {

inline int popcount64(std::uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  int n = 0;
  for (; v != 0; v &= v - 1) ++n;
  return n;
#endif
}

template <typename T>
T magnitude(T v) noexcept {
  return v < 0 ? -v : v;
}

/// The number of bits of v > 0 (floor(log2 v) + 1).
constexpr int bit_width(std::uint64_t v) noexcept { return v == 0 ? 0 : 1 + bit_width(v >> 1); }

}  // namespace detail

/// The q-quantile of |g| by selection (O(n), std::nth_element): the value at rank
/// floor(q * (n - 1)) of the sorted magnitudes.  `scratch` is reused.  T: float or an integer
/// type (the integer gradients of LotaLinear).
template <typename T>
T abs_quantile(const T* g, std::size_t n, double q, std::vector<T>& scratch) {
  GSQ_CHECK(n > 0 && q >= 0.0 && q <= 1.0, "abs_quantile: n ", n, ", q ", q);
  scratch.resize(n);
  for (std::size_t i = 0; i < n; ++i) scratch[i] = detail::magnitude(g[i]);
  const auto k = static_cast<std::size_t>(q * static_cast<double>(n - 1));
  std::nth_element(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(k),
                   scratch.end());
  return scratch[k];
}

/// A matrix of values in {-1, 0, +1} at 2 bits per value: two bit planes (plus, minus) over
/// the row-major values.
class TernaryMatrix {
 public:
  TernaryMatrix() = default;
  TernaryMatrix(Index rows, Index cols) : rows_(rows), cols_(cols) {
    GSQ_CHECK(rows >= 0 && cols >= 0, "TernaryMatrix: shape ", rows, "x", cols);
    // One word beyond the last value: chunk() may read the word after the one it starts in.
    const auto words = static_cast<std::size_t>((rows * cols + 63) / 64) + 1;
    plus_.assign(words, 0);
    minus_.assign(words, 0);
  }

  Index rows() const noexcept { return rows_; }
  Index cols() const noexcept { return cols_; }
  int get(Index r, Index c) const noexcept {
    const std::size_t k = pos(r, c);
    return static_cast<int>((plus_[k >> 6] >> (k & 63)) & 1u) -
           static_cast<int>((minus_[k >> 6] >> (k & 63)) & 1u);
  }
  void set(Index r, Index c, int v) {
    GSQ_CHECK(v >= -1 && v <= 1, "TernaryMatrix: value ", v, " is not in {-1, 0, 1}");
    const std::size_t k = pos(r, c);
    const std::uint64_t bit = std::uint64_t{1} << (k & 63);
    plus_[k >> 6] = v > 0 ? plus_[k >> 6] | bit : plus_[k >> 6] & ~bit;
    minus_[k >> 6] = v < 0 ? minus_[k >> 6] | bit : minus_[k >> 6] & ~bit;
  }
  /// Values [first, first + count) of row r, count <= 64, as masks: value first + j is bit j of
  /// `plus` if it is +1, of `minus` if it is -1.
  void chunk(Index r, Index first, int count, std::uint64_t& plus,
             std::uint64_t& minus) const noexcept {
    const std::size_t k = pos(r, first);
    plus = bits(plus_, k, count);
    minus = bits(minus_, k, count);
  }
  /// The values as int8, row-major.
  std::vector<std::int8_t> to_int8() const {
    std::vector<std::int8_t> out(static_cast<std::size_t>(rows_ * cols_));
    for (Index r = 0; r < rows_; ++r) {
      for (Index c = 0; c < cols_; ++c)
        out[static_cast<std::size_t>(r * cols_ + c)] = static_cast<std::int8_t>(get(r, c));
    }
    return out;
  }
  bool all_zero() const noexcept {
    for (std::size_t w = 0; w < plus_.size(); ++w) {
      if ((plus_[w] | minus_[w]) != 0) return false;
    }
    return true;
  }
  void clear() noexcept {
    std::fill(plus_.begin(), plus_.end(), std::uint64_t{0});
    std::fill(minus_.begin(), minus_.end(), std::uint64_t{0});
  }
  /// Storage held by the planes: 2 bits per value plus at most 16 bytes.
  std::size_t bytes() const noexcept {
    return (plus_.size() + minus_.size()) * sizeof(std::uint64_t);
  }

 private:
  std::size_t pos(Index r, Index c) const noexcept {
    return static_cast<std::size_t>(r * cols_ + c);
  }
  static std::uint64_t bits(const std::vector<std::uint64_t>& plane, std::size_t k,
                            int count) noexcept {
    const std::size_t w = k >> 6;
    const unsigned off = k & 63;
    std::uint64_t v = plane[w] >> off;
    if (off != 0) v |= plane[w + 1] << (64 - off);
    return count >= 64 ? v : v & ((std::uint64_t{1} << count) - 1);
  }

  Index rows_ = 0, cols_ = 0;
  std::vector<std::uint64_t> plus_, minus_;
};

/// One t-SignSGD step on a ternary tensor: entries with |g| > quantile_q(|g|) move to
/// clamp(p - sign(g), -1, 1).  g is row-major over p.  Returns how many entries changed.  No
/// learning rate, momentum or weight decay.
template <typename T>
std::size_t tsign_step(TernaryMatrix& p, const T* g, double q, std::vector<T>& scratch) {
  const auto n = static_cast<std::size_t>(p.rows() * p.cols());
  if (n == 0) return 0;
  const T sigma = abs_quantile(g, n, q, scratch);
  std::size_t changed = 0;
  for (Index r = 0; r < p.rows(); ++r) {
    for (Index c = 0; c < p.cols(); ++c) {
      const T v = g[static_cast<std::size_t>(r * p.cols() + c)];
      if (!(detail::magnitude(v) > sigma)) continue;
      const int now = p.get(r, c), next = std::clamp(now - (v > 0 ? 1 : -1), -1, 1);
      changed += next != now;
      p.set(r, c, next);
    }
  }
  return changed;
}

/// A ternary tensor and its gradient (row-major over the tensor), for TSignSgd.
template <typename T>
struct TernaryParameter {
  TernaryMatrix* value;
  const T* grad;
};

/// t-SignSGD as an optimizer: each step() moves every tensor by tsign_step at its own
/// q-quantile, q = schedule(steps taken so far).  No learning rate, momentum or weight decay,
/// hence no state beyond the step count.  T: the gradients' type (int64 for LotaLinear).
template <typename T = std::int64_t>
class TSignSgd {
 public:
  TSignSgd(std::vector<TernaryParameter<T>> params, const TSignSchedule& schedule)
      : params_(std::move(params)), schedule_(schedule) {
    for (const TernaryParameter<T>& p : params_)
      GSQ_CHECK(p.value != nullptr && (p.grad != nullptr || p.value->rows() * p.value->cols() == 0),
                "TSignSgd: a parameter without its tensor or gradient");
  }
  /// One step over every tensor; returns how many entries changed.
  std::size_t step() {
    const double q = schedule_(steps_++);
    std::size_t changed = 0;
    for (const TernaryParameter<T>& p : params_) changed += tsign_step(*p.value, p.grad, q, scratch_);
    return changed;
  }
  std::int64_t steps() const noexcept { return steps_; }
  const TSignSchedule& schedule() const noexcept { return schedule_; }

 private:
  std::vector<TernaryParameter<T>> params_;
  TSignSchedule schedule_;
  std::int64_t steps_ = 0;
  std::vector<T> scratch_;
};

/// A ternary adapter layer on a frozen GSE-INT<WBits> base, with the interface of LoraLinear
/// (forward, backward, memory, effective_weight), so Llama2LoraModel can hold it.
template <int WBits = 4, int ABits = 8, int GBits = 8, int G = 32>
class LotaLinear {
 public:
  using Format = GseFormat<WBits, G>;

  /// W: in x out float, frozen and quantized along in.  A from a seeded (options.seed)
  /// Kaiming-normal draw ternarised at 0.75 mean|A|; B = 0.  Rank: options.rank.  omega in
  /// [0, r]; a negative omega means the default, 0.75 r.  options.gradient_rounding rounds dY; alpha and mode are not used.
  LotaLinear(MatrixRef<const float> w, const LoraOptions& options, double omega = -1)
      : in_(w.rows), out_(w.cols), rank_(options.rank), options_(options) {
    GSQ_CHECK(rank_ >= 1 && w.rows >= 1 && w.cols >= 1, "LotaLinear: rank ", rank_, " and weight ",
              w.rows, "x", w.cols);
    base_ = PackedGseTensor<WBits, G>::pack(
        quantize<WBits, G>(w, Axis::kRows, options_.quantize()).view());
    base_t_offset_ = TransposedRegroupedRhs<WBits, G>::offset_of(base_);
    set_omega(omega < 0 ? 0.75 * rank_ : omega);  // NaN or omega > rank: an error
    a_ = TernaryMatrix(in_, rank_);
    b_ = TernaryMatrix(out_, rank_);
    std::mt19937_64 rng(options.seed);
    std::normal_distribution<float> normal(0.0f, std::sqrt(2.0f / static_cast<float>(in_)));
    std::vector<float> draw(static_cast<std::size_t>(rank_ * in_));  // A[k][i] at k * in + i
    double mean = 0;
    for (float& v : draw) mean += std::fabs(v = normal(rng));
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
  const PackedGseTensor<WBits, G>& base() const noexcept { return base_; }

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
    GseTensor<WBits, G> e = base_.unpack();
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

  /// Y = X W_eff for X (T x in), saving X (quantized to ABits) for backward.  With B = 0 (after
  /// merge(), or before training) this is the base model's product, streamed from the packed
  /// base: the merged layer costs what the base costs.
  void forward(MatrixRef<const float> x, MatrixRef<float> y) {
    GSQ_CHECK(x.cols == in_ && y.rows == x.rows && y.cols == out_, "LotaLinear::forward: X is ",
              x.rows, "x", x.cols, " and Y is ", y.rows, "x", y.cols, " for a ", in_, " -> ", out_,
              " layer");
    xq_ = quantize<ABits, G>(x, Axis::kCols, options_.quantize());
    if (b_.all_zero()) {
      matmul(xq_.view(), PackedStorageRhs<WBits, G>(base_), y, 1.0f, 0.0f, options_.matmul);
      return;
    }
    const GseTensor<WBits, G> eff = effective();
    note_temporary(eff.bytes());
    matmul(xq_.view(), eff.view(), y, 1.0f, 0.0f, options_.matmul);
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
        matmul(dyq.view(), TransposedRegroupedRhs<WBits, G>(base_, base_t_offset_), dx, 1.0f,
               0.0f, options_.matmul);
      } else {
        const auto wt = regroup<8>(effective().view(), Axis::kCols);
        note_temporary(wt.bytes());
        matmul(dyq.view(), wt.view().transposed(), dx, 1.0f, 0.0f, options_.matmul);
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
    base_ = PackedGseTensor<WBits, G>::pack(effective().view());
    base_t_offset_ = TransposedRegroupedRhs<WBits, G>::offset_of(base_);
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
    const Index chunks = (rank_ + 63) / 64;
    std::vector<std::uint64_t> ap, am, bp, bm;
    planes(a_, ap, am);
    planes(b_, bp, bm);
    std::vector<std::int8_t> codes(static_cast<std::size_t>(in_)), marks(codes.size());
    for (Index o = 0; o < out_; ++o) {
      const std::uint64_t* yp = bp.data() + o * chunks;
      const std::uint64_t* ym = bm.data() + o * chunks;
      bool any = false;
      for (Index c = 0; c < chunks; ++c) any = any || ((yp[c] | ym[c]) != 0);
      if (!any) continue;  // B's row o is zero: dW[.][o] = 0
      base_.codes_at(o, 0, in_, codes.data());
      for (Index i = 0; i < in_; ++i) {
        const std::uint64_t* xp = ap.data() + i * chunks;
        const std::uint64_t* xm = am.data() + i * chunks;
        int dw = 0;
        for (Index c = 0; c < chunks; ++c) {
          dw += detail::popcount64((xp[c] & yp[c]) | (xm[c] & ym[c])) -
                detail::popcount64((xp[c] & ym[c]) | (xm[c] & yp[c]));
        }
        const int code = codes[static_cast<std::size_t>(i)];
        marks[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(
            (dw > omega_ && code < Format::kQMax) - (dw < -omega_ && code > -Format::kQMax));
      }
      fn(o, marks.data());
    }
  }

  /// Each row's values in chunks of 64, as plus and minus masks: row r chunk c at r * chunks + c.
  void planes(const TernaryMatrix& m, std::vector<std::uint64_t>& plus,
              std::vector<std::uint64_t>& minus) const {
    const Index chunks = (rank_ + 63) / 64;
    plus.resize(static_cast<std::size_t>(m.rows() * chunks));
    minus.resize(plus.size());
    for (Index r = 0; r < m.rows(); ++r) {
      for (Index c = 0; c < chunks; ++c) {
        const auto k = static_cast<std::size_t>(r * chunks + c);
        m.chunk(r, c * 64, static_cast<int>(std::min<Index>(64, rank_ - c * 64)), plus[k],
                minus[k]);
      }
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
    const Index wgroups = base_.groups_per_line();
    std::vector<int> qw(static_cast<std::size_t>(out_ * wgroups));
    int qw_max = base_.offset();
    for (Index o = 0; o < out_; ++o) {
      for (Index g = 0; g < wgroups; ++g) {
        const int qv = base_.offset() + base_.exponent_at(o, g);
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

  Index in_, out_;
  int rank_;
  LoraOptions options_;
  int omega_ = 0;  // floor(omega): dW is an integer
  PackedGseTensor<WBits, G> base_;
  int base_t_offset_ = 0;  // offset of the base regrouped along out (TransposedRegroupedRhs)
  GseTensor<ABits, G> xq_;
  TernaryMatrix a_, b_;
  std::vector<std::int64_t> grad_a_, grad_b_;
  int gradient_exponent_ = 0;
  std::int64_t calls_ = 0;
  std::size_t temporary_ = 0;
};

}  // namespace gsq
