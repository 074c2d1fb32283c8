// gguf_source.hpp: a LLaMA model's configuration and frozen weights from a GGUF file
// (llama.cpp's layout: general.architecture "llama", token_embd / blk.N.* / output tensors).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/source.hpp"

namespace gsq {

namespace detail {

/// An integer metadata value in [lo, hi], or `fallback` when the key is absent and fallback >= 0.
inline int gguf_int(const gguf::GgufFile& f, const std::string& key, std::int64_t lo,
                    std::int64_t hi, std::int64_t fallback = -1) {
  const gguf::Value* v = f.find(key);
  if (v == nullptr) {
    GSQ_CHECK(fallback >= 0, "gguf: key '", key, "' is missing");
    return static_cast<int>(fallback);
  }
  const std::uint64_t x = v->as_uint();
  GSQ_CHECK(x >= static_cast<std::uint64_t>(lo) && x <= static_cast<std::uint64_t>(hi),
            "gguf: key '", key, "' = ", x, " is outside [", lo, ", ", hi, "]");
  return static_cast<int>(x);
}

/// The shape a LlamaTensor has in GGUF, ggml order: [in, out] for matrices, [dim] for norms.
inline std::array<std::int64_t, 4> gguf_shape(const LlamaConfig& c, LlamaTensor t) {
  const TensorShape s = shape_of(c, t);
  return {s.cols, s.rows, 1, 1};
}

inline std::string shape_string(const std::array<std::int64_t, 4>& ne) {
  int n = 4;
  while (n > 1 && ne[static_cast<std::size_t>(n - 1)] == 1) --n;
  std::string s = "[";
  for (int i = 0; i < n; ++i)
    s += (i ? ", " : "") + std::to_string(ne[static_cast<std::size_t>(i)]);
  return s + "]";
}

}  // namespace detail

/// The LlamaConfig of a GGUF file whose general.architecture is "llama", from llama.*
/// metadata: embedding_length (dim), feed_forward_length, block_count, attention.head_count,
/// attention.head_count_kv (default head_count), attention.key_length (head size; default dim /
/// heads), rope.dimension_count (must equal the head size: gsq rotates whole heads),
/// rope.freq_base (default 10000), attention.layer_norm_rms_epsilon (default 1e-5),
/// context_length (seq_len).  vocab_size is llama.vocab_size, else the length of
/// tokenizer.ggml.tokens, else token_embd's rows, and must equal token_embd's rows.  The
/// classifier is tied when output.weight is absent.  A rope_freqs.weight tensor (Llama 3.x
/// scaling as llama.cpp stores it) becomes rope_freq_factors.
///
/// seq_len is context_length as the file says.  Some converters write less than the model
/// was trained with (stories260K.gguf says 128 for a model trained at 512): callers that need
/// longer windows decide how far to extend it; it is not rejected here.
inline LlamaConfig llama_config(const gguf::GgufFile& f) {
  const std::string& arch = f.at("general.architecture").as_string();
  GSQ_CHECK(arch == "llama", "gguf: general.architecture is '", arch,
            "', gsq reads only 'llama' models");
  const std::string p = "llama.";
  LlamaConfig c;
  c.dim = detail::gguf_int(f, p + "embedding_length", 1, 1 << 16);
  c.hidden_dim = detail::gguf_int(f, p + "feed_forward_length", 1, 1 << 18);
  c.n_layers = detail::gguf_int(f, p + "block_count", 1, 1024);
  c.n_heads = detail::gguf_int(f, p + "attention.head_count", 1, 1024);
  c.n_kv_heads = detail::gguf_int(f, p + "attention.head_count_kv", 1, 1024, c.n_heads);
  const int default_head = c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0;
  const int head = detail::gguf_int(f, p + "attention.key_length", 1, 1 << 12, default_head);
  GSQ_CHECK(head > 0, "gguf: embedding_length ", c.dim, " is not a multiple of head_count ",
            c.n_heads, " and llama.attention.key_length is missing");
  if (const gguf::Value* vl = f.find(p + "attention.value_length")) {
    GSQ_CHECK(vl->as_uint() == static_cast<std::uint64_t>(head), "gguf: ", p,
              "attention.value_length ", vl->as_uint(), " differs from the key length ", head);
  }
  const int rope_dims = detail::gguf_int(f, p + "rope.dimension_count", 1, 1 << 12, head);
  GSQ_CHECK(rope_dims == head, "gguf: ", p, "rope.dimension_count ", rope_dims,
            " differs from the head size ", head, " (partial RoPE is not supported)");
  c.head_dim = head == default_head ? 0 : head;
  c.seq_len = detail::gguf_int(f, p + "context_length", 1, 1 << 20);
  if (const gguf::Value* v = f.find(p + "rope.freq_base")) c.rope_theta = v->as_float();
  if (const gguf::Value* v = f.find(p + "attention.layer_norm_rms_epsilon"))
    c.norm_eps = static_cast<float>(v->as_float());
  if (const gguf::Value* v = f.find(p + "rope.scaling.type")) {
    const std::string& type = v->as_string();
    GSQ_CHECK(type == "none" || (type == "linear" && f.find(p + "rope.scaling.factor") &&
                                 f.at(p + "rope.scaling.factor").as_float() == 1.0),
              "gguf: ", p, "rope.scaling.type '", type, "' is not supported");
  }

  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  GSQ_CHECK(embd.n_dims == 2 && embd.ne[0] == c.dim && embd.ne[1] >= 1 && embd.ne[1] <= (1 << 20),
            "gguf: tensor 'token_embd.weight' has shape ", detail::shape_string(embd.ne),
            ", expected [", c.dim, ", vocab]");
  const int rows = static_cast<int>(embd.ne[1]);
  if (f.find(p + "vocab_size") != nullptr) {
    c.vocab_size = detail::gguf_int(f, p + "vocab_size", 1, 1 << 20);
  } else if (const gguf::Value* tok = f.find("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int>(std::min<std::size_t>(tok->strings().size(), 1u << 30));
  } else {
    c.vocab_size = rows;
  }
  GSQ_CHECK(c.vocab_size == rows, "gguf: the vocabulary has ", c.vocab_size,
            " tokens but token_embd.weight has ", rows, " rows");
  c.tied_classifier = f.find_tensor("output.weight") == nullptr;

  if (const gguf::TensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
    const int pairs = c.head_size() / 2;
    GSQ_CHECK(rf->n_dims == 1 && rf->ne[0] == pairs, "gguf: tensor 'rope_freqs.weight' has shape ",
              detail::shape_string(rf->ne), ", expected [", pairs, "]");
    f.read_f32(*rf, c.rope_freq_factors);
  }
  c.validate();
  return c;
}

/// The GGUF name of tensor t of layer `layer` in llama.cpp's llama architecture
/// ("blk.3.attn_q.weight"; w1 is ffn_gate, w2 ffn_down, w3 ffn_up).  The classifier of a tied
/// model is token_embd.weight.
inline std::string llama_gguf_tensor_name(const LlamaConfig& c, LlamaTensor t, int layer) {
  auto blk = [layer](const char* n) { return "blk." + std::to_string(layer) + "." + n; };
  switch (t) {
    case LlamaTensor::kTokenEmbedding:
      return "token_embd.weight";
    case LlamaTensor::kClassifier:
      return c.tied_classifier ? "token_embd.weight" : "output.weight";
    case LlamaTensor::kRmsFinal:
      return "output_norm.weight";
    case LlamaTensor::kRmsAtt:
      return blk("attn_norm.weight");
    case LlamaTensor::kWq:
      return blk("attn_q.weight");
    case LlamaTensor::kWk:
      return blk("attn_k.weight");
    case LlamaTensor::kWv:
      return blk("attn_v.weight");
    case LlamaTensor::kWo:
      return blk("attn_output.weight");
    case LlamaTensor::kRmsFfn:
      return blk("ffn_norm.weight");
    case LlamaTensor::kW1:
      return blk("ffn_gate.weight");
    case LlamaTensor::kW2:
      return blk("ffn_down.weight");
    case LlamaTensor::kW3:
      return blk("ffn_up.weight");
  }
  return {};
}

/// A GGUF llama model as a weight source: owns the GgufFile and decodes one tensor per read()
/// (memory: that tensor's floats plus at most a 1 MiB chunk of its bytes).  Every tensor the
/// config needs is checked when the source is made: present, of a type gsq decodes, and of the
/// config's shape (GGUF stores out x in row-major as [in, out] in ggml order, and q/k rows in
/// Meta's interleaved order, exactly what LlamaWeightSource serves, so nothing is permuted).
class GgufLlamaSource final : public LlamaWeightSource {
 public:
  explicit GgufLlamaSource(const std::string& path) : GgufLlamaSource(gguf::GgufFile::open(path)) {}
  explicit GgufLlamaSource(gguf::GgufFile file)
      : file_(std::move(file)), config_(llama_config(file_)) {
    const LlamaTensor global[] = {LlamaTensor::kTokenEmbedding, LlamaTensor::kRmsFinal,
                                  LlamaTensor::kClassifier};
    const LlamaTensor per_layer[] = {LlamaTensor::kRmsAtt, LlamaTensor::kWq, LlamaTensor::kWk,
                                     LlamaTensor::kWv,     LlamaTensor::kWo, LlamaTensor::kRmsFfn,
                                     LlamaTensor::kW1,     LlamaTensor::kW2, LlamaTensor::kW3};
    for (LlamaTensor t : global) check(t, 0);
    for (int l = 0; l < config_.n_layers; ++l)
      for (LlamaTensor t : per_layer) check(t, l);
  }

  const LlamaConfig& config() const noexcept override { return config_; }
  const gguf::GgufFile& file() const noexcept { return file_; }

  /// The GGUF name of tensor t of layer `layer` ("blk.3.attn_q.weight").  The classifier of a
  /// tied model is token_embd.weight.
  std::string tensor_name(LlamaTensor t, int layer) const {
    return llama_gguf_tensor_name(config_, t, layer);
  }

  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    GSQ_CHECK(layer >= 0 && layer < config_.n_layers, "gguf: layer ", layer, " out of range [0, ",
              config_.n_layers, ")");
    file_.read_f32(file_.tensor(tensor_name(t, layer)), out);
  }

 private:
  void check(LlamaTensor t, int layer) const {
    const std::string name = tensor_name(t, layer);
    const gguf::TensorInfo* info = file_.find_tensor(name);
    GSQ_CHECK(info != nullptr, "gguf: tensor '", name, "' is missing");
    const std::array<std::int64_t, 4> want = detail::gguf_shape(config_, t);
    GSQ_CHECK(info->ne == want, "gguf: tensor '", name, "' has shape ",
              detail::shape_string(info->ne), ", expected ", detail::shape_string(want), " (",
              to_string(t), ")");
    GSQ_CHECK(gguf::is_supported(info->type), "gguf: tensor '", name, "' has type ",
              gguf::to_string(info->type), ", which gsq cannot decode");
  }

  gguf::GgufFile file_;
  LlamaConfig config_;
};

}  // namespace gsq
