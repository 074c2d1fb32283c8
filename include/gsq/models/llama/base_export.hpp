// base_export.hpp: the frozen GSE base of a LlamaLoraModel (LoRA layers, or LoTA-QAF layers after
// their merge) written as a llama GGUF, bit-exact: GSE-INT4 groups of 32 as Q4_0 blocks,
// GSE-INT5..8 as Q8_0, the embedding's GSE-INT8 as Q8_0.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/ggml_types.hpp"
#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/export.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/nn/lota.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// Why it is exact
// ---------------------------------------------------------------------------------------------
// A GSE group of 32 codes c with quantum 2^(T+E) holds c * 2^(T+E).  ggml's Q4_0 block holds
// (nibble - 8) * d with d an fp16 and 32 nibbles (elements 0..15 in the low nibbles of its 16
// bytes, 16..31 in the high ones); Q8_0 holds qs * d with 32 int8 qs.  With d = 2^(T+E),
// nibble = c + 8 (c in [-7, 7] at 4 bits) and qs = c (|c| <= 127 at 5..8 bits) the blocks hold
// the same values, and both sides compute them as one exact float product.  fp16 holds 2^k
// exactly for k in [-24, 15] (subnormal below -14), so a tensor exports exactly when every
// nonzero group's quantum lies there (an all-zero group gets d = 0).  A weight (and the layer
// it belongs to) is grouped along in_features, ggml's ne[0]: GSE line o is ggml row o.
//
// A LoTA-QAF model after LotaLinear::merge() has its ternary adapters written into the base codes
// (c + M, the same GSE format), so its base is its whole function: the same file, exported the
// same way, is a stock GGUF that runs the fine-tuned model with no adapter.  A LoRA model's base
// is written without its adapters (they go to adapter.gguf).
//
// Fallback, documented choice: a tensor whose row length is not a multiple of 32, or with a
// group quantum outside fp16's range, is written as F32 holding its dequantized values, which
// is exact too (only larger).  BaseExport lists those tensors.

/// What write_base_gguf wrote.
struct BaseExport {
  int block_tensors = 0;                 ///< tensors written as Q4_0 or Q8_0 blocks
  std::vector<std::string> f32_tensors;  ///< GSE tensors written as F32 (see above)
};

namespace detail {

/// The fp16 bits of 2^k, or false when 2^k is not an fp16 (k outside [-24, 15]).
inline bool fp16_power_of_two(int k, std::uint16_t& bits) noexcept {
  if (k < -24 || k > 15) return false;
  bits = k >= -14 ? static_cast<std::uint16_t>((k + 15) << 10)
                  : static_cast<std::uint16_t>(1u << (k + 24));
  return true;
}

/// Encodes a GSE tensor grouped along its rows' length (lines = ggml rows, length = ne[0], a
/// multiple of 32) as Q4_0 (Bits <= 4) or Q8_0 blocks.  code(line, pos) and exponent(line, group)
/// read it; offset is T.  Returns false (out unspecified) when a nonzero group's quantum is not
/// an fp16.
template <typename Code, typename Exponent>
bool gse_to_ggml_blocks(int bits, Index lines, Index length, int offset, Code code,
                        Exponent exponent, std::vector<std::uint8_t>& out) {
  const bool q4 = bits <= 4;
  const std::size_t bb = q4 ? 18 : 34;
  const Index groups = length / 32;
  out.assign(static_cast<std::size_t>(lines * groups) * bb, 0);
  std::int8_t c[32];
  for (Index line = 0; line < lines; ++line) {
    for (Index g = 0; g < groups; ++g) {
      std::uint8_t* y = out.data() + static_cast<std::size_t>(line * groups + g) * bb;
      bool zero = true;
      for (int j = 0; j < 32; ++j) {
        c[j] = static_cast<std::int8_t>(code(line, g * 32 + j));
        zero = zero && c[j] == 0;
      }
      std::uint16_t d = 0;
      if (!zero && !fp16_power_of_two(offset + exponent(line, g), d)) return false;
      y[0] = static_cast<std::uint8_t>(d);
      y[1] = static_cast<std::uint8_t>(d >> 8);
      if (q4) {
        for (int j = 0; j < 16; ++j)
          y[2 + j] = static_cast<std::uint8_t>((c[j] + 8) | ((c[j + 16] + 8) << 4));
      } else {
        for (int j = 0; j < 32; ++j) y[2 + j] = static_cast<std::uint8_t>(c[j]);
      }
    }
  }
  return true;
}

}  // namespace detail

/// What write_base_gguf needs of a layer type: the packed GSE base (groups of 32) it writes, and
/// whether that base is the layer's whole function.  Defined for LoraLinear and LotaLinear; the
/// primary template is left undefined, so another layer type does not compile.
template <typename Linear>
struct ExportedBase;

template <int WBits, int ABits, int GBits, int AdBits>
struct ExportedBase<LoraLinear<WBits, ABits, GBits, AdBits, 32>> {
  static constexpr int kBits = WBits;
  static constexpr const char* kName = "gsq frozen GSE base";
  static const PackedGseTensor<WBits, 32>& packed(
      const LoraLinear<WBits, ABits, GBits, AdBits, 32>& layer) noexcept {
    return layer.base();
  }
  /// The adapters stay beside the base (adapter.gguf): any state exports.
  static bool unmerged(const LoraLinear<WBits, ABits, GBits, AdBits, 32>&) noexcept {
    return false;
  }
};

template <int WBits, int ABits, int GBits>
struct ExportedBase<LotaLinear<WBits, ABits, GBits, 32>> {
  static constexpr int kBits = WBits;
  static constexpr const char* kName = "gsq LoTA-QAF merged model";
  /// After merge(), the merged codes c + M.
  static const PackedGseTensor<WBits, 32>& packed(
      const LotaLinear<WBits, ABits, GBits, 32>& layer) noexcept {
    return layer.base();
  }
  /// Nonzero ternary B: markers not yet in the codes, which the file would silently drop.
  static bool unmerged(const LotaLinear<WBits, ABits, GBits, 32>& layer) noexcept {
    return !layer.b().all_zero();
  }
};

/// Writes the frozen base of `model` as a complete llama GGUF that GgufLlamaSource (and
/// llama.cpp) load.  Linear: LoraLinear<WBits, ..., 32> (the base the adapters were trained
/// against; the adapters are not included) or LotaLinear<WBits, ..., 32> after merge() on every
/// layer (the merged integer model, exactly; an unmerged LoTA layer is an error naming it, and a
/// LoTA model never trained, B = 0, exports its base).  Written:
///   - the seven linears of each layer from their packed GSE codes: Q4_0 at WBits <= 4, Q8_0 at
///     5..8 bits, exactly (see "Why it is exact"; F32 fallback listed in the result);
///   - token_embd (and output when untied) from the model's GSE-INT8 tables as Q8_0, exactly;
///   - the norms as F32 from `norms` (the source the model was built from: the model keeps them
///     unchanged), and rope_freqs.weight when the config has factors;
///   - llama.* hyperparameters as gguf_source.hpp reads them, general.file_type (2 = Q4_0,
///     7 = Q8_0), general.name (ExportedBase::kName), and every tokenizer.* key of
///     `tokenizer_from` when given (its token count must equal the vocabulary).
template <typename Linear>
BaseExport write_base_gguf(const std::string& path, const LlamaLoraModel<Linear>& model,
                           const LlamaWeightSource& norms,
                           const gguf::GgufFile* tokenizer_from = nullptr,
                           const std::string& source_sha256 = "") {
  using Traits = ExportedBase<Linear>;
  constexpr int WBits = Traits::kBits;
  const LlamaConfig& c = model.config();
  const LlamaConfig& nc = norms.config();
  GSQ_CHECK(nc.dim == c.dim && nc.n_layers == c.n_layers && nc.vocab_size == c.vocab_size &&
                nc.hidden_dim == c.hidden_dim,
            "base export: the norm source is not the model's source");
  using gguf::GgmlType;
  BaseExport report;
  gguf::GgufWriter w;
  const LlamaTensor order[] = {LlamaTensor::kWq, LlamaTensor::kWk, LlamaTensor::kWv,
                               LlamaTensor::kWo, LlamaTensor::kW1, LlamaTensor::kW2,
                               LlamaTensor::kW3};
  const char* names[] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                         "ffn_gate", "ffn_down", "ffn_up"};
  const auto layers = model.loras();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    GSQ_CHECK(!Traits::unmerged(*layers[i]), "base export: layer ", i / 7, " ", names[i % 7],
              " has adapters not merged into its base (call merge() on every layer first)");
  }
  add_llama_metadata(w, c, Traits::kName, WBits <= 4 ? 2u : 7u, tokenizer_from);
  // The model the base was quantized from, so that an adapter trained on that model (which
  // records its sha256) is known to belong to this file too.
  if (!source_sha256.empty()) w.add_string("gsq.base.source_sha256", source_sha256);

  auto f32 = [&](const std::string& name, Index rows, Index cols, std::vector<float> values) {
    w.add_tensor(name, GgmlType::kF32, {cols, rows}, values);
  };
  // A GSE tensor as blocks, else F32 from its dequantized rows (rows x cols, row-major).
  auto blocks = [&](const std::string& name, int bits, Index rows, Index cols, int offset,
                    auto code, auto exponent, auto dequantized_rows) {
    std::vector<std::uint8_t> bytes;
    if (cols % 32 == 0 &&
        detail::gse_to_ggml_blocks(bits, rows, cols, offset, code, exponent, bytes)) {
      w.add_raw_tensor(name, bits <= 4 ? GgmlType::kQ4_0 : GgmlType::kQ8_0, {cols, rows},
                       std::move(bytes));
      ++report.block_tensors;
    } else {
      f32(name, rows, cols, dequantized_rows());
      report.f32_tensors.push_back(name);
    }
  };
  auto table = [&](const std::string& name, const GseView<8>& t) {  // vocab x dim, along dim
    blocks(
        name, 8, t.rows(), t.cols(), t.offset(),
        [&t](Index line, Index pos) { return int{t.line_codes(line)[pos]}; },
        [&t](Index line, Index g) { return int{t.line_exponents(line)[g]}; },
        [&t] { return dequantize(t); });
  };
  table("token_embd.weight", model.classifier().embedding().view());
  std::vector<float> v;
  norms.read(LlamaTensor::kRmsFinal, 0, v);
  f32("output_norm.weight", 1, c.dim, v);
  if (!c.tied_classifier) table("output.weight", model.classifier().weight());
  if (!c.rope_freq_factors.empty())
    f32("rope_freqs.weight", 1, static_cast<Index>(c.rope_freq_factors.size()),
        c.rope_freq_factors);

  for (int l = 0; l < c.n_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    norms.read(LlamaTensor::kRmsAtt, l, v);
    f32(blk + "attn_norm.weight", 1, c.dim, v);
    norms.read(LlamaTensor::kRmsFfn, l, v);
    f32(blk + "ffn_norm.weight", 1, c.dim, v);
    for (int i = 0; i < 7; ++i) {
      const PackedGseTensor<WBits, 32>& pk =
          Traits::packed(*layers[static_cast<std::size_t>(l * 7 + i)]);  // in x out, lines = out
      const TensorShape s = shape_of(c, order[i]);
      GSQ_CHECK(pk.axis() == Axis::kRows && pk.rows() == s.cols && pk.cols() == s.rows,
                "base export: layer ", l, " ", names[i], " is not the config's shape");
      blocks(
          blk + names[i] + ".weight", WBits, s.rows, s.cols, pk.offset(),
          [&pk](Index line, Index pos) { return pk.code_at(line, pos); },
          [&pk](Index line, Index g) { return pk.exponent_at(line, g); },
          [&pk, &s] {
            const std::vector<float> wt = dequantize(pk.unpack());  // in x out
            std::vector<float> rows(wt.size());
            for (Index o = 0; o < s.rows; ++o) {
              for (Index k = 0; k < s.cols; ++k)
                rows[static_cast<std::size_t>(o * s.cols + k)] =
                    wt[static_cast<std::size_t>(k * s.rows + o)];
            }
            return rows;
          });
    }
  }
  w.write(path);
  return report;
}

}  // namespace gsq
