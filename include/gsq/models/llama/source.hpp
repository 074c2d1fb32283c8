// source.hpp: where a LLaMA-family model's frozen weights come from, one tensor at a time, so
// that a model is built (and quantized) tensor by tensor and never exists whole in float.
#pragma once

#include <cstdint>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/weights.hpp"

namespace gsq {

/// The frozen tensors of a LLaMA-family model.  Per-layer ones take a layer index.
enum class LlamaTensor : std::uint8_t {
  kTokenEmbedding,  ///< vocab x dim
  kClassifier,      ///< vocab x dim (only when the config's classifier is not tied)
  kRmsFinal,        ///< dim
  kRmsAtt,          ///< dim
  kWq,              ///< q_dim x dim
  kWk,              ///< kv_dim x dim
  kWv,              ///< kv_dim x dim
  kWo,              ///< dim x q_dim
  kRmsFfn,          ///< dim
  kW1,              ///< hidden x dim (the gate)
  kW2,              ///< dim x hidden (down)
  kW3,              ///< hidden x dim (up)
};

constexpr const char* to_string(LlamaTensor t) noexcept {
  constexpr const char* kNames[] = {"token_embedding", "classifier", "rms_final", "rms_att",
                                    "wq",              "wk",         "wv",        "wo",
                                    "rms_ffn",         "w1",         "w2",        "w3"};
  return kNames[static_cast<int>(t)];
}

/// The shape (rows x cols, row-major; norms are 1 x dim) of a tensor of config c.
struct TensorShape {
  Index rows = 0, cols = 0;
  Index size() const noexcept { return rows * cols; }
};
inline TensorShape shape_of(const LlamaConfig& c, LlamaTensor t) noexcept {
  switch (t) {
    case LlamaTensor::kTokenEmbedding:
    case LlamaTensor::kClassifier:
      return {c.vocab_size, c.dim};
    case LlamaTensor::kRmsFinal:
    case LlamaTensor::kRmsAtt:
    case LlamaTensor::kRmsFfn:
      return {1, c.dim};
    case LlamaTensor::kWq:
      return {c.q_dim(), c.dim};
    case LlamaTensor::kWk:
    case LlamaTensor::kWv:
      return {c.kv_dim(), c.dim};
    case LlamaTensor::kWo:
      return {c.dim, c.q_dim()};
    case LlamaTensor::kW1:
    case LlamaTensor::kW3:
      return {c.hidden_dim, c.dim};
    case LlamaTensor::kW2:
      return {c.dim, c.hidden_dim};
  }
  return {};
}

/// A model's frozen weights, served one tensor at a time in float (row-major, out x in for
/// matrices, Meta's interleaved q/k row order).  A model reads each tensor once, converts it
/// and drops the float copy.
class LlamaWeightSource {
 public:
  virtual ~LlamaWeightSource() = default;
  virtual const LlamaConfig& config() const noexcept = 0;
  /// Fills out (resized to shape_of(config(), t).size()) with tensor t of layer `layer` (0 for
  /// the tensors outside the layers).
  virtual void read(LlamaTensor t, int layer, std::vector<float>& out) const = 0;
};

/// Random weights of any configuration: uniform on +-0.02 sqrt(3) (standard deviation 0.02),
/// RMSNorm gains 1.  Each tensor is drawn from its own stream, seeded by (seed, tensor, layer),
/// with gsq's portable generator, so a tensor is the same on every platform and can be made
/// alone.
class RandomLlamaWeights final : public LlamaWeightSource {
 public:
  RandomLlamaWeights(const LlamaConfig& config, std::uint64_t seed) : config_(config), seed_(seed) {
    config_.validate();
  }
  const LlamaConfig& config() const noexcept override { return config_; }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    out.resize(static_cast<std::size_t>(shape_of(config_, t).size()));
    if (t == LlamaTensor::kRmsFinal || t == LlamaTensor::kRmsAtt || t == LlamaTensor::kRmsFfn) {
      std::fill(out.begin(), out.end(), 1.0f);
      return;
    }
    detail::Rng rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(t) * 4099u +
                    static_cast<std::uint64_t>(layer) * 131u + 1u);
    const float bound = 0.0346410162f;  // 0.02 sqrt(3)
    for (float& v : out) v = rng.uniform(-bound, bound);
  }

 private:
  LlamaConfig config_;
  std::uint64_t seed_;
};

/// The LlamaConfig of a llama2.c header: head size dim / n_heads, RoPE theta 10000, RMSNorm
/// epsilon 1e-5, as llama2.c's run.c hard-codes them.
inline LlamaConfig llama_config(const Llama2Config& c) {
  LlamaConfig out;
  out.dim = c.dim;
  out.hidden_dim = c.hidden_dim;
  out.n_layers = c.n_layers;
  out.n_heads = c.n_heads;
  out.n_kv_heads = c.n_kv_heads;
  out.vocab_size = c.vocab_size;
  out.seq_len = c.seq_len;
  out.tied_classifier = c.shared_classifier;
  return out;
}

/// A llama2.c checkpoint in memory as a weight source (it must outlive the source).
class Llama2WeightSource final : public LlamaWeightSource {
 public:
  explicit Llama2WeightSource(const Llama2Weights& w) : w_(w), config_(llama_config(w.config())) {}
  const LlamaConfig& config() const noexcept override { return config_; }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    auto copy = [&out](const float* p, Index n) { out.assign(p, p + n); };
    auto matrix = [&copy](MatrixRef<const float> m) {
      GSQ_DASSERT(m.col_stride == 1 && m.row_stride == m.cols);
      copy(m.data, m.rows * m.cols);
    };
    const Index d = config_.dim;
    switch (t) {
      case LlamaTensor::kTokenEmbedding:
        return matrix(w_.token_embedding());
      case LlamaTensor::kClassifier:
        return matrix(w_.classifier());
      case LlamaTensor::kRmsFinal:
        return copy(w_.rms_final(), d);
      case LlamaTensor::kRmsAtt:
        return copy(w_.rms_att(layer), d);
      case LlamaTensor::kWq:
        return matrix(w_.wq(layer));
      case LlamaTensor::kWk:
        return matrix(w_.wk(layer));
      case LlamaTensor::kWv:
        return matrix(w_.wv(layer));
      case LlamaTensor::kWo:
        return matrix(w_.wo(layer));
      case LlamaTensor::kRmsFfn:
        return copy(w_.rms_ffn(layer), d);
      case LlamaTensor::kW1:
        return matrix(w_.w1(layer));
      case LlamaTensor::kW2:
        return matrix(w_.w2(layer));
      case LlamaTensor::kW3:
        return matrix(w_.w3(layer));
    }
  }

 private:
  const Llama2Weights& w_;
  LlamaConfig config_;
};

}  // namespace gsq
