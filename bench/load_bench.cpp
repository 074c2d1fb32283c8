// load_bench: peak RSS while a LlamaLoraModel is built from a GGUF file (GgufLlamaSource),
// against the bound: at most 1.15 x (the final model's bytes + the largest single
// tensor in float).
//
// Each case runs in its own child process (this program re-executed with --child), so its peak
// is its own.  The child reads its resident set (VmRSS) before it opens the file: that baseline
// (the program, libraries, allocator arenas) is subtracted from the peak (ru_maxrss), and the
// difference is what loading cost.  "Model bytes" is LlamaLoraModel::memory().total() right
// after construction (frozen weights, adapters, scratch); "largest tensor" is the largest
// frozen tensor's elements x 4.
// Cases:
//   rand256-f32     ../shared/models/rand256-f32.gguf (GSQ_MODELS_DIR), skipped when absent
//   tinyllama-q4_0  a generated TinyLlama-1.1B-shaped GGUF (LlamaConfig::tinyllama_1_1b(),
//                   Q4_0 matrices, F32 norms), streamed to a temporary file by GgufWriter row
//                   by row, deleted afterwards; --tmp DIR chooses the folder (default /tmp)
// For each file a second child also builds the inference runner on the integer engine
// (LlamaRunner, GSE W4A8, key/value cache of the config's context) and times 16 tokens: what
// `gsq generate` holds for a quantized file (the issue: a 1B Q4_K_M model within about 1 GB).
//   build/release/bench/load_bench [--cases rand256-f32,tinyllama-q4_0] [--tmp DIR]
// Exit status 1 when a case exceeds the bound.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/lora_model.hpp"

#ifndef GSQ_MODELS_DIR
#define GSQ_MODELS_DIR "../shared/models"
#endif

namespace {

double vm_rss_mb() {  // the current resident set, from /proc (Linux)
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0.0;
}
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// Child: loads one file and prints one line of figures; exit 1 when over the bound.
int child(const std::string& name, const std::string& path) {
  const double baseline = vm_rss_mb();
  const double baseline_peak = peak_rss_mb();
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t model_bytes = 0, frozen = 0;
  std::int64_t largest = 0;
  {
    const gsq::GgufLlamaSource source(path);
    const gsq::LlamaConfig& c = source.config();
    for (int t = 0; t <= static_cast<int>(gsq::LlamaTensor::kW3); ++t) {
      const auto lt = static_cast<gsq::LlamaTensor>(t);
      if (lt == gsq::LlamaTensor::kClassifier && c.tied_classifier) continue;
      largest = std::max<std::int64_t>(largest, gsq::shape_of(c, lt).size());
    }
    gsq::LoraOptions o;
    o.matmul.threads = 1;
    const gsq::LlamaLoraModel<> model(source, o);
    const gsq::LlamaMemory m = model.memory();
    model_bytes = m.total();
    frozen = m.frozen;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double peak = peak_rss_mb();
  const double mb = 1024.0 * 1024.0;
  const double model_mb = static_cast<double>(model_bytes) / mb;
  const double largest_mb = static_cast<double>(largest) * 4.0 / mb;
  const double bound = 1.15 * (model_mb + largest_mb);
  const double used = peak - baseline;
  std::printf(
      "%-15s baseline %7.1f MB (peak before %7.1f)  peak %8.1f MB  load %8.1f MB  model %8.1f MB "
      "(frozen %8.1f)  largest tensor in float %7.1f MB  bound %8.1f MB  ratio %.3f  %.1f s  %s\n",
      name.c_str(), baseline, baseline_peak, peak, used, model_mb, static_cast<double>(frozen) / mb,
      largest_mb, bound, used / (model_mb + largest_mb), seconds, used <= bound ? "ok" : "OVER");
  return used <= bound ? 0 : 1;
}

/// Child: builds the GSE W4A8 inference runner from one file, runs 16 tokens, prints figures.
int child_generate(const std::string& name, const std::string& path) {
  const double baseline = vm_rss_mb();
  const auto t0 = std::chrono::steady_clock::now();
  const gsq::GgufLlamaSource source(path);
  gsq::LlamaInferenceOptions o;
  o.compute = gsq::LlamaCompute::kGse;
  o.threads = 1;
  gsq::LlamaRunner runner(source, o);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  int token = 1;
  for (int pos = 0; pos < 16; ++pos) {
    const std::vector<float>& logits = runner.forward(token, pos);
    token = gsq::Sampler::argmax(logits.data(), static_cast<gsq::Index>(logits.size()));
  }
  const double ms =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() * 1e3 / 16;
  const double mb = 1024.0 * 1024.0;
  std::printf(
      "%-15s generate (GSE W4A8, 1 thread): peak %8.1f MB above a %5.1f MB baseline  weights "
      "%8.1f MB  KV cache %7.1f MB (%d positions)  load %.1f s  %.1f ms/token\n",
      name.c_str(), peak_rss_mb() - baseline, baseline,
      static_cast<double>(runner.weight_bytes()) / mb,
      static_cast<double>(runner.cache_bytes()) / mb, runner.context(), load_s, ms);
  return 0;
}

/// A uniform value in [-0.035, 0.035) from a hash of (tensor, index): any row is made alone.
float noise(std::uint64_t tensor, std::uint64_t i) {
  std::uint64_t z = tensor * 0x9E3779B97F4A7C15ull + i + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (static_cast<float>(z >> 40) / 16777216.0f - 0.5f) * 0.07f;
}

/// Writes a TinyLlama-shaped GGUF (Q4_0 matrices, F32 norms), streamed row by row.
void write_tinyllama(const std::string& path) {
  const gsq::LlamaConfig c = gsq::LlamaConfig::tinyllama_1_1b();
  gsq::gguf::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  w.add_uint32("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.add_uint32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  w.add_uint32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.add_uint32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  w.add_uint32("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  std::uint64_t id = 0;
  auto add = [&](const std::string& name, gsq::LlamaTensor t) {
    const gsq::TensorShape s = gsq::shape_of(c, t);
    const std::uint64_t tid = ++id;
    const std::int64_t cols = s.cols;
    if (s.rows == 1) {
      w.add_tensor(name, gsq::gguf::GgmlType::kF32, {cols},
                   [cols](std::int64_t, float* out) { std::fill(out, out + cols, 1.0f); });
    } else {
      w.add_tensor(name, gsq::gguf::GgmlType::kQ4_0, {cols, s.rows},
                   [tid, cols](std::int64_t row, float* out) {
                     for (std::int64_t j = 0; j < cols; ++j)
                       out[j] = noise(tid, static_cast<std::uint64_t>(row * cols + j));
                   });
    }
  };
  using T = gsq::LlamaTensor;
  add("token_embd.weight", T::kTokenEmbedding);
  add("output_norm.weight", T::kRmsFinal);
  add("output.weight", T::kClassifier);
  const std::pair<const char*, T> per_layer[] = {
      {"attn_norm", T::kRmsAtt}, {"attn_q", T::kWq},      {"attn_k", T::kWk},
      {"attn_v", T::kWv},        {"attn_output", T::kWo}, {"ffn_norm", T::kRmsFfn},
      {"ffn_gate", T::kW1},      {"ffn_down", T::kW2},    {"ffn_up", T::kW3}};
  for (int l = 0; l < c.n_layers; ++l)
    for (const auto& [n, t] : per_layer) add("blk." + std::to_string(l) + "." + n + ".weight", t);
  w.write(path);
}

int run_child(const char* self, const std::string& name, const std::string& path,
              const char* mode = "--child") {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    execl(self, self, mode, name.c_str(), path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--child") return child(argv[2], argv[3]);
  if (argc == 4 && std::string(argv[1]) == "--child-generate")
    return child_generate(argv[2], argv[3]);
  std::string cases = "rand256-f32,tinyllama-q4_0", tmp = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--cases") cases = argv[i + 1];
    if (std::string(argv[i]) == "--tmp") tmp = argv[i + 1];
  }
  const char* env = std::getenv("GSQ_MODELS_DIR");
  const std::string models = env != nullptr ? env : GSQ_MODELS_DIR;
  int failed = 0;
  if (cases.find("rand256-f32") != std::string::npos) {
    const std::string path = models + "/rand256-f32.gguf";
    if (std::ifstream(path).good()) {
      failed += run_child("/proc/self/exe", "rand256-f32", path) != 0;
      failed += run_child("/proc/self/exe", "rand256-f32", path, "--child-generate") != 0;
    } else {
      std::printf("rand256-f32: skipped (%s absent)\n", path.c_str());
    }
  }
  if (cases.find("tinyllama-q4_0") != std::string::npos) {
    const std::string path = tmp + "/gsq_load_bench_" + std::to_string(getpid()) + ".gguf";
    const auto t0 = std::chrono::steady_clock::now();
    write_tinyllama(path);
    std::printf("tinyllama-q4_0: wrote %s in %.1f s (writer peak RSS %.1f MB)\n", path.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                peak_rss_mb());
    failed += run_child("/proc/self/exe", "tinyllama-q4_0", path) != 0;
    failed += run_child("/proc/self/exe", "tinyllama-q4_0", path, "--child-generate") != 0;
    std::remove(path.c_str());
  }
  return failed == 0 ? 0 : 1;
}
