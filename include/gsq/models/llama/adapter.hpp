// adapter.hpp: LoRA adapters of a LLaMA model in the formats runtimes load (a llama.cpp
// adapter.gguf, a PEFT directory), read back, and applied merged (a weight source) or unmerged.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/llama/adapter.hpp needs nlohmann/json (gsq::json)"
#endif

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/sha256.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/config.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/hf_source.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/safetensors.hpp"
#include "gsq/nn/lora.hpp"

namespace gsq {

// The adapter
// ---------------------------------------------------------------------------------------------
// For a base weight W (out x in, the LlamaWeightSource layout: Meta's interleaved q/k rows) a
// linear's adapter is A (rank x in) and B (out x rank), row-major float, and the adapted layer
// computes  y = W x + (alpha / rank) B (A x).  This is llama.cpp's and PEFT's orientation
// (nn.Linear's weight is out x in); gsq's LoraLinear keeps the transposes (A: in x r, B: r x out,
// y = x W + s x A B), and adapter_from_model converts.
//
// Files
//   adapter.gguf (llama.cpp): general.architecture "llama", general.type "adapter",
//     adapter.type "lora", adapter.lora.alpha (float32); gsq.base.sha256 and gsq.base.format
//     name the base the adapter was trained on.  Tensors blk.N.<name>.weight.lora_a with ggml
//     ne = [in, rank] (A's rows, in fastest) and .lora_b with ne = [rank, out] (B's rows), where
//     <name> is attn_q, attn_k, attn_v, attn_output, ffn_gate (w1), ffn_down (w2), ffn_up (w3):
//     the base tensor's ne is [in, out].  q/k rows in Meta's order, as llama.cpp's GGUF holds
//     them.  llama.cpp scales by alpha / rank with rank = lora_b's ne[0] (alpha 0 would mean a
//     scale of 1 there, so gsq requires alpha > 0).
//   PEFT directory: adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
//     target_modules q_proj .. down_proj, base_model_name_or_path, bias "none", and gsq's
//     gsq_base_sha256 / gsq_base_format) and adapter_model.safetensors with
//     base_model.model.model.layers.N.{self_attn,mlp}.<module>.lora_A.weight [rank, in] and
//     .lora_B.weight [out, rank], F32.  PEFT applies to a transformers model, whose q_proj and
//     k_proj rows are in rotate-half order (hf_source.hpp).  Every base reaches gsq through a
//     LlamaWeightSource in Meta's order (HfLlamaSource un-permutes), so the adapter is always
//     in Meta's order and B's q/k rows are always written with hf_from_meta_rows (and read with
//     meta_from_hf_rows): the HF-layout delta B_hf A equals the Meta delta with its rows
//     permuted, which is what W_hf + s B_hf A needs.  A is untouched (its columns index the
//     layer's input, which no permutation touches).

/// The seven linears of a layer, in LlamaLoraModel::loras() order.
enum class AdapterTarget : std::uint8_t { kQ, kK, kV, kO, kGate, kDown, kUp };
inline constexpr int kAdapterTargets = 7;

/// "q", "k", "v", "o", "gate", "down", "up" (the names of gsq's --targets).
constexpr const char* to_string(AdapterTarget t) noexcept {
  constexpr const char* kNames[] = {"q", "k", "v", "o", "gate", "down", "up"};
  return kNames[static_cast<int>(t)];
}

/// The base tensor of a target: kWq, kWk, kWv, kWo, kW1 (gate), kW2 (down), kW3 (up).
constexpr LlamaTensor tensor_of(AdapterTarget t) noexcept {
  constexpr LlamaTensor kTensors[] = {LlamaTensor::kWq, LlamaTensor::kWk, LlamaTensor::kWv,
                                      LlamaTensor::kWo, LlamaTensor::kW1, LlamaTensor::kW2,
                                      LlamaTensor::kW3};
  return kTensors[static_cast<int>(t)];
}

/// llama.cpp's tensor name stem: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_down, ffn_up.
constexpr const char* gguf_name(AdapterTarget t) noexcept {
  constexpr const char* kNames[] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                                    "ffn_gate", "ffn_down", "ffn_up"};
  return kNames[static_cast<int>(t)];
}

/// transformers' module name: q_proj, k_proj, v_proj, o_proj, gate_proj, down_proj, up_proj.
constexpr const char* hf_module(AdapterTarget t) noexcept {
  constexpr const char* kNames[] = {"q_proj",    "k_proj",    "v_proj", "o_proj",
                                    "gate_proj", "down_proj", "up_proj"};
  return kNames[static_cast<int>(t)];
}

/// The target called `name` ("q", ..., "up"); false when there is none.
inline bool adapter_target_from_string(const std::string& name, AdapterTarget& out) noexcept {
  for (int i = 0; i < kAdapterTargets; ++i) {
    if (name == to_string(static_cast<AdapterTarget>(i))) {
      out = static_cast<AdapterTarget>(i);
      return true;
    }
  }
  return false;
}

/// One linear's adapter: A (rank x in) and B (out x rank), row-major.
struct LlamaAdapterLinear {
  std::vector<float> a;
  std::vector<float> b;
};

/// A LoRA adapter of a LLaMA model (see "The adapter" above).
struct LlamaAdapter {
  int rank = 0;
  float alpha = 0.0f;
  /// The adapted linears, in AdapterTarget order, each once; every layer has them all.
  std::vector<AdapterTarget> targets;
  /// layers[l][target]: empty vectors for a target not in `targets`.
  std::vector<std::array<LlamaAdapterLinear, kAdapterTargets>> layers;
  std::string architecture = "llama";
  /// The base the adapter was trained on: "gguf", "hf" or "llama2c", and the sha256 (lowercase
  /// hex) of its file (base_model_sha256).  Empty when unknown.
  std::string base_format;
  std::string base_sha256;
  /// The bits of the frozen GSE base it was trained against (gsq's LoraLinear WBits), 0 when
  /// unknown or not gsq's: the base is the model quantized to GSE-INT<base_bits>, which is what
  /// the adapter corrects, so inference reproduces training on that base (gsq generate
  /// --lora runs it so; base.gguf / export --base-only writes it for llama.cpp).
  int base_bits = 0;

  /// alpha / rank, as llama.cpp and PEFT scale.
  float scale() const noexcept { return alpha / static_cast<float>(rank); }
  bool has(AdapterTarget t) const noexcept {
    return std::find(targets.begin(), targets.end(), t) != targets.end();
  }

  /// Checks the adapter against the base's configuration: rank >= 1, alpha finite and > 0,
  /// targets unique and sorted, one entry per layer, every targeted A and B of the right size
  /// and finite, untargeted ones empty.  Throws "adapter: ..." naming the first problem.
  void validate(const LlamaConfig& c) const {
    GSQ_CHECK(rank >= 1 && rank <= (1 << 16), "adapter: rank ", rank, " is outside [1, 65536]");
    GSQ_CHECK(std::isfinite(alpha) && alpha > 0.0f, "adapter: alpha ", alpha,
              " must be finite and > 0");
    GSQ_CHECK(architecture == "llama", "adapter: architecture '", architecture,
              "' (gsq writes 'llama' adapters)");
    GSQ_CHECK(!targets.empty(), "adapter: no target linears");
    for (std::size_t i = 1; i < targets.size(); ++i)
      GSQ_CHECK(targets[i - 1] < targets[i], "adapter: targets must be unique and in order");
    GSQ_CHECK(static_cast<int>(layers.size()) == c.n_layers, "adapter: ", layers.size(),
              " layers, the base has ", c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      for (int i = 0; i < kAdapterTargets; ++i) {
        const auto t = static_cast<AdapterTarget>(i);
        const LlamaAdapterLinear& x =
            layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)];
        if (!has(t)) {
          GSQ_CHECK(x.a.empty() && x.b.empty(), "adapter: layer ", l, " has values for ",
                    to_string(t), ", which is not a target");
          continue;
        }
        const TensorShape s = shape_of(c, tensor_of(t));
        GSQ_CHECK(x.a.size() == static_cast<std::size_t>(rank * s.cols) &&
                      x.b.size() == static_cast<std::size_t>(s.rows * rank),
                  "adapter: layer ", l, " ", to_string(t), ": A has ", x.a.size(), " and B ",
                  x.b.size(), " values, rank ", rank, " on a ", s.rows, " x ", s.cols,
                  " weight needs ", rank * s.cols, " and ", s.rows * rank);
        for (const std::vector<float>* v : {&x.a, &x.b}) {
          for (float f : *v)
            GSQ_CHECK(std::isfinite(f), "adapter: layer ", l, " ", to_string(t),
                      " holds a non-finite value");
        }
      }
    }
  }

  /// W + scale B A for linear t of layer l, in place on w (out x in, row-major): each element
  /// summed in double and rounded once to float.
  void merge_into(AdapterTarget t, int l, std::vector<float>& w, Index out, Index in) const {
    const LlamaAdapterLinear& x = layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
    const double s = static_cast<double>(alpha) / rank;
    std::vector<double> row(static_cast<std::size_t>(in));
    for (Index o = 0; o < out; ++o) {
      std::fill(row.begin(), row.end(), 0.0);
      for (Index k = 0; k < rank; ++k) {
        const double bk = x.b[static_cast<std::size_t>(o * rank + k)];
        const float* a = x.a.data() + k * in;
        for (Index i = 0; i < in; ++i) row[static_cast<std::size_t>(i)] += bk * a[i];
      }
      float* wo = w.data() + o * in;
      for (Index i = 0; i < in; ++i)
        wo[i] = static_cast<float>(double{wo[i]} + s * row[static_cast<std::size_t>(i)]);
    }
  }
};

/// The adapter of a LlamaLoraModel built on LoraLinear layers: A = the layer's a()^T, B =
/// b()^T, rank and alpha from the layers (which must agree), for the given targets (all seven
/// by default).  base_format / base_sha256 name the base the model was built from.
template <int WBits, int ABits, int GBits, int AdBits, int G>
LlamaAdapter adapter_from_model(const LlamaLoraModel<LoraLinear<WBits, ABits, GBits, AdBits, G>>& m,
                                const std::string& base_format, const std::string& base_sha256,
                                std::vector<AdapterTarget> targets = {}) {
  if (targets.empty()) {
    for (int i = 0; i < kAdapterTargets; ++i) targets.push_back(static_cast<AdapterTarget>(i));
  }
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
  const auto loras = m.loras();
  GSQ_CHECK(!loras.empty(), "adapter: the model has no layers");
  LlamaAdapter out;
  out.rank = loras[0]->rank();
  out.alpha = loras[0]->options().alpha;
  out.targets = targets;
  out.base_format = base_format;
  out.base_sha256 = base_sha256;
  out.base_bits = WBits;
  const int n_layers = m.config().n_layers;
  out.layers.resize(static_cast<std::size_t>(n_layers));
  for (int l = 0; l < n_layers; ++l) {
    for (AdapterTarget t : targets) {
      const auto& lora =
          *loras[static_cast<std::size_t>(l * kAdapterTargets + static_cast<int>(t))];
      GSQ_CHECK(lora.rank() == out.rank && lora.options().alpha == out.alpha,
                "adapter: the model's layers differ in rank or alpha");
      const Index in = lora.in_features(), outf = lora.out_features(), r = lora.rank();
      LlamaAdapterLinear& x = out.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      x.a.resize(static_cast<std::size_t>(r * in));
      x.b.resize(static_cast<std::size_t>(outf * r));
      for (Index i = 0; i < in; ++i) {
        for (Index k = 0; k < r; ++k)
          x.a[static_cast<std::size_t>(k * in + i)] = lora.a()[static_cast<std::size_t>(i * r + k)];
      }
      for (Index k = 0; k < r; ++k) {
        for (Index o = 0; o < outf; ++o)
          x.b[static_cast<std::size_t>(o * r + k)] =
              lora.b()[static_cast<std::size_t>(k * outf + o)];
      }
    }
  }
  out.validate(m.config());
  return out;
}

/// The sha256 recorded for a base model at `path`: of the file for a GGUF or llama2.c file; for a
/// directory (Hugging Face), of the text `sha256sum` prints ("<hex>  <name>\n" per file, sorted
/// by name) for its config.json, model.safetensors.index.json and *.safetensors files.
inline std::string base_model_sha256(const std::string& path) {
  struct stat st {};
  GSQ_CHECK(::stat(path.c_str(), &st) == 0, "adapter: base model '", path, "' does not exist");
  if (!S_ISDIR(st.st_mode)) return detail::sha256_file(path);
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  GSQ_CHECK(d != nullptr, "adapter: cannot list '", path, "'");
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    const bool tensors = n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0;
    if (n == "config.json" || n == "model.safetensors.index.json" || tensors) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  GSQ_CHECK(!names.empty(), "adapter: '", path, "' holds no config.json or safetensors file");
  std::string listing;
  for (const std::string& n : names)
    listing += detail::sha256_file(path + "/" + n) + "  " + n + "\n";
  return detail::sha256_hex(listing.data(), listing.size());
}

// ---- llama.cpp adapter.gguf ---------------------------------------------------------------------

/// Writes `adapter` as a llama.cpp LoRA adapter (see "Files" above): F32 tensors, or F16 with
/// `f16` (F16 flushes the tiny B values of early training to zero: an option only).  The file
/// is written atomically.  Validates against `base`.
inline void write_adapter_gguf(const std::string& path, const LlamaAdapter& adapter,
                               const LlamaConfig& base, bool f16 = false) {
  adapter.validate(base);
  gguf::GgufWriter w;
  w.add_string("general.architecture", adapter.architecture);
  w.add_string("general.type", "adapter");
  w.add_string("adapter.type", "lora");
  w.add_float32("adapter.lora.alpha", adapter.alpha);
  w.add_string("gsq.base.format", adapter.base_format);
  w.add_string("gsq.base.sha256", adapter.base_sha256);
  if (adapter.base_bits > 0)
    w.add_uint32("gsq.base.bits", static_cast<std::uint32_t>(adapter.base_bits));
  const gguf::GgmlType type = f16 ? gguf::GgmlType::kF16 : gguf::GgmlType::kF32;
  const std::int64_t r = adapter.rank;
  for (int l = 0; l < base.n_layers; ++l) {
    for (AdapterTarget t : adapter.targets) {
      const TensorShape s = shape_of(base, tensor_of(t));
      const LlamaAdapterLinear& x =
          adapter.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      const std::string name = "blk." + std::to_string(l) + "." + gguf_name(t) + ".weight";
      w.add_tensor(name + ".lora_a", type, {s.cols, r}, x.a);
      w.add_tensor(name + ".lora_b", type, {r, s.rows}, x.b);
    }
  }
  w.write(path);
}

/// Reads a llama.cpp LoRA adapter for a base of configuration `base`.  Throws "adapter: ..."
/// naming the problem: a file that is not a LoRA adapter (general.type, adapter.type), another
/// architecture, alpha missing, not a number or not > 0, a tensor name gsq does not know, a
/// lora_a without its lora_b (or the reverse), shapes that do not fit the base (llama.cpp's
/// checks: a.ne[0] = in, b.ne[1] = out, a.ne[1] = b.ne[0]), ranks that differ between tensors,
/// a target missing from some layer, non-finite values.  F32, F16 and BF16 tensors are read.
inline LlamaAdapter read_adapter_gguf(const std::string& path, const LlamaConfig& base) {
  const gguf::GgufFile f = gguf::GgufFile::open(path);
  auto text = [&f](const char* key) -> std::string {
    const gguf::Value* v = f.find(key);
    GSQ_CHECK(v != nullptr, "adapter: '", key, "' is missing (not a llama.cpp LoRA adapter)");
    GSQ_CHECK(v->type() == gguf::ValueType::kString, "adapter: '", key, "' is ", v->describe(),
              ", not a string");
    return v->as_string();
  };
  const std::string type = text("general.type");
  GSQ_CHECK(type == "adapter", "adapter: general.type is '", type, "', not 'adapter'");
  const std::string adapter_type = text("adapter.type");
  GSQ_CHECK(adapter_type == "lora", "adapter: adapter.type is '", adapter_type, "', not 'lora'");
  LlamaAdapter out;
  out.architecture = text("general.architecture");
  GSQ_CHECK(out.architecture == "llama", "adapter: general.architecture is '", out.architecture,
            "', the base is 'llama'");
  const gguf::Value* alpha = f.find("adapter.lora.alpha");
  GSQ_CHECK(alpha != nullptr, "adapter: adapter.lora.alpha is missing");
  GSQ_CHECK(
      alpha->type() == gguf::ValueType::kFloat32 || alpha->type() == gguf::ValueType::kFloat64,
      "adapter: adapter.lora.alpha is ", alpha->describe(), ", not a float32");
  out.alpha = static_cast<float>(alpha->as_float());
  if (const gguf::Value* v = f.find("gsq.base.format")) out.base_format = v->as_string();
  if (const gguf::Value* v = f.find("gsq.base.sha256")) out.base_sha256 = v->as_string();
  if (const gguf::Value* v = f.find("gsq.base.bits")) {
    const std::uint64_t bits = v->as_uint();
    GSQ_CHECK(bits >= 2 && bits <= 8, "adapter: gsq.base.bits = ", bits, " is outside [2, 8]");
    out.base_bits = static_cast<int>(bits);
  }

  // Name -> (layer, target, a or b).
  struct Pair {
    const gguf::TensorInfo* a = nullptr;
    const gguf::TensorInfo* b = nullptr;
  };
  std::map<std::pair<int, int>, Pair> found;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    bool ok = n.compare(0, 4, "blk.") == 0;
    int layer = -1, target = -1;
    bool is_a = false;
    if (ok) {
      std::size_t p = 4, digits = 0;
      long long v = 0;
      while (p < n.size() && n[p] >= '0' && n[p] <= '9' && digits < 7) {
        v = v * 10 + (n[p] - '0');
        ++p;
        ++digits;
      }
      ok = digits > 0 && v < base.n_layers && p < n.size() && n[p] == '.' &&
           !(digits > 1 && n[4] == '0');
      layer = static_cast<int>(v);
      const std::string rest = ok ? n.substr(p + 1) : std::string();
      ok = false;
      for (int i = 0; i < kAdapterTargets && !ok; ++i) {
        const std::string stem = std::string(gguf_name(static_cast<AdapterTarget>(i))) + ".weight";
        if (rest == stem + ".lora_a" || rest == stem + ".lora_b") {
          ok = true;
          target = i;
          is_a = rest.back() == 'a';
        }
      }
    }
    GSQ_CHECK(ok, "adapter: tensor '", n, "' is not a LoRA tensor of a ", base.n_layers,
              "-layer llama (blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_down|ffn_up>"
              ".weight.lora_a / .lora_b)");
    GSQ_CHECK(t.type == gguf::GgmlType::kF32 || t.type == gguf::GgmlType::kF16 ||
                  t.type == gguf::GgmlType::kBF16,
              "adapter: tensor '", n, "' has type ", gguf::to_string(t.type),
              " (F32, F16 or BF16)");
    Pair& pr = found[{layer, target}];
    (is_a ? pr.a : pr.b) = &t;
  }
  GSQ_CHECK(!found.empty(), "adapter: the file holds no LoRA tensors");
  bool any[kAdapterTargets] = {};
  for (const auto& kv : found) any[kv.first.second] = true;
  for (int i = 0; i < kAdapterTargets; ++i) {
    if (any[i]) out.targets.push_back(static_cast<AdapterTarget>(i));
  }
  out.layers.resize(static_cast<std::size_t>(base.n_layers));
  std::vector<float> v;
  for (int l = 0; l < base.n_layers; ++l) {
    for (AdapterTarget t : out.targets) {
      const std::string name = "blk." + std::to_string(l) + "." + gguf_name(t) + ".weight";
      const auto it = found.find({l, static_cast<int>(t)});
      GSQ_CHECK(it != found.end() && it->second.a != nullptr, "adapter: tensor '", name,
                ".lora_a' is missing");
      GSQ_CHECK(it->second.b != nullptr, "adapter: tensor '", name, ".lora_b' is missing");
      const gguf::TensorInfo& a = *it->second.a;
      const gguf::TensorInfo& b = *it->second.b;
      const TensorShape s = shape_of(base, tensor_of(t));
      GSQ_CHECK(a.n_dims == 2 && b.n_dims == 2 && a.ne[0] == s.cols && b.ne[1] == s.rows,
                "adapter: '", name, "' has lora_a ", detail::shape_string(a.ne), " and lora_b ",
                detail::shape_string(b.ne), ", the base weight is [", s.cols, ", ", s.rows,
                "] (wrong base model?)");
      GSQ_CHECK(a.ne[1] == b.ne[0], "adapter: '", name, "' has lora_a of rank ", a.ne[1],
                " and lora_b of rank ", b.ne[0], " (lora_a not transposed?)");
      if (out.rank == 0) {
        GSQ_CHECK(a.ne[1] >= 1 && a.ne[1] <= (1 << 16), "adapter: rank ", a.ne[1],
                  " is outside [1, 65536]");
        out.rank = static_cast<int>(a.ne[1]);
      }
      GSQ_CHECK(a.ne[1] == out.rank, "adapter: '", name, "' has rank ", a.ne[1],
                ", other tensors rank ", out.rank);
      LlamaAdapterLinear& x = out.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      f.read_f32(a, x.a);
      f.read_f32(b, x.b);
    }
  }
  out.validate(base);
  return out;
}

// ---- PEFT directory ---------------------------------------------------------------------------

namespace detail {

inline std::string peft_tensor_name(int layer, AdapterTarget t, char ab) {
  const bool attn = t == AdapterTarget::kQ || t == AdapterTarget::kK || t == AdapterTarget::kV ||
                    t == AdapterTarget::kO;
  return "base_model.model.model.layers." + std::to_string(layer) +
         (attn ? ".self_attn." : ".mlp.") + hf_module(t) + ".lora_" + ab + ".weight";
}

/// Rows of B (out x rank) from Meta's q/k order to HF's (to_hf) or back; other targets as is.
inline std::vector<float> peft_rows(const LlamaConfig& c, AdapterTarget t,
                                    const std::vector<float>& b, int rank, bool to_hf) {
  if (t != AdapterTarget::kQ && t != AdapterTarget::kK) return b;
  std::vector<float> out(b.size());
  const int heads = t == AdapterTarget::kQ ? c.n_heads : c.n_kv_heads;
  const int hs = static_cast<int>(c.head_size());
  if (to_hf) {
    hf_from_meta_rows(b.data(), out.data(), heads, hs, rank);
  } else {
    meta_from_hf_rows(b.data(), out.data(), heads, hs, rank);
  }
  return out;
}

}  // namespace detail

/// Writes `adapter` as a PEFT LoRA adapter into directory `dir` (created if absent):
/// adapter_config.json and adapter_model.safetensors (F32), B's q/k rows in HF's rotate-half
/// order (see "Files" above).  base_name_or_path goes to base_model_name_or_path.  Both files
/// are written atomically.
inline void write_peft_adapter(const std::string& dir, const LlamaAdapter& adapter,
                               const LlamaConfig& base, const std::string& base_name_or_path) {
  adapter.validate(base);
  ::mkdir(dir.c_str(), 0777);
  struct stat st {};
  GSQ_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "adapter: cannot create '", dir,
            "'");
  nlohmann::json modules = nlohmann::json::array();
  for (AdapterTarget t : adapter.targets) modules.push_back(hf_module(t));
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"task_type", "CAUSAL_LM"},
                           {"r", adapter.rank},
                           {"lora_alpha", adapter.alpha},
                           {"lora_dropout", 0.0},
                           {"target_modules", modules},
                           {"base_model_name_or_path", base_name_or_path},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"inference_mode", true},
                           {"gsq_base_format", adapter.base_format},
                           {"gsq_base_sha256", adapter.base_sha256},
                           {"gsq_base_bits", adapter.base_bits}};
  const std::string text = config.dump(2) + "\n";
  std::vector<safetensors::TensorData> tensors;
  for (int l = 0; l < base.n_layers; ++l) {
    for (AdapterTarget t : adapter.targets) {
      const TensorShape s = shape_of(base, tensor_of(t));
      const LlamaAdapterLinear& x =
          adapter.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      const std::vector<float> b = detail::peft_rows(base, t, x.b, adapter.rank, true);
      tensors.push_back({detail::peft_tensor_name(l, t, 'A'),
                         safetensors::Dtype::kF32,
                         {adapter.rank, s.cols},
                         safetensors::encode(x.a.data(), x.a.size(), safetensors::Dtype::kF32)});
      tensors.push_back({detail::peft_tensor_name(l, t, 'B'),
                         safetensors::Dtype::kF32,
                         {s.rows, adapter.rank},
                         safetensors::encode(b.data(), b.size(), safetensors::Dtype::kF32)});
    }
  }
  safetensors::write(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json",
                    reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), "adapter");
}

/// Reads a PEFT LoRA adapter directory for a base of configuration `base`, undoing the q/k row
/// permutation.  Throws "adapter: ..." naming the problem: config not LORA, r or lora_alpha
/// missing or invalid, a target module gsq does not know (or a regex string), options gsq does
/// not apply (use_rslora, use_dora, fan_in_fan_out, a bias), a missing or extra tensor, a shape
/// that does not fit the base, non-finite values.
inline LlamaAdapter read_peft_adapter(const std::string& dir, const LlamaConfig& base) {
  const std::vector<std::uint8_t> bytes =
      read_file(dir + "/adapter_config.json", "adapter", std::uint64_t{1} << 24);
  const std::string who = "adapter: '" + dir + "/adapter_config.json'";
  const nlohmann::json j = safetensors::detail::parse_json_strict(
      reinterpret_cast<const char*>(bytes.data()),
      reinterpret_cast<const char*>(bytes.data()) + bytes.size(), who, 8);
  GSQ_CHECK(j.is_object(), who, " is not a JSON object");
  auto get = [&](const char* key) -> const nlohmann::json* {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  const nlohmann::json* type = get("peft_type");
  GSQ_CHECK(type != nullptr && type->is_string() && type->get<std::string>() == "LORA", who,
            ": peft_type is ", type == nullptr ? std::string("missing") : type->dump(),
            ", not \"LORA\"");
  LlamaAdapter out;
  const nlohmann::json* r = get("r");
  GSQ_CHECK(r != nullptr && r->is_number_integer() && r->get<std::int64_t>() >= 1 &&
                r->get<std::int64_t>() <= (1 << 16),
            who, ": r is ", r == nullptr ? std::string("missing") : r->dump(),
            ", not an integer in [1, 65536]");
  out.rank = r->get<int>();
  const nlohmann::json* alpha = get("lora_alpha");
  GSQ_CHECK(alpha != nullptr && alpha->is_number(), who, ": lora_alpha is ",
            alpha == nullptr ? std::string("missing") : alpha->dump(), ", not a number");
  out.alpha = alpha->get<float>();
  for (const char* flag : {"use_rslora", "use_dora", "fan_in_fan_out"}) {
    const nlohmann::json* v = get(flag);
    GSQ_CHECK(v == nullptr || (v->is_boolean() && !v->get<bool>()), who, ": ", flag, " is ",
              v == nullptr ? std::string() : v->dump(), " (gsq applies plain LoRA only)");
  }
  if (const nlohmann::json* v = get("bias"))
    GSQ_CHECK(v->is_string() && v->get<std::string>() == "none", who, ": bias is ", v->dump(),
              ", gsq applies bias \"none\" only");
  const nlohmann::json* modules = get("target_modules");
  GSQ_CHECK(modules != nullptr && modules->is_array() && !modules->empty(), who,
            ": target_modules must be a non-empty list of module names");
  for (const nlohmann::json& m : *modules) {
    bool known = false;
    for (int i = 0; i < kAdapterTargets && m.is_string(); ++i) {
      if (m.get<std::string>() == hf_module(static_cast<AdapterTarget>(i))) {
        known = true;
        out.targets.push_back(static_cast<AdapterTarget>(i));
      }
    }
    GSQ_CHECK(known, who, ": target module ", m.dump(),
              " is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  }
  std::sort(out.targets.begin(), out.targets.end());
  out.targets.erase(std::unique(out.targets.begin(), out.targets.end()), out.targets.end());
  if (const nlohmann::json* v = get("gsq_base_format"); v != nullptr && v->is_string())
    out.base_format = v->get<std::string>();
  if (const nlohmann::json* v = get("gsq_base_sha256"); v != nullptr && v->is_string())
    out.base_sha256 = v->get<std::string>();
  if (const nlohmann::json* v = get("gsq_base_bits"); v != nullptr && v->is_number_integer()) {
    const auto bits = v->get<std::int64_t>();
    GSQ_CHECK(bits == 0 || (bits >= 2 && bits <= 8), "adapter: gsq_base_bits = ", bits,
              " is outside [2, 8]");
    out.base_bits = static_cast<int>(bits);
  }

  const safetensors::File file = safetensors::File::open(dir + "/adapter_model.safetensors");
  const std::string fwho = "adapter: '" + dir + "/adapter_model.safetensors'";
  std::size_t used = 0;
  out.layers.resize(static_cast<std::size_t>(base.n_layers));
  std::vector<float> b;
  for (int l = 0; l < base.n_layers; ++l) {
    for (AdapterTarget t : out.targets) {
      const TensorShape s = shape_of(base, tensor_of(t));
      LlamaAdapterLinear& x = out.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      for (char ab : {'A', 'B'}) {
        const std::string name = detail::peft_tensor_name(l, t, ab);
        const safetensors::TensorInfo* info = file.find(name);
        GSQ_CHECK(info != nullptr, fwho, ": tensor '", name, "' is missing");
        const std::vector<std::int64_t> want = ab == 'A'
                                                   ? std::vector<std::int64_t>{out.rank, s.cols}
                                                   : std::vector<std::int64_t>{s.rows, out.rank};
        GSQ_CHECK(info->shape == want, fwho, ": tensor '", name, "' has shape ",
                  safetensors::shape_string(info->shape), ", rank ", out.rank,
                  " on the base needs ", safetensors::shape_string(want));
        file.read_floats(*info, ab == 'A' ? x.a : b);
        ++used;
      }
      x.b = detail::peft_rows(base, t, b, out.rank, false);
    }
  }
  if (used != file.tensors().size()) {
    for (const safetensors::TensorInfo& t : file.tensors()) {
      bool known = false;
      for (int l = 0; l < base.n_layers && !known; ++l) {
        for (AdapterTarget tg : out.targets)
          known = known || t.name == detail::peft_tensor_name(l, tg, 'A') ||
                  t.name == detail::peft_tensor_name(l, tg, 'B');
      }
      GSQ_CHECK(known, fwho, ": tensor '", t.name, "' is not a LoRA tensor of the targets ",
                modules->dump(), " of a ", base.n_layers, "-layer llama");
    }
  }
  out.validate(base);
  return out;
}

// ---- Applying an adapter ----------------------------------------------------------------------

/// A weight source serving the base's tensors with the adapter merged: W + (alpha / rank) B A per
/// adapted linear (each element in double, rounded once to float), everything else as the base
/// serves it.  For merged exports and float inference with an adapter.  `base` and `adapter`
/// must outlive the source.
class LoraMergedSource final : public LlamaWeightSource {
 public:
  LoraMergedSource(const LlamaWeightSource& base, const LlamaAdapter& adapter)
      : base_(base), adapter_(adapter) {
    adapter.validate(base.config());
  }
  const LlamaConfig& config() const noexcept override { return base_.config(); }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    base_.read(t, layer, out);
    for (AdapterTarget a : adapter_.targets) {
      if (tensor_of(a) != t) continue;
      const TensorShape s = shape_of(base_.config(), t);
      adapter_.merge_into(a, layer, out, s.rows, s.cols);
    }
  }

 private:
  const LlamaWeightSource& base_;
  const LlamaAdapter& adapter_;
};

/// Sets `adapter` on every linear it targets in `runner`, unmerged: y = W x + (alpha / rank)
/// B (A x) on top of the runner's float or GSE base.  This is how a gsq-trained adapter is
/// evaluated on the GSE base it was trained against.
inline void apply_adapter(LlamaRunner& runner, const LlamaAdapter& adapter) {
  adapter.validate(runner.config());
  for (int l = 0; l < runner.config().n_layers; ++l) {
    for (AdapterTarget t : adapter.targets) {
      const LlamaAdapterLinear& x =
          adapter.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      runner.set_adapter(tensor_of(t), l, x.a, x.b, adapter.rank, adapter.scale());
    }
  }
}

}  // namespace gsq
