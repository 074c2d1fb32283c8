// finetune/export.hpp: the demo's model files: where it finds stories260K (checking the sha256 of
// the files it knows), the GSQ 8-8-8 row written for other runtimes (the exact frozen base as a
// GGUF with the tokenizer, the adapter as a llama.cpp adapter.gguf and as a PEFT directory), and
// the name of the LoTA-QAF row's merged model (written and read back by rows.hpp's functions).
#pragma once

#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/sha256.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/base_export.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/tokenizer.hpp"
#include "gsq/models/llama/weights.hpp"
#if GSQ_HAVE_JSON
#include "gsq/models/llama/adapter.hpp"
#endif

namespace finetune {

// ---- Finding the model -------------------------------------------------------------------------

/// A file the demo knows by name, with its sha256 (models/README.md).
struct KnownFile {
  const char* name;
  const char* sha256;
};
inline constexpr KnownFile kKnownFiles[] = {
    {"stories260K.bin", "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"},
    {"tok512.bin", "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"},
};

inline bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// When `path`'s file name is one of kKnownFiles, checks its sha256 and throws
/// std::invalid_argument "models: ..." naming the file and both digests when it differs (a
/// truncated or corrupt download, or another file under that name).  Other names pass unchecked.
inline void verify_known_file(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const KnownFile& k : kKnownFiles) {
    if (name != k.name) continue;
    const std::string got = gsq::detail::sha256_file(path);
    GSQ_CHECK(got == k.sha256, "models: '", path, "' has sha256 ", got, ", not the ", k.sha256,
              " of karpathy/tinyllamas' ", k.name,
              ": a truncated or corrupt download, or another file under that name");
  }
}

/// The folders the demo searches for stories260K.bin (with tok512.bin beside it) when no --model
/// is given, in order: $GSQ_MODELS_DIR, ../shared/models, the repository's models/ (its path is
/// compiled in as GSQ_REPO_MODELS_DIR), and models/ under the working directory.
inline std::vector<std::string> model_dirs() {
  std::vector<std::string> dirs;
  const char* env = std::getenv("GSQ_MODELS_DIR");
  if (env != nullptr && *env != '\0') dirs.emplace_back(env);
  dirs.emplace_back("../shared/models");
#ifdef GSQ_REPO_MODELS_DIR
  dirs.emplace_back(GSQ_REPO_MODELS_DIR);
#endif
  dirs.emplace_back("models");
  return dirs;
}

/// The first `dir/stories260K.bin` of model_dirs() that exists, or std::invalid_argument listing
/// the places searched and where to get the files.
inline std::string find_model() {
  std::string searched;
  for (const std::string& dir : model_dirs()) {
    const std::string path = dir + "/stories260K.bin";
    if (is_file(path)) return path;
    searched += (searched.empty() ? "" : ", ") + path;
  }
  throw std::invalid_argument(
      "models: stories260K.bin not found (searched " + searched +
      "). It ships in the repository's models/ folder; else get stories260K.bin and tok512.bin "
      "(MIT) from https://huggingface.co/karpathy/tinyllamas (folder stories260K/), and pass "
      "--model and --tokenizer or set GSQ_MODELS_DIR");
}

// ---- Files for other runtimes
// --------------------------------------------------------------------

/// A llama2.c tokenizer as GGUF tokenizer.* metadata, as llama.cpp's llama2.c converter writes
/// it (the same tokens, scores and types as ../shared/models/stories260K.gguf for tok512.bin):
/// model "llama"; pieces with ' ' written as U+2581 and BOS / EOS as <s> / </s>; token types
/// unknown (id 0), control (BOS 1, EOS 2), byte (<0xNN>) and normal; unk 0, bos 1, eos 2.
inline gsq::gguf::GgufFile tokenizer_metadata(const gsq::Tokenizer& tok) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  for (int id = 0; id < tok.vocab_size(); ++id) {
    std::string piece;
    if (id == gsq::Tokenizer::kBos || id == gsq::Tokenizer::kEos) {
      piece = id == gsq::Tokenizer::kBos ? "<s>" : "</s>";
    } else {
      for (char ch : tok.piece(id))
        piece += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
    }
    const bool byte = piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>';
    types.push_back(id == 0                                                    ? 2  // unknown
                    : id == gsq::Tokenizer::kBos || id == gsq::Tokenizer::kEos ? 3  // control
                    : byte                                                     ? 6  // byte
                                                                               : 1);                                                    // normal
    tokens.push_back(std::move(piece));
    scores.push_back(tok.score(id));
  }
  gsq::gguf::GgufWriter w;
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_floats("tokenizer.ggml.scores", scores);
  w.add_int32s("tokenizer.ggml.token_type", types);
  w.add_uint32("tokenizer.ggml.unknown_token_id", 0);
  w.add_uint32("tokenizer.ggml.bos_token_id", gsq::Tokenizer::kBos);
  w.add_uint32("tokenizer.ggml.eos_token_id", gsq::Tokenizer::kEos);
  const std::vector<std::uint8_t> image = w.serialize();
  return gsq::gguf::GgufFile::parse(image.data(), image.size());
}

/// The files write_runtime_files writes into `out`.
struct RuntimeFiles {
  explicit RuntimeFiles(const std::string& out)
      : base(out + "/base-q4_0.gguf"), adapter(out + "/adapter.gguf"), peft(out + "/peft") {}
  std::string base;     ///< the exact frozen base, GGUF (Q4_0 where ggml's blocks fit)
  std::string adapter;  ///< llama.cpp LoRA adapter
  std::string peft;     ///< PEFT directory: adapter_config.json + adapter_model.safetensors
};

/// Writes the base of a model of 4-bit layers (LoraLinear: its frozen base; LotaLinear after
/// merge(): the merged model) with `tok`'s vocabulary to `path` (gsq::write_base_gguf), and
/// prints what it wrote, introduced by `what`.
template <typename Linear>
void write_gguf_with_vocabulary(const std::string& path, const gsq::Llama2LoraModel<Linear>& m,
                                const gsq::Llama2Weights& w, const gsq::Tokenizer& tok,
                                const char* what) {
  const gsq::gguf::GgufFile vocab = tokenizer_metadata(tok);
  const gsq::BaseExport report = gsq::write_base_gguf(path, m, gsq::Llama2WeightSource(w), &vocab);
  std::string f32;
  for (const std::string& name : report.f32_tensors) f32 += " " + name;
  std::printf(
      "%s: %s, %d tensors as ggml blocks (Q4_0 for the 4-bit linears, Q8_0 for the 8-bit "
      "embedding), bit-exact; F32 (ne[0] not a multiple of 32, or a scale outside fp16):%s\n",
      what, path.c_str(), report.block_tensors, f32.empty() ? " none" : f32.c_str());
  std::fflush(stdout);  // the caller may be a forked child that leaves with _exit
}

/// Writes the trained model's frozen 4-bit base (with `tok`'s vocabulary) and, where nlohmann/json
/// is present, its adapter as adapter.gguf and a PEFT directory (files: RuntimeFiles(out)).  The
/// adapters record the sha256 of base-q4_0.gguf, the base they run on.  Prints what it wrote.
template <int ABits, int GBits, int AdBits>
void write_runtime_files(
    const gsq::Llama2LoraModel<gsq::LoraLinear<4, ABits, GBits, AdBits, 32>>& m,
    const gsq::Llama2Weights& w, const gsq::Tokenizer& tok, const std::string& out) {
  const RuntimeFiles f(out);
  write_gguf_with_vocabulary(f.base, m, w, tok, "Frozen base");
#if GSQ_HAVE_JSON
  const gsq::LlamaAdapter adapter =
      gsq::adapter_from_model(m, "gguf", gsq::base_model_sha256(f.base));
  gsq::write_adapter_gguf(f.adapter, adapter, m.config());
  gsq::write_peft_adapter(f.peft, adapter, m.config(), "stories260K (karpathy/tinyllamas)");
  std::printf("Adapter (rank %d, alpha %g, all 7 linears of %d layers): %s and %s/\n", adapter.rank,
              static_cast<double>(adapter.alpha), m.config().n_layers, f.adapter.c_str(),
              f.peft.c_str());
#else
  std::printf("Adapter: not written (adapter.gguf and peft/ need nlohmann/json, gsq::json)\n");
#endif
  std::fflush(stdout);  // the caller may be a forked child that leaves with _exit
}

/// Mean next-token cross-entropy of gsq's inference runner over the windows.
inline double runner_loss(gsq::LlamaRunner& r, const std::vector<std::vector<int>>& windows) {
  double total = 0;
  std::size_t count = 0;
  for (const std::vector<int>& tokens : windows) {
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
      const std::vector<float>& z = r.forward(tokens[t], static_cast<int>(t));
      double mx = z[0];
      for (float v : z) mx = std::max(mx, double{v});
      double s = 0;
      for (float v : z) s += std::exp(double{v} - mx);
      total += mx + std::log(s) - z[static_cast<std::size_t>(tokens[t + 1])];
      ++count;
    }
  }
  return total / static_cast<double>(count);
}

/// Loads the written files back as a user would (base-q4_0.gguf through gsq's GGUF reader, on the
/// integer engine at W4A8, adapter.gguf unmerged) and returns the held-out loss without and
/// with the adapter.  Returns false when the adapter could not be written (no nlohmann/json).
inline bool reload_runtime_files(const std::string& out,
                                 const std::vector<std::vector<int>>& windows, double& base_loss,
                                 double& adapted_loss) {
#if GSQ_HAVE_JSON
  const RuntimeFiles f(out);
  const gsq::GgufLlamaSource source(f.base);
  gsq::LlamaInferenceOptions io;
  io.compute = gsq::LlamaCompute::kGse;
  io.weight_bits = 4;
  io.activation_bits = 8;
  gsq::LlamaRunner plain(source, io), adapted(source, io);
  gsq::apply_adapter(adapted, gsq::read_adapter_gguf(f.adapter, source.config()));
  base_loss = runner_loss(plain, windows);
  adapted_loss = runner_loss(adapted, windows);
  return true;
#else
  (void)out, (void)windows, (void)base_loss, (void)adapted_loss;
  return false;
#endif
}

/// The LoTA-QAF row's merged model: a stock Q4_0 GGUF that needs no adapter.
inline std::string lota_file(const std::string& out) { return out + "/lota-q4_0.gguf"; }

}  // namespace finetune
