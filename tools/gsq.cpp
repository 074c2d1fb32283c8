// gsq.cpp: the gsq command-line tool, a thin layer over the library: info, generate, eval.
// Results go to stdout, progress and warnings to stderr.  `gsq help` lists the commands and
// `gsq <command> --help` their options.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsq/detail/parallel.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/llama/adapter.hpp"
#include "gsq/models/llama/base_export.hpp"
#include "gsq/models/llama/dataset.hpp"
#include "gsq/models/llama/export.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/load.hpp"
#include "gsq/models/llama/ops.hpp"
#include "gsq/models/llama/trainer.hpp"
#include "gsq/thread_pool.hpp"
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

/// The compute mode: --float, --gse W-A, or the default: an adapter's own base when it records
/// one (gsq's adapters are trained against the model quantized to GSE-INT<base_bits>, so that
/// is what reproduces training), else float for F32/F16/BF16 weights and GSE W4A8 for quantized
/// ones.
gsq::LlamaInferenceOptions inference_options(const Options& o, const gsq::LlamaModelFiles& m,
                                             const gsq::LlamaAdapter* adapter = nullptr) {
  gsq::LlamaInferenceOptions io;
  io.threads = static_cast<int>(o.integer("--threads", 0, 1024));
  if (o.has("--float") && o.has("--gse"))
    throw std::invalid_argument("gsq: --float and --gse exclude each other");
  const bool adapter_base = adapter != nullptr && adapter->base_bits > 0;
  const bool gse = o.has("--gse") || (!o.has("--float") && (!m.float_weights || adapter_base));
  if (!gse) return io;
  io.compute = gsq::LlamaCompute::kGse;
  std::string spec = "4-8";
  if (o.has("--gse")) {
    spec = o.str("--gse");
  } else if (adapter_base) {
    spec = std::to_string(adapter->base_bits) + "-8";
    std::fprintf(stderr,
                 "gsq: the adapter was trained on the GSE-INT%d base of its model: running that "
                 "base (--gse %s; --float or --gse W-A to choose)\n",
                 adapter->base_bits, spec.c_str());
  }
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
    std::string source;  // the model a gsq base export was quantized from
    if (const auto* g = dynamic_cast<const gsq::GgufLlamaSource*>(m.weights.get())) {
      if (const gsq::gguf::Value* v = g->file().find("gsq.base.source_sha256"))
        source = v->as_string();
    }
    if (base != a.base_sha256 && source != a.base_sha256)
      std::fprintf(stderr,
                   "gsq: warning: %s was trained on a base with sha256 %s (%s), not on %s "
                   "(sha256 %s)\n",
                   path.c_str(), a.base_sha256.c_str(), a.base_format.c_str(), m.path.c_str(),
                   base.c_str());
  }
  return a;
}

/// The --lora adapter, when given.
std::unique_ptr<gsq::LlamaAdapter> lora_option(const Options& o, const gsq::LlamaModelFiles& m) {
  if (!o.has("--lora")) return nullptr;
  auto a = std::make_unique<gsq::LlamaAdapter>(load_adapter(o.str("--lora"), m));
  std::fprintf(stderr, "gsq: adapter %s: rank %d, alpha %g, %zu targets\n",
               o.str("--lora").c_str(), a->rank, static_cast<double>(a->alpha), a->targets.size());
  return a;
}

std::vector<OptionSpec> with_model_options(std::vector<OptionSpec> own) {
  std::vector<OptionSpec> all = kModelOptions;
  all.insert(all.end(), own.begin(), own.end());
  return all;
}

// ---- info ------------------------------------------------------------------------------------

/// gsq's loops on a ThreadPool of --threads threads (0: one per hardware thread) while the
/// command runs: unlike OpenMP's barriers, the pool never waits for a thread that another
/// process keeps off its core (thread_pool.hpp).  The thread count never changes a result.
class CommandThreads {
 public:
  explicit CommandThreads(const Options& o)
      : pool_(static_cast<int>(o.integer("--threads", 0, 1024))),
        scope_(pool_) {}

 private:
  gsq::ThreadPool pool_;
  gsq::ThreadPoolScope scope_;
};

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
  const CommandThreads threads_in_use(o);
  const gsq::LlamaModelFiles m = gsq::open_llama_model(o.required("--model"), o.str("--tokenizer"));
  if (!m.tokenizer)
    throw std::invalid_argument("gsq generate: no tokenizer found for " + m.path +
                                "; pass --tokenizer PATH");
  const gsq::LlamaConfig& c = m.weights->config();
  const int steps = static_cast<int>(o.integer("-n", 1, 1 << 20));
  const std::unique_ptr<gsq::LlamaAdapter> lora = lora_option(o, m);
  gsq::LlamaInferenceOptions io = inference_options(o, m, lora.get());
  const gsq::TextTokenizer& tok = *m.tokenizer;
  std::vector<int> tokens = tok.encode(o.str("--prompt"), tok.bos() >= 0, false);
  if (tokens.empty()) throw std::invalid_argument("gsq generate: the prompt gives no tokens");
  io.context = std::max(c.seq_len, std::max(steps, static_cast<int>(tokens.size())));
  if (io.context > c.seq_len)
    std::fprintf(stderr, "gsq: warning: %d positions exceed the model's context length %d\n",
                 io.context, c.seq_len);
  const auto t_load = std::chrono::steady_clock::now();
  gsq::LlamaRunner runner(*m.weights, io);
  if (lora) gsq::apply_adapter(runner, *lora);
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
  const CommandThreads threads_in_use(o);
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
  const std::unique_ptr<gsq::LlamaAdapter> lora = lora_option(o, m);
  gsq::LlamaInferenceOptions io = inference_options(o, m, lora.get());
  io.context = std::max(seq, c.seq_len);
  gsq::LlamaRunner runner(*m.weights, io);
  if (lora) gsq::apply_adapter(runner, *lora);
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
    if (isatty(STDERR_FILENO))
      std::fprintf(stderr, "\rgsq eval: window %zu/%zu, loss %.4f", w + 1, windows,
                   total / static_cast<double>(scored));
  }
  if (isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
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
                 const gsq::gguf::GgufFile* tokenizer_from, int threads, bool quiet = false,
                 const std::string& source_sha256 = "") {
  gsq::LoraOptions options;
  options.matmul.threads = threads;
  const gsq::LlamaLoraModel<gsq::LoraLinear<WBits, 8, 8, 8, 32>> model(source, options);
  const gsq::BaseExport report =
      gsq::write_base_gguf(out, model, source, tokenizer_from, source_sha256);
  if (!quiet)
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
  const CommandThreads threads_in_use(o);
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
    const std::string sha = gsq::base_model_sha256(m.path);
    if (bits == 4) {
      export_base<4>(out, *m.weights, tokenizer_from, threads, false, sha);
    } else if (bits == 8) {
      export_base<8>(out, *m.weights, tokenizer_from, threads, false, sha);
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

// ---- finetune ----------------------------------------------------------------------------------

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  }
  return buf;
}

double current_rss_mb() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages = 0, resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1e6
                : 0;
}

/// printf to stderr unless quiet.
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void note(bool quiet, const char* fmt, ...) {
  if (quiet) return;
  std::va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
}

/// Everything that decides a fine-tuning run's outputs (what receipt.json records and
/// `gsq verify` replays), plus where it writes.
struct FinetuneRun {
  std::string model, tokenizer, data, eval, out, chat_template;
  gsq::TrainOptions train;
  int seq = 128;
  bool f16_adapter = false;
  bool base_export = true;
  bool resume = false;
  bool quiet = false;
};

const std::vector<OptionSpec> kFinetuneOptions = {
    {"--model", "PATH", "", "the base: a .gguf file, a Hugging Face directory or a llama2.c .bin"},
    {"--tokenizer", "PATH", "", "its tokenizer, when not the model's own"},
    {"--data", "FILE", "",
     "training text: plain UTF-8 (cut into windows of --seq tokens; the last tenth is held out "
     "unless --eval is given), or JSONL lines {\"text\": ...} or {\"prompt\": ..., "
     "\"completion\": ...} (the loss counts the completion and its EOS only)"},
    {"--eval", "FILE", "", "held-out text in the same forms (default: the last tenth of --data)"},
    {"--out", "DIR", "", "output folder: adapter.gguf, adapter_config.json + "
                         "adapter_model.safetensors (PEFT), base.gguf, receipt.json, checkpoint"},
    {"--rank", "R", "8", "adapter rank"},
    {"--alpha", "A", "16", "adapter scale numerator: the update is alpha / rank * B A"},
    {"--targets", "LIST", "q,k,v,o,gate,up,down", "the linears that get adapters"},
    {"--bits", "B", "8-8-8",
     "activations-gradients-adapters: 8-8-8, 6-6-6 or 5-5-5 (GSE-INT, every matmul integer), "
     "float (QLoRA-style float adapters on the GSE base) or fp8"},
    {"--base-bits", "4|8", "4", "bits of the frozen GSE base (8 only with 8-8-8, float, fp8)"},
    {"--steps", "N", "0", "optimizer steps; 0: from --epochs"},
    {"--epochs", "E", "1", "passes over the training windows when --steps is 0"},
    {"--batch", "B", "4", "windows per micro-batch"},
    {"--grad-accum", "N", "1", "micro-batches per optimizer step"},
    {"--seq", "T", "128", "tokens per window (predictions per window)"},
    {"--lr", "X", "3e-3", "peak learning rate (cosine schedule after a linear warmup)"},
    {"--warmup", "N", "10", "warmup steps"},
    {"--optimizer", "NAME", "adamw", "adamw, adamw8bit or sgd"},
    {"--weight-decay", "X", "0", "decoupled weight decay"},
    {"--clip", "X", "1", "global gradient-norm clip; 0 disables"},
    {"--seed", "S", "1", "seeds the adapters, the rounding streams and the data order"},
    {"--threads", "N", "0", "threads; 0 lets gsq choose; never changes a bit of the result"},
    {"--cache-wt", "", "",
     "keep each frozen base weight's transpose packed for backward: a faster step (bench/"
     "model_bench's gse+wt row) for 1.125 more bytes per base weight; never changes a bit"},
    {"--save-every", "N", "0", "write a checkpoint every N steps (and after the last); 0: only "
                               "on Ctrl-C"},
    {"--resume", "", "", "continue from DIR/checkpoint.gsq, bit-identically to an "
                         "uninterrupted run"},
    {"--chat-template", "NAME", "",
     "wrap JSONL prompts in a chat template: chatml, llama2, llama3, zephyr, or 'model' for the "
     "GGUF's tokenizer.chat_template"},
    {"--f16-adapter", "", "", "write adapter.gguf in F16 (default F32: F16 flushes tiny B values)"},
    {"--no-base", "", "", "do not write base.gguf (the exact frozen base)"},
};

FinetuneRun finetune_run(const Options& o) {
  FinetuneRun r;
  r.model = o.required("--model");
  r.tokenizer = o.str("--tokenizer");
  r.data = o.required("--data");
  r.eval = o.str("--eval");
  r.out = o.required("--out");
  r.chat_template = o.str("--chat-template");
  gsq::TrainOptions& t = r.train;
  t.rank = static_cast<int>(o.integer("--rank", 1, 4096));
  t.alpha = static_cast<float>(o.real("--alpha", 1e-6, 1e6));
  t.targets = gsq::parse_targets(o.str("--targets"));
  t.bits = o.str("--bits");
  t.base_bits = static_cast<int>(o.integer("--base-bits", 4, 8));
  t.steps = o.integer("--steps", 0, 1LL << 40);
  t.epochs = o.real("--epochs", 1e-6, 1e6);
  t.batch = static_cast<int>(o.integer("--batch", 1, 1 << 16));
  t.grad_accum = static_cast<int>(o.integer("--grad-accum", 1, 1 << 16));
  t.lr = static_cast<float>(o.real("--lr", 0.0, 10.0));
  t.warmup = o.integer("--warmup", 0, 1LL << 40);
  t.optimizer = o.str("--optimizer");
  t.weight_decay = static_cast<float>(o.real("--weight-decay", 0.0, 10.0));
  t.clip = static_cast<float>(o.real("--clip", 0.0, 1e6));
  t.seed = static_cast<std::uint64_t>(o.integer("--seed", 0, 1LL << 62));
  t.threads = static_cast<int>(o.integer("--threads", 0, 1024));
  t.cache_transposed_base = o.has("--cache-wt");
  t.save_every = o.integer("--save-every", 0, 1LL << 40);
  r.seq = static_cast<int>(o.integer("--seq", 2, 1 << 20));
  r.f16_adapter = o.has("--f16-adapter");
  r.base_export = !o.has("--no-base");
  r.resume = o.has("--resume");
  return r;
}

nlohmann::json run_json(const FinetuneRun& r) {
  const gsq::TrainOptions& t = r.train;
  return {{"model", r.model},
          {"tokenizer", r.tokenizer},
          {"data", r.data},
          {"eval", r.eval},
          {"chat_template", r.chat_template},
          {"seq", r.seq},
          {"rank", t.rank},
          {"alpha", t.alpha},
          {"targets", gsq::targets_string(t.targets)},
          {"bits", t.bits},
          {"base_bits", t.base_bits},
          {"steps", t.steps},
          {"epochs", t.epochs},
          {"batch", t.batch},
          {"grad_accum", t.grad_accum},
          {"lr", t.lr},
          {"warmup", t.warmup},
          {"optimizer", t.optimizer},
          {"weight_decay", t.weight_decay},
          {"clip", t.clip},
          {"seed", t.seed},
          {"f16_adapter", r.f16_adapter},
          {"base_export", r.base_export}};
}

FinetuneRun run_from_json(const nlohmann::json& j) {
  FinetuneRun r;
  auto get = [&j](const char* key) -> const nlohmann::json& {
    if (!j.contains(key))
      throw std::invalid_argument(std::string("gsq verify: the receipt's config has no '") + key +
                                  "'");
    return j.at(key);
  };
  try {
    r.model = get("model").get<std::string>();
    r.tokenizer = get("tokenizer").get<std::string>();
    r.data = get("data").get<std::string>();
    r.eval = get("eval").get<std::string>();
    r.chat_template = get("chat_template").get<std::string>();
    r.seq = get("seq").get<int>();
    gsq::TrainOptions& t = r.train;
    t.rank = get("rank").get<int>();
    t.alpha = get("alpha").get<float>();
    t.targets = gsq::parse_targets(get("targets").get<std::string>());
    t.bits = get("bits").get<std::string>();
    t.base_bits = get("base_bits").get<int>();
    t.steps = get("steps").get<std::int64_t>();
    t.epochs = get("epochs").get<double>();
    t.batch = get("batch").get<int>();
    t.grad_accum = get("grad_accum").get<int>();
    t.lr = get("lr").get<float>();
    t.warmup = get("warmup").get<std::int64_t>();
    t.optimizer = get("optimizer").get<std::string>();
    t.weight_decay = get("weight_decay").get<float>();
    t.clip = get("clip").get<float>();
    t.seed = get("seed").get<std::uint64_t>();
    r.f16_adapter = get("f16_adapter").get<bool>();
    r.base_export = get("base_export").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("gsq verify: the receipt's config is malformed: ") +
                                e.what());
  }
  return r;
}

const char* format_name(gsq::ModelFormat f) {
  switch (f) {
    case gsq::ModelFormat::kGguf:
      return "gguf";
    case gsq::ModelFormat::kHuggingFace:
      return "hf";
    case gsq::ModelFormat::kLlama2c:
      return "llama2c";
  }
  return "?";
}

/// Trains, writes the outputs into r.out and returns the receipt (also written there).
/// Returns a null json when interrupted (a checkpoint was written).
nlohmann::json finetune(const FinetuneRun& r) {
  // From the start: a Ctrl-C while the model and data load stops the run after its first step,
  // with a checkpoint.
  g_interrupted = 0;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const gsq::LlamaModelFiles m = gsq::open_llama_model(r.model, r.tokenizer);
  if (!m.tokenizer)
    throw std::invalid_argument("gsq finetune: no tokenizer found for " + m.path +
                                "; pass --tokenizer PATH");
  ::mkdir(r.out.c_str(), 0777);
  const std::string checkpoint = r.out + "/checkpoint.gsq";
  if (r.resume && !exists(checkpoint))
    throw std::invalid_argument("gsq finetune: --resume, but " + checkpoint +
                                " does not exist (nothing to resume; drop --resume to start)");
  if (!r.resume && exists(checkpoint))
    throw std::invalid_argument("gsq finetune: " + checkpoint +
                                " exists: pass --resume to continue that run, or choose another "
                                "--out (gsq never discards a checkpoint)");
  gsq::DatasetOptions d;
  d.seq = r.seq;
  d.eval_path = r.eval;
  d.chat_template = r.chat_template;
  if (r.chat_template == "model") {
    const auto* g = dynamic_cast<const gsq::GgufLlamaSource*>(m.weights.get());
    const gsq::gguf::Value* v =
        g != nullptr ? g->file().find("tokenizer.chat_template") : nullptr;
    if (v == nullptr)
      throw std::invalid_argument("gsq finetune: --chat-template model, but " + m.path +
                                  " has no tokenizer.chat_template");
    d.chat_template = v->as_string();
  }
  gsq::TextDataset data = gsq::load_text_dataset(r.data, *m.tokenizer, d);
  note(r.quiet, "gsq finetune: %s: %zu training and %zu held-out windows of %d tokens (%s)\n",
      r.data.c_str(), data.train.size(), data.eval.size(), r.seq, data.format.c_str());
  gsq::TrainOptions t = r.train;
  t.checkpoint_path = checkpoint;
  const std::string base_sha256 = gsq::base_model_sha256(r.model);
  gsq::LlamaTrainer trainer(*m.weights, t, data);
  if (r.resume) {
    trainer.load_checkpoint(checkpoint);
    note(r.quiet, "gsq finetune: resumed from %s at step %lld of %lld\n", checkpoint.c_str(),
        static_cast<long long>(trainer.step()), static_cast<long long>(trainer.total_steps()));
  }
  const double before = trainer.eval_loss();
  note(r.quiet, "gsq finetune: held-out loss %s %.4f (perplexity %.3f)\n",
      r.resume ? "at the checkpoint" : "before", before, std::exp(before));

  const bool tty = isatty(STDERR_FILENO) != 0;
  const std::int64_t first_step = trainer.step();
  const bool done = trainer.train([&](const gsq::StepInfo& s) {
    // The progress line: redrawn in place on a terminal, else one line per twentieth of the run.
    const std::int64_t every = std::max<std::int64_t>(1, s.total_steps / 20);
    if (!r.quiet && (tty || s.step % every == 0 || s.step == s.total_steps || s.checkpointed)) {
      const double eta = s.elapsed_s /
                         static_cast<double>(std::max<std::int64_t>(1, s.step - first_step)) *
                         static_cast<double>(s.total_steps - s.step);
      std::fprintf(stderr,
                   "%sstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s  RSS %.0f MB%s%s",
                   tty ? "\r" : "", static_cast<long long>(s.step),
                   static_cast<long long>(s.total_steps), s.loss, static_cast<double>(s.lr),
                   s.tokens_per_s, format_duration(eta).c_str(), current_rss_mb(),
                   s.checkpointed ? "  (checkpoint)" : "", tty ? "   " : "\n");
    }
    return g_interrupted == 0;
  });
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (tty) note(r.quiet, "\n");
  if (!done) {
    trainer.save_checkpoint(checkpoint);
    note(r.quiet, "gsq finetune: interrupted at step %lld; checkpoint %s written; continue with --resume\n",
        static_cast<long long>(trainer.step()), checkpoint.c_str());
    return nlohmann::json();
  }
  const double after = trainer.eval_loss();
  note(r.quiet, "gsq finetune: held-out loss after %.4f (perplexity %.3f)\n", after, std::exp(after));

  const gsq::LlamaConfig& c = m.weights->config();
  const gsq::LlamaAdapter adapter = trainer.adapter(format_name(m.format), base_sha256);
  std::vector<std::string> outputs = {"adapter.gguf", "adapter_config.json",
                                      "adapter_model.safetensors"};
  gsq::write_adapter_gguf(r.out + "/adapter.gguf", adapter, c, r.f16_adapter);
  gsq::write_peft_adapter(r.out, adapter, c, r.model);
  if (r.base_export) {
    const gsq::gguf::GgufFile* tokenizer_from = nullptr;
    if (const auto* g = dynamic_cast<const gsq::GgufLlamaSource*>(m.weights.get()))
      tokenizer_from = &g->file();
    if (r.train.base_bits == 4) {
      export_base<4>(r.out + "/base.gguf", *m.weights, tokenizer_from, r.train.threads, r.quiet,
                     base_sha256);
    } else {
      export_base<8>(r.out + "/base.gguf", *m.weights, tokenizer_from, r.train.threads, r.quiet,
                     base_sha256);
    }
    outputs.push_back("base.gguf");
  }
  nlohmann::json receipt;
  receipt["gsq_version"] = GSQ_VERSION_STRING;
  receipt["base"] = {{"path", r.model}, {"format", format_name(m.format)}, {"sha256", base_sha256}};
  receipt["data"] = {{"path", r.data}, {"sha256", data.sha256}};
  if (!r.eval.empty()) receipt["eval"] = {{"path", r.eval}, {"sha256", data.eval_sha256}};
  receipt["config"] = run_json(r);
  receipt["steps"] = trainer.step();
  receipt["heldout_loss"] = {{"before", before}, {"after", after}};
  for (const std::string& f : outputs)
    receipt["outputs"][f] = gsq::detail::sha256_file(r.out + "/" + f);
  const std::string text = receipt.dump(2) + "\n";
  gsq::write_file_atomic(r.out + "/receipt.json", reinterpret_cast<const std::uint8_t*>(text.data()),
                         text.size(), "gsq finetune");
  std::remove(checkpoint.c_str());
  return receipt;
}

int cmd_finetune(int argc, char** argv) {
  const Options o("finetune", kFinetuneOptions, argc, argv, 2);
  if (o.help()) {
    o.print_help("--model PATH --data FILE --out DIR [options]",
                 "LoRA fine-tuning on the integer engine: a frozen GSE base, adapters trained "
                 "with every matmul of forward and backward in GSE.  Writes the adapter for "
                 "llama.cpp (adapter.gguf) and PEFT (adapter_config.json + "
                 "adapter_model.safetensors), the exact frozen base it was trained against "
                 "(base.gguf: llama.cpp runs base.gguf + adapter.gguf as trained), and "
                 "receipt.json (sha256 of inputs and outputs; gsq verify replays it).  Ctrl-C "
                 "writes a checkpoint; --resume continues bit-identically.");
    return 0;
  }
  const CommandThreads threads_in_use(o);
  const FinetuneRun r = finetune_run(o);
  const nlohmann::json receipt = finetune(r);
  if (receipt.is_null()) return 130;
  std::printf("%s/adapter.gguf\n%s (PEFT)\n", r.out.c_str(), r.out.c_str());
  if (r.base_export) std::printf("%s/base.gguf\n", r.out.c_str());
  std::printf("%s/receipt.json\n", r.out.c_str());
  return 0;
}

// ---- verify ------------------------------------------------------------------------------------

int cmd_verify(int argc, char** argv) {
  const Options o("verify",
                  {{"--threads", "N", "0", "threads for the replay (any count gives the same bits)"},
                   {"--keep", "DIR", "", "replay into DIR and keep it (default: a temporary folder)"}},
                  argc, argv, 3);
  if (o.help() || argc < 3) {
    o.print_help("receipt.json [--threads N]",
                 "Retrains the run a receipt describes and checks every sha256: the base, the "
                 "data and each output.  gsq is bit-identical on every ISA and thread count, so "
                 "this passes on any machine.");
    return o.help() ? 0 : 2;
  }
  const CommandThreads threads_in_use(o);
  const std::string path = argv[2];
  const std::vector<std::uint8_t> bytes = gsq::read_file(path, "gsq verify", 1u << 24);
  nlohmann::json receipt;
  try {
    receipt = nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("gsq verify: " + path + " is not JSON: " + e.what());
  }
  if (!receipt.is_object() || !receipt.contains("config") || !receipt.contains("outputs") ||
      !receipt.contains("base") || !receipt.contains("data"))
    throw std::invalid_argument("gsq verify: " + path + " is not a gsq receipt");
  FinetuneRun r = run_from_json(receipt.at("config"));
  r.train.threads = static_cast<int>(o.integer("--threads", 0, 1024));
  r.quiet = true;
  int failures = 0;
  auto check = [&failures](const std::string& what, const std::string& want,
                           const std::string& got) {
    const bool ok = want == got;
    std::printf("%-28s %s\n", what.c_str(), ok ? "ok" : ("DIFFERENT (" + got + ")").c_str());
    failures += ok ? 0 : 1;
  };
  check("base " + r.model, receipt["base"].value("sha256", ""), gsq::base_model_sha256(r.model));
  check("data " + r.data, receipt["data"].value("sha256", ""), gsq::detail::sha256_file(r.data));
  if (failures > 0) {
    std::printf("the inputs differ from the receipt's; not retraining\n");
    return 1;
  }
  r.out = o.has("--keep") ? o.str("--keep")
                          : "/tmp/gsq_verify_" + std::to_string(static_cast<long>(::getpid()));
  std::fprintf(stderr, "gsq verify: retraining into %s\n", r.out.c_str());
  const nlohmann::json replay = finetune(r);
  for (const auto& [name, sha] : receipt.at("outputs").items())
    check(name, sha.get<std::string>(), replay.at("outputs").value(name, std::string("missing")));
  if (!o.has("--keep")) {
    for (const auto& [name, sha] : replay.at("outputs").items()) {
      (void)sha;
      std::remove((r.out + "/" + name).c_str());
    }
    std::remove((r.out + "/receipt.json").c_str());
    ::rmdir(r.out.c_str());
  }
  std::printf("%s\n", failures == 0 ? "verified: every output is bit-identical"
                                    : "NOT verified");
  return failures == 0 ? 0 : 1;
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "gsq %d.%d.%d: integer LoRA fine-tuning and inference of LLaMA-family models\n"
               "usage: gsq <command> [options]    (gsq <command> --help for its options)\n"
               "commands:\n"
               "  info      the model's architecture, tensor types and sizes\n"
               "  generate  generate text (greedy, temperature, top-p)\n"
               "  eval      next-token loss and perplexity over a text file\n"
               "  finetune  LoRA fine-tuning on the integer engine; writes adapters for llama.cpp\n"
               "            and PEFT, the exact base, and a receipt\n"
               "  verify    retrain a receipt's run and check every output's sha256\n"
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
    if (cmd == "finetune") return cmd_finetune(argc, argv);
    if (cmd == "verify") return cmd_verify(argc, argv);
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
