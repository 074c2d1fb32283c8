// export.hpp: writes any LLaMA-family weight source as a model file other runtimes load: a
// llama.cpp GGUF (F32, F16 or Q8_0 matrices) or a llama2.c checkpoint.  Tensors are read from
// the source one at a time while the file is written.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/source.hpp"

namespace gsq {

/// Writes the llama.* hyperparameters of c as gguf_source.hpp reads them, general.* keys
/// (architecture, name, file_type: ggml's LLAMA_FTYPE, e.g. 0 F32, 1 F16, 2 Q4_0, 7 Q8_0), and
/// every tokenizer.* key of `tokenizer_from` when given (its token count must be c's vocabulary).
inline void add_llama_metadata(gguf::GgufWriter& w, const LlamaConfig& c, const std::string& name,
                               std::uint32_t file_type, const gguf::GgufFile* tokenizer_from) {
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", name);
  w.add_uint32("general.file_type", file_type);
  w.add_uint32("general.quantization_version", 2);
  const std::string p = "llama.";
  w.add_uint32(p + "context_length", static_cast<std::uint32_t>(c.seq_len));
  w.add_uint32(p + "embedding_length", static_cast<std::uint32_t>(c.dim));
  w.add_uint32(p + "feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.add_uint32(p + "block_count", static_cast<std::uint32_t>(c.n_layers));
  w.add_uint32(p + "attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.add_uint32(p + "attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  const auto head = static_cast<std::uint32_t>(c.head_size());
  if (c.head_dim != 0) {
    w.add_uint32(p + "attention.key_length", head);
    w.add_uint32(p + "attention.value_length", head);
  }
  w.add_uint32(p + "rope.dimension_count", head);
  w.add_float32(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_float32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  w.add_uint32(p + "vocab_size", static_cast<std::uint32_t>(c.vocab_size));
  if (tokenizer_from == nullptr) return;
  if (const gguf::Value* tok = tokenizer_from->find("tokenizer.ggml.tokens"))
    GSQ_CHECK(tok->strings().size() == static_cast<std::size_t>(c.vocab_size),
              "gguf export: the tokenizer has ", tok->strings().size(),
              " tokens, the model's vocabulary ", c.vocab_size);
  for (const gguf::Value& v : tokenizer_from->metadata()) {
    if (v.key().compare(0, 10, "tokenizer.") == 0) w.add_value(v);
  }
}

/// Writes `source` as a llama GGUF: norms (and rope_freqs) F32, matrices as `type` (F32, F16 or
/// Q8_0; a matrix whose rows are not a multiple of 32 stays F32 under Q8_0), with
/// `tokenizer_from`'s tokenizer.* keys when given.  Each tensor is read from the source when
/// the writer reaches it and dropped after its last row, so memory holds one tensor in float.
inline void write_llama_gguf(const std::string& path, const LlamaWeightSource& source,
                             gguf::GgmlType type, const gguf::GgufFile* tokenizer_from = nullptr,
                             const std::string& name = "gsq export") {
  using gguf::GgmlType;
  GSQ_CHECK(type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kQ8_0,
            "gguf export: matrices can be F32, F16 or Q8_0, not ", gguf::to_string(type));
  const LlamaConfig& c = source.config();
  gguf::GgufWriter w;
  const std::uint32_t file_type = type == GgmlType::kF32 ? 0u : type == GgmlType::kF16 ? 1u : 7u;
  add_llama_metadata(w, c, name, file_type, tokenizer_from);
  auto add = [&](LlamaTensor t, int layer) {
    const TensorShape s = shape_of(c, t);
    const bool matrix = s.rows > 1;
    GgmlType as = matrix ? type : GgmlType::kF32;
    if (as == GgmlType::kQ8_0 && s.cols % 32 != 0) as = GgmlType::kF32;
    // The rows come from one read of the tensor, made on its first row, freed after its last.
    auto cache = std::make_shared<std::vector<float>>();
    const LlamaWeightSource* src = &source;
    const Index rows = s.rows, cols = s.cols;
    w.add_tensor(llama_gguf_tensor_name(c, t, layer), as, {cols, rows},
                 [cache, src, t, layer, rows, cols](std::int64_t row, float* out) {
                   if (row == 0 || cache->empty()) src->read(t, layer, *cache);
                   std::memcpy(out, cache->data() + row * cols,
                               static_cast<std::size_t>(cols) * sizeof(float));
                   if (row + 1 == rows) std::vector<float>().swap(*cache);
                 });
  };
  add(LlamaTensor::kTokenEmbedding, 0);
  add(LlamaTensor::kRmsFinal, 0);
  if (!c.tied_classifier) add(LlamaTensor::kClassifier, 0);
  if (!c.rope_freq_factors.empty())
    w.add_tensor("rope_freqs.weight", GgmlType::kF32,
                 {static_cast<std::int64_t>(c.rope_freq_factors.size())}, c.rope_freq_factors);
  for (int l = 0; l < c.n_layers; ++l) {
    for (LlamaTensor t : {LlamaTensor::kRmsAtt, LlamaTensor::kWq, LlamaTensor::kWk,
                          LlamaTensor::kWv, LlamaTensor::kWo, LlamaTensor::kRmsFfn,
                          LlamaTensor::kW1, LlamaTensor::kW2, LlamaTensor::kW3})
      add(t, l);
  }
  w.write(path);
}

/// Writes `source` as a llama2.c checkpoint (run.c's layout; the legacy freq_cis tables, which
/// run.c skips, are written as zeros).  The format has no fields for the head size, RoPE theta or
/// scaling, or the RMSNorm epsilon: a config that differs from run.c's constants there (head size
/// dim / n_heads, theta 10000, epsilon 1e-5, no scaling) is an error.  The image is built in
/// memory (the whole model in float), which suits the small models this format holds.
inline void write_llama2c(const std::string& path, const LlamaWeightSource& source) {
  const LlamaConfig& c = source.config();
  GSQ_CHECK((c.head_dim == 0 || c.head_dim * c.n_heads == c.dim) && c.rope_theta == 10000.0 &&
                c.norm_eps == 1e-5f && !c.rope_scaling.enabled() && c.rope_freq_factors.empty(),
            "llama2c export: the model's head size, RoPE or RMSNorm epsilon are not llama2.c's "
            "(head size dim / n_heads, theta 10000, epsilon 1e-5, no RoPE scaling); export GGUF");
  std::vector<std::uint8_t> image;
  ByteWriter out(image);
  const std::int32_t header[7] = {c.dim,        c.hidden_dim,
                                  c.n_layers,   c.n_heads,
                                  c.n_kv_heads, c.tied_classifier ? c.vocab_size : -c.vocab_size,
                                  c.seq_len};
  for (std::int32_t h : header) out.u32(static_cast<std::uint32_t>(h));
  std::vector<float> v;
  auto put = [&](LlamaTensor t, int layer) {
    source.read(t, layer, v);
    out.floats(v.data(), v.size());
  };
  put(LlamaTensor::kTokenEmbedding, 0);
  for (LlamaTensor t : {LlamaTensor::kRmsAtt, LlamaTensor::kWq, LlamaTensor::kWk,
                        LlamaTensor::kWv, LlamaTensor::kWo, LlamaTensor::kRmsFfn,
                        LlamaTensor::kW1, LlamaTensor::kW2, LlamaTensor::kW3}) {
    for (int l = 0; l < c.n_layers; ++l) put(t, l);
  }
  put(LlamaTensor::kRmsFinal, 0);
  const std::vector<float> freq_cis(static_cast<std::size_t>(c.seq_len) *
                                        static_cast<std::size_t>(c.head_size()),
                                    0.0f);
  out.floats(freq_cis.data(), freq_cis.size());
  if (!c.tied_classifier) put(LlamaTensor::kClassifier, 0);
  write_file_atomic(path, image.data(), image.size(), "llama2c export");
}

}  // namespace gsq
