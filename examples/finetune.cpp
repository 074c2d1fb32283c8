// finetune.cpp: on-device LoRA fine-tuning of a real LLaMA model (llama2.c's stories260K) with
// GSE on every linear layer, and the GSQ-Tuning paper's comparison table (Table 1) on it.
//
//   finetune [--model PATH] [--tokenizer PATH] [--data FILE] [--out DIR] [--steps N] ...
//
// Default task, quantization recovery: the 4-bit base moves the model away from fp32.  The fp32
// model writes the training and held-out text itself (seeded sampling at temperature 1), so the
// fp32 model's held-out loss is the floor, and adapters trained on that text (next-token
// cross-entropy, i.e. distillation) recover part of what 4 bits lost.  With --data, the same
// comparison fine-tunes on the user's own text.  Every configuration trains in a forked child,
// so that the peak RSS it reports is its own, --jobs of them at a time (every loss is the same
// at any --jobs: each configuration is deterministic; the time columns are steadiest at 1).  The model ships in the repository (models/,
// sha256-checked at load; finetune/export.hpp says where else it looks).  There is no synthetic
// stand-in any more: with the model committed, a missing file is an error that says where to get
// it, not a reason to pretrain a noise-sized model whose 4-bit gap shows nothing.
//
// Outputs (in --out, default finetune_out/): table.md, table.csv, sweep.csv, sweep.svg;
// gsq888_merged.bin (llama2.c, adapters folded in); for llama.cpp, PEFT and gsq, the GSQ 8-8-8
// row's exact frozen base base-q4_0.gguf (with the tokenizer) and its adapter as adapter.gguf and
// peft/, and the LoTA-QAF row's merged model lota-q4_0.gguf (a stock Q4_0 GGUF, no adapter).
// The program reads them back and prints the commands that run them.
// GCC 12 reports the undefined pass-through operand of AVX-512 intrinsics as maybe-uninitialized
// where Eigen's AVX-512 GEMM (the float rows', enabled by -march=native, GSQ_NATIVE) inlines
// them: GCC bug 105593, fixed in 13.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "finetune/export.hpp"
#include "finetune/report.hpp"
#include "finetune/rows.hpp"
#include "finetune/train.hpp"
#include "gsq/models/llama/runner.hpp"
#include "gsq/models/llama/tokenizer.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim/tsign_sgd.hpp"

namespace {

using finetune::Dataset;
using finetune::Measured;
using finetune::Row;
using finetune::TrainSettings;

// ---- Settings --------------------------------------------------------------------------------

struct Settings {
  std::string model, tokenizer, data, out = "finetune_out";
  int seq = 64;              // tokens per window (next-token predictions per sequence)
  int heldout_windows = 64;  // generated held-out windows (training: steps x batch, one epoch)
  int sweep_steps = 60;      // optimizer steps per sweep point; 0 skips the sweep
  int jobs = default_jobs();  // configurations trained at a time, data sampling threads
  TrainSettings train;

  /// The CPUs online, at most 8 (each configuration is one thread).
  static int default_jobs() {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return static_cast<int>(std::min(8L, std::max(1L, n)));
  }
};

void usage() {
  std::printf(
      "usage: finetune [options]\n"
      "  --model PATH       llama2.c checkpoint (default: stories260K.bin from $GSQ_MODELS_DIR,\n"
      "                     else ../shared/models, else the repository's models/, else ./models;\n"
      "                     a file named stories260K.bin or tok512.bin must have its sha256)\n"
      "  --tokenizer PATH   its tokenizer (default: tok512.bin beside the model)\n"
      "  --data FILE        fine-tune on this text (90 %% train, 10 %% held out) instead of\n"
      "                     text the fp32 model writes\n"
      "  --out DIR          output directory (default finetune_out)\n"
      "  --steps N          optimizer steps per configuration (default 150)\n"
      "  --batch N          windows per step (default 4)\n"
      "  --seq N            tokens per window (default 64)\n"
      "  --rank N           adapter rank of the table (default 8)\n"
      "  --lr X             peak learning rate, cosine schedule (default 3e-3)\n"
      "  --sweep-steps N    steps per point of the bits x rank sweep, 0 to skip (default 60)\n"
      "  --lota-rank N      rank of the LoTA-QAF row (default 16)\n"
      "  --lota-omega X     its marker threshold as a fraction of its rank (default 0.5;\n"
      "                     the paper's 0.75 is weaker here, see the README)\n"
      "  --seed N           seeds data, adapters and rounding (default 1)\n"
      "  --jobs N           configurations trained at a time, each in its own process, and\n"
      "                     threads sampling the data (default: the CPUs online, at most 8;\n"
      "                     %d here). Losses are the same at any N; the time columns are\n"
      "                     steadiest at 1\n",
      Settings::default_jobs());
}

/// The integer after an option, or std::invalid_argument naming the option.
long long parse_number(const std::string& option, const std::string& value) {
  std::size_t used = 0;
  long long n = -1;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || n < 0)
    throw std::invalid_argument(option + " needs a non-negative integer, got '" + value + "'");
  return n;
}

Settings parse_args(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage();
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + arg);
    const std::string v = argv[++i];
    auto number = [&] { return static_cast<int>(std::min(parse_number(arg, v), 1LL << 30)); };
    if (arg == "--model") {
      s.model = v;
    } else if (arg == "--tokenizer") {
      s.tokenizer = v;
    } else if (arg == "--data") {
      s.data = v;
    } else if (arg == "--out") {
      s.out = v;
    } else if (arg == "--steps") {
      s.train.steps = number();
    } else if (arg == "--batch") {
      s.train.batch = number();
    } else if (arg == "--seq") {
      s.seq = number();
    } else if (arg == "--rank") {
      s.train.rank = number();
    } else if (arg == "--lr") {
      s.train.lr = std::strtof(v.c_str(), nullptr);
    } else if (arg == "--lota-rank") {
      s.train.lota_rank = number();
    } else if (arg == "--lota-omega") {
      s.train.lota_omega = std::strtod(v.c_str(), nullptr);
    } else if (arg == "--sweep-steps") {
      s.sweep_steps = number();
    } else if (arg == "--jobs") {
      s.jobs = number();
    } else if (arg == "--seed") {
      s.train.seed = static_cast<std::uint64_t>(parse_number(arg, v));
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (s.model.empty()) s.model = finetune::find_model();
  if (s.tokenizer.empty()) {
    const std::size_t slash = s.model.find_last_of('/');
    s.tokenizer = (slash == std::string::npos ? "" : s.model.substr(0, slash + 1)) + "tok512.bin";
  }
  const int warmup = s.train.warmup;
  if (s.train.steps < warmup || (s.sweep_steps != 0 && s.sweep_steps < warmup))
    throw std::invalid_argument("--steps and --sweep-steps (unless 0) must be at least the " +
                                std::to_string(warmup) + " warmup steps");
  if (s.train.batch < 1 || s.seq < 1 || s.train.rank < 1 || !(s.train.lr > 0.0f) ||
      s.train.lota_rank < 1 || s.jobs < 1)
    throw std::invalid_argument(
        "--batch, --seq, --rank, --lr, --lota-rank and --jobs must be positive");
  s.train.live_progress = s.jobs == 1;
  if (!(s.train.lota_omega >= 0.0 && s.train.lota_omega <= 1.0))
    throw std::invalid_argument("--lota-omega must be in [0, 1]");
  return s;
}

// ---- The model -------------------------------------------------------------------------------

struct Model {
  gsq::Llama2Weights weights;
  std::shared_ptr<const gsq::Tokenizer> tokenizer;
  std::string description;
  std::function<std::string(const std::vector<int>&)> decode;
  std::function<std::vector<int>(const std::string&)> encode_words;  // for --data
};

Model load_stories260k(const Settings& s) {
  for (const std::string& path : {s.model, s.tokenizer})
    GSQ_CHECK(finetune::is_file(path), "models: no file '", path, "' (see --model, --tokenizer)");
  finetune::verify_known_file(s.model);
  finetune::verify_known_file(s.tokenizer);
  Model m;
  m.weights = gsq::Llama2Weights::load(s.model);
  auto tok = std::make_shared<const gsq::Tokenizer>(
      gsq::Tokenizer::load(s.tokenizer, m.weights.config().vocab_size));
  m.tokenizer = tok;
  m.description = s.model + " (llama2.c, " + std::to_string(m.weights.config().dim) + " dim, " +
                  std::to_string(m.weights.config().n_layers) + " layers, vocab " +
                  std::to_string(m.weights.config().vocab_size) + ")";
  m.decode = [tok](const std::vector<int>& t) { return tok->decode(t); };
  // The tokenizer's pieces never hold a space after their first byte, so encoding word by word
  // (each with its dummy-prefix space) gives the tokens of the whole text, in linear time.
  m.encode_words = [tok](const std::string& word) { return tok->encode(word, false); };
  return m;
}

// ---- Data ------------------------------------------------------------------------------------

/// BOS followed by `length` tokens the fp32 model samples at temperature 1 (exactly its own
/// distribution), from a seeded generator.
std::vector<int> sample_window(gsq::Llama2Runner& runner, int length, std::mt19937_64& rng) {
  std::vector<int> tokens = {gsq::Tokenizer::kBos};
  std::vector<double> p;
  for (int pos = 0; pos < length; ++pos) {
    const std::vector<float>& logits = runner.forward(tokens.back(), pos);
    const float mx = *std::max_element(logits.begin(), logits.end());
    p.resize(logits.size());
    double sum = 0;
    for (std::size_t v = 0; v < p.size(); ++v) sum += p[v] = std::exp(double{logits[v]} - mx);
    double u = static_cast<double>(rng() >> 11) * 0x1p-53 * sum;  // uniform in [0, sum)
    std::size_t next = 0;
    while (next + 1 < p.size() && u >= p[next]) u -= p[next++];
    tokens.push_back(static_cast<int>(next));
  }
  return tokens;
}

/// steps x batch training windows from one seeded stream and heldout_windows from another, in
/// order.  sample_window draws exactly seq numbers per window, so window i of a stream starts
/// after i x seq draws: the windows are cut into s.jobs runs sampled side by side on threads,
/// each from its stream advanced past the windows before it, and are the same at any s.jobs.
Dataset generated_data(const Model& model, const Settings& s) {
  const int n_train = s.train.steps * s.train.batch, total = n_train + s.heldout_windows;
  std::vector<std::vector<int>> windows(static_cast<std::size_t>(total));
  auto sample = [&](int from, int to) {  // windows [from, to) of the training then held-out ones
    gsq::Llama2Runner runner(model.weights);
    for (int i = from; i < to;) {
      const bool train = i < n_train;
      std::mt19937_64 rng(train ? s.train.seed * 2 + 1 : s.train.seed * 2 + 2);
      rng.discard(static_cast<unsigned long long>(train ? i : i - n_train) *
                  static_cast<unsigned long long>(s.seq));
      for (const int end = train ? std::min(to, n_train) : to; i < end; ++i)
        windows[static_cast<std::size_t>(i)] = sample_window(runner, s.seq, rng);
    }
  };
  const int parts = std::max(1, std::min(s.jobs, total));
  std::vector<std::thread> threads;
  for (int p = 1; p < parts; ++p)
    threads.emplace_back(sample, total * p / parts, total * (p + 1) / parts);
  sample(0, total / parts);
  for (std::thread& t : threads) t.join();
  Dataset d;
  d.train.assign(windows.begin(), windows.begin() + n_train);
  d.heldout.assign(windows.begin() + n_train, windows.end());
  return d;
}

/// The user's text: paragraphs (split at blank lines) each start with BOS; the first 90 % of
/// the tokens give the training windows, the rest the held-out ones (seq + 1 tokens each).
Dataset text_data(const Model& model, const Settings& s) {
  std::ifstream in(s.data);
  if (!in.good()) throw std::invalid_argument("cannot open --data file '" + s.data + "'");
  std::vector<int> stream;
  bool paragraph_start = true;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string word;
    if (!(words >> word)) {
      paragraph_start = true;
      continue;
    }
    do {
      if (paragraph_start) stream.push_back(gsq::Tokenizer::kBos);
      paragraph_start = false;
      const std::vector<int> t = model.encode_words(word);
      stream.insert(stream.end(), t.begin(), t.end());
    } while (words >> word);
  }
  auto cut = [&s](std::vector<int>::const_iterator from, std::vector<int>::const_iterator to) {
    std::vector<std::vector<int>> windows;
    for (; to - from > s.seq; from += s.seq) windows.emplace_back(from, from + s.seq + 1);
    return windows;
  };
  const auto split = stream.begin() + static_cast<std::ptrdiff_t>(stream.size() * 9 / 10);
  Dataset d{cut(stream.begin(), split), cut(split, stream.end())};
  if (d.train.empty() || d.heldout.empty())
    throw std::invalid_argument("--data: " + std::to_string(stream.size()) +
                                " tokens are too few; the held-out 10 % needs at least " +
                                std::to_string(s.seq + 1) + " (try a smaller --seq)");
  return d;
}

// ---- The comparison --------------------------------------------------------------------------

using W4A8 = gsq::LoraLinear<4, 8, 8, 8, 32>;  // also the GSQ 8-8-8 rows' layer

/// Adds the table's rows to `runs` (their Measured, in order, are runs' results) and returns
/// them without their measurements.  The trained GSQ 8-8-8 model is written into `out`:
/// adapters folded into float32 as a llama2.c checkpoint (merged_path), and its frozen base and
/// adapter for other runtimes (finetune::write_runtime_files); the LoTA-QAF row's merged model
/// as lota-q4_0.gguf (finetune::train_lota_row).
std::vector<Row> comparison(finetune::IsolatedRuns& runs, const Model& model, const Dataset& data,
                            const TrainSettings& t, const std::string& out,
                            const std::string& merged_path) {
  std::vector<Row> rows;
  auto add = [&](std::string name, std::string bits, bool trained,
                 const std::function<Measured()>& run) {
    rows.push_back({std::move(name), std::move(bits), trained, {}});
    runs.add(run);
  };
  add("fp32, no adapters", "32-32-32-—", false, [&] {
    Measured m;
    m.heldout_loss = finetune::heldout_loss_fp32(model.weights, data.heldout);
    return m;
  });
  add("W4, no adapters", "4-32-32-—", false,
      [&] { return finetune::evaluate_untrained<W4A8>(model.weights, data); });
  auto w4a8 = [&](gsq::LoraMode mode, const char* label) {
    return [&model, &data, &t, mode, label] {
      return finetune::train_adapters<W4A8>(model.weights, data, t, mode, label);
    };
  };
  add("W4 + float adapters (QLoRA-style)", "4-32-32-32", true,
      w4a8(gsq::LoraMode::kFloat, "W4 + float adapters"));
  add("GSQ 8-8-8", "4-8-8-8", true, [&] {
    return finetune::train_adapters<W4A8>(
        model.weights, data, t, gsq::LoraMode::kGse, "GSQ 8-8-8", true,
        [&](const gsq::Llama2LoraModel<W4A8>& m) {
          finetune::write_file(merged_path, m.merged_weights(model.weights).serialize());
          finetune::write_runtime_files(m, model.weights, *model.tokenizer, out);
        });
  });
  add("GSQ 8-8-8, attention on GSE too", "4-8-8-8", true, [&] {
    return finetune::train_adapters<W4A8>(model.weights, data, t, gsq::LoraMode::kGse,
                                          "GSQ 8-8-8 + GSE attention", true, {},
                                          gsq::LoraMode::kGse);
  });
  add("GSQ 6-6-6", "4-6-6-6", true,
      [&] { return finetune::train_narrow_gse(6, model.weights, data, t, "GSQ 6-6-6", true); });
  add("GSQ 5-5-5", "4-5-5-5", true,
      [&] { return finetune::train_narrow_gse(5, model.weights, data, t, "GSQ 5-5-5", true); });
  add("W4 + FP8 adapters", "4-E4M3-E5M2-E4M3", true,
      w4a8(gsq::LoraMode::kFp8, "W4 + FP8 adapters"));
  add(finetune::format("LoTA-QAF ternary, rank %d, merged", t.lota_rank), "4-8-8-T", true, [&] {
    return finetune::train_lota_row(model.weights, data, t, "LoTA-QAF ternary", *model.tokenizer,
                                    out);
  });
  return rows;
}

/// Adds the bits x rank sweep's points to `runs` (their Measured follow in runs' results) and
/// returns them without their measurements.
std::vector<finetune::SweepPoint> sweep(finetune::IsolatedRuns& runs, const Model& model,
                                        const Dataset& data, const TrainSettings& settings) {
  std::vector<finetune::SweepPoint> points;
  for (int bits : {5, 6, 8}) {
    for (int rank : {4, 8, 16, 32, 64}) {
      TrainSettings t = settings;
      t.rank = rank;
      const std::string label =
          "sweep GSE " + std::to_string(bits) + "-bit, rank " + std::to_string(rank);
      runs.add([&model, &data, t, label, bits] {
        return bits == 8 ? finetune::train_adapters<W4A8>(model.weights, data, t,
                                                          gsq::LoraMode::kGse, label, false)
                         : finetune::train_narrow_gse(bits, model.weights, data, t, label, false);
      });
      points.push_back({bits, rank, {}});
    }
  }
  return points;
}

std::string footnotes(const Settings& s, long parent_rss_kib) {
  const gsq::TSignSchedule q;  // the schedule finetune::train_lota uses
  return finetune::format(
      "Held-out loss: mean next-token cross-entropy (nats) over the held-out windows; "
      "perplexity = exp(loss); W4 gap recovered = (loss(W4) - loss) / (loss(W4) - loss(fp32)); "
      "vs fp32 = loss - loss(fp32). "
      "The fp32 row is llama2.c's exact forward (gsq::Llama2Runner); the others run "
      "gsq::Llama2LoraModel on the same 4-bit GSE base (groups of 32). Every trained row sees "
      "the same windows in the same order: %d steps of a micro-batch of %d windows (one forward "
      "and backward per step), adapters of rank %d on all 7 linear layers of every block. The "
      "LoRA rows (alpha = %g) share the initialisation and seeds and use AdamW with fp32 state "
      "(so that only the arithmetic differs), peak lr %g on a cosine schedule with %d warmup "
      "steps, gradient norm clipped to %g. The LoTA-QAF row trains ternary adapters of rank %d "
      "(omega = %.2f r) with t-SignSGD (q from %g to %g over %g %% of the steps, then to %g; no "
      "learning rate and no optimizer state) on integer gradients, and is evaluated after its "
      "exact "
      "merge into the 4-bit codes (the program checks that the held-out loss is bit-identical "
      "before and after).\n\n"
      "Merged into W4: the held-out loss after each layer's merge() writes the adapters into the "
      "4-bit base (W + s A B requantized for LoRA; codes + ternary markers for LoTA), so that "
      "inference runs at the base model's cost. Inference per window: wall time of one held-out "
      "window's forward as the row evaluates it (LoRA rows with their adapters beside the base, "
      "the LoTA row merged).\n\n"
      "Training memory (accounted): summed over the linear layers, the bit-packed 4-bit base, "
      "the adapters and their gradients (fp32 for LoRA, 2-bit ternary values and int64 "
      "gradients for LoTA), and the activations saved for backward (bit-packed GSE codes in GSQ "
      "and LoTA rows, fp32 copies in the float and FP8 rows); plus the AdamW state (8 bytes per "
      "adapter value). Not counted: the token embedding and norms, and the model's own fp32 "
      "buffers (residual stream, attention probabilities). Largest temporary: the largest "
      "buffer one layer holds during its forward or backward (LoraMemory::largest_temporary; "
      "layers run one at a time, so it adds once): the dequantized base in the float and FP8 "
      "rows, an upper bound of the matmul's packing buffers in GSQ rows, the effective codes "
      "in the LoTA row. Peak RSS: getrusage of the forked child that ran the row, which starts "
      "with the parent's resident pages (%.1f MiB when it forked). Step time: median wall time "
      "of one optimizer step (forward, backward and update), on one thread; configurations "
      "running at a time: %d (--jobs; side by side they can slow each other down, and --jobs 1 "
      "gives the steadiest time columns with the same losses).\n",
      s.train.steps, s.train.batch, s.train.rank, static_cast<double>(s.train.alpha),
      static_cast<double>(s.train.lr), s.train.warmup, static_cast<double>(s.train.clip),
      s.train.lota_rank, s.train.lota_omega, q.q0, q.q1, 100 * q.warm, q.q2,
      parent_rss_kib / 1024.0, s.jobs);
}

/// GSQ 8-8-8 against the float adapters, and before against after fine-tuning.
void summary(const std::vector<Row>& rows) {
  const Measured &fp32 = rows[0].m, &w4 = rows[1].m, &flt = rows[2].m, &gsq8 = rows[3].m;
  std::printf(
      "\nSummary: held-out loss before fine-tuning %.4f (fp32) and %.4f (W4); after, %.4f with "
      "float adapters and %.4f with GSQ 8-8-8.\nGSQ 8-8-8 vs float adapters: loss %+.4f nats "
      "(perplexity x%.4f), accounted training memory %.1f vs %.1f KiB (x%.2f), step time %.1f "
      "vs %.1f ms (x%.2f).\n",
      fp32.heldout_loss, w4.heldout_loss, flt.heldout_loss, gsq8.heldout_loss,
      gsq8.heldout_loss - flt.heldout_loss, std::exp(gsq8.heldout_loss - flt.heldout_loss),
      gsq8.accounted_bytes / 1024.0, flt.accounted_bytes / 1024.0,
      static_cast<double>(gsq8.accounted_bytes) / flt.accounted_bytes, gsq8.step_ms, flt.step_ms,
      gsq8.step_ms / flt.step_ms);
  const Measured& lota = rows.back().m;
  std::printf(
      "Merging into the 4-bit base: float adapters %.4f -> %.4f, GSQ 8-8-8 %.4f -> %.4f, "
      "LoTA-QAF %.4f (exact).\n",
      flt.heldout_loss, flt.merged_loss, gsq8.heldout_loss, gsq8.merged_loss, lota.merged_loss);
}

}  // namespace

int main(int argc, char** argv) {
  const finetune::Clock::time_point start = finetune::Clock::now();
  auto seconds = [&start] {
    return std::chrono::duration<double>(finetune::Clock::now() - start).count();
  };
  try {
    const Settings s = parse_args(argc, argv);
    const Model model = load_stories260k(s);
    const Dataset data = s.data.empty() ? generated_data(model, s) : text_data(model, s);
    std::printf(
        "Model: %s\nData: %s: %zu training and %zu held-out windows of %d tokens (ready after "
        "%.1f s).\n",
        model.description.c_str(),
        s.data.empty() ? "text the fp32 model wrote (seeded sampling, temperature 1)"
                       : s.data.c_str(),
        data.train.size(), data.heldout.size(), s.seq, seconds());
    std::printf("A held-out window: \"%s\"\n\n", model.decode(data.heldout.front()).c_str());

    mkdir(s.out.c_str(), 0755);
    const std::string export_path = s.out + "/gsq888_merged.bin";
    const long parent_rss_kib = finetune::current_rss_kib();
    // Every configuration of the table and of the sweep in one queue, s.jobs at a time.
    finetune::IsolatedRuns runs(s.jobs);
    std::printf(
        "Training: %d steps x %d windows of %zu tokens, rank %d, every configuration in its own "
        "process, %d at a time\n",
        s.train.steps, s.train.batch, data.train.front().size() - 1, s.train.rank, s.jobs);
    std::vector<Row> rows = comparison(runs, model, data, s.train, s.out, export_path);
    TrainSettings sweep_settings = s.train;
    sweep_settings.steps = s.sweep_steps;
    std::vector<finetune::SweepPoint> points;
    if (s.sweep_steps > 0) {
      std::printf("Sweep: GSE bits {5, 6, 8} x rank {4, 8, 16, 32, 64}, %d steps each\n",
                  s.sweep_steps);
      points = sweep(runs, model, data, sweep_settings);
    }
    const std::vector<Measured> measured = runs.wait();
    for (std::size_t i = 0; i < rows.size(); ++i) rows[i].m = measured[i];
    for (std::size_t i = 0; i < points.size(); ++i) points[i].m = measured[rows.size() + i];

    const std::string md =
        finetune::table_markdown(rows, s.data.empty()) + "\n" + footnotes(s, parent_rss_kib);
    std::printf("\n%s\n", md.c_str());
    finetune::write_file(s.out + "/table.md", md);
    finetune::write_file(s.out + "/table.csv", finetune::table_csv(rows));
    std::vector<std::string> written = {s.out + "/table.md", s.out + "/table.csv", export_path};
    // The export is an ordinary llama2.c checkpoint: read it back and run llama2.c's forward.
    std::printf(
        "Export: the GSQ 8-8-8 model with its adapters folded into float32 weights, in llama2.c "
        "format (%s; run it with llama2.c's run.c and the same tokenizer). llama2.c's forward on "
        "it: held-out loss %.4f (the trained row, with 8-bit activations: %.4f).\n\n",
        export_path.c_str(),
        finetune::heldout_loss_fp32(gsq::Llama2Weights::load(export_path), data.heldout),
        rows[3].m.heldout_loss);
    const finetune::RuntimeFiles runtime(s.out);
    written.push_back(runtime.base);
    double base_loss = 0, adapted_loss = 0;
    if (finetune::reload_runtime_files(s.out, data.heldout, base_loss, adapted_loss)) {
      written.push_back(runtime.adapter);
      written.push_back(runtime.peft + "/");
      std::printf(
          "Read back: gsq's GGUF reader and inference runner (integer engine, W4A8) on %s: "
          "held-out loss %.4f, with %s applied unmerged %.4f (the trained row: %.4f).\n",
          runtime.base.c_str(), base_loss, runtime.adapter.c_str(), adapted_loss,
          rows[3].m.heldout_loss);
      std::printf(
          "Run them:\n  llama-cli -m %s --lora %s -p \"Once upon a time\" -n 64\n"
          "  gsq generate --model %s --lora %s --prompt \"Once upon a time\" -n 64\n"
          "  (PEFT: %s/ holds adapter_config.json and adapter_model.safetensors for a "
          "transformers LlamaForCausalLM conversion of stories260K; it was trained against the "
          "4-bit base above, not the float weights)\n\n",
          runtime.base.c_str(), runtime.adapter.c_str(), runtime.base.c_str(),
          runtime.adapter.c_str(), runtime.peft.c_str());
    }
    // The LoTA-QAF row's merged model: its own file, no adapter.  The training model on it must
    // reproduce the row's merged loss bit for bit; the inference runner is another engine.
    const std::string lota = finetune::lota_file(s.out);
    written.push_back(lota);
    const double lota_row = rows.back().m.merged_loss;
    double lota_model = 0, lota_runner = 0;
    finetune::reload_lota_file(s.out, s.train, data.heldout, lota_model, lota_runner);
    if (lota_model != lota_row)
      throw std::runtime_error(finetune::format(
          "%s read back gives held-out loss %.17g, not the LoTA row's merged %.17g", lota.c_str(),
          lota_model, lota_row));
    std::printf(
        "Read back: %s (the LoTA-QAF row merged into the 4-bit codes, a stock Q4_0 GGUF with no "
        "adapter) through gsq's GGUF reader: the training model on it gives held-out loss %.4f, "
        "bit-identical to the row's merged %.4f; gsq's inference runner (integer engine, W4A8) "
        "%.4f (%+.1e: the runner is the other engine, one token at a time over a key/value "
        "cache, whose float arithmetic is not the training model's operation for operation; the "
        "file's weights are exact, see the training model's figure).\n"
        "Run it:\n  llama-cli -m %s -p \"Once upon a time\" -n 64\n"
        "  gsq generate --model %s --prompt \"Once upon a time\" -n 64\n\n",
        lota.c_str(), lota_model, lota_row, lota_runner, lota_runner - lota_row, lota.c_str(),
        lota.c_str());

    if (s.sweep_steps > 0) {
      finetune::write_file(s.out + "/sweep.csv", finetune::sweep_csv(points));
      finetune::write_file(
          s.out + "/sweep.svg",
          finetune::sweep_svg(
              points, finetune::format("%d steps per point; fp32 model %.3f, W4 "
                                       "without adapters %.3f",
                                       s.sweep_steps, rows[0].m.heldout_loss,
                                       rows[1].m.heldout_loss)));
      written.push_back(s.out + "/sweep.csv");
      written.push_back(s.out + "/sweep.svg");
    }
    summary(rows);
    std::printf("Files:");
    for (const std::string& f : written) std::printf(" %s", f.c_str());
    std::printf("\nTotal time: %.1f s\n", seconds());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finetune: %s\n", e.what());
    return 1;
  }
}
