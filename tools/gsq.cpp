// gsq.cpp: the gsq command-line tool, a thin layer over the library: info, generate, eval.
// Results go to stdout, progress and warnings to stderr.  `gsq help` lists the commands and
// `gsq <command> --help` their options.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsq/io/file.hpp"
#include "gsq/models/llama/adapter.hpp"
#include "gsq/models/llama/base_export.hpp"
#include "gsq/models/llama/export.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/load.hpp"
#include "gsq/models/llama/ops.hpp"
#include "gsq/version.hpp"

namespace {

// ---- Options ---------------------------------------------------------------------------------

/// One option of a command: its name, its argument (empty for a flag), default and meaning.
struct OptionSpec {
  const char* name;
  const char* arg;
  const char* fallback;
  const char* help;
};

/// Parsed options: name -> value ("1" for flags).
class Options {
 public:
  Options(const std::string& command, const std::vector<OptionSpec>& specs, int argc, char** argv,
          int first)
      : command_(command), specs_(specs) {
    for (int i = first; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        help_ = true;
        return;
      }
      const OptionSpec* spec = find(a);
      if (spec == nullptr)
        throw std::invalid_argument("gsq " + command + ": unknown option '" + a +
                                    "' (gsq " + command + " --help lists them)");
      if (*spec->arg == '\0') {
        values_[spec->name] = "1";
        continue;
      }
      if (i + 1 >= argc)
        throw std::invalid_argument("gsq " + command + ": " + a + " needs a value (" + spec->arg +
                                    ")");
      values_[spec->name] = argv[++i];
    }
  }

  bool help() const noexcept { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string str(const std::string& name) const {
    const auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    return find(name)->fallback;
  }
  std::string required(const std::string& name) const {
    if (!has(name))
      throw std::invalid_argument("gsq " + command_ + ": " + name + " is required (gsq " +
                                  command_ + " --help)");
    return str(name);
  }
  long long integer(const std::string& name, long long lo, long long hi) const {
    const std::string v = str(name);
    std::size_t used = 0;
    long long x = 0;
    try {
      x = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != v.size() || v.empty() || x < lo || x > hi)
      throw std::invalid_argument("gsq " + command_ + ": " + name + " wants an integer in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "], not '" +
                                  v + "'");
    return x;
  }
  double real(const std::string& name, double lo, double hi) const {
    const std::string v = str(name);
    std::size_t used = 0;
    double x = 0;
    try {
      x = std::stod(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != v.size() || v.empty() || !(x >= lo && x <= hi))
      throw std::invalid_argument("gsq " + command_ + ": " + name + " wants a number in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "], not '" +
                                  v + "'");
    return x;
  }

  void print_help(const char* synopsis, const char* about) const {
    std::printf("usage: gsq %s %s\n%s\n\noptions:\n", command_.c_str(), synopsis, about);
    for (const OptionSpec& s : specs_) {
      std::string left = std::string(s.name) + (*s.arg ? std::string(" ") + s.arg : "");
      std::printf("  %-18s %s", left.c_str(), s.help);
      if (*s.fallback) std::printf(" (default: %s)", s.fallback);
      std::printf("\n");
    }
  }

 private:
  const OptionSpec* find(const std::string& name) const {
    for (const OptionSpec& s : specs_) {
      if (name == s.name) return &s;
    }
    return nullptr;
  }

  std::string command_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

double peak_rss_mb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The compute mode: --float, --gse W-A, or the default for the file (float for F32/F16/BF16
/// weights, GSE W4A8 for quantized ones).
gsq::LlamaInferenceOptions inference_options(const Options& o, const gsq::LlamaModelFiles& m) {
  gsq::LlamaInferenceOptions io;
  io.threads = static_cast<int>(o.integer("--threads", 0, 1024));
  if (o.has("--float") && o.has("--gse"))
    throw std::invalid_argument("gsq: --float and --gse exclude each other");
  const bool gse = o.has("--gse") || (!o.has("--float") && !m.float_weights);
  if (!gse) return io;
  io.compute = gsq::LlamaCompute::kGse;
  const std::string spec = o.has("--gse") ? o.str("--gse") : "4-8";
  int w = 0, a = 0;
  char tail = 0;
  if (std::sscanf(spec.c_str(), "%d-%d%c", &w, &a, &tail) != 2)
    throw std::invalid_argument("gsq: --gse wants W-A, e.g. 4-8, not '" + spec + "'");
  io.weight_bits = w;
  io.activation_bits = a;
  return io;
}

std::string describe_compute(const gsq::LlamaInferenceOptions& io) {
  if (io.compute == gsq::LlamaCompute::kFloat) return "float32";
  return "GSE W" + std::to_string(io.weight_bits) + "A" + std::to_string(io.activation_bits) +
         " (embedding and classifier 8-bit)";
}

const std::vector<OptionSpec> kModelOptions = {
    {"--model", "PATH", "", "a .gguf file, a Hugging Face directory or a llama2.c .bin"},
    {"--tokenizer", "PATH", "",
     "tokenizer file (tokenizer.json, tokenizer.model, a llama2.c tokenizer.bin or a .gguf); "
     "default: the model's own (GGUF metadata, files in the HF directory, tokenizer.bin beside a "
     ".bin)"},
    {"--float", "", "", "compute in float32 (default for F32/F16/BF16 weights)"},
    {"--gse", "W-A", "", "compute on the integer engine: W-bit weights, A-bit activations, "
                         "W and A in {4,5,6,8} (default 4-8 for quantized weights)"},
    {"--threads", "N", "0", "threads; 0 lets gsq choose"},
};

const OptionSpec kLoraOption = {
    "--lora", "DIR|FILE", "",
    "a LoRA adapter: a llama.cpp adapter .gguf or a PEFT directory (adapter_config.json + "
    "adapter_model.safetensors), applied on top of the base as trained (not merged)"};

/// The adapter at `path`: a PEFT directory or a llama.cpp adapter GGUF, checked against the
/// model's shapes.  Warns when it records another base than the model's file.
gsq::LlamaAdapter load_adapter(const std::string& path, const gsq::LlamaModelFiles& m) {
  const gsq::LlamaConfig& c = m.weights->config();
  gsq::LlamaAdapter a = gsq::detail::is_directory(path) ? gsq::read_peft_adapter(path, c)
                                                        : gsq::read_adapter_gguf(path, c);
  if (!a.base_sha256.empty()) {
    const std::string base = gsq::base_model_sha256(m.path);
    if (base != a.base_sha256)
      std::fprintf(stderr,
                   "gsq: warning: %s was trained on a base with sha256 %s (%s), not on %s "
                   "(sha256 %s)\n",
                   path.c_str(), a.base_sha256.c_str(), a.base_format.c_str(), m.path.c_str(),
                   base.c_str());
  }
  return a;
}

/// Applies --lora to the runner when given.
void apply_lora_option(const Options& o, const gsq::LlamaModelFiles& m, gsq::LlamaRunner& r) {
  if (!o.has("--lora")) return;
  const gsq::LlamaAdapter a = load_adapter(o.str("--lora"), m);
  gsq::apply_adapter(r, a);
  std::fprintf(stderr, "gsq: adapter %s: rank %d, alpha %g, %zu targets\n", o.str("--lora").c_str(),
               a.rank, static_cast<double>(a.alpha), a.targets.size());
}

std::vector<OptionSpec> with_model_options(std::vector<OptionSpec> own) {
  std::vector<OptionSpec> all = kModelOptions;
  all.insert(all.end(), own.begin(), own.end());
  return all;
}

// ---- info ------------------------------------------------------------------------------------

int cmd_info(int argc, char** argv) {
  const Options o("info", kModelOptions, argc, argv, 2);
  if (o.help()) {
    o.print_help("--model PATH",
                 "The model's architecture, hyperparameters, tensor types and counts, and its "
                 "size as stored and as GSE.");
    return 0;
  }
  const gsq::LlamaModelFiles m = gsq::open_llama_model(o.required("--model"), o.str("--tokenizer"));
  const gsq::LlamaConfig& c = m.weights->config();
  std::printf("model:          %s\n", m.path.c_str());
  std::printf("format:         %s\n", gsq::to_string(m.format));
  std::printf("architecture:   llama\n");
  std::printf("dim:            %d\n", c.dim);
  std::printf("hidden_dim:     %d\n", c.hidden_dim);
  std::printf("layers:         %d\n", c.n_layers);
  std::printf("heads:          %d (kv %d, head size %d)\n", c.n_heads, c.n_kv_heads, c.head_size());
  std::printf("vocab:          %d\n", c.vocab_size);
  std::printf("context:        %d\n", c.seq_len);
  std::printf("rope theta:     %g%s\n", c.rope_theta,
              c.rope_scaling.enabled() ? " (llama3 scaling)"
              : c.rope_freq_factors.empty() ? ""
                                            : " (rope_freqs factors)");
  std::printf("rms eps:        %g\n", static_cast<double>(c.norm_eps));
  std::printf("classifier:     %s\n", c.tied_classifier ? "tied to the embedding" : "separate");
  std::printf("parameters:     %lld\n", static_cast<long long>(c.parameters()));
  std::printf("tensors:       ");
  for (const auto& [type, count] : m.tensor_types) std::printf(" %s x %lld", type.c_str(), count);
  std::printf("\n");
  std::printf("stored:         %.1f MB\n", static_cast<double>(m.stored_bytes) / 1e6);
  for (int bits : {4, 8}) {
    std::printf("as GSE W%d:      about %.1f MB (linears %d-bit, embedding and classifier 8-bit, "
                "groups of 32 with 5-bit exponents)\n",
                bits, static_cast<double>(gsq::estimated_gse_bytes(c, bits)) / 1e6, bits);
  }
  if (m.tokenizer) {
    std::printf("tokenizer:      %s, %d tokens, BOS %d, EOS %d\n", m.tokenizer->kind().c_str(),
                m.tokenizer->vocab_size(), m.tokenizer->bos(), m.tokenizer->eos());
  } else {
    std::printf("tokenizer:      none found (pass --tokenizer)\n");
  }
  return 0;
}

// ---- generate --------------------------------------------------------------------------------

int cmd_generate(int argc, char** argv) {
  const Options o("generate",
                  with_model_options({
                      kLoraOption,
                      {"--prompt", "TEXT", "", "text to continue (default: none, start at BOS)"},
                      {"-n", "N", "256",
                       "steps: positions run, prompt included, as llama2.c's run -n counts them"},
                      {"--temp", "T", "1.0", "temperature; 0 is greedy"},
                      {"--top-p", "P", "0.9", "nucleus sampling mass, in (0, 1]"},
                      {"--seed", "S", "0", "sampling seed; the same choices on every CPU"},
                  }),
                  argc, argv, 2);
  if (o.help()) {
    o.print_help("--model PATH [--prompt TEXT] [-n N] [--temp T] [--top-p P] [--seed S]",
                 "Generates text.  With --temp 0 stdout is what llama2.c's run prints for the "
                 "same prompt and -n (without its tok/s line).");
    return 0;
  }
  const gsq::LlamaModelFiles m = gsq::open_llama_model(o.required("--model"), o.str("--tokenizer"));
  if (!m.tokenizer)
    throw std::invalid_argument("gsq generate: no tokenizer found for " + m.path +
                                "; pass --tokenizer PATH");
  const gsq::LlamaConfig& c = m.weights->config();
  const int steps = static_cast<int>(o.integer("-n", 1, 1 << 20));
  gsq::LlamaInferenceOptions io = inference_options(o, m);
  const gsq::TextTokenizer& tok = *m.tokenizer;
  std::vector<int> tokens = tok.encode(o.str("--prompt"), tok.bos() >= 0, false);
  if (tokens.empty()) throw std::invalid_argument("gsq generate: the prompt gives no tokens");
  io.context = std::max(c.seq_len, std::max(steps, static_cast<int>(tokens.size())));
  if (io.context > c.seq_len)
    std::fprintf(stderr, "gsq: warning: %d positions exceed the model's context length %d\n",
                 io.context, c.seq_len);
  const auto t_load = std::chrono::steady_clock::now();
  gsq::LlamaRunner runner(*m.weights, io);
  apply_lora_option(o, m, runner);
  std::fprintf(stderr, "gsq: %s loaded in %.2f s, %s, weights %.1f MB\n", m.path.c_str(),
               seconds_since(t_load), describe_compute(io).c_str(),
               static_cast<double>(runner.weight_bytes()) / 1e6);
  gsq::SamplerOptions so;
  so.temperature = static_cast<float>(o.real("--temp", 0.0, 100.0));
  so.top_p = static_cast<float>(o.real("--top-p", 1e-6, 1.0));
  so.seed = static_cast<std::uint64_t>(o.integer("--seed", 0, (1LL << 62)));
  gsq::Sampler sampler(so);
  const auto t0 = std::chrono::steady_clock::now();
  const int pos = gsq::generate(runner, tok, tokens, steps, sampler, [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::printf("\n");
  const double s = seconds_since(t0);
  std::fprintf(stderr, "gsq: %d positions in %.2f s (%.1f tok/s), peak RSS %.0f MB\n", pos, s,
               pos / std::max(s, 1e-9), peak_rss_mb());
  return 0;
}

// ---- eval ------------------------------------------------------------------------------------

int cmd_eval(int argc, char** argv) {
  const Options o(
      "eval",
      with_model_options({
          kLoraOption,
          {"--data", "FILE", "", "UTF-8 text to score"},
          {"--seq", "N", "0", "tokens per window; 0 = min(context, 512)"},
          {"--score", "all|second-half", "all",
           "all: every prediction of each window after its first token; second-half: only "
           "the second half of each window (llama-perplexity's rule)"},
          {"--max-windows", "N", "0", "score at most N windows; 0 = all"},
      }),
      argc, argv, 2);
  if (o.help()) {
    o.print_help("--model PATH --data FILE [--seq N] [--score all|second-half]",
                 "Mean next-token loss (nats) and perplexity over a text.  The text is tokenized "
                 "once (with BOS first when the vocabulary has one) and cut into non-overlapping "
                 "windows of --seq tokens (a shorter last window is dropped).  Each window is run "
                 "from position 0; token t + 1 is predicted from tokens 0..t of its window.");
    return 0;
  }
  const gsq::LlamaModelFiles m = gsq::open_llama_model(o.required("--model"), o.str("--tokenizer"));
  if (!m.tokenizer)
    throw std::invalid_argument("gsq eval: no tokenizer found for " + m.path +
                                "; pass --tokenizer PATH");
  const gsq::LlamaConfig& c = m.weights->config();
  const std::string path = o.required("--data");
  const std::vector<std::uint8_t> bytes = gsq::read_file(path, "gsq eval", std::uint64_t{1} << 32);
  const std::string text(bytes.begin(), bytes.end());
  const std::vector<int> tokens = m.tokenizer->encode(text, m.tokenizer->bos() >= 0, false);
  int seq = static_cast<int>(o.integer("--seq", 0, 1 << 20));
  if (seq == 0) seq = std::min(c.seq_len, 512);
  if (seq < 2) throw std::invalid_argument("gsq eval: --seq must be at least 2");
  const std::string rule = o.str("--score");
  if (rule != "all" && rule != "second-half")
    throw std::invalid_argument("gsq eval: --score is all or second-half, not '" + rule + "'");
  std::size_t windows = tokens.size() / static_cast<std::size_t>(seq);
  const long long max_windows = o.integer("--max-windows", 0, 1LL << 40);
  if (max_windows > 0) windows = std::min<std::size_t>(windows, static_cast<std::size_t>(max_windows));
  if (windows == 0)
    throw std::invalid_argument("gsq eval: " + path + " gives " + std::to_string(tokens.size()) +
                                " tokens, fewer than one window of --seq " + std::to_string(seq));
  gsq::LlamaInferenceOptions io = inference_options(o, m);
  io.context = std::max(seq, c.seq_len);
  gsq::LlamaRunner runner(*m.weights, io);
  apply_lora_option(o, m, runner);
  const int first_scored = rule == "all" ? 0 : seq / 2 - 1;
  double total = 0;
  long long scored = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t w = 0; w < windows; ++w) {
    const int* win = tokens.data() + w * static_cast<std::size_t>(seq);
    for (int t = 0; t + 1 < seq; ++t) {
      const std::vector<float>& logits = runner.forward(win[t], t);
      if (t < first_scored) continue;
      total += gsq::llama::cross_entropy(logits.data(), c.vocab_size, win[t + 1]);
      ++scored;
    }
    std::fprintf(stderr, "\rgsq eval: window %zu/%zu, loss %.4f", w + 1, windows,
                 total / static_cast<double>(scored));
  }
  std::fprintf(stderr, "\n");
  const double mean = total / static_cast<double>(scored);
  std::printf("model:      %s (%s)\n", m.path.c_str(), describe_compute(io).c_str());
  std::printf("data:       %s: %zu tokens, %zu windows of %d, scoring %s\n", path.c_str(),
              tokens.size(), windows, seq, rule.c_str());
  std::printf("scored:     %lld tokens\n", scored);
  std::printf("loss:       %.6f nats/token\n", mean);
  std::printf("perplexity: %.4f\n", std::exp(mean));
  std::fprintf(stderr, "gsq eval: %.2f s, peak RSS %.0f MB\n", seconds_since(t0), peak_rss_mb());
  return 0;
}

// ---- export ----------------------------------------------------------------------------------

/// The frozen GSE base of `source` at WBits as a Q4_0 (4 bits) or Q8_0 (8 bits) GGUF.
template <int WBits>
void export_base(const std::string& out, const gsq::LlamaWeightSource& source,
                 const gsq::gguf::GgufFile* tokenizer_from, int threads) {
  gsq::LoraOptions options;
  options.matmul.threads = threads;
  const gsq::LlamaLoraModel<gsq::LoraLinear<WBits, 8, 8, 8, 32>> model(source, options);
  const gsq::BaseExport report = gsq::write_base_gguf(out, model, source, tokenizer_from);
  std::fprintf(stderr, "gsq export: %d tensors as GSE blocks (exact), %zu as F32\n",
               report.block_tensors, report.f32_tensors.size());
}

int cmd_export(int argc, char** argv) {
  const Options o(
      "export",
      with_model_options({
          kLoraOption,
          {"--out", "FILE", "", "the file to write"},
          {"--format", "gguf|llama2c", "gguf", "GGUF (llama.cpp) or a llama2.c .bin"},
          {"--type", "f32|f16|q8_0", "f32", "GGUF matrix type of the merged model"},
          {"--base-only", "", "",
           "write the frozen base exactly as gsq trains on it: GSE-INT4 as Q4_0 (or "
           "--base-bits 8 as Q8_0), bit for bit; no adapter"},
          {"--base-bits", "4|8", "4", "bits of the frozen base for --base-only"},
      }),
      argc, argv, 2);
  if (o.help()) {
    o.print_help("--model PATH [--lora DIR|FILE] --out FILE [--format gguf|llama2c] [--type T]",
                 "Writes the model with the adapter merged (W + alpha/r B A, in double, rounded "
                 "once to float), or with --base-only the exact frozen base the adapters were "
                 "trained against.  GGUF output keeps the source GGUF's tokenizer metadata.");
    return 0;
  }
  const gsq::LlamaModelFiles m = gsq::open_llama_model(o.required("--model"), o.str("--tokenizer"));
  const std::string out = o.required("--out");
  const std::string format = o.str("--format");
  if (format != "gguf" && format != "llama2c")
    throw std::invalid_argument("gsq export: --format is gguf or llama2c, not '" + format + "'");
  const gsq::gguf::GgufFile* tokenizer_from = nullptr;
  if (const auto* g = dynamic_cast<const gsq::GgufLlamaSource*>(m.weights.get()))
    tokenizer_from = &g->file();
  if (format == "gguf" && tokenizer_from == nullptr)
    std::fprintf(stderr, "gsq export: warning: the model is not a GGUF file, so the output has "
                         "no tokenizer metadata\n");
  const int threads = static_cast<int>(o.integer("--threads", 0, 1024));
  if (o.has("--base-only")) {
    if (o.has("--lora") || format != "gguf")
      throw std::invalid_argument("gsq export: --base-only writes a GGUF base without adapters");
    const long long bits = o.integer("--base-bits", 4, 8);
    if (bits == 4) {
      export_base<4>(out, *m.weights, tokenizer_from, threads);
    } else if (bits == 8) {
      export_base<8>(out, *m.weights, tokenizer_from, threads);
    } else {
      throw std::invalid_argument("gsq export: --base-bits is 4 (Q4_0) or 8 (Q8_0)");
    }
    std::printf("%s\n", out.c_str());
    return 0;
  }
  std::unique_ptr<gsq::LlamaAdapter> adapter;
  std::unique_ptr<gsq::LoraMergedSource> merged;
  const gsq::LlamaWeightSource* source = m.weights.get();
  if (o.has("--lora")) {
    adapter = std::make_unique<gsq::LlamaAdapter>(load_adapter(o.str("--lora"), m));
    merged = std::make_unique<gsq::LoraMergedSource>(*m.weights, *adapter);
    source = merged.get();
  }
  if (format == "llama2c") {
    gsq::write_llama2c(out, *source);
  } else {
    const std::string type = o.str("--type");
    gsq::gguf::GgmlType t = gsq::gguf::GgmlType::kF32;
    if (type == "f16") {
      t = gsq::gguf::GgmlType::kF16;
    } else if (type == "q8_0") {
      t = gsq::gguf::GgmlType::kQ8_0;
    } else if (type != "f32") {
      throw std::invalid_argument("gsq export: --type is f32, f16 or q8_0, not '" + type + "'");
    }
    gsq::write_llama_gguf(out, *source, t, tokenizer_from,
                          adapter ? "gsq merged LoRA" : "gsq export");
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "gsq %d.%d.%d: integer LoRA fine-tuning and inference of LLaMA-family models\n"
               "usage: gsq <command> [options]    (gsq <command> --help for its options)\n"
               "commands:\n"
               "  info      the model's architecture, tensor types and sizes\n"
               "  generate  generate text (greedy, temperature, top-p)\n"
               "  eval      next-token loss and perplexity over a text file\n"
               "  export    write the model with an adapter merged (GGUF F32/F16/Q8_0, llama2.c),\n"
               "            or the exact frozen GSE base as Q4_0/Q8_0\n"
               "models: a .gguf file (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K), a\n"
               "Hugging Face LlamaForCausalLM directory (safetensors F32/F16/BF16), or a llama2.c\n"
               ".bin checkpoint\n",
               GSQ_VERSION_MAJOR, GSQ_VERSION_MINOR, GSQ_VERSION_PATCH);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "info") return cmd_info(argc, argv);
    if (cmd == "generate") return cmd_generate(argc, argv);
    if (cmd == "eval") return cmd_eval(argc, argv);
    if (cmd == "export") return cmd_export(argc, argv);
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      usage(stdout);
      return 0;
    }
    if (cmd == "--version") {
      std::printf("gsq %d.%d.%d\n", GSQ_VERSION_MAJOR, GSQ_VERSION_MINOR, GSQ_VERSION_PATCH);
      return 0;
    }
    std::fprintf(stderr, "gsq: unknown command '%s'\n", cmd.c_str());
    usage(stderr);
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gsq: error: %s\n", e.what());
    return 1;
  }
}
