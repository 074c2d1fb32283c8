// load.hpp: opens a model a user already has (a GGUF file, a Hugging Face directory or a
// llama2.c checkpoint) as a weight source that streams one tensor at a time, and its tokenizer.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/llama/load.hpp needs nlohmann/json (link gsq::llama where gsq::json was found)"
#endif

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/hf_source.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/models/tokenizer/load.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"

namespace gsq {

enum class ModelFormat : std::uint8_t { kGguf, kHuggingFace, kLlama2c };

constexpr const char* to_string(ModelFormat f) noexcept {
  switch (f) {
    case ModelFormat::kGguf:
      return "GGUF";
    case ModelFormat::kHuggingFace:
      return "Hugging Face (config.json + safetensors)";
    case ModelFormat::kLlama2c:
      return "llama2.c checkpoint";
  }
  return "?";
}

namespace detail {

inline bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// The first four bytes of a file ("" when it cannot be read).
inline std::string file_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "";
  char m[4] = {};
  const std::size_t n = std::fread(m, 1, 4, f);
  std::fclose(f);
  return std::string(m, n);
}

inline std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

/// A llama2.c checkpoint read into memory, served as a weight source (it owns the weights).
class Llama2FileSource final : public LlamaWeightSource {
 public:
  explicit Llama2FileSource(const std::string& path)
      : weights_(Llama2Weights::load(path)), source_(weights_) {}
  const LlamaConfig& config() const noexcept override { return source_.config(); }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    source_.read(t, layer, out);
  }
  const Llama2Weights& weights() const noexcept { return weights_; }

 private:
  Llama2Weights weights_;
  Llama2WeightSource source_;
};

}  // namespace detail

/// A model opened for reading: its weights (streamed tensor by tensor), its tokenizer (null
/// when none was found or given), and what the files hold.
struct LlamaModelFiles {
  ModelFormat format = ModelFormat::kGguf;
  std::string path;
  std::unique_ptr<LlamaWeightSource> weights;
  std::unique_ptr<TextTokenizer> tokenizer;
  /// Every matrix is stored as F32, F16 or BF16 (so float inference is the faithful default).
  bool float_weights = true;
  /// Tensor count per stored type ("F32", "Q4_K", "BF16", ...).
  std::map<std::string, long long> tensor_types;
  /// Bytes of tensor data as stored.
  std::uint64_t stored_bytes = 0;
};

/// The format of `path`: a directory is Hugging Face, a file starting with "GGUF" is GGUF,
/// any other file a llama2.c checkpoint.
inline ModelFormat detect_model_format(const std::string& path) {
  if (detail::is_directory(path)) return ModelFormat::kHuggingFace;
  GSQ_CHECK(detail::file_exists(path), "model: ", path, " does not exist");
  return detail::file_magic(path) == "GGUF" ? ModelFormat::kGguf : ModelFormat::kLlama2c;
}

/// Opens the model at `path` and its tokenizer: `tokenizer_path` when given, else the model's
/// own (GGUF metadata; tokenizer.json or tokenizer.model in a Hugging Face directory;
/// tokenizer.bin beside a llama2.c checkpoint).  Throws std::invalid_argument naming the file
/// and the problem, including a tokenizer whose vocabulary size differs from the model's.
inline LlamaModelFiles open_llama_model(const std::string& path,
                                        const std::string& tokenizer_path = "") {
  LlamaModelFiles m;
  m.path = path;
  m.format = detect_model_format(path);
  std::string tok = tokenizer_path;
  switch (m.format) {
    case ModelFormat::kGguf: {
      auto source = std::make_unique<GgufLlamaSource>(path);
      const gguf::GgufFile& f = source->file();
      for (const gguf::TensorInfo& t : f.tensors()) {
        ++m.tensor_types[gguf::to_string(t.type)];
        m.stored_bytes += t.bytes;
        if (t.n_dims >= 2 && t.type != gguf::GgmlType::kF32 && t.type != gguf::GgmlType::kF16 &&
            t.type != gguf::GgmlType::kBF16)
          m.float_weights = false;
      }
      if (tok.empty()) m.tokenizer = load_tokenizer(f);
      m.weights = std::move(source);
      break;
    }
    case ModelFormat::kHuggingFace: {
      auto source = std::make_unique<HfLlamaSource>(path);
      const safetensors::Model& files = source->model();
      for (std::size_t i = 0; i < files.file_count(); ++i) {
        for (const safetensors::TensorInfo& t : files.file(i).tensors()) {
          ++m.tensor_types[safetensors::to_string(t.dtype)];
          m.stored_bytes += t.bytes();
          if (t.shape.size() >= 2 && t.dtype != safetensors::Dtype::kF32 &&
              t.dtype != safetensors::Dtype::kF16 && t.dtype != safetensors::Dtype::kBF16)
            m.float_weights = false;
        }
      }
      if (tok.empty()) {
        if (detail::file_exists(path + "/tokenizer.json")) {
          tok = path + "/tokenizer.json";
        } else if (detail::file_exists(path + "/tokenizer.model")) {
          tok = path + "/tokenizer.model";
        }
      }
      m.weights = std::move(source);
      break;
    }
    case ModelFormat::kLlama2c: {
      auto source = std::make_unique<detail::Llama2FileSource>(path);
      const LlamaConfig& c = source->config();
      m.tensor_types["F32"] = 2 + 9 * static_cast<long long>(c.n_layers) + (c.tied_classifier ? 0 : 1);
      m.stored_bytes = static_cast<std::uint64_t>(c.parameters()) * 4;
      if (tok.empty()) {
        const std::string beside = detail::parent_directory(path) + "/tokenizer.bin";
        if (detail::file_exists(beside)) tok = beside;
      }
      m.weights = std::move(source);
      break;
    }
  }
  if (!tok.empty()) m.tokenizer = load_tokenizer(tok, m.weights->config().vocab_size);
  if (m.tokenizer) {
    GSQ_CHECK(m.tokenizer->vocab_size() == m.weights->config().vocab_size, "model: the tokenizer (",
              tok.empty() ? path : tok, ") has ", m.tokenizer->vocab_size(),
              " tokens but the model's vocabulary has ", m.weights->config().vocab_size);
  }
  return m;
}

}  // namespace gsq
