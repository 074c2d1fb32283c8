// model_bench: one LoRA fine-tuning step of LLaMA-family models, gsq against PyTorch fp32 on the
// same core, every row side by side in one invocation.
//
// Rows (rank 8 on all seven linears, AdamW, the same tokens):
//   gse    gsq LlamaLoraModel, W4 A8 G8 adapters 8 (GSE mode), GSE-INT8 classifier
//   gse+wt    the same with LoraOptions::cache_transposed_base (W^T kept packed for backward)
//   gse+attn  the same with attention on the integer engine (set_attention(kGse)); both:
//             gse+wt+attn
//   float  the same model in float mode (its linears multiply in float on the dequantized base)
//   torch  PyTorch fp32 (bench/torch_baseline.py, Debian's python3-torch), when importable
// On 2 or more threads gsq's rows run their loops on a gsq::ThreadPool (thread_pool.hpp), as the
// gsq tool does; a "+omp" suffix (gse+omp) runs them on OpenMP's threads instead.
// Each row runs in its own process (so its peak RSS is its own), 1 warm-up step, then --steps
// timed steps; the rows are interleaved --repeats times and each cell is the median over every
// timed step of every repeat (single PyTorch runs on 2 threads vary by 2x here).
// For the gse row the program also prints the step's phases, the fraction of its
// multiply-accumulates that ran on integer units, and its rate against this CPU's measured
// AVX-512 VNNI int8 peak (bench/peak.hpp) times the threads.
//
//   build/release/bench/model_bench                       # stories260K, stories15M, SmolLM2-135M
//   build/release/bench/model_bench --configs tinyllama-1.1b --seq 256 --threads 1 --steps 1
//   build/release/bench/model_bench --configs stories15m --rows gse,torch --threads 1,2
// Configs: stories260k (the real weights when ../shared/models/stories260K.bin exists),
// stories15m, smollm2-135m (all 30 layers), tinyllama-1.1b; random weights otherwise.
// One row alone, as the program runs each (for perf or repeated runs; FILE holds batch x
// (seq + 1) token ids):
//   build/release/bench/model_bench --row gse --config stories15m --one-seq 256
//       --one-threads 1 --steps 3 --tokens FILE   (one line)
// GCC 12 reports the undefined pass-through operand of AVX-512 intrinsics as maybe-uninitialized
// where Eigen's AVX-512 GEMM (the float rows', enabled by -march=native) inlines them: GCC bug
// 105593, fixed in 13.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gsq/models/llama/lora_model.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/thread_pool.hpp"
#include "peak.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using gsq::Index;
using gsq::LlamaConfig;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Args {
  std::vector<std::string> configs = {"stories260k", "stories15m", "smollm2-135m"};
  std::vector<std::string> rows = {"gse", "float", "torch"};
  std::vector<int> seqs = {256};
  std::vector<int> threads = {1, 2};
  int batch = 1;
  int repeats = 3;
  int steps = 1;
  // Child mode: one row.
  std::string row, config;
  int seq = 0, thr = 1;
  std::string tokens;
};

Args parse(int argc, char** argv) {
  Args a;
  auto ints = [](const std::string& s) {
    std::vector<int> v;
    for (const std::string& x : split(s)) v.push_back(std::stoi(x));
    return v;
  };
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--configs") a.configs = split(v);
    else if (k == "--rows") a.rows = split(v);
    else if (k == "--seq") a.seqs = ints(v);
    else if (k == "--threads") a.threads = ints(v);
    else if (k == "--batch") a.batch = std::stoi(v);
    else if (k == "--repeats") a.repeats = std::stoi(v);
    else if (k == "--steps") a.steps = std::stoi(v);
    else if (k == "--row") a.row = v;
    else if (k == "--config") a.config = v;
    else if (k == "--one-seq") a.seq = std::stoi(v);
    else if (k == "--one-threads") a.thr = std::stoi(v);
    else if (k == "--tokens") a.tokens = v;
    else {
      std::cerr << "model_bench: unknown option " << k << "\n";
      std::exit(2);
    }
  }
  return a;
}

std::string models_dir() {
  const char* env = std::getenv("GSQ_MODELS_DIR");
  return env != nullptr ? env : GSQ_MODELS_DIR;
}
std::string real_stories260k() {
  const std::string path = models_dir() + "/stories260K.bin";
  return std::ifstream(path).good() ? path : std::string();
}

/// The seven-linear base MACs per token (forward), and the adapters' (rank r).
struct Macs {
  double integer = 0, floating = 0;
};
Macs step_macs(const LlamaConfig& c, Index windows, Index len, bool gse, int rank) {
  const double d = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), hid = c.hidden_dim;
  const double tokens = static_cast<double>(windows * len);
  const double base = d * qd + 2 * d * kvd + qd * d + 3 * d * hid;  // per token, forward
  const double adapter = rank * (d + qd + 2 * (d + kvd) + qd + d + 3 * (d + hid));
  // Forward: base + adapters; backward: dX through the base, and the adapters' four products.
  const double linears = c.n_layers * tokens * (2 * base + 5 * adapter);
  const double classifier = 2 * tokens * d * c.vocab_size;
  // Causal attention: the forward's two products, backward's five (scores recomputed).
  const double attention =
      c.n_layers * windows * 7.0 * (len * (len + 1) / 2.0) * c.head_size() * c.n_heads;
  Macs m;
  (gse ? m.integer : m.floating) += linears + classifier;
  m.floating += attention;
  return m;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

/// Child: one row, printed as "key=value ..." on one line.
int run_row(const Args& a) {
  const LlamaConfig config = LlamaConfig::named(a.config);
  std::vector<int> tokens;
  {
    std::ifstream in(a.tokens);
    for (int t; in >> t;) tokens.push_back(t);
  }
  const Index len = a.seq;
  const auto needed = static_cast<std::size_t>(a.batch * (len + 1));
  if (tokens.size() < needed) {
    std::cerr << "model_bench: --tokens '" << a.tokens << "' holds " << tokens.size()
              << " token ids; one row needs batch x (seq + 1) = " << needed << "\n";
    return 2;
  }
  std::vector<std::vector<int>> windows;
  for (int b = 0; b < a.batch; ++b)
    windows.emplace_back(tokens.begin() + b * (len + 1), tokens.begin() + (b + 1) * (len + 1));
#if defined(_OPENMP)
  omp_set_num_threads(a.thr);
#endif
  // gsq's loops on a ThreadPool (thread_pool.hpp), as the gsq tool runs them, or on OpenMP's
  // threads in a "+omp" row.
  std::optional<gsq::ThreadPool> pool;
  std::optional<gsq::ThreadPoolScope> use_pool;
  if (a.row.find("+omp") == std::string::npos && a.thr > 1) use_pool.emplace(pool.emplace(a.thr));
  gsq::LoraOptions o;
  o.rank = 8;
  o.alpha = 16.0f;
  o.matmul.threads = a.thr;
  o.cache_transposed_base = a.row.find("+wt") != std::string::npos;
  std::unique_ptr<gsq::LlamaLoraModel<>> model;
  if (a.config == "stories260k" && !real_stories260k().empty()) {
    const gsq::Llama2Weights w = gsq::Llama2Weights::load(real_stories260k());
    model = std::make_unique<gsq::LlamaLoraModel<>>(w, o);
  } else {
    model = std::make_unique<gsq::LlamaLoraModel<>>(gsq::RandomLlamaWeights(config, 1), o);
  }
  const bool gse = a.row.rfind("gse", 0) == 0;
  if (!gse) model->set_mode(gsq::LoraMode::kFloat);
  if (a.row.find("+attn") != std::string::npos) model->set_attention(gsq::LoraMode::kGse);
  gsq::AdamW opt(model->parameters());
  using Clock = std::chrono::steady_clock;
  std::vector<double> ms;
  double opt_s = 0, loss = 0;
  for (int s = 0; s <= a.steps; ++s) {
    if (s == 1) model->reset_profile(), opt_s = 0;
    const auto t0 = Clock::now();
    model->zero_grad();
    loss = model->loss_batch(windows, true);
    const auto t1 = Clock::now();
    opt.step(1e-4f);
    const auto t2 = Clock::now();
    if (s >= 1) {
      ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
      opt_s += std::chrono::duration<double>(t2 - t1).count();
    }
  }
  const gsq::LlamaStepProfile& p = model->profile();
  const double n = a.steps;
  const gsq::LlamaMemory mem = model->memory();
  std::printf(
      "ms=%s rss_mb=%.1f loss=%.4f linears=%.3f attention=%.3f classifier=%.3f pointwise=%.3f "
      "optimizer=%.3f frozen_mb=%.1f activations_mb=%.1f scratch_mb=%.1f attn_padding=%.3f\n",
      [&] {
        std::string s;
        for (double m : ms) s += (s.empty() ? "" : ",") + std::to_string(m);
        return s;
      }()
          .c_str(),
      peak_rss_mb(), loss, 1e3 * p.linears / n, 1e3 * p.attention / n, 1e3 * p.classifier / n,
      1e3 * p.pointwise / n, 1e3 * opt_s / n, mem.frozen / 1048576.0, mem.activations / 1048576.0,
      mem.scratch / 1048576.0, model->attention_padding());
  return 0;
}

std::map<std::string, std::string> parse_line(const std::string& line) {
  std::map<std::string, std::string> kv;
  std::stringstream in(line);
  for (std::string item; in >> item;) {
    const auto eq = item.find('=');
    if (eq != std::string::npos) kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return kv;
}

/// Runs a command, returns its last stdout line.
std::string run(const std::string& cmd) {
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return {};
  std::string last;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, f) != nullptr) {
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!s.empty()) last = s;
  }
  pclose(f);
  return last;
}

std::string python_with_torch() {
  for (const char* py : {"/usr/bin/python3", "python3"}) {
    if (std::system((std::string(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0)
      return py;
  }
  return {};
}

/// A JSON number field of a one-line object ("key": value).
double json_number(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\"");
  if (at == std::string::npos) return -1;
  return std::atof(line.c_str() + line.find(':', at) + 1);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Cell {
  std::vector<double> ms;
  double rss = 0;
  std::map<std::string, std::vector<double>> phases;
};

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (!a.row.empty()) return run_row(a);

  const std::string self = "/proc/self/exe";
  std::string exe;
  {
    char buf[4096];
    const ssize_t n = readlink(self.c_str(), buf, sizeof buf - 1);
    exe = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string(argv[0]);
  }
  const std::string python = python_with_torch();
  std::vector<std::string> rows;
  for (const std::string& r : a.rows) {
    if (r == "torch" && python.empty()) {
      std::printf(
          "PyTorch is not importable: the torch row is skipped (apt-get install python3-torch)\n");
      continue;
    }
    rows.push_back(r);
  }
  // The VNNI peak of one thread, measured here (bench/peak.hpp).
  double peak = 0;
#if GSQ_X86
  if (gsq::cpu_supports(gsq::Isa::kAvx512Vnni)) {
    const auto t0 = std::chrono::steady_clock::now();
    const double r = bench::peak_loop_avx512_vnni(bench::kPeakSteps * 16, 1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    peak = bench::kPeakSteps * 16.0 * bench::kPeakChains * 64.0 / s;
    if (r == 0.5) std::printf(" ");  // keeps the loop's result alive
  }
#endif
  std::printf("model_bench: rank 8 LoRA on all seven linears, AdamW, batch %d; median of %d x %d "
              "steps per cell, rows interleaved; VNNI int8 peak %.1f GMAC/s per thread\n",
              a.batch, a.repeats, a.steps, peak / 1e9);
  if (!real_stories260k().empty()) std::printf("stories260k: the real weights, %s\n",
                                               real_stories260k().c_str());

  std::printf("\n| config | T | thr | row | ms/step | tokens/s | peak RSS MB | gse vs row |\n"
              "|---|---:|---:|---|---:|---:|---:|---:|\n");
  std::vector<std::string> profile_lines;
  for (const std::string& name : a.configs) {
    const LlamaConfig config = LlamaConfig::named(name);
    for (int seq : a.seqs) {
      if (seq > config.seq_len) continue;
      // The tokens every row trains on.
      const std::string tok_path = "/tmp/gsq_model_bench_tokens_" + std::to_string(getpid());
      {
        gsq::detail::Rng rng(42);
        std::ofstream out(tok_path);
        for (int i = 0; i < a.batch * (seq + 1); ++i)
          out << rng.below(static_cast<std::uint32_t>(config.vocab_size)) << ' ';
      }
      for (int thr : a.threads) {
        std::map<std::string, Cell> cells;
        for (int rep = 0; rep < a.repeats; ++rep) {
          for (const std::string& r : rows) {
            std::string line;
            Cell& cell = cells[r];
            if (r == "torch") {
              std::ostringstream cmd;
              cmd << python << " " << GSQ_SOURCE_DIR << "/bench/torch_baseline.py --dim "
                  << config.dim << " --hidden " << config.hidden_dim << " --layers "
                  << config.n_layers << " --heads " << config.n_heads << " --kv-heads "
                  << config.n_kv_heads << " --vocab " << config.vocab_size << " --seq " << seq
                  << " --batch " << a.batch << " --rope-theta " << config.rope_theta
                  << " --tied " << (config.tied_classifier ? 1 : 0) << " --threads " << thr
                  << " --steps " << a.steps << " --warmup 1 --tokens " << tok_path;
              line = run(cmd.str());
              const auto at = line.find("\"runs_ms\"");
              if (at != std::string::npos) {
                std::stringstream in(line.substr(line.find('[', at) + 1,
                                                 line.find(']', at) - line.find('[', at) - 1));
                for (std::string x; std::getline(in, x, ',');) cell.ms.push_back(std::atof(x.c_str()));
              }
              cell.rss = std::max(cell.rss, json_number(line, "peak_rss_mb"));
            } else {
              std::ostringstream cmd;
              cmd << exe << " --row " << r << " --config " << name << " --one-seq " << seq
                  << " --one-threads " << thr << " --batch " << a.batch << " --steps " << a.steps
                  << " --tokens " << tok_path;
              line = run(cmd.str());
              const auto kv = parse_line(line);
              if (kv.count("ms")) {
                for (const std::string& x : split(kv.at("ms"))) cell.ms.push_back(std::atof(x.c_str()));
                cell.rss = std::max(cell.rss, std::atof(kv.at("rss_mb").c_str()));
                for (const char* k : {"linears", "attention", "classifier", "pointwise",
                                      "optimizer", "frozen_mb", "activations_mb", "scratch_mb",
                                      "attn_padding"})
                  cell.phases[k].push_back(std::atof(kv.at(k).c_str()));
              }
            }
            if (line.empty()) std::fprintf(stderr, "model_bench: row %s failed\n", r.c_str());
          }
        }
        const double gse_ms = median(cells["gse"].ms);
        const double tokens = static_cast<double>(a.batch) * seq;
        for (const std::string& r : rows) {
          const double m = median(cells[r].ms);
          if (m <= 0) continue;
          char ratio[32] = "";
          if (r != "gse" && gse_ms > 0) std::snprintf(ratio, sizeof ratio, "%.2fx", m / gse_ms);
          std::printf("| %s | %d | %d | %s | %.1f | %.0f | %.0f | %s |\n", name.c_str(), seq, thr,
                      r.c_str(), m, tokens / m * 1e3, cells[r].rss, ratio);
        }
        if (cells.count("gse+attn") && !cells["gse+attn"].phases["attn_padding"].empty())
          std::printf("|   | gse+attn computes %.2fx the useful multiply-adds of S and dP (head size "
                      "%d padded to groups of 32) | | | | | | |\n",
                      cells["gse+attn"].phases["attn_padding"].front(), config.head_size());
        std::fflush(stdout);
        if (gse_ms > 0) {
          auto ph = [&](const char* k) { return median(cells["gse"].phases[k]); };
          const Macs macs = step_macs(config, a.batch, seq, true, 8);
          const double rate = (macs.integer + macs.floating) / (gse_ms * 1e-3);
          char buf[512];
          std::snprintf(
              buf, sizeof buf,
              "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.1f%% "
              "| %.0f / %.0f / %.0f |",
              name.c_str(), seq, thr, ph("linears"), ph("attention"), ph("classifier"),
              ph("pointwise"), ph("optimizer"),
              gse_ms - ph("linears") - ph("attention") - ph("classifier") - ph("pointwise") -
                  ph("optimizer"),
              (macs.integer + macs.floating) / 1e9,
              100 * macs.integer / (macs.integer + macs.floating),
              peak > 0 ? 100 * rate / (peak * thr) : 0.0, ph("frozen_mb"), ph("activations_mb"),
              ph("scratch_mb"));
          profile_lines.push_back(buf);
        }
      }
      std::remove(tok_path.c_str());
    }
  }
  std::printf(
      "\nThe gse rows by phase (ms per step), the step's multiply-accumulates (G), the integer "
      "share of them, the step's MAC rate against the VNNI peak x threads, and memory by role "
      "(MB):\n\n| config | T | thr | linears | attention | classifier + CE | norms/RoPE/SwiGLU | "
      "optimizer | other | GMAC | on integer units | of VNNI peak | frozen / activations / "
      "scratch |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const std::string& l : profile_lines) std::printf("%s\n", l.c_str());
  return 0;
}
