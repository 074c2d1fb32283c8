// hf_source.hpp: a Hugging Face LlamaForCausalLM directory (config.json + safetensors, single or
// sharded) as a LlamaWeightSource, with the q/k row permutation undone tensor by tensor.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/llama/hf_source.hpp needs nlohmann/json (gsq::json)"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/safetensors.hpp"

namespace gsq {

// ---- The q/k row permutation -------------------------------------------------------------------
// Meta's checkpoints (and llama2.c, GGUF, LlamaWeightSource) keep each head's q and k rows in
// interleaved RoPE pairs: rows 2j and 2j + 1 of a head are rotated together.  transformers'
// convert_llama_weights_to_hf reorders them for its rotate-half RoPE, pairing row j with row
// j + head_dim / 2:  hf = w.reshape(heads, head_dim / 2, 2, in).transpose(0, 2, 1, 3).
// So Meta row (h, j, i) -- h * head_dim + 2j + i, i in {0, 1}, j < head_dim / 2 -- is HF row
// h * head_dim + i * head_dim / 2 + j.

/// Reorders the rows of an HF q_proj or k_proj (heads * head_dim rows of `cols` floats) into
/// Meta's interleaved order.  src and dst must not overlap.  head_dim must be even.
inline void meta_from_hf_rows(const float* src, float* dst, int heads, int head_dim, Index cols) {
  GSQ_CHECK(heads >= 0 && head_dim >= 0 && head_dim % 2 == 0 && cols >= 0,
            "meta_from_hf_rows: heads ", heads, ", head_dim ", head_dim, " (must be even), cols ",
            cols);
  const Index half = head_dim / 2;
  const auto bytes = static_cast<std::size_t>(cols) * sizeof(float);
  for (Index h = 0; h < heads; ++h) {
    for (Index j = 0; j < half; ++j) {
      for (Index i = 0; i < 2; ++i) {
        const Index meta = h * head_dim + 2 * j + i, hf = h * head_dim + i * half + j;
        if (bytes > 0) std::memcpy(dst + meta * cols, src + hf * cols, bytes);
      }
    }
  }
}

/// The inverse: Meta's interleaved rows into HF's rotate-half order (for exporting to HF).
inline void hf_from_meta_rows(const float* src, float* dst, int heads, int head_dim, Index cols) {
  GSQ_CHECK(heads >= 0 && head_dim >= 0 && head_dim % 2 == 0 && cols >= 0,
            "hf_from_meta_rows: heads ", heads, ", head_dim ", head_dim, " (must be even), cols ",
            cols);
  const Index half = head_dim / 2;
  const auto bytes = static_cast<std::size_t>(cols) * sizeof(float);
  for (Index h = 0; h < heads; ++h) {
    for (Index j = 0; j < half; ++j) {
      for (Index i = 0; i < 2; ++i) {
        const Index meta = h * head_dim + 2 * j + i, hf = h * head_dim + i * half + j;
        if (bytes > 0) std::memcpy(dst + hf * cols, src + meta * cols, bytes);
      }
    }
  }
}

// ---- config.json -------------------------------------------------------------------------------

namespace detail {

/// Key `key` of config object j, or nullptr when absent or null.
inline const nlohmann::json* hf_key(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

inline int hf_int(const nlohmann::json& j, const char* key, const int* fallback = nullptr,
                  const char* where = "") {
  const nlohmann::json* v = hf_key(j, key);
  if (v == nullptr && fallback != nullptr) return *fallback;
  GSQ_CHECK(v != nullptr, "hf config: '", where, key, "' is missing");
  GSQ_CHECK(v->is_number_integer(), "hf config: '", where, key, "' must be an integer, not a ",
            v->type_name(), " (", v->dump(), ")");
  const bool fits = v->is_number_unsigned()
                        ? v->get<std::uint64_t>() <= std::uint64_t{std::numeric_limits<int>::max()}
                        : v->get<std::int64_t>() >= std::numeric_limits<int>::min() &&
                              v->get<std::int64_t>() <= std::numeric_limits<int>::max();
  GSQ_CHECK(fits, "hf config: '", where, key, "' = ", v->dump(), " does not fit in an int");
  return v->get<int>();
}

inline double hf_number(const nlohmann::json& j, const char* key, const double* fallback,
                        const char* where = "") {
  const nlohmann::json* v = hf_key(j, key);
  if (v == nullptr && fallback != nullptr) return *fallback;
  GSQ_CHECK(v != nullptr, "hf config: '", where, key, "' is missing");
  GSQ_CHECK(v->is_number(), "hf config: '", where, key, "' must be a number, not a ",
            v->type_name(), " (", v->dump(), ")");
  const double x = v->get<double>();
  GSQ_CHECK(std::isfinite(x), "hf config: '", where, key, "' = ", v->dump(), " is not finite");
  return x;
}

inline bool hf_bool(const nlohmann::json& j, const char* key, bool fallback) {
  const nlohmann::json* v = hf_key(j, key);
  if (v == nullptr) return fallback;
  GSQ_CHECK(v->is_boolean(), "hf config: '", key, "' must be true or false, not a ", v->type_name(),
            " (", v->dump(), ")");
  return v->get<bool>();
}

inline std::string hf_string(const nlohmann::json& j, const char* key, const char* where = "") {
  const nlohmann::json* v = hf_key(j, key);
  if (v == nullptr) return {};
  GSQ_CHECK(v->is_string(), "hf config: '", where, key, "' must be a string, not a ",
            v->type_name(), " (", v->dump(), ")");
  return v->get<std::string>();
}

}  // namespace detail

/// The LlamaConfig of a Hugging Face config.json object.  Reads: architectures (must list
/// "LlamaForCausalLM", or model_type must be "llama"), hidden_size -> dim, intermediate_size ->
/// hidden_dim, num_hidden_layers, num_attention_heads, num_key_value_heads (default: the heads),
/// head_dim (optional; kept as 0 when it equals hidden_size / heads), vocab_size,
/// max_position_embeddings -> seq_len, rms_norm_eps, rope_theta (default 10000),
/// tie_word_embeddings (default false, as in transformers' LlamaConfig), rope_scaling (null,
/// "default", or "llama3" with factor, low_freq_factor, high_freq_factor,
/// original_max_position_embeddings).  hidden_act, when given, must be "silu", and
/// attention_bias / mlp_bias must be false.  Other keys are ignored.  Throws
/// std::invalid_argument "hf config: ..." naming the missing or mistyped key, or "llama config:
/// ..." (LlamaConfig::validate) for values out of range.
inline LlamaConfig llama_config_from_hf_json(const nlohmann::json& j) {
  using detail::hf_key;
  GSQ_CHECK(j.is_object(), "hf config: config.json is a JSON ", j.type_name(), ", not an object");
  bool llama = detail::hf_string(j, "model_type") == "llama";
  std::string architectures = "none";
  if (const nlohmann::json* a = hf_key(j, "architectures")) {
    GSQ_CHECK(a->is_array(), "hf config: 'architectures' must be an array of strings, not a ",
              a->type_name());
    architectures = a->dump();
    for (const nlohmann::json& name : *a) {
      GSQ_CHECK(name.is_string(), "hf config: 'architectures' must be an array of strings (",
                architectures, ")");
      llama = llama || name.get<std::string>() == "LlamaForCausalLM";
    }
  }
  GSQ_CHECK(llama, "hf config: not a LLaMA model (architectures ", architectures, ", model_type '",
            detail::hf_string(j, "model_type"), "'; gsq reads LlamaForCausalLM)");
  const std::string act = detail::hf_string(j, "hidden_act");
  GSQ_CHECK(act.empty() || act == "silu", "hf config: hidden_act '", act,
            "' is not supported (LLaMA uses silu)");
  GSQ_CHECK(!detail::hf_bool(j, "attention_bias", false),
            "hf config: attention_bias = true is not supported (LLaMA has no biases)");
  GSQ_CHECK(!detail::hf_bool(j, "mlp_bias", false),
            "hf config: mlp_bias = true is not supported (LLaMA has no biases)");

  LlamaConfig c;
  c.dim = detail::hf_int(j, "hidden_size");
  c.hidden_dim = detail::hf_int(j, "intermediate_size");
  c.n_layers = detail::hf_int(j, "num_hidden_layers");
  c.n_heads = detail::hf_int(j, "num_attention_heads");
  c.n_kv_heads = detail::hf_int(j, "num_key_value_heads", &c.n_heads);
  const int no_head_dim = 0;
  c.head_dim = detail::hf_int(j, "head_dim", &no_head_dim);
  if (c.n_heads > 0 && c.dim % c.n_heads == 0 && c.head_dim == c.dim / c.n_heads) c.head_dim = 0;
  c.vocab_size = detail::hf_int(j, "vocab_size");
  c.seq_len = detail::hf_int(j, "max_position_embeddings");
  c.norm_eps = static_cast<float>(detail::hf_number(j, "rms_norm_eps", nullptr));
  const double theta = 10000.0;
  c.rope_theta = detail::hf_number(j, "rope_theta", &theta);
  c.tied_classifier = detail::hf_bool(j, "tie_word_embeddings", false);
  if (const nlohmann::json* s = hf_key(j, "rope_scaling")) {
    GSQ_CHECK(s->is_object(), "hf config: 'rope_scaling' must be an object or null, not a ",
              s->type_name());
    std::string type = detail::hf_string(*s, "rope_type", "rope_scaling.");
    if (type.empty()) type = detail::hf_string(*s, "type", "rope_scaling.");
    GSQ_CHECK(!type.empty(), "hf config: 'rope_scaling.rope_type' is missing");
    GSQ_CHECK(type == "llama3" || type == "default", "hf config: rope_scaling type '", type,
              "' is not supported (gsq implements 'llama3' and 'default')");
    if (type == "llama3") {
      c.rope_scaling.factor = detail::hf_number(*s, "factor", nullptr, "rope_scaling.");
      c.rope_scaling.low_freq_factor =
          detail::hf_number(*s, "low_freq_factor", nullptr, "rope_scaling.");
      c.rope_scaling.high_freq_factor =
          detail::hf_number(*s, "high_freq_factor", nullptr, "rope_scaling.");
      c.rope_scaling.original_context =
          detail::hf_int(*s, "original_max_position_embeddings", nullptr, "rope_scaling.");
    }
  }
  c.validate();
  return c;
}

/// The LlamaConfig of config.json text (see above); bad JSON is an "hf config: " error too.
inline LlamaConfig llama_config_from_hf_json(const std::string& text) {
  const nlohmann::json j = safetensors::detail::parse_json_strict(
      text.data(), text.data() + text.size(), "hf config: config.json", 32);
  return llama_config_from_hf_json(j);
}

// ---- The weight source -------------------------------------------------------------------------

/// A Hugging Face LlamaForCausalLM directory as a weight source: config.json plus
/// model.safetensors or model.safetensors.index.json and its shards.  The constructor reads
/// config.json and every safetensors header, and checks that each tensor the model needs is
/// there, decodes to float (F32, F16, BF16) and has the shape the config implies; read() then
/// reads one tensor from disk, decodes it and, for q_proj / k_proj, restores Meta's row order.
/// Tensor names: model.embed_tokens.weight, lm_head.weight (untied only; ignored, with
/// lm_head_ignored(), when the config ties it), model.norm.weight and, per layer N,
/// model.layers.N.{input_layernorm, post_attention_layernorm}.weight,
/// model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.mlp.{gate,up,down}_proj.weight
/// (gate = w1, down = w2, up = w3).
class HfLlamaSource final : public LlamaWeightSource {
 public:
  explicit HfLlamaSource(const std::string& dir) : dir_(dir.empty() ? "." : dir) {
    const std::string config_path = dir_ + "/config.json";
    const std::vector<std::uint8_t> text = read_file(config_path, "hf config", 1u << 24);
    config_ = llama_config_from_hf_json(std::string(text.begin(), text.end()));
    model_ = safetensors::Model::open_directory(dir_);
    lm_head_ignored_ = config_.tied_classifier && model_.find("lm_head.weight").info != nullptr;
    for (int l = 0; l < config_.n_layers; ++l) {
      for (LlamaTensor t : {LlamaTensor::kRmsAtt, LlamaTensor::kWq, LlamaTensor::kWk,
                            LlamaTensor::kWv, LlamaTensor::kWo, LlamaTensor::kRmsFfn,
                            LlamaTensor::kW1, LlamaTensor::kW2, LlamaTensor::kW3})
        check(t, l);
    }
    check(LlamaTensor::kTokenEmbedding, 0);
    check(LlamaTensor::kRmsFinal, 0);
    if (!config_.tied_classifier) check(LlamaTensor::kClassifier, 0);
  }

  const LlamaConfig& config() const noexcept override { return config_; }

  /// The safetensors files (every tensor's name, dtype, shape and bytes).
  const safetensors::Model& model() const noexcept { return model_; }

  /// True when config.json ties the classifier to the embedding (tie_word_embeddings) but the
  /// files also hold an lm_head.weight, which is then not used (as transformers does).
  bool lm_head_ignored() const noexcept { return lm_head_ignored_; }

  /// The safetensors name of tensor t of layer `layer` ("model.layers.3.self_attn.q_proj.weight").
  std::string tensor_name(LlamaTensor t, int layer) const {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    switch (t) {
      case LlamaTensor::kTokenEmbedding:
        return "model.embed_tokens.weight";
      case LlamaTensor::kClassifier:
        return config_.tied_classifier ? "model.embed_tokens.weight" : "lm_head.weight";
      case LlamaTensor::kRmsFinal:
        return "model.norm.weight";
      case LlamaTensor::kRmsAtt:
        return p + "input_layernorm.weight";
      case LlamaTensor::kWq:
        return p + "self_attn.q_proj.weight";
      case LlamaTensor::kWk:
        return p + "self_attn.k_proj.weight";
      case LlamaTensor::kWv:
        return p + "self_attn.v_proj.weight";
      case LlamaTensor::kWo:
        return p + "self_attn.o_proj.weight";
      case LlamaTensor::kRmsFfn:
        return p + "post_attention_layernorm.weight";
      case LlamaTensor::kW1:
        return p + "mlp.gate_proj.weight";
      case LlamaTensor::kW2:
        return p + "mlp.down_proj.weight";
      case LlamaTensor::kW3:
        return p + "mlp.up_proj.weight";
    }
    return {};
  }

  /// Reads tensor t of layer `layer` from disk (one tensor's floats, plus one head's rows for
  /// q and k).
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    const bool per_layer = t != LlamaTensor::kTokenEmbedding && t != LlamaTensor::kClassifier &&
                           t != LlamaTensor::kRmsFinal;
    GSQ_CHECK(!per_layer || (layer >= 0 && layer < config_.n_layers), "hf llama: layer ", layer,
              " out of range [0, ", config_.n_layers, ")");
    model_.read_floats(tensor_name(t, per_layer ? layer : 0), out);
    if (t != LlamaTensor::kWq && t != LlamaTensor::kWk) return;
    const int heads = t == LlamaTensor::kWq ? config_.n_heads : config_.n_kv_heads;
    const int hd = config_.head_size();
    const Index cols = config_.dim;
    std::vector<float> head(static_cast<std::size_t>(hd) * static_cast<std::size_t>(cols));
    for (int h = 0; h < heads; ++h) {
      float* rows = out.data() + static_cast<std::size_t>(h) * head.size();
      std::memcpy(head.data(), rows, head.size() * sizeof(float));
      meta_from_hf_rows(head.data(), rows, 1, hd, cols);
    }
  }

 private:
  void check(LlamaTensor t, int layer) const {
    const std::string name = tensor_name(t, layer);
    const safetensors::Model::Entry e = model_.find(name);
    GSQ_CHECK(e.info != nullptr, "hf llama: '", dir_, "' has no tensor '", name, "'");
    const TensorShape s = shape_of(config_, t);
    const bool norm =
        t == LlamaTensor::kRmsAtt || t == LlamaTensor::kRmsFfn || t == LlamaTensor::kRmsFinal;
    const std::vector<std::int64_t> want =
        norm ? std::vector<std::int64_t>{s.cols} : std::vector<std::int64_t>{s.rows, s.cols};
    GSQ_CHECK(e.info->shape == want, "hf llama: tensor '", name, "' has shape ",
              safetensors::shape_string(e.info->shape), ", the config needs ",
              safetensors::shape_string(want));
    GSQ_CHECK(safetensors::decodes_to_float(e.info->dtype), "hf llama: tensor '", name,
              "' has dtype ", safetensors::to_string(e.info->dtype),
              " (gsq reads F32, F16 and BF16)");
  }

  std::string dir_;
  LlamaConfig config_;
  safetensors::Model model_;
  bool lm_head_ignored_ = false;
};

}  // namespace gsq
