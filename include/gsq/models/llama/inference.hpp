// inference.hpp: token-by-token inference of a LLaMA-family model with a key/value cache, in
// float32 or on the integer engine, and seeded sampling whose choices are the same on every ISA.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/matmul.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"
#include "gsq/nn/frozen_base.hpp"

namespace gsq {

/// How the frozen weights are held and multiplied.
enum class LlamaCompute : std::uint8_t {
  kFloat,  ///< float32 weights, float products (what llama.cpp does for an F32 file)
  kGse,    ///< linears GSE-INT<weight_bits> (bit-packed), activations GSE-INT<activation_bits>,
           ///< embedding and classifier GSE-INT8: the integer engine
};

struct LlamaInferenceOptions {
  LlamaCompute compute = LlamaCompute::kFloat;
  int weight_bits = 4;      ///< kGse: 4, 5, 6 or 8 bits for the seven linears of each layer
  int activation_bits = 8;  ///< kGse: 4, 5, 6 or 8 bits for their inputs
  int context = 0;          ///< positions the key/value cache holds; 0 = the config's seq_len
  int threads = 0;          ///< 0 = gsq chooses (OpenMP's count for large products)
  std::optional<Isa> isa;   ///< kGse: kernel ISA (conversion and matmul); empty = the best
};

namespace detail {

/// Calls f(std::integral_constant<int, B>{}) for a run-time width B in {4, 5, 6, 8}.
template <typename F>
decltype(auto) with_gse_bits(int bits, const char* what, F&& f) {
  switch (bits) {
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 5:
      return f(std::integral_constant<int, 5>{});
    case 6:
      return f(std::integral_constant<int, 6>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      break;
  }
  GSQ_CHECK(false, "llama inference: ", what, " bits must be 4, 5, 6 or 8, not ", bits);
  return f(std::integral_constant<int, 8>{});  // not reached
}

/// One frozen matrix W (out x in): y = W x, either as float rows (dot products in
/// vmath.hpp's fixed order) or as a GSE FrozenBase (in x out, grouped along in).
class InferenceLinear {
 public:
  using Gse = std::variant<std::monostate, FrozenBase<4>, FrozenBase<5>, FrozenBase<6>,
                           FrozenBase<8>>;

  /// Takes w (out x in, row-major) as float.
  void set_float(std::vector<float>&& w, Index out, Index in) {
    out_ = out;
    in_ = in;
    float_ = std::move(w);
    gse_ = std::monostate{};
  }
  /// Quantizes w (out x in, row-major) to GSE-INT<bits> along in; w is not kept.
  void set_gse(const std::vector<float>& w, Index out, Index in, int bits, int threads,
               std::optional<Isa> isa) {
    out_ = out;
    in_ = in;
    float_.clear();
    float_.shrink_to_fit();
    QuantizeOptions q;
    q.threads = threads;
    q.isa = isa;
    // W^T as an in x out view of the out x in rows.
    const MatrixRef<const float> wt{w.data(), in, out, 1, in};
    with_gse_bits(bits, "weight", [&](auto b) { gse_ = FrozenBase<decltype(b)::value>(wt, q); });
  }

  Index out_features() const noexcept { return out_; }
  Index in_features() const noexcept { return in_; }
  bool is_gse() const noexcept { return gse_.index() != 0; }
  std::size_t bytes() const noexcept {
    if (!is_gse()) return float_.size() * sizeof(float);
    return std::visit(
        [](const auto& b) -> std::size_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(b)>, std::monostate>) {
            return 0;
          } else {
            return b.bytes();
          }
        },
        gse_);
  }

  /// y = W x in float (x: in values, y: out values).
  void apply_float(const float* x, float* y, int threads) const {
    const Index in = in_;
    const int t = threads_for(static_cast<double>(out_) * static_cast<double>(in_), threads);
    constexpr Index kRows = 64;
    parallel_for((out_ + kRows - 1) / kRows, t, [&](Index block) {
      const Index end = std::min(out_, (block + 1) * kRows);
      for (Index i = block * kRows; i < end; ++i)
        y[i] = dot_f32(float_.data() + i * in, x, in);
    });
  }

  /// Adds a float LoRA adapter, applied unmerged: y = W x + scale * B (A x), with A (rank x in)
  /// and B (out x rank) row-major.  The base (float or GSE) is unchanged.
  void set_adapter(std::vector<float>&& a, std::vector<float>&& b, int rank, float scale) {
    const auto r = static_cast<std::size_t>(std::max(rank, 0));
    GSQ_CHECK(rank >= 1 && a.size() == r * static_cast<std::size_t>(in_) &&
                  b.size() == static_cast<std::size_t>(out_) * r,
              "llama inference: an adapter of rank ", rank, " for a ", out_, " x ", in_,
              " weight needs ", rank, " x ", in_, " and ", out_, " x ", rank, " values, got ",
              a.size(), " and ", b.size());
    GSQ_CHECK(std::isfinite(scale), "llama inference: the adapter scale must be finite");
    lora_a_ = std::move(a);
    lora_b_ = std::move(b);
    lora_rank_ = rank;
    lora_scale_ = scale;
  }
  void clear_adapter() noexcept {
    lora_a_ = {};
    lora_b_ = {};
    lora_rank_ = 0;
  }
  bool has_adapter() const noexcept { return lora_rank_ > 0; }
  int adapter_rank() const noexcept { return lora_rank_; }
  std::size_t adapter_bytes() const noexcept {
    return (lora_a_.size() + lora_b_.size()) * sizeof(float);
  }

  /// y += scale * B (A x) in float (dot products in vmath's fixed order), x the layer's float
  /// input (in values), h scratch of adapter_rank() floats.  Nothing without an adapter.
  void add_adapter(const float* x, float* y, float* h) const noexcept {
    if (lora_rank_ == 0) return;
    const Index r = lora_rank_;
    for (Index k = 0; k < r; ++k) h[k] = dot_f32(lora_a_.data() + k * in_, x, in_);
    for (Index i = 0; i < out_; ++i) y[i] += lora_scale_ * dot_f32(lora_b_.data() + i * r, h, r);
  }

  /// y = W xq for an input already quantized along in (1 x in).
  template <int ABits>
  void apply_gse(const GseView<ABits, 32>& xq, float* y, const MatmulOptions& options) const {
    std::visit(
        [&](const auto& b) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(b)>, std::monostate>) {
            b.forward(xq, MatrixRef<float>::row_major(y, xq.rows(), out_), options);
          }
        },
        gse_);
  }

 private:
  Index out_ = 0, in_ = 0;
  std::vector<float> float_;
  Gse gse_;
  std::vector<float> lora_a_, lora_b_;  // rank x in, out x rank (empty: no adapter)
  int lora_rank_ = 0;
  float lora_scale_ = 0.0f;
};

}  // namespace detail

/// Inference of a LLaMA-family model, one token at a time, with a key/value cache of
/// `context` positions.  The model is read from a LlamaWeightSource tensor by tensor: in
/// float mode it keeps the float weights, in GSE mode only the quantized ones.
///
/// Numerics: every float reduction (RMSNorm, dot products, softmax sums) runs in vmath.hpp's
/// fixed order with gsq's own exp, and RoPE uses the double-precision RopeTable, so the logits,
/// and therefore seeded sampling, are the same bits on every ISA and thread count (the GSE
/// products are bit-identical by construction).  Llama2Runner (runner.hpp) is the other runner:
/// llama2.c's run.c operation for operation, for exact comparison with it.
class LlamaRunner {
 public:
  LlamaRunner(const LlamaWeightSource& source, const LlamaInferenceOptions& options = {})
      : c_(source.config()), options_(options) {
    c_.validate();
    context_ = options.context > 0 ? options.context : c_.seq_len;
    GSQ_CHECK(context_ >= 1 && context_ <= (1 << 20), "llama inference: context ", context_,
              " is outside [1, 2^20]");
    const bool gse = options.compute == LlamaCompute::kGse;
    if (gse) {
      detail::with_gse_bits(options.weight_bits, "weight", [](auto) {});
      detail::with_gse_bits(options.activation_bits, "activation", [](auto) {});
    }
    rope_ = RopeTable(c_, context_);
    std::vector<float> w;
    auto linear = [&](LlamaTensor t, int layer, detail::InferenceLinear& out, int bits) {
      source.read(t, layer, w);
      const TensorShape s = shape_of(c_, t);
      if (gse) {
        out.set_gse(w, s.rows, s.cols, bits, options.threads, options.isa);
      } else {
        out.set_float(std::move(w), s.rows, s.cols);
        w = {};
      }
    };
    auto vec = [&](LlamaTensor t, int layer) {
      std::vector<float> v;
      source.read(t, layer, v);
      return v;
    };
    layers_.resize(static_cast<std::size_t>(c_.n_layers));
    for (int l = 0; l < c_.n_layers; ++l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      L.rms_att = vec(LlamaTensor::kRmsAtt, l);
      L.rms_ffn = vec(LlamaTensor::kRmsFfn, l);
      linear(LlamaTensor::kWq, l, L.wq, options.weight_bits);
      linear(LlamaTensor::kWk, l, L.wk, options.weight_bits);
      linear(LlamaTensor::kWv, l, L.wv, options.weight_bits);
      linear(LlamaTensor::kWo, l, L.wo, options.weight_bits);
      linear(LlamaTensor::kW1, l, L.w1, options.weight_bits);
      linear(LlamaTensor::kW2, l, L.w2, options.weight_bits);
      linear(LlamaTensor::kW3, l, L.w3, options.weight_bits);
    }
    rms_final_ = vec(LlamaTensor::kRmsFinal, 0);
    // The embedding: float rows, or GSE-INT8 rows (grouped along dim) looked up one at a time.
    source.read(LlamaTensor::kTokenEmbedding, 0, w);
    const Index v = c_.vocab_size, d = c_.dim;
    if (c_.tied_classifier) {
      if (gse) {
        classifier_.set_gse(w, v, d, 8, options.threads, options.isa);
      } else {
        classifier_.set_float(std::vector<float>(w), v, d);
      }
    }
    if (gse) {
      QuantizeOptions q;
      q.threads = options.threads;
      q.isa = options.isa;
      quantize_into(MatrixRef<const float>::row_major(w.data(), v, d), Axis::kCols, embedding_gse_,
                    q);
      w = {};
    } else {
      embedding_ = std::move(w);
      w = {};
    }
    if (!c_.tied_classifier) linear(LlamaTensor::kClassifier, 0, classifier_, 8);

    const auto kv = static_cast<std::size_t>(c_.kv_dim());
    const std::size_t cache = static_cast<std::size_t>(c_.n_layers) *
                              static_cast<std::size_t>(context_) * kv;
    key_cache_.assign(cache, 0.0f);
    value_cache_.assign(cache, 0.0f);
    x_.resize(static_cast<std::size_t>(d));
    xb_.resize(static_cast<std::size_t>(std::max<Index>(d, c_.q_dim())));
    xb2_.resize(static_cast<std::size_t>(d));
    q_.resize(static_cast<std::size_t>(c_.q_dim()));
    hb_.resize(static_cast<std::size_t>(c_.hidden_dim));
    hb2_.resize(static_cast<std::size_t>(c_.hidden_dim));
    att_.resize(static_cast<std::size_t>(context_));
    logits_.resize(static_cast<std::size_t>(v));
    matmul_.threads = options.threads;
    matmul_.isa = options.isa;
    matmul_.workspace = &workspace_;
  }

  const LlamaConfig& config() const noexcept { return c_; }
  const LlamaInferenceOptions& options() const noexcept { return options_; }
  /// Positions the key/value cache holds: forward() takes pos in [0, context()).
  int context() const noexcept { return context_; }

  /// Bytes of the frozen weights as held (float or GSE), and of the key/value cache.
  std::size_t weight_bytes() const noexcept {
    std::size_t n = classifier_.bytes() + embedding_.size() * sizeof(float) +
                    embedding_gse_.bytes() + rms_final_.size() * sizeof(float);
    for (const Layer& L : layers_) {
      n += L.wq.bytes() + L.wk.bytes() + L.wv.bytes() + L.wo.bytes() + L.w1.bytes() +
           L.w2.bytes() + L.w3.bytes() + (L.rms_att.size() + L.rms_ffn.size()) * sizeof(float);
    }
    return n;
  }
  /// Applies a float LoRA adapter to linear t (kWq .. kW3) of layer `layer`, unmerged:
  /// y = W x + scale * B (A x) with A (rank x in) and B (out x rank) row-major, in the
  /// LlamaWeightSource layout (out x in weights, Meta's q/k row order), on top of the float or
  /// GSE base.  The adapter runs in float on the layer's unquantized input.  Replaces any
  /// adapter the linear had.  (models/llama/adapter.hpp's apply_adapter sets a whole
  /// LlamaAdapter.)
  void set_adapter(LlamaTensor t, int layer, std::vector<float> a, std::vector<float> b, int rank,
                   float scale) {
    linear_of(t, layer).set_adapter(std::move(a), std::move(b), rank, scale);
    adapter_h_.resize(std::max(adapter_h_.size(), static_cast<std::size_t>(rank)));
  }
  /// Removes every adapter.
  void clear_adapters() noexcept {
    for (Layer& L : layers_) {
      for (detail::InferenceLinear* p : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3})
        p->clear_adapter();
    }
  }
  /// Bytes of the adapters held.
  std::size_t adapter_bytes() const noexcept {
    std::size_t n = 0;
    for (const Layer& L : layers_) {
      for (const detail::InferenceLinear* p : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3})
        n += p->adapter_bytes();
    }
    return n;
  }

  std::size_t cache_bytes() const noexcept {
    return (key_cache_.size() + value_cache_.size()) * sizeof(float);
  }

  /// The logits (vocab_size values) after `token` at position `pos`; positions 0 .. pos - 1
  /// must have been run before (a new sequence starts again at 0).
  const std::vector<float>& forward(int token, int pos) {
    GSQ_CHECK(token >= 0 && token < c_.vocab_size, "llama inference: token ", token,
              " is outside [0, ", c_.vocab_size, ")");
    GSQ_CHECK(pos >= 0 && pos < context_, "llama inference: position ", pos,
              " is outside the context [0, ", context_, ")");
    const Index d = c_.dim, kv_dim = c_.kv_dim(), hs = c_.head_size(), qd = c_.q_dim();
    const int kv_mul = c_.n_heads / c_.n_kv_heads;
    if (options_.compute == LlamaCompute::kGse) {
      dequantize_into(embedding_gse_.view().line_block(token, 1),
                      MatrixRef<float>::row_major(x_.data(), 1, d));
    } else {
      const float* e = embedding_.data() + static_cast<std::size_t>(token) * static_cast<std::size_t>(d);
      std::copy(e, e + d, x_.begin());
    }
    const float inv_sqrt_hs = 1.0f / std::sqrt(static_cast<float>(hs));
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Layer& L = layers_[l];
      rmsnorm(xb_.data(), x_.data(), L.rms_att.data());
      const std::size_t loff = l * static_cast<std::size_t>(context_) * static_cast<std::size_t>(kv_dim);
      float* k = key_cache_.data() + loff + static_cast<std::size_t>(pos) * static_cast<std::size_t>(kv_dim);
      float* v = value_cache_.data() + loff + static_cast<std::size_t>(pos) * static_cast<std::size_t>(kv_dim);
      apply({{&L.wq, q_.data()}, {&L.wk, k}, {&L.wv, v}}, xb_.data(), d);
      rope_.rotate(q_.data(), qd, pos, false);
      rope_.rotate(k, kv_dim, pos, false);
      for (Index h = 0; h < c_.n_heads; ++h) {
        const float* qh = q_.data() + h * hs;
        const std::size_t kvh = static_cast<std::size_t>((h / kv_mul) * hs);
        for (int t = 0; t <= pos; ++t) {
          const float* kt = key_cache_.data() + loff +
                            static_cast<std::size_t>(t) * static_cast<std::size_t>(kv_dim) + kvh;
          att_[static_cast<std::size_t>(t)] = detail::dot_f32(qh, kt, hs) * inv_sqrt_hs;
        }
        softmax(att_.data(), pos + 1);
        float* out = xb_.data() + h * hs;
        std::fill(out, out + hs, 0.0f);
        for (int t = 0; t <= pos; ++t) {
          const float* vt = value_cache_.data() + loff +
                            static_cast<std::size_t>(t) * static_cast<std::size_t>(kv_dim) + kvh;
          const float a = att_[static_cast<std::size_t>(t)];
          for (Index i = 0; i < hs; ++i) out[i] += a * vt[i];
        }
      }
      apply({{&L.wo, xb2_.data()}}, xb_.data(), qd);
      for (Index i = 0; i < d; ++i) x_[static_cast<std::size_t>(i)] += xb2_[static_cast<std::size_t>(i)];
      rmsnorm(xb_.data(), x_.data(), L.rms_ffn.data());
      apply({{&L.w1, hb_.data()}, {&L.w3, hb2_.data()}}, xb_.data(), d);
      for (std::size_t i = 0; i < hb_.size(); ++i)
        hb_[i] = hb_[i] * detail::sigmoid_f32(hb_[i]) * hb2_[i];
      apply({{&L.w2, xb2_.data()}}, hb_.data(), c_.hidden_dim);
      for (Index i = 0; i < d; ++i) x_[static_cast<std::size_t>(i)] += xb2_[static_cast<std::size_t>(i)];
    }
    rmsnorm(x_.data(), x_.data(), rms_final_.data());
    apply({{&classifier_, logits_.data()}}, x_.data(), d, 8);
    return logits_;
  }

 private:
  struct Layer {
    std::vector<float> rms_att, rms_ffn;
    detail::InferenceLinear wq, wk, wv, wo, w1, w2, w3;
  };
  using Target = std::pair<const detail::InferenceLinear*, float*>;

  detail::InferenceLinear& linear_of(LlamaTensor t, int layer) {
    GSQ_CHECK(layer >= 0 && layer < c_.n_layers, "llama inference: layer ", layer,
              " is outside [0, ", c_.n_layers, ")");
    Layer& L = layers_[static_cast<std::size_t>(layer)];
    switch (t) {
      case LlamaTensor::kWq:
        return L.wq;
      case LlamaTensor::kWk:
        return L.wk;
      case LlamaTensor::kWv:
        return L.wv;
      case LlamaTensor::kWo:
        return L.wo;
      case LlamaTensor::kW1:
        return L.w1;
      case LlamaTensor::kW2:
        return L.w2;
      case LlamaTensor::kW3:
        return L.w3;
      default:
        break;
    }
    GSQ_CHECK(false, "llama inference: adapters apply to the seven linears of a layer, not to ",
              to_string(t));
    return L.wq;  // not reached
  }

  /// y = W x (+ the adapter, if any) for each (W, y) of targets, sharing one quantized x in GSE
  /// mode.
  void apply(std::initializer_list<Target> targets, const float* x, Index in, int abits = 0) {
    apply_base(targets, x, in, abits);
    for (const Target& t : targets) t.first->add_adapter(x, t.second, adapter_h_.data());
  }

  void apply_base(std::initializer_list<Target> targets, const float* x, Index in, int abits) {
    if (options_.compute != LlamaCompute::kGse) {
      for (const Target& t : targets) t.first->apply_float(x, t.second, options_.threads);
      return;
    }
    detail::with_gse_bits(abits > 0 ? abits : options_.activation_bits, "activation", [&](auto b) {
      constexpr int kBits = decltype(b)::value;
      if (!std::holds_alternative<GseTensor<kBits, 32>>(act_)) act_ = GseTensor<kBits, 32>();
      auto& xq = std::get<GseTensor<kBits, 32>>(act_);
      QuantizeOptions q;
      q.threads = 1;
      q.isa = options_.isa;
      quantize_into(MatrixRef<const float>::row_major(x, 1, in), Axis::kCols, xq, q);
      for (const Target& t : targets) t.first->apply_gse(xq.view(), t.second, matmul_);
    });
  }

  /// out = g * x / rms(x) over dim values, the sum of squares in vmath's fixed order.
  void rmsnorm(float* out, const float* x, const float* g) const noexcept {
    const Index d = c_.dim;
    const float inv = 1.0f / std::sqrt(detail::dot_f32(x, x, d) / static_cast<float>(d) + c_.norm_eps);
    for (Index j = 0; j < d; ++j) out[j] = g[j] * (inv * x[j]);
  }

  /// In place over n >= 1 scores: e^(x - max) / sum, with exp_f32 and sum_f32.
  static void softmax(float* x, Index n) noexcept {
    float max = 0.0f, inv = 0.0f;
    detail::softmax_f32(x, n, max, inv);
  }

  LlamaConfig c_;
  LlamaInferenceOptions options_;
  int context_ = 0;
  RopeTable rope_;
  std::vector<Layer> layers_;
  std::vector<float> rms_final_, embedding_;
  GseTensor<8, 32> embedding_gse_;
  detail::InferenceLinear classifier_;
  std::vector<float> key_cache_, value_cache_;
  std::vector<float> x_, xb_, xb2_, q_, hb_, hb2_, att_, logits_, adapter_h_;
  std::variant<GseTensor<4, 32>, GseTensor<5, 32>, GseTensor<6, 32>, GseTensor<8, 32>> act_;
  MatmulWorkspace workspace_;
  MatmulOptions matmul_;
};

/// About how many bytes LlamaRunner holds for config c's frozen weights in GSE mode: the seven
/// linears of each layer at weight_bits, embedding and classifier at 8 bits, each value with its
/// share of a 5-bit exponent per group of 32 (padding to whole groups and words ignored), and the
/// norms in float.
inline std::int64_t estimated_gse_bytes(const LlamaConfig& c, int weight_bits) {
  const double per_value = 5.0 / 32.0;
  const double d = c.dim, v = c.vocab_size;
  const double linears = static_cast<double>(c.n_layers) *
                         (d * c.q_dim() * 2 + d * c.kv_dim() * 2 + 3.0 * d * c.hidden_dim);
  const double tables = 2 * v * d;  // the embedding, and the classifier (a copy when tied)
  const double bits = linears * (weight_bits + per_value) + tables * (8 + per_value);
  const double norms = (2.0 * c.n_layers + 1) * d * 4;
  return static_cast<std::int64_t>(bits / 8 + norms);
}

/// Sampling settings: temperature 0 is greedy (the first of the largest logits).
struct SamplerOptions {
  float temperature = 1.0f;
  float top_p = 1.0f;  ///< nucleus sampling: the smallest set of tokens whose mass reaches top_p
  std::uint64_t seed = 0;
};

/// Picks tokens from logits.  With a seed it makes the same choices on every ISA: softmax with
/// exp_f32 and sums in vmath's fixed order, a stable sort, and gsq's portable generator.
class Sampler {
 public:
  explicit Sampler(const SamplerOptions& o) : o_(o), rng_(o.seed) {
    GSQ_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0f, "sampler: temperature ",
              o.temperature, " must be finite and >= 0");
    GSQ_CHECK(o.top_p > 0.0f && o.top_p <= 1.0f, "sampler: top_p ", o.top_p,
              " must be in (0, 1]");
  }

  /// The index of the first largest of n logits.
  static int argmax(const float* logits, Index n) noexcept {
    Index best = 0;
    for (Index i = 1; i < n; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return static_cast<int>(best);
  }

  int sample(const std::vector<float>& logits) {
    const Index n = static_cast<Index>(logits.size());
    GSQ_CHECK(n >= 1, "sampler: no logits");
    if (o_.temperature == 0.0f) return argmax(logits.data(), n);
    probs_.resize(logits.size());
    const float inv_t = 1.0f / o_.temperature;
    for (Index i = 0; i < n; ++i) {
      GSQ_CHECK(!std::isnan(logits[static_cast<std::size_t>(i)]), "sampler: logit ", i, " is NaN");
      probs_[static_cast<std::size_t>(i)] = logits[static_cast<std::size_t>(i)] * inv_t;
    }
    detail::exp_shifted_f32(probs_.data(), n, detail::max_f32(probs_.data(), n));
    const float sum = detail::sum_f32(probs_.data(), n);
    for (float& p : probs_) p /= sum;
    const float r = rng_.uniform(0.0f, 1.0f);
    if (o_.top_p >= 1.0f) {
      float cdf = 0.0f;
      for (Index i = 0; i < n; ++i) {
        cdf += probs_[static_cast<std::size_t>(i)];
        if (r < cdf) return static_cast<int>(i);
      }
      return static_cast<int>(n - 1);
    }
    // Nucleus: tokens by falling probability (ties by index), cut where the mass reaches top_p;
    // tokens below (1 - top_p) / (n - 1) cannot be in the nucleus and are skipped first.
    order_.clear();
    const float cutoff = (1.0f - o_.top_p) / static_cast<float>(std::max<Index>(n - 1, 1));
    for (Index i = 0; i < n; ++i) {
      if (probs_[static_cast<std::size_t>(i)] >= cutoff) order_.push_back(static_cast<int>(i));
    }
    std::stable_sort(order_.begin(), order_.end(), [this](int a, int b) {
      return probs_[static_cast<std::size_t>(a)] > probs_[static_cast<std::size_t>(b)];
    });
    float mass = 0.0f;
    std::size_t last = order_.size() - 1;
    for (std::size_t i = 0; i < order_.size(); ++i) {
      mass += probs_[static_cast<std::size_t>(order_[i])];
      if (mass > o_.top_p) {
        last = i;
        break;
      }
    }
    const float target = r * mass;
    float cdf = 0.0f;
    for (std::size_t i = 0; i <= last; ++i) {
      cdf += probs_[static_cast<std::size_t>(order_[i])];
      if (target < cdf) return order_[i];
    }
    return order_[last];
  }

 private:
  SamplerOptions o_;
  detail::Rng rng_;
  std::vector<float> probs_;
  std::vector<int> order_;
};

/// Generation as llama2.c's run.c does it: the prompt's tokens (BOS first) are fed one per
/// position, then each next token is sampled, for `steps` positions in all (prompt included)
/// or until the model produces BOS or EOS.  Each new token's text (token_to_text after the
/// previous token) goes to on_text, except a lone byte that is neither printable nor white
/// space (run.c's safe_printf).  Returns the positions run.
template <typename OnText>
int generate(LlamaRunner& runner, const TextTokenizer& tokenizer, const std::vector<int>& prompt,
             int steps, Sampler& sampler, OnText&& on_text) {
  GSQ_CHECK(!prompt.empty(), "generate: the prompt has no tokens (not even BOS)");
  GSQ_CHECK(steps >= 1 && steps <= runner.context(), "generate: steps ", steps,
            " is outside [1, context = ", runner.context(), "]");
  int token = prompt[0], pos = 0;
  while (pos < steps) {
    const std::vector<float>& logits = runner.forward(token, pos);
    const int next = pos + 1 < static_cast<int>(prompt.size())
                         ? prompt[static_cast<std::size_t>(pos) + 1]
                         : sampler.sample(logits);
    ++pos;
    if (next == tokenizer.bos() || next == tokenizer.eos()) break;
    const std::string text = tokenizer.token_to_text(token, next);
    const bool stray = text.size() == 1 && !(std::isprint(static_cast<unsigned char>(text[0])) ||
                                             std::isspace(static_cast<unsigned char>(text[0])));
    if (!text.empty() && !stray) on_text(text);
    token = next;
  }
  return pos;
}

}  // namespace gsq
