// lora_model.hpp: forward and backward of a LLaMA-family model over windows of tokens, with every
// linear layer (wq, wk, wv, wo, w1, w2, w3) a gsq adapter layer on a frozen low-bit base.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/models/llama/attention.hpp"
#include "gsq/models/llama/classifier.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim/parameter.hpp"

namespace gsq {

// What runs where
//   Linear layers: the Lora type (LoraLinear in GSE, float or FP8 mode, or LotaLinear): every
//   matmul of their forward and backward is integer in GSE mode.  q, k and v read one
//   quantized copy of their normalised input, and so do w1 and w3.
//   Embedding and classifier: GSE-INT8, the classifier and its cross-entropy fused a chunk of
//   tokens at a time (classifier.hpp).
//   Attention: float (attention.hpp), causal (the upper triangle is skipped a tile at a time),
//   register-tiled kernels on every ISA with one result; the probabilities are not stored but
//   recomputed in backward from each row's saved max and 1 / sum.  Or GSE (set_attention).
//   RMSNorm, RoPE (a precomputed table), SwiGLU and the residuals: float, threaded over tokens.
// Every float operation outside the linears is one of gsq's own (detail/vmath.hpp: exp,
// fixed-order sums) in a fixed order, so a step is bit-identical on every ISA and thread count.
// The model holds no float copy of its frozen weights: they are read from a LlamaWeightSource
// one tensor at a time, quantized and dropped.

/// Seconds spent per phase of the steps run since the last reset, for profiles.
struct LlamaStepProfile {
  double linears = 0;     ///< the adapter layers' forward and backward (matmuls, quantization)
  double attention = 0;   ///< scores, softmax, weighted values and their backward
  double classifier = 0;  ///< classifier products, softmax, cross-entropy, logit gradient
  double pointwise = 0;   ///< embedding, RMSNorm, RoPE, SwiGLU, residuals
  double total() const noexcept { return linears + attention + classifier + pointwise; }
};

/// Bytes a model holds, by role.
struct LlamaMemory {
  std::size_t frozen = 0;       ///< the linears' packed bases, embedding and classifier, norms
  std::size_t adapters = 0;     ///< adapter masters and gradients
  std::size_t activations = 0;  ///< what forward saves for backward (model and layers)
  std::size_t scratch = 0;      ///< reused buffers (logit chunk, matmul workspace, gradients)
  std::size_t total() const noexcept { return frozen + adapters + activations + scratch; }
};

/// A LLaMA-family model for fine-tuning: frozen base, adapters on all seven linears per layer.
/// Lora: the layer type of every linear, a model of Linear (nn/linear.hpp): LoraLinear or
/// LotaLinear.
template <typename Lora = LoraLinear<4, 8, 8, 8, 32>>
class LlamaLoraModel {
  static_assert(check_linear<Lora>(), "LlamaLoraModel: its layer type must model Linear");
  using Activation = typename Lora::Activation;

 public:
  /// Reads every frozen tensor from `source` once (it need not outlive the model).  The layers
  /// share one matmul workspace (they run one at a time), the model's own unless
  /// options.matmul.workspace names one.
  LlamaLoraModel(const LlamaWeightSource& source, const LoraOptions& options)
      : c_(source.config()),
        options_(options),
        mode_(options.mode),
        workspace_(std::make_unique<MatmulWorkspace>()) {
    c_.validate();
    if (options_.matmul.workspace == nullptr) options_.matmul.workspace = workspace_.get();
    float_attention_.set_isa(detail::conversion_kernel_isa(options_.conversion_isa));
    rope_ = RopeTable(c_, c_.seq_len);
    std::vector<float> w;
    source.read(LlamaTensor::kRmsFinal, 0, rms_final_);
    for (int l = 0; l < c_.n_layers; ++l) {
      Layer layer;
      source.read(LlamaTensor::kRmsAtt, l, layer.rms_att);
      source.read(LlamaTensor::kRmsFfn, l, layer.rms_ffn);
      auto make = [&](LlamaTensor t, std::uint64_t salt) {
        source.read(t, l, w);
        const TensorShape s = shape_of(c_, t);
        LoraOptions o = options_;
        o.seed = options.seed * 1000003u + static_cast<std::uint64_t>(l) * 16u + salt;
        // Stored out x in; the layer's weight is in x out.
        return std::make_unique<Lora>(
            detail::transposed(MatrixRef<const float>::row_major(w.data(), s.rows, s.cols)), o);
      };
      layer.q = make(LlamaTensor::kWq, 0);
      layer.k = make(LlamaTensor::kWk, 1);
      layer.v = make(LlamaTensor::kWv, 2);
      layer.o = make(LlamaTensor::kWo, 3);
      layer.w1 = make(LlamaTensor::kW1, 4);
      layer.w2 = make(LlamaTensor::kW2, 5);
      layer.w3 = make(LlamaTensor::kW3, 6);
      layers_.push_back(std::move(layer));
    }
    if constexpr (kSharesScratch) {
      lora_scratch_ = std::make_unique<LoraScratch>();
      for (Lora* p : loras()) p->share_scratch(lora_scratch_.get());
    }
    w.clear();
    w.shrink_to_fit();
    classifier_ = LlamaClassifier(source, options_);
  }

  /// From a llama2.c checkpoint in memory (it need not outlive the model).
  LlamaLoraModel(const Llama2Weights& w, const LoraOptions& options)
      : LlamaLoraModel(Llama2WeightSource(w), options) {}

  const LlamaConfig& config() const noexcept { return c_; }
  const LlamaClassifier& classifier() const noexcept { return classifier_; }

  /// Every adapter layer, in a fixed order (layer by layer: q, k, v, o, w1, w2, w3).
  std::vector<Lora*> loras() {
    std::vector<Lora*> out;
    for (Layer& l : layers_) {
      for (Lora* p :
           {l.q.get(), l.k.get(), l.v.get(), l.o.get(), l.w1.get(), l.w2.get(), l.w3.get()})
        out.push_back(p);
    }
    return out;
  }
  std::vector<const Lora*> loras() const {
    std::vector<const Lora*> out;
    for (const Layer& l : layers_) {
      for (const Lora* p :
           {l.q.get(), l.k.get(), l.v.get(), l.o.get(), l.w1.get(), l.w2.get(), l.w3.get()})
        out.push_back(p);
    }
    return out;
  }

  /// The adapters as optimizer parameters.
  std::vector<Parameter> parameters() {
    std::vector<Parameter> out;
    for (Lora* p : loras()) {
      out.push_back({p->a().data(), p->grad_a().data(), p->a().size()});
      out.push_back({p->b().data(), p->grad_b().data(), p->b().size()});
    }
    return out;
  }

  /// The mode of every layer and of the classifier (kFp8 runs the classifier in float).
  void set_mode(LoraMode mode) {
    mode_ = mode;
    for (Lora* p : loras()) p->set_mode(mode);
  }
  void zero_grad() {
    for (Lora* p : loras()) p->zero_grad();
  }

  /// Where attention's products run: kFloat (the default) or kGse (on the integer engine, see
  /// attention_forward_gse).  Independent of set_mode.
  void set_attention(LoraMode mode) {
    GSQ_CHECK(mode != LoraMode::kFp8, "llama: attention runs in float or GSE, not FP8");
    attention_ = mode;
  }
  LoraMode attention() const noexcept { return attention_; }
  /// GSE attention's multiply-adds per useful one in its along-head products (S, dP): the head
  /// size padded to whole groups of 32, over the head size (48 -> 1.33, 64 -> 1, 8 -> 4).
  double attention_padding() const noexcept {
    const Index hs = c_.head_size();
    return static_cast<double>((hs + 31) / 32 * 32) / static_cast<double>(hs);
  }

  /// Mean cross-entropy of predicting tokens[t + 1] from tokens[0..t], t < T = size - 1.  With
  /// `backward`, also accumulates the adapters' gradients of that mean.
  double loss(const std::vector<int>& tokens, bool backward) {
    const std::vector<int>* one = &tokens;
    return run(&one, nullptr, 1, backward);
  }

  /// The same over a micro-batch of windows of one length, processed together: every linear
  /// layer sees all windows' tokens as one matrix (as training frameworks batch them), attention
  /// and RoPE stay within each window.  Returns the mean over all predictions, and with
  /// `backward` accumulates the gradients of that mean.
  double loss_batch(const std::vector<std::vector<int>>& windows, bool backward) {
    return loss_batch(windows, {}, backward);
  }

  /// The same with a mask per window: masks[b][t] != 0 counts the prediction of
  /// windows[b][t + 1] (masks[b] has size - 1 entries), 0 leaves it out (a prompt, padding).
  /// The mean is over the counted predictions.  An empty `masks` counts every prediction.
  double loss_batch(const std::vector<std::vector<int>>& windows,
                    const std::vector<std::vector<std::uint8_t>>& masks, bool backward) {
    std::vector<const std::vector<int>*> seqs;
    for (const std::vector<int>& w : windows) seqs.push_back(&w);
    GSQ_CHECK(!seqs.empty(), "llama: an empty micro-batch");
    GSQ_CHECK(masks.empty() || masks.size() == windows.size(), "llama: ", masks.size(),
              " masks for ", windows.size(), " windows");
    for (std::size_t b = 0; b < masks.size(); ++b)
      GSQ_CHECK(masks[b].size() + 1 == windows[b].size(), "llama: the mask of window ", b,
                " has ", masks[b].size(), " entries, the window ", windows[b].size(),
                " tokens (a mask has one per prediction, size - 1)");
    return run(seqs.data(), masks.empty() ? nullptr : masks.data(), seqs.size(), backward);
  }

  /// Backward passes run: the step of the classifier's and GSE attention's rounding streams
  /// (each layer keeps its own, LoraLinear::step).  A resumed run restores it to continue
  /// bit-identically.
  std::int64_t step() const noexcept { return step_; }
  void set_step(std::int64_t step) noexcept { step_ = step; }

  /// The time spent per phase since construction or the last reset.
  const LlamaStepProfile& profile() const noexcept { return profile_; }
  void reset_profile() noexcept { profile_ = {}; }

  /// Bytes held, by role, after the last step.
  LlamaMemory memory() const {
    LlamaMemory m;
    m.frozen = classifier_.bytes() + rms_final_.size() * sizeof(float);
    for (const Layer& l : layers_) {
      m.frozen += (l.rms_att.size() + l.rms_ffn.size()) * sizeof(float);
      for (const std::vector<float>* v : {&l.x, &l.r1, &l.q_out, &l.k_out, &l.v_out, &l.att_max,
                                          &l.att_inv, &l.x2, &l.r2, &l.h1, &l.h3})
        m.activations += v->capacity() * sizeof(float);
      for (const GseTensor<8>* t : {&l.saved_x, &l.saved_x2, &l.saved_h1, &l.saved_h3})
        m.activations += t->bytes();
    }
    m.activations += (xf_.capacity() + rf_.capacity() + x_last_.capacity()) * sizeof(float);
    for (const Lora* p : loras()) {
      const LoraMemory lm = p->memory();
      m.frozen += lm.base;
      m.adapters += lm.adapter_master + lm.adapter_gradients;
      m.activations += lm.saved_activations;
    }
    for (const std::vector<float>* v :
         {&xn_, &attn_, &hs_, &y_, &dx_, &dxn_, &tmp_, &dh1_, &dh3_, &dhs_, &dq_, &dk_, &dv_,
          &dattn_, &dxf_})
      m.scratch += v->capacity() * sizeof(float);
    for (const std::vector<float>* v : {&spare_.x, &spare_.x2, &spare_.h1, &spare_.h3, &next_x_})
      m.scratch += v->capacity() * sizeof(float);
    m.scratch += workspace_->bytes() + act_.bytes() + float_attention_.scratch_bytes();
    if constexpr (kSharesScratch) m.scratch += lora_scratch_->bytes();
    return m;
  }

  /// The model as it computes, in float32 weights: W = dequantized base + s A B per linear, the
  /// dequantized GSE-INT8 embedding (and classifier), the norms and the layout copied from
  /// `original` (the checkpoint the model was built from).  Serialize it to run it with llama2.c
  /// or anything else that reads that format.
  Llama2Weights merged_weights(const Llama2Weights& original) const {
    GSQ_CHECK(original.config().dim == c_.dim && original.config().n_layers == c_.n_layers &&
                  original.config().vocab_size == c_.vocab_size &&
                  original.config().hidden_dim == c_.hidden_dim &&
                  original.config().shared_classifier == c_.tied_classifier,
              "llama: merged_weights needs the checkpoint the model was built from");
    Llama2Weights out = original;
    auto put = [&out](MatrixRef<const float> m, const std::vector<float>& values) {
      std::copy(values.begin(), values.end(), out.mutable_data(m));
    };
    put(out.token_embedding(), dequantize(classifier_.embedding()));
    if (!c_.tied_classifier) put(out.classifier(), dequantize(classifier_.weight()));
    for (int l = 0; l < c_.n_layers; ++l) {
      const Layer& L = layers_[static_cast<std::size_t>(l)];
      const std::pair<const Lora*, MatrixRef<const float>> linears[] = {
          {L.q.get(), out.wq(l)}, {L.k.get(), out.wk(l)},  {L.v.get(), out.wv(l)},
          {L.o.get(), out.wo(l)}, {L.w1.get(), out.w1(l)}, {L.w2.get(), out.w2(l)},
          {L.w3.get(), out.w3(l)}};
      for (const auto& [lora, m] : linears) {
        // m is out x in in llama2.c's layout; the layer's effective weight is in x out.
        const std::vector<float> eff = lora->effective_weight();
        float* dst = out.mutable_data(m);
        const Index in = lora->in_features(), outf = lora->out_features();
        for (Index o = 0; o < outf; ++o) {
          for (Index i = 0; i < in; ++i)
            dst[o * in + i] = eff[static_cast<std::size_t>(i * outf + o)];
        }
      }
    }
    return out;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Layer {
    std::unique_ptr<Lora> q, k, v, o, w1, w2, w3;
    std::vector<float> rms_att, rms_ffn;
    // Saved by forward: the residual entering the layer and after attention, 1 / rms of both,
    // q and k after RoPE, v, each attention row's max and 1 / sum, the FFN's h1 and h3.  In
    // GSE mode x, x2, h1 and h3 are kept as GSE-INT8 (saved_*) and their float buffers pass to
    // the next layer (swap_buffers), so one float set of them exists for the whole model.  q, k
    // and v stay float: backward recomputes the softmax from them with the forward's row
    // statistics, which 8-bit copies would not reproduce (a sharp row's weights then exceed 1;
    // measured on stories260K: training diverged).
    std::vector<float> x, r1, q_out, k_out, v_out, att_max, att_inv, x2, r2, h1, h3;
    GseTensor<8> saved_x, saved_x2, saved_h1, saved_h3;
  };

  /// Whether this step keeps its saved activations as GSE-INT8 (GSE mode) or float.
  bool packs_activations() const noexcept { return mode_ == LoraMode::kGse; }

  /// Exchanges the layer's packed activations' float buffers with the model's one spare set.
  void swap_buffers(Layer& L) noexcept {
    std::swap(L.x, spare_.x);
    std::swap(L.x2, spare_.x2);
    std::swap(L.h1, spare_.h1);
    std::swap(L.h3, spare_.h3);
  }

  /// The layer's activations after its forward, as GSE-INT8 along their rows.
  void save_activations(Layer& L, Index T) const {
    const QuantizeOptions q = options_.quantize();
    const Index d = c_.dim, hid = c_.hidden_dim;
    quantize_into(rm(L.x, T, d), Axis::kCols, L.saved_x, q);
    quantize_into(rm(L.x2, T, d), Axis::kCols, L.saved_x2, q);
    quantize_into(rm(L.h1, T, hid), Axis::kCols, L.saved_h1, q);
    quantize_into(rm(L.h3, T, hid), Axis::kCols, L.saved_h3, q);
  }

  /// Back into the layer's float buffers (sized as forward left them), for its backward.
  void restore_activations(Layer& L, Index T) {
    const Index d = c_.dim, hid = c_.hidden_dim;
    const int threads = options_.matmul.threads;
    const std::optional<Isa> isa = options_.conversion_isa;
    auto load = [threads, isa](const GseTensor<8>& from, std::vector<float>& to, Index rows,
                          Index cols) {
      size(to, rows * cols);
      dequantize_into(from.view(), rmw(to, rows, cols), isa, threads);
    };
    load(L.saved_x, L.x, T, d);
    load(L.saved_x2, L.x2, T, d);
    load(L.saved_h1, L.h1, T, hid);
    load(L.saved_h3, L.h3, T, hid);
  }

  static MatrixRef<const float> rm(const std::vector<float>& v, Index rows, Index cols) {
    return MatrixRef<const float>::row_major(v.data(), rows, cols);
  }
  static MatrixRef<float> rmw(std::vector<float>& v, Index rows, Index cols) {
    return MatrixRef<float>::row_major(v.data(), rows, cols);
  }
  static void size(std::vector<float>& v, Index n) { v.resize(static_cast<std::size_t>(n)); }

  /// Threads for `n` rows of `work` operations each: the model's, unless too little work.
  int threads_for(Index rows, double work) const {
    return detail::threads_for(static_cast<double>(rows) * work, options_.matmul.threads);
  }
  /// body(first, count) over blocks of 16 rows, threaded.
  template <typename Body>
  void for_rows(Index rows, double work_per_row, Body&& body) const {
    detail::parallel_for_blocks(rows, 16, threads_for(rows, work_per_row * 4),
                                [&](Index first, Index count, int) { body(first, count); });
  }

  /// The linear layers' forward on one input, shared by several layers: quantized once in GSE
  /// mode.
  template <typename... Out>
  void forward_shared(const std::vector<float>& x, Index rows, Index cols, Out&&... outs) {
    const auto xr = rm(x, rows, cols);
    if (mode_ == LoraMode::kGse) {
      Lora::quantize_input(xr, options_, act_);
      (outs.first->forward(act_, outs.second), ...);
    } else {
      (outs.first->forward(xr, outs.second), ...);
    }
  }

  void rmsnorm(const std::vector<float>& x, const std::vector<float>& g, Index rows,
               std::vector<float>& y, std::vector<float>& r) const {
    const Index d = c_.dim;
    size(y, rows * d);
    size(r, rows);
    const float eps = c_.norm_eps;
    for_rows(rows, 3.0 * static_cast<double>(d), [&](Index first, Index count) {
      for (Index t = first; t < first + count; ++t) {
        const float* xt = x.data() + t * d;
        float* yt = y.data() + t * d;
        const float ss = detail::dot_f32(xt, xt, d);
        const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
        r[static_cast<std::size_t>(t)] = inv;
        for (Index j = 0; j < d; ++j) yt[j] = g[static_cast<std::size_t>(j)] * (inv * xt[j]);
      }
    });
  }

  /// dx += (d rmsnorm / dx)^T dy, row by row.
  void rmsnorm_backward(const std::vector<float>& x, const std::vector<float>& g,
                        const std::vector<float>& r, const std::vector<float>& dy, Index rows,
                        std::vector<float>& dx) const {
    const Index d = c_.dim;
    for_rows(rows, 5.0 * static_cast<double>(d), [&](Index first, Index count) {
      for (Index t = first; t < first + count; ++t) {
        const float* xt = x.data() + t * d;
        const float* dyt = dy.data() + t * d;
        float* dxt = dx.data() + t * d;
        const float inv = r[static_cast<std::size_t>(t)];
        const float dot = detail::dot3_f32(g.data(), dyt, xt, d);
        const float k = inv * inv * inv * dot / static_cast<float>(d);
        for (Index i = 0; i < d; ++i)
          dxt[i] += inv * g[static_cast<std::size_t>(i)] * dyt[i] - k * xt[i];
      }
    });
  }

  /// RoPE of every row at its position in its window (the inverse rotation when `inverse`).
  void rope(std::vector<float>& m, Index rows, Index width, bool inverse) const {
    for_rows(rows, 3.0 * static_cast<double>(width), [&](Index first, Index count) {
      for (Index t = first; t < first + count; ++t)
        rope_.rotate(m.data() + t * width, width, t % len_, inverse);
    });
  }

  AttentionShape attention_shape() const {
    return {len_, c_.head_size(), c_.n_heads, c_.n_kv_heads};
  }
  int attention_threads(Index items) const {
    const double len = static_cast<double>(len_);
    return detail::threads_for(static_cast<double>(items) * len * len * c_.head_size() * 2,
                               options_.matmul.threads);
  }

  void attention_forward(Layer& L, Index windows) {
    const Index T = windows * len_;
    size(L.att_max, c_.n_heads * T);
    size(L.att_inv, c_.n_heads * T);
    size(attn_, T * c_.q_dim());
    float_attention_.forward(attention_shape(), windows, L.q_out.data(), L.k_out.data(),
                       L.v_out.data(), attn_.data(), L.att_max.data(), L.att_inv.data(),
                       options_.matmul.threads);
  }

  /// From dO (T x q_dim, in dattn_): dQ, dK, dV (before RoPE is undone for Q and K).
  void attention_backward(Layer& L, Index windows) {
    const Index T = windows * len_;
    size(dq_, T * c_.q_dim());
    size(dk_, T * c_.kv_dim());
    size(dv_, T * c_.kv_dim());
    float_attention_.backward(attention_shape(), windows, L.q_out.data(), L.k_out.data(),
                        L.v_out.data(), L.att_max.data(), L.att_inv.data(), dattn_.data(),
                        dq_.data(), dk_.data(), dv_.data(), options_.matmul.threads);
  }

  // ---- Attention on the integer engine (set_attention(LoraMode::kGse)) -------------------
  // Per (window, head), every product grouped along its own reduction axis, GSE-INT8:
  //   forward    S  = Q(hs) K^T(hs) / sqrt(hs)     causal: blocks of 64 query rows against
  //                                                the keys they see
  //              P  = softmax(S) in float, as the float path computes it
  //              O  = P(keys) V(keys)              P: stochastic rounding (nearest-even would
  //                                                flush the neighbours of a dominant key)
  //   backward   dP = dO(hs) V^T(hs)
  //              dS = P^ (dP - D) / sqrt(hs),  D = sum(P^ dP) / sum(P^) per row, where P^ is
  //                   the quantized P of the forward product, so each row of dS sums to zero
  //              dQ = dS(keys) K(keys),  dK += dS^T(queries) Q(queries),
  //              dV += P^T(queries) dO(queries)
  // A head size that is not a multiple of 32 pads each along-hs group with zero codes (48 pads
  // to 64: a third more multiply-adds in S and dP, reported by attention_padding()).
  // Stochastic streams are keyed by (seed, step, layer, head, window, operand).

  struct GseAttentionScratch {
    GseTensor<8> qf, qt, kf, kt, vf, vt, dof, dot, pk, pq, dsk, dsq;
    std::vector<float> s, phat, dp;
    MatmulWorkspace workspace;
  };

  std::uint64_t attention_seed(int layer, Index head, Index window, std::uint32_t operand) const {
    const auto stream = static_cast<std::uint32_t>((layer * c_.n_heads + head) * 8 + operand);
    return detail::stream_seed(options_.seed ^ (0xA77Eull << 32) ^ static_cast<std::uint64_t>(window),
                               step_, stream);
  }

  /// A (rows x hs) block of a width-wide row-major matrix: rows [row0, row0 + rows), columns
  /// [col, col + hs).
  static MatrixRef<const float> cblock(const std::vector<float>& m, Index width, Index row0,
                                       Index rows, Index col, Index hs) {
    return {m.data() + row0 * width + col, rows, hs, width, 1};
  }
  static MatrixRef<float> block(std::vector<float>& m, Index width, Index row0, Index rows,
                                Index col, Index hs) {
    return {m.data() + row0 * width + col, rows, hs, width, 1};
  }

  /// S = Q K^T / sqrt(hs), causal, then P = softmax(S) per row into sc.s (len x len, zero above
  /// the diagonal); the row statistics computed and stored when `compute`, else read.
  void gse_probabilities(GseAttentionScratch& sc, const MatmulOptions& mm, float* max_of,
                         float* inv_of, bool compute) const {
    const Index hs = c_.head_size(), len = len_;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    constexpr Index kBlock = 64;
    for (Index t0 = 0; t0 < len; t0 += kBlock) {
      const Index n = std::min(kBlock, len - t0);
      matmul(sc.qf.view().line_block(t0, n), sc.kf.view().line_block(0, t0 + n).transposed(),
             MatrixRef<float>{sc.s.data() + t0 * len, n, t0 + n, len, 1}, scale, 0.0f, mm);
    }
    for (Index t = 0; t < len; ++t) {
      float* sr = sc.s.data() + t * len;
      FloatAttention::softmax_row(sr, t + 1, max_of[t], inv_of[t], compute);
      std::fill(sr + t + 1, sr + len, 0.0f);
    }
  }

  MatmulOptions attention_matmul(GseAttentionScratch& sc) const {
    MatmulOptions mm = options_.matmul;
    mm.threads = 1;  // one thread per (window, kv head) item
    mm.workspace = &sc.workspace;
    return mm;
  }

  void attention_forward_gse(Layer& L, int layer, Index windows) {
    const Index hs = c_.head_size(), qd = c_.q_dim(), kvd = c_.kv_dim(), len = len_;
    const Index kv_mul = c_.n_heads / c_.n_kv_heads, T = windows * len;
    size(L.att_max, c_.n_heads * T);
    size(L.att_inv, c_.n_heads * T);
    size(attn_, T * qd);
    const Index items = windows * c_.n_kv_heads;
    const int threads = attention_threads(items);
    gse_scratch_.resize(static_cast<std::size_t>(std::max(threads, 1)));
    const QuantizeOptions nearest = options_.quantize();
    detail::parallel_for_slots(items, threads, [&](Index item, int slot) {
      GseAttentionScratch& sc = gse_scratch_[static_cast<std::size_t>(slot)];
      const MatmulOptions mm = attention_matmul(sc);
      const Index b = item / c_.n_kv_heads, g = item % c_.n_kv_heads, row0 = b * len;
      sc.s.resize(static_cast<std::size_t>(len * len));
      quantize_into(cblock(L.k_out, kvd, row0, len, g * hs, hs), Axis::kCols, sc.kf, nearest);
      quantize_into(cblock(L.v_out, kvd, row0, len, g * hs, hs), Axis::kRows, sc.vt, nearest);
      for (Index h = g * kv_mul; h < (g + 1) * kv_mul; ++h) {
        quantize_into(cblock(L.q_out, qd, row0, len, h * hs, hs), Axis::kCols, sc.qf, nearest);
        gse_probabilities(sc, mm, L.att_max.data() + h * T + row0,
                          L.att_inv.data() + h * T + row0, true);
        quantize_into(MatrixRef<const float>::row_major(sc.s.data(), len, len), Axis::kCols, sc.pk,
                      options_.quantize(Rounding::kStochastic, attention_seed(layer, h, b, 0)));
        matmul(sc.pk.view(), sc.vt.view(), block(attn_, qd, row0, len, h * hs, hs), 1.0f, 0.0f,
               mm);
      }
    });
  }

  void attention_backward_gse(Layer& L, int layer, Index windows) {
    const Index hs = c_.head_size(), qd = c_.q_dim(), kvd = c_.kv_dim(), len = len_;
    const Index kv_mul = c_.n_heads / c_.n_kv_heads, T = windows * len;
    size(dq_, T * qd);
    size(dk_, T * kvd);
    size(dv_, T * kvd);
    const Index items = windows * c_.n_kv_heads;
    const int threads = attention_threads(items);
    gse_scratch_.resize(static_cast<std::size_t>(std::max(threads, 1)));
    const QuantizeOptions nearest = options_.quantize();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    detail::parallel_for_slots(items, threads, [&](Index item, int slot) {
      GseAttentionScratch& sc = gse_scratch_[static_cast<std::size_t>(slot)];
      const MatmulOptions mm = attention_matmul(sc);
      const Index b = item / c_.n_kv_heads, g = item % c_.n_kv_heads, row0 = b * len;
      sc.s.resize(static_cast<std::size_t>(len * len));
      sc.phat.resize(sc.s.size());
      sc.dp.resize(sc.s.size());
      quantize_into(cblock(L.k_out, kvd, row0, len, g * hs, hs), Axis::kCols, sc.kf, nearest);
      quantize_into(cblock(L.k_out, kvd, row0, len, g * hs, hs), Axis::kRows, sc.kt, nearest);
      quantize_into(cblock(L.v_out, kvd, row0, len, g * hs, hs), Axis::kCols, sc.vf, nearest);
      const auto dk = block(dk_, kvd, row0, len, g * hs, hs);
      const auto dv = block(dv_, kvd, row0, len, g * hs, hs);
      auto rows = [](const float* p, Index r, Index c) {
        return MatrixRef<const float>::row_major(p, r, c);
      };
      for (Index h = g * kv_mul; h < (g + 1) * kv_mul; ++h) {
        const float beta = h == g * kv_mul ? 0.0f : 1.0f;  // dK, dV sum over the group's heads
        const auto q = cblock(L.q_out, qd, row0, len, h * hs, hs);
        const auto go = cblock(dattn_, qd, row0, len, h * hs, hs);
        quantize_into(q, Axis::kCols, sc.qf, nearest);
        quantize_into(q, Axis::kRows, sc.qt, nearest);
        gse_probabilities(sc, mm, L.att_max.data() + h * T + row0,
                          L.att_inv.data() + h * T + row0, false);
        // P^: the forward product's quantized P (the same stream), in float.
        quantize_into(rows(sc.s.data(), len, len), Axis::kCols, sc.pk,
                      options_.quantize(Rounding::kStochastic, attention_seed(layer, h, b, 0)));
        dequantize_into(sc.pk.view(), MatrixRef<float>::row_major(sc.phat.data(), len, len));
        // dP = dO V^T.
        quantize_into(go, Axis::kCols, sc.dof,
                      options_.quantize(options_.gradient_rounding, attention_seed(layer, h, b, 1)));
        matmul(sc.dof.view(), sc.vf.view().transposed(),
               MatrixRef<float>::row_major(sc.dp.data(), len, len), 1.0f, 0.0f, mm);
        for (Index t = 0; t < len; ++t) {
          const float* p = sc.phat.data() + t * len;
          float* d = sc.dp.data() + t * len;
          const Index n = t + 1;
          const float mass = detail::sum_f32(p, n);
          const float row = mass > 0.0f ? detail::dot_f32(p, d, n) / mass : 0.0f;
          for (Index j = 0; j < n; ++j) d[j] = p[j] * (d[j] - row) * scale;
          std::fill(d + n, d + len, 0.0f);
        }
        // dQ = dS K, dK += dS^T Q, dV += P^T dO.
        quantize_into(rows(sc.dp.data(), len, len), Axis::kCols, sc.dsk,
                      options_.quantize(options_.gradient_rounding, attention_seed(layer, h, b, 2)));
        matmul(sc.dsk.view(), sc.kt.view(), block(dq_, qd, row0, len, h * hs, hs), 1.0f, 0.0f, mm);
        quantize_into(rows(sc.dp.data(), len, len), Axis::kRows, sc.dsq,
                      options_.quantize(options_.gradient_rounding, attention_seed(layer, h, b, 3)));
        matmul(sc.dsq.view().transposed(), sc.qt.view(), dk, 1.0f, beta, mm);
        quantize_into(rows(sc.s.data(), len, len), Axis::kRows, sc.pq,
                      options_.quantize(Rounding::kStochastic, attention_seed(layer, h, b, 4)));
        quantize_into(go, Axis::kRows, sc.dot,
                      options_.quantize(options_.gradient_rounding, attention_seed(layer, h, b, 5)));
        matmul(sc.pq.view().transposed(), sc.dot.view(), dv, 1.0f, beta, mm);
      }
    });
  }

  /// y += x elementwise over rows x width values, threaded.
  void add(std::vector<float>& y, const std::vector<float>& x, Index rows, Index width) const {
    sum(y, y, x, rows, width);
  }
  /// out = a + b elementwise over rows x width values, threaded (the residual stream: the same
  /// sums as out = a, then add(out, b)).
  void sum(std::vector<float>& out, const std::vector<float>& a, const std::vector<float>& b,
           Index rows, Index width) const {
    size(out, rows * width);
    for_rows(rows, static_cast<double>(width), [&](Index first, Index count) {
      for (Index i = first * width; i < (first + count) * width; ++i) {
        const auto k = static_cast<std::size_t>(i);
        out[k] = a[k] + b[k];
      }
    });
  }

  /// Forward (and backward) over n windows of one length: rows b * len + t of every activation.
  double run(const std::vector<int>* const* seqs, const std::vector<std::uint8_t>* masks,
             std::size_t n, bool backward) {
    const Index len = static_cast<Index>(seqs[0]->size()) - 1;
    GSQ_CHECK(len >= 1 && len <= c_.seq_len,
              "llama: a training sequence needs 2 to seq_len + 1 = ", c_.seq_len + 1,
              " tokens, got ", seqs[0]->size());
    for (std::size_t b = 0; b < n; ++b) {
      GSQ_CHECK(static_cast<Index>(seqs[b]->size()) == len + 1, "llama: window ", b, " has ",
                seqs[b]->size(), " tokens, window 0 has ", len + 1);
      for (int tok : *seqs[b])
        GSQ_CHECK(tok >= 0 && tok < c_.vocab_size, "llama: token ", tok, " is outside [0, ",
                  c_.vocab_size, ")");
    }
    len_ = len;
    const Index T = static_cast<Index>(n) * len;  // rows of every activation
    const Index d = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim(), hid = c_.hidden_dim;
    targets_.resize(static_cast<std::size_t>(T));
    mask_.assign(masks == nullptr ? 0 : static_cast<std::size_t>(T), 0);
    Index counted = masks == nullptr ? T : 0;
    for (Index row = 0; row < T; ++row) {
      const auto b = static_cast<std::size_t>(row / len), t = static_cast<std::size_t>(row % len);
      targets_[static_cast<std::size_t>(row)] = (*seqs[b])[t + 1];
      if (masks != nullptr) counted += (mask_[static_cast<std::size_t>(row)] = masks[b][t] != 0);
    }
    GSQ_CHECK(counted > 0, "llama: the masks leave no prediction to train on");

    auto lap = [](Clock::time_point& since, double& into) {
      const Clock::time_point now = Clock::now();
      into += std::chrono::duration<double>(now - since).count();
      since = now;
    };
    Clock::time_point t0 = Clock::now();
    // Forward, keeping what backward needs.
    const bool pack = packs_activations();
    if (pack) swap_buffers(layers_[0]);
    std::vector<float>& x0 = layers_[0].x;
    size(x0, T * d);
    for (Index row = 0; row < T; ++row) {
      const auto b = static_cast<std::size_t>(row / len), t = static_cast<std::size_t>(row % len);
      classifier_.embed((*seqs[b])[t], x0.data() + row * d);
    }
    size(y_, T * d);
    for (int l = 0; l < c_.n_layers; ++l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      if (pack && l > 0) {
        swap_buffers(L);
        std::swap(L.x, next_x_);  // the previous layer's output is this one's input
      }
      rmsnorm(L.x, L.rms_att, T, xn_, L.r1);
      size(L.q_out, T * qd);
      size(L.k_out, T * kvd);
      size(L.v_out, T * kvd);
      lap(t0, profile_.pointwise);
      forward_shared(xn_, T, d, std::pair{L.q.get(), rmw(L.q_out, T, qd)},
                     std::pair{L.k.get(), rmw(L.k_out, T, kvd)},
                     std::pair{L.v.get(), rmw(L.v_out, T, kvd)});
      lap(t0, profile_.linears);
      rope(L.q_out, T, qd, false);
      rope(L.k_out, T, kvd, false);
      lap(t0, profile_.pointwise);
      if (attention_ == LoraMode::kGse) {
        attention_forward_gse(L, l, static_cast<Index>(n));
      } else {
        attention_forward(L, static_cast<Index>(n));
      }
      lap(t0, profile_.attention);
      L.o->forward(rm(attn_, T, qd), rmw(y_, T, d));
      lap(t0, profile_.linears);
      sum(L.x2, L.x, y_, T, d);
      rmsnorm(L.x2, L.rms_ffn, T, xn_, L.r2);
      size(L.h1, T * hid);
      size(L.h3, T * hid);
      lap(t0, profile_.pointwise);
      forward_shared(xn_, T, d, std::pair{L.w1.get(), rmw(L.h1, T, hid)},
                     std::pair{L.w3.get(), rmw(L.h3, T, hid)});
      lap(t0, profile_.linears);
      size(hs_, T * hid);
      for_rows(T, 8.0 * static_cast<double>(hid), [&](Index first, Index count) {
        for (Index i = first * hid; i < (first + count) * hid; ++i) {
          const auto k = static_cast<std::size_t>(i);
          hs_[k] = L.h1[k] * detail::sigmoid_f32(L.h1[k]) * L.h3[k];
        }
      });
      lap(t0, profile_.pointwise);
      L.w2->forward(rm(hs_, T, hid), rmw(y_, T, d));
      lap(t0, profile_.linears);
      std::vector<float>& next = l + 1 == c_.n_layers ? x_last_
                                 : pack                 ? next_x_
                                                        : layers_[static_cast<std::size_t>(l + 1)].x;
      sum(next, L.x2, y_, T, d);
      if (pack) {
        save_activations(L, T);
        swap_buffers(L);
        lap(t0, profile_.pointwise);
      }
    }
    rmsnorm(x_last_, rms_final_, T, xf_, rf_);
    lap(t0, profile_.pointwise);
    // The classifier and cross-entropy, fused.
    if (backward) size(dxf_, T * d);
    const ClassifierLoss ce = classifier_.run(
        xf_.data(), T, targets_.data(), masks == nullptr ? nullptr : mask_.data(),
        mode_ == LoraMode::kGse, 1.0f / static_cast<float>(counted),
        backward ? dxf_.data() : nullptr, detail::stream_seed(options_.seed ^ 0xC1A55u, step_, 0));
    lap(t0, profile_.classifier);
    if (backward) {
      backward_pass(T, static_cast<Index>(n), t0);
      ++step_;
    }
    return ce.sum / static_cast<double>(ce.count);
  }

  void backward_pass(Index T, Index windows, Clock::time_point& t0) {
    auto lap = [&t0](double& into) {
      const Clock::time_point now = Clock::now();
      into += std::chrono::duration<double>(now - t0).count();
      t0 = now;
    };
    const Index d = c_.dim, qd = c_.q_dim(), kvd = c_.kv_dim(), hid = c_.hidden_dim;
    dx_.assign(static_cast<std::size_t>(T * d), 0.0f);
    rmsnorm_backward(x_last_, rms_final_, rf_, dxf_, T, dx_);
    size(tmp_, T * d);
    size(dxn_, T * d);
    size(dhs_, T * hid);
    size(dh1_, T * hid);
    size(dh3_, T * hid);
    size(dattn_, T * qd);
    lap(profile_.pointwise);
    const bool pack = packs_activations();
    for (int l = c_.n_layers - 1; l >= 0; --l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      if (pack) {
        swap_buffers(L);
        restore_activations(L, T);
        lap(profile_.pointwise);
      }
      // FFN: x3 = x2 + w2(silu(w1 xn2) * w3 xn2).
      L.w2->backward(rm(dx_, T, d), rmw(dhs_, T, hid));
      lap(profile_.linears);
      for_rows(T, 12.0 * static_cast<double>(hid), [&](Index first, Index count) {
        for (Index i = first * hid; i < (first + count) * hid; ++i) {
          const auto k = static_cast<std::size_t>(i);
          const float a = L.h1[k], sig = detail::sigmoid_f32(a);
          dh3_[k] = dhs_[k] * a * sig;
          dh1_[k] = dhs_[k] * L.h3[k] * sig * (1.0f + a * (1.0f - sig));
        }
      });
      lap(profile_.pointwise);
      L.w1->backward(rm(dh1_, T, hid), rmw(dxn_, T, d));
      L.w3->backward(rm(dh3_, T, hid), rmw(tmp_, T, d));
      lap(profile_.linears);
      add(dxn_, tmp_, T, d);
      rmsnorm_backward(L.x2, L.rms_ffn, L.r2, dxn_, T, dx_);  // dx is now d/dx2
      lap(profile_.pointwise);
      // Attention: x2 = x + wo(attn(rope(wq xn1), rope(wk xn1), wv xn1)).
      L.o->backward(rm(dx_, T, d), rmw(dattn_, T, qd));
      lap(profile_.linears);
      if (attention_ == LoraMode::kGse) {
        attention_backward_gse(L, l, windows);
      } else {
        attention_backward(L, windows);
      }
      lap(profile_.attention);
      rope(dq_, T, qd, true);
      rope(dk_, T, kvd, true);
      lap(profile_.pointwise);
      L.q->backward(rm(dq_, T, qd), rmw(dxn_, T, d));
      L.k->backward(rm(dk_, T, kvd), rmw(tmp_, T, d));
      lap(profile_.linears);
      add(dxn_, tmp_, T, d);
      lap(profile_.pointwise);
      L.v->backward(rm(dv_, T, kvd), rmw(tmp_, T, d));
      lap(profile_.linears);
      add(dxn_, tmp_, T, d);
      rmsnorm_backward(L.x, L.rms_att, L.r1, dxn_, T, dx_);
      if (pack) swap_buffers(L);
      lap(profile_.pointwise);
    }
  }

  LlamaConfig c_;
  LoraOptions options_;
  LoraMode mode_;
  LoraMode attention_ = LoraMode::kFloat;
  std::unique_ptr<MatmulWorkspace> workspace_;  // shared by the layers; a stable address
  RopeTable rope_;
  std::vector<float> rms_final_;
  std::vector<Layer> layers_;
  LlamaClassifier classifier_;
  Index len_ = 1;           // the window length of the current micro-batch
  std::int64_t step_ = 0;   // backward passes run: the classifier's rounding stream
  LlamaStepProfile profile_;
  // Saved across forward and backward.
  std::vector<float> x_last_, xf_, rf_;
  // In GSE mode: the one float set of the layers' big activations, and the next layer's input.
  struct Buffers {
    std::vector<float> x, x2, h1, h3;
  } spare_;
  std::vector<float> next_x_;
  std::vector<int> targets_;
  std::vector<std::uint8_t> mask_;
  // Scratch, reused every step.
  Activation act_;
  std::vector<float> xn_, attn_, hs_, y_, dx_, dxn_, tmp_, dh1_, dh3_, dhs_, dq_, dk_, dv_,
      dattn_, dxf_;
  FloatAttention float_attention_;
  // The layers' GSE temporaries, one set for all (they run one at a time), when the layer
  // type has them (LoraLinear::Scratch); a stable address.
  template <typename L>
  using ScratchOf = typename L::Scratch;
  static constexpr bool kSharesScratch = detail::Detected<ScratchOf, Lora>::value;
  using LoraScratch = std::conditional_t<kSharesScratch,
                                         typename detail::Detected<ScratchOf, Lora>::type, char>;
  std::unique_ptr<LoraScratch> lora_scratch_;
  std::vector<GseAttentionScratch> gse_scratch_;  // one per thread slot
};

/// The llama2.c name of the model (a llama2.c checkpoint is one way to fill it).
template <typename Lora = LoraLinear<4, 8, 8, 8, 32>>
using Llama2LoraModel = LlamaLoraModel<Lora>;

}  // namespace gsq
