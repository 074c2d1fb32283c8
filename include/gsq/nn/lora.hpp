// lora.hpp: the LoRA linear layer with a frozen low-bit base weight, where every matmul of the
// forward and backward pass runs on GSE operands grouped along its own reduction axis.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/baselines/fp8.hpp"
#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/gemm_f32.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/matmul.hpp"
#include "gsq/nn/frozen_base.hpp"
#include "gsq/nn/options.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// The layer
// ---------------------------------------------------------------------------------------------
//   Y = X * W + s * (X * A) * B,   s = alpha / r
// X: T x in (tokens x in_features), W: in x out, frozen and stored bit-packed as GSE-INT<WBits>
// grouped along in_features (nn/frozen_base.hpp: about 4.16 bits per value at 4 bits; no float
// copy is kept).
// A: in x r and B: r x out are the trainable adapters, float master copies.  A starts from a
// seeded Kaiming-uniform draw (bound 1 / sqrt(in)), B from zero, so the layer starts as the
// base.
//
// Every matmul of LoraMode::kGse, with the axis its operands are grouped along:
//   forward    Y  = Xq(in) * W(in)                 Xq: ABits; X is also quantized along
//                                                  tokens (ABits), which is saved bit-packed
//              H  = Xq(in) * Aq(in)                H: T x r
//              Y += s * Hq(r) * Bq(r)              Hq: ABits, saved bit-packed
//   backward   dX = dYq(out) * W^T(out)            W regrouped in integers to GSE-INT8 along
//                                                  out (regroup.hpp; exact for typical weights)
//              G  = dYq(out) * B^T(out)            G = dL/dH / s: T x r
//              dX += s * Gq(r) * A^T(r)
//              dA += s * X^T(tokens) * Gq(tokens)  the saved X, quantized along tokens
//              dB += s * H^T(tokens) * dYq(tokens) the saved Hq regrouped along tokens
// Gradients (dY, G) are quantized to GBits with stochastic rounding by default, from a stream
// seeded by (options.seed, step, operand), so a run is reproducible; adapters to AdBits with
// nearest-even.  LoraMode::kFloat runs the same products in float on the dequantized base (the
// QLoRA-style reference); LoraMode::kFp8 rounds forward operands to FP8 E4M3 and backward
// gradients to E5M2 (per-tensor scales), then multiplies in float, as FP8 training recipes do.

namespace detail {

/// A dense row-major copy of any float matrix.
inline std::vector<float> dense(MatrixRef<const float> m) {
  std::vector<float> out(static_cast<std::size_t>(m.rows * m.cols));
  for (Index i = 0; i < m.rows; ++i) {
    for (Index j = 0; j < m.cols; ++j) out[static_cast<std::size_t>(i * m.cols + j)] = m(i, j);
  }
  return out;
}

/// Rounds a dense row-major matrix through FP8 F with a per-tensor scale, in place.
template <typename F>
void fp8_round(std::vector<float>& x, Index rows, Index cols) {
  if (x.empty()) return;
  x = dequantize_fp8(quantize_fp8<F>(x.data(), rows, cols, cols));
}

}  // namespace detail

/// The LoRA linear layer (see above).  WBits: the frozen base; ABits: activations; GBits:
/// gradients; AdBits: adapters ("4-8-8-8" is W4 A8 G8 with 8-bit adapters).  Models Linear
/// (nn/linear.hpp).  Not thread-safe; matmuls use MatmulOptions::threads.
template <int WBits = 4, int ABits = 8, int GBits = 8, int AdBits = 8, int G = 32>
class LoraLinear {
 public:
  /// Builds the layer from the float base weight w (in x out, any strides), quantized to
  /// GSE-INT<WBits> along in_features with nearest-even rounding.  Only the packed copy is kept.
  LoraLinear(MatrixRef<const float> w, const LoraOptions& options) : options_(options) { init(w); }
  /// The same from bf16 weights (as bit patterns, gsq::Bf16), as checkpoints often store them.
  LoraLinear(MatrixRef<const Bf16> w, const LoraOptions& options) : options_(options) { init(w); }

  Index in_features() const noexcept { return in_; }
  Index out_features() const noexcept { return out_; }
  int rank() const noexcept { return rank_; }
  float scale() const noexcept { return scale_; }
  const LoraOptions& options() const noexcept { return options_; }
  LoraMode mode() const noexcept { return options_.mode; }
  void set_mode(LoraMode mode) noexcept { options_.mode = mode; }

  /// The adapters (row-major in x r and r x out) and their accumulated gradients.
  std::vector<float>& a() noexcept { return a_; }
  std::vector<float>& b() noexcept { return b_; }
  std::vector<float>& grad_a() noexcept { return grad_a_; }
  std::vector<float>& grad_b() noexcept { return grad_b_; }
  const std::vector<float>& a() const noexcept { return a_; }
  const std::vector<float>& b() const noexcept { return b_; }
  const PackedGseTensor<WBits, G>& base() const noexcept { return base_.packed(); }

  /// The dequantized base weight (in x out, row-major), for references and export.
  std::vector<float> base_float() const { return base_.dequantized(); }

  /// An input quantized as this layer quantizes X: GSE-INT<ABits> along in_features and along
  /// tokens (LayerInput), so that layers reading the same X can share one quantization.
  using Activation = LayerInput<ABits, G>;

  /// Quantizes x (T x in) as forward(x, y) does, into `out`: what forward(out, y) accepts.
  static void quantize_input(MatrixRef<const float> x, const LoraOptions& options,
                             Activation& out) {
    out.assign(x, options);
  }

  /// The GSE mode's temporaries of one forward or backward (the quantized adapters, the
  /// gradient's quantized copies, the unpacked saved activations), kept from call to call so
  /// that a step allocates nothing once the first has sized them.  A layer holds its own; a
  /// model whose layers run one at a time shares one among them (share_scratch), which the
  /// largest layer sizes.
  struct Scratch {
    GseTensor<AdBits, G> aq, bq, bt, at;
    GseTensor<ABits, G> hq, xt;
    GseTensor<GBits, G> dyq, gq, gt, dyt;
    GseTensor<8, G> ht;
    std::vector<float> h, g;
    std::size_t bytes() const noexcept {
      return aq.bytes() + bq.bytes() + bt.bytes() + at.bytes() + hq.bytes() + xt.bytes() +
             dyq.bytes() + gq.bytes() + gt.bytes() + dyt.bytes() + ht.bytes() +
             (h.capacity() + g.capacity()) * sizeof(float);
    }
  };
  /// Uses `shared` (outliving the layer's calls, used by one layer at a time) instead of the
  /// layer's own scratch; nullptr returns to the own one.
  void share_scratch(Scratch* shared) noexcept { shared_scratch_ = shared; }

  /// Y = X W + s X A B for X (T x in) into Y (T x out), saving what backward needs.
  void forward(MatrixRef<const float> x, MatrixRef<float> y) {
    check_forward(x.rows, x.cols, y);
    tokens_ = x.rows;
    temporary_ = 0;
    switch (options_.mode) {
      case LoraMode::kGse:
        input_.assign(x, options_);
        forward_gse(input_, y);
        break;
      case LoraMode::kFloat:
      case LoraMode::kFp8:
        forward_float(x, y);
        break;
    }
    saved_ = true;
  }

  /// The same from X already quantized (by quantize_input with this layer's options, which
  /// gives what the float overload computes, bit for bit), so that layers reading the same
  /// input can share one quantization.  LoraMode::kGse only: the float and FP8 modes need X in
  /// float.
  void forward(const Activation& xq, MatrixRef<float> y) {
    GSQ_CHECK(options_.mode == LoraMode::kGse,
              "LoraLinear::forward: a quantized activation needs LoraMode::kGse, the layer is in ",
              to_string(options_.mode), " mode");
    GSQ_CHECK(xq.along_features.axis() == Axis::kCols && xq.along_tokens.axis() == Axis::kRows &&
                  xq.along_tokens.rows() == xq.rows() && xq.along_tokens.cols() == xq.cols(),
              "LoraLinear::forward: the input must be quantized along in_features and along "
              "tokens, with one shape (quantize_input)");
    check_forward(xq.rows(), xq.cols(), y);
    tokens_ = xq.rows();
    temporary_ = 0;
    forward_gse(xq, y);
    saved_ = true;
  }

  /// Given dL/dY (T x out) for the last forward: accumulates dA and dB, and writes dL/dX into
  /// dx (T x in) unless dx.data is null.  Advances the step used by stochastic rounding.
  void backward(MatrixRef<const float> dy, MatrixRef<float> dx) {
    GSQ_CHECK(saved_, "LoraLinear::backward: no forward pass to differentiate");
    GSQ_CHECK(dy.rows == tokens_ && dy.cols == out_, "LoraLinear::backward: dY is ", dy.rows, "x",
              dy.cols, " but the forward output was ", tokens_, "x", out_);
    GSQ_CHECK(dx.data == nullptr || (dx.rows == tokens_ && dx.cols == in_),
              "LoraLinear::backward: dX is ", dx.rows, "x", dx.cols, " but X was ", tokens_, "x",
              in_);
    switch (options_.mode) {
      case LoraMode::kGse:
        backward_gse(dy, dx);
        break;
      case LoraMode::kFloat:
      case LoraMode::kFp8:
        backward_float(dy, dx);
        break;
    }
    ++step_;
  }

  void zero_grad() {
    std::fill(grad_a_.begin(), grad_a_.end(), 0.0f);
    std::fill(grad_b_.begin(), grad_b_.end(), 0.0f);
  }

  /// The stochastic-rounding step counter (restored from checkpoints).
  std::int64_t step() const noexcept { return step_; }
  void set_step(std::int64_t step) noexcept { step_ = step; }

  /// Adds the adapters and the step counter to a checkpoint, as "<prefix>a", "<prefix>b" and
  /// "<prefix>step".  The frozen base is not saved: it is rebuilt from the model.
  void save_to(CheckpointWriter& writer, const std::string& prefix) const {
    writer.add_floats(prefix + "a", a_.data(), a_.size());
    writer.add_floats(prefix + "b", b_.data(), b_.size());
    writer.add_int64(prefix + "step", step_);
  }

  /// Checks that a checkpoint holds this layer's entries with the right sizes; throws
  /// std::invalid_argument naming the first mismatch.  Changes nothing.
  void check(const CheckpointReader& reader, const std::string& prefix) const {
    GSQ_CHECK(reader.float_count(prefix + "a") == a_.size() &&
                  reader.float_count(prefix + "b") == b_.size(),
              "LoraLinear: checkpoint entries '", prefix, "a' and '", prefix, "b' hold ",
              reader.float_count(prefix + "a"), " and ", reader.float_count(prefix + "b"),
              " values, but this layer (", in_, " -> ", out_, ", rank ", rank_, ") needs ",
              a_.size(), " and ", b_.size());
    (void)reader.int64(prefix + "step");
  }

  /// Restores what save_to wrote, after check() (so a bad checkpoint changes nothing).
  void load_from(const CheckpointReader& reader, const std::string& prefix) {
    check(reader, prefix);
    reader.read_floats(prefix + "a", a_.data(), a_.size());
    reader.read_floats(prefix + "b", b_.data(), b_.size());
    step_ = reader.int64(prefix + "step");
    saved_ = false;
  }

  /// Bytes held, by role; saved activations and the largest temporary are those of the last
  /// forward and backward.
  LoraMemory memory() const noexcept {
    LoraMemory m;
    m.base = base_.bytes();
    m.adapter_master = (a_.size() + b_.size()) * sizeof(float);
    m.adapter_gradients = (grad_a_.size() + grad_b_.size()) * sizeof(float);
    m.saved_activations = x_packed_.bytes() + h_packed_.bytes() - 2 * sizeof(x_packed_) +
                          (x_float_.size() + h_float_.size()) * sizeof(float);
    m.largest_temporary = temporary_;
    return m;
  }

  /// Folds the adapter into the base for inference: W' = quantize(W + s A B) at WBits along
  /// in_features, then zeroes B (so the adapter path adds nothing and training could go on).
  /// Returns the error the requantization adds: the RMS of (W' - (W + s A B)) over the RMS of
  /// s A B (0 when the adapter is zero).
  double merge() {
    const std::vector<float> delta = adapter_delta();
    std::vector<float> w = base_float();
    for (std::size_t k = 0; k < w.size(); ++k) w[k] += delta[k];  // effective_weight()
    base_.assign(quantize<WBits, G>(MatrixRef<const float>::row_major(w.data(), in_, out_),
                                    Axis::kRows, options_.quantize())
                     .view());
    const std::vector<float> merged = base_float();
    double err = 0, sig = 0;
    for (std::size_t k = 0; k < w.size(); ++k) {
      err += (double{merged[k]} - w[k]) * (double{merged[k]} - w[k]);
      sig += double{delta[k]} * delta[k];
    }
    std::fill(b_.begin(), b_.end(), 0.0f);
    return sig == 0 ? 0.0 : std::sqrt(err / sig);
  }

  /// The adapter's contribution s A B (in x out, row-major float32).
  std::vector<float> adapter_delta() const {
    std::vector<float> delta(static_cast<std::size_t>(in_ * out_));
    detail::gemm_f32(MatrixRef<const float>::row_major(a_.data(), in_, rank_),
                     MatrixRef<const float>::row_major(b_.data(), rank_, out_),
                     MatrixRef<float>::row_major(delta.data(), in_, out_), scale_);
    return delta;
  }

  /// The layer's weight with the adapter folded in, kept in float32: the dequantized base plus
  /// s A B (in x out, row-major).  Unlike merge(), nothing is requantized, so a float32 model
  /// built from it (for example a llama2.c export) computes what the float-mode layer computes.
  std::vector<float> effective_weight() const {
    std::vector<float> w = base_float();
    const std::vector<float> delta = adapter_delta();
    for (std::size_t k = 0; k < w.size(); ++k) w[k] += delta[k];
    return w;
  }

 private:
  using Act = GseTensor<ABits, G>;  // one quantized activation (Xq, Hq)

  void check_forward(Index rows, Index cols, MatrixRef<float> y) const {
    GSQ_CHECK(cols == in_ && y.rows == rows && y.cols == out_, "LoraLinear::forward: X is ", rows,
              "x", cols, " and Y is ", y.rows, "x", y.cols, " for a ", in_, " -> ", out_, " layer");
  }

  template <typename T>
  void init(MatrixRef<const T> w) {
    GSQ_CHECK(options_.rank >= 1, "LoraLinear: rank must be at least 1, got ", options_.rank);
    GSQ_CHECK(std::isfinite(options_.alpha), "LoraLinear: alpha must be finite");
    GSQ_CHECK(w.rows >= 1 && w.cols >= 1, "LoraLinear: empty base weight ", w.rows, "x", w.cols);
    in_ = w.rows;
    out_ = w.cols;
    rank_ = options_.rank;
    scale_ = options_.alpha / static_cast<float>(rank_);
    base_ = FrozenBase<WBits, G>(w, options_.quantize());
    if (options_.cache_transposed_base) base_.cache_transposed(options_.matmul);
    a_.assign(static_cast<std::size_t>(in_ * rank_), 0.0f);
    b_.assign(static_cast<std::size_t>(rank_ * out_), 0.0f);
    grad_a_.assign(a_.size(), 0.0f);
    grad_b_.assign(b_.size(), 0.0f);
    // gsq's portable generator: the same A for a seed with every standard library.
    detail::Rng rng(options_.seed);
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
    for (float& v : a_) v = rng.uniform(-bound, bound);
  }

  void note_temporary(std::size_t bytes) noexcept { temporary_ = std::max(temporary_, bytes); }
  Scratch& scratch() noexcept { return shared_scratch_ != nullptr ? *shared_scratch_ : own_scratch_; }
  /// The options of every matmul: the caller's, with the caller's workspace (a model shares one
  /// among its layers, which run one at a time) or else this layer's own.
  MatmulOptions matmul_options() noexcept {
    MatmulOptions m = options_.matmul;
    if (m.workspace == nullptr) m.workspace = &workspace_;
    return m;
  }

  // ---- GSE mode ------------------------------------------------------------------------------
  void forward_gse(const Activation& input, MatrixRef<float> y) {
    const MatmulOptions mm = matmul_options();
    const GseTensor<ABits, G>& xq = input.along_features;
    const Index t = xq.rows();
    const QuantizeOptions nearest = options_.quantize();
    // The base streams from its packed form: one L2-sized block of kernel panels at a time.
    base_.forward(xq.view(), y, mm);
    // Xq and the packing buffers the base streamed through: the workspace's real size.
    note_temporary(xq.bytes() + mm.workspace->bytes());

    Scratch& sc = scratch();
    quantize_into(MatrixRef<const float>::row_major(a_.data(), in_, rank_), Axis::kRows, sc.aq,
                  nearest);
    sc.h.resize(static_cast<std::size_t>(t * rank_));
    const auto h = MatrixRef<float>::row_major(sc.h.data(), t, rank_);
    matmul(xq.view(), sc.aq.view(), h, 1.0f, 0.0f, mm);
    quantize_into(MatrixRef<const float>(h), Axis::kCols, sc.hq, nearest);
    quantize_into(MatrixRef<const float>::row_major(b_.data(), rank_, out_), Axis::kRows, sc.bq,
                  nearest);
    matmul(sc.hq.view(), sc.bq.view(), y, scale_, 1.0f, mm);

    x_packed_.assign(input.along_tokens.view());
    h_packed_.assign(sc.hq.view());
    x_float_.clear();
    h_float_.clear();
  }

  void backward_gse(MatrixRef<const float> dy, MatrixRef<float> dx) {
    const MatmulOptions mm = matmul_options();
    const Index t = tokens_;
    Scratch& sc = scratch();
    QuantizeOptions grad =
        options_.quantize(options_.gradient_rounding, detail::stream_seed(options_.seed, step_, 0));
    const QuantizeOptions nearest = options_.quantize();
    quantize_into(dy, Axis::kCols, sc.dyq, grad);  // along out

    // G = dY B^T: B (r x out) grouped along out, transposed to out x r grouped along its rows.
    quantize_into(MatrixRef<const float>::row_major(b_.data(), rank_, out_), Axis::kCols, sc.bt,
                  nearest);
    sc.g.resize(static_cast<std::size_t>(t * rank_));
    const auto gref = MatrixRef<float>::row_major(sc.g.data(), t, rank_);
    matmul(sc.dyq.view(), sc.bt.view().transposed(), gref, 1.0f, 0.0f, mm);

    if (dx.data != nullptr) {
      // W^T regrouped along out to GSE-INT8 on the fly (exact for typical weights).
      base_.backward_input(sc.dyq.view(), dx, mm);
      note_temporary(sc.dyq.bytes() + mm.workspace->bytes());
      grad.seed = detail::stream_seed(options_.seed, step_, 1);
      quantize_into(MatrixRef<const float>(gref), Axis::kCols, sc.gq, grad);
      quantize_into(MatrixRef<const float>::row_major(a_.data(), in_, rank_), Axis::kCols, sc.at,
                    nearest);
      matmul(sc.gq.view(), sc.at.view().transposed(), dx, scale_, 1.0f, mm);
    }

    // dA += s X^T G, reduced over tokens: X and G grouped along tokens.
    x_packed_.unpack_into(sc.xt);  // T x in, groups along tokens
    grad.seed = detail::stream_seed(options_.seed, step_, 2);
    quantize_into(MatrixRef<const float>(gref), Axis::kRows, sc.gt, grad);
    matmul(sc.xt.view().transposed(), sc.gt.view(),
           MatrixRef<float>::row_major(grad_a_.data(), in_, rank_), scale_, 1.0f, mm);
    note_temporary(sc.xt.bytes());

    // dB += s H^T dY, reduced over tokens.
    h_packed_.unpack_into(sc.hq);
    regroup_into(sc.hq.view(), Axis::kRows, sc.ht);
    grad.seed = detail::stream_seed(options_.seed, step_, 3);
    quantize_into(dy, Axis::kRows, sc.dyt, grad);
    matmul(sc.ht.view().transposed(), sc.dyt.view(),
           MatrixRef<float>::row_major(grad_b_.data(), rank_, out_), scale_, 1.0f, mm);
  }

  // ---- float and FP8 modes -------------------------------------------------------------------
  // FP8: forward operands through E4M3, backward gradients through E5M2 (weights and saved
  // activations keep their E4M3 rounding).
  bool fp8() const noexcept { return options_.mode == LoraMode::kFp8; }

  void forward_float(MatrixRef<const float> x, MatrixRef<float> y) {
    const Index t = x.rows;
    x_float_ = detail::dense(x);
    std::vector<float> w = base_float();
    std::vector<float> a = a_, b = b_;
    if (fp8()) {
      detail::fp8_round<Fp8E4M3>(x_float_, t, in_);
      detail::fp8_round<Fp8E4M3>(w, in_, out_);
      detail::fp8_round<Fp8E4M3>(a, in_, rank_);
      detail::fp8_round<Fp8E4M3>(b, rank_, out_);
    }
    note_temporary(w.size() * sizeof(float));
    const auto xr = MatrixRef<const float>::row_major(x_float_.data(), t, in_);
    detail::gemm_f32(xr, MatrixRef<const float>::row_major(w.data(), in_, out_), y);
    h_float_.assign(static_cast<std::size_t>(t * rank_), 0.0f);
    detail::gemm_f32(xr, MatrixRef<const float>::row_major(a.data(), in_, rank_),
                     MatrixRef<float>::row_major(h_float_.data(), t, rank_));
    if (fp8()) detail::fp8_round<Fp8E4M3>(h_float_, t, rank_);
    detail::gemm_f32(MatrixRef<const float>::row_major(h_float_.data(), t, rank_),
                     MatrixRef<const float>::row_major(b.data(), rank_, out_), y, scale_, 1.0f);
    x_packed_ = {};
    h_packed_ = {};
  }

  void backward_float(MatrixRef<const float> dy_in, MatrixRef<float> dx) {
    const Index t = tokens_;
    std::vector<float> dy = detail::dense(dy_in);
    std::vector<float> a = a_, b = b_;
    if (fp8()) {
      detail::fp8_round<Fp8E5M2>(dy, t, out_);
      detail::fp8_round<Fp8E4M3>(a, in_, rank_);
      detail::fp8_round<Fp8E4M3>(b, rank_, out_);
    }
    const auto dyr = MatrixRef<const float>::row_major(dy.data(), t, out_);
    std::vector<float> g(static_cast<std::size_t>(t * rank_));
    detail::gemm_f32(dyr,
                     detail::transposed(MatrixRef<const float>::row_major(b.data(), rank_, out_)),
                     MatrixRef<float>::row_major(g.data(), t, rank_));
    if (fp8()) detail::fp8_round<Fp8E5M2>(g, t, rank_);
    const auto gr = MatrixRef<const float>::row_major(g.data(), t, rank_);
    if (dx.data != nullptr) {
      std::vector<float> w = base_float();
      if (fp8()) detail::fp8_round<Fp8E4M3>(w, in_, out_);
      note_temporary(w.size() * sizeof(float));
      detail::gemm_f32(
          dyr, detail::transposed(MatrixRef<const float>::row_major(w.data(), in_, out_)), dx);
      detail::gemm_f32(gr,
                       detail::transposed(MatrixRef<const float>::row_major(a.data(), in_, rank_)),
                       dx, scale_, 1.0f);
    }
    detail::gemm_f32(detail::transposed(MatrixRef<const float>::row_major(x_float_.data(), t, in_)),
                     gr, MatrixRef<float>::row_major(grad_a_.data(), in_, rank_), scale_, 1.0f);
    detail::gemm_f32(
        detail::transposed(MatrixRef<const float>::row_major(h_float_.data(), t, rank_)), dyr,
        MatrixRef<float>::row_major(grad_b_.data(), rank_, out_), scale_, 1.0f);
  }

  LoraOptions options_;
  Index in_ = 0;
  Index out_ = 0;
  int rank_ = 0;
  float scale_ = 1.0f;
  FrozenBase<WBits, G> base_;
  std::vector<float> a_, b_, grad_a_, grad_b_;

  // Saved by forward for backward.
  bool saved_ = false;
  Index tokens_ = 0;
  PackedGseTensor<ABits, G> x_packed_, h_packed_;
  std::vector<float> x_float_, h_float_;
  std::size_t temporary_ = 0;
  MatmulWorkspace workspace_;  // used when options().matmul.workspace is null
  Activation input_;           // the float forward's quantized X, reused
  Scratch own_scratch_;
  Scratch* shared_scratch_ = nullptr;  // share_scratch
  std::int64_t step_ = 0;
};

}  // namespace gsq
