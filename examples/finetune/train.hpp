// finetune/train.hpp: training and evaluating one configuration of examples/finetune.cpp, each
// in its own child process so that the peak RSS it reports is its own, several at a time.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/runner.hpp"
#include "gsq/nn/lota.hpp"
#include "gsq/optim.hpp"

namespace finetune {

using Clock = std::chrono::steady_clock;

/// printf into a std::string.
template <typename... Args>
std::string format(const char* fmt, Args... args) {
  const int n = std::snprintf(nullptr, 0, fmt, args...);
  std::string s(static_cast<std::size_t>(n) + 1, '\0');
  std::snprintf(&s[0], s.size(), fmt, args...);
  s.resize(static_cast<std::size_t>(n));
  return s;
}

/// Writes bytes (any contiguous container of char-sized values) to `path`, or throws.
template <typename Bytes>
void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) throw std::runtime_error("cannot write '" + path + "'");
}

/// Token windows, all of the same length: seq + 1 tokens, so seq next-token predictions each.
struct Dataset {
  std::vector<std::vector<int>> train;
  std::vector<std::vector<int>> heldout;
};

/// The hyper-parameters of a comparison: the same for every configuration in it.
struct TrainSettings {
  int steps = 150;
  int batch = 4;  ///< windows per optimizer step; their gradients are averaged
  int rank = 8;
  float lr = 3e-3f;     ///< peak of a cosine schedule with `warmup` linear warmup steps
  float alpha = 16.0f;  ///< LoRA alpha at every rank (the library default): scale alpha / rank
  int warmup = 10;
  float clip = 1.0f;  ///< gradient-norm clipping
  std::uint64_t seed = 1;
  int lota_rank = 16;       ///< the LoTA-QAF row's rank
  double lota_omega = 0.5;  ///< its marker threshold omega, as a fraction of its rank
  /// The progress line rewritten in place on a terminal; off when configurations run side by
  /// side (their lines would overwrite each other), which prints only each one's final line.
  bool live_progress = true;
};

/// What one configuration measured.  Plain data, so that a child process can send it back.
struct Measured {
  double heldout_loss = 0;  ///< mean next-token cross-entropy over the held-out windows, nats
  double step_ms = 0;       ///< median wall time of one optimizer step; 0 when nothing trained
  double tokens_per_s = 0;  ///< training tokens per second
  /// Bytes held for training: over all LoRA layers, the packed base, the float adapters and
  /// their gradients, and the activations saved for backward; plus the optimizer state.
  std::uint64_t accounted_bytes = 0;
  std::uint64_t temporary_bytes = 0;  ///< the largest temporary any layer reported
  long peak_rss_kib = 0;              ///< the process's peak resident set (getrusage)
  /// Held-out loss after merging the adapters into the 4-bit base (LoraLinear::merge
  /// requantizes W + s A B; LotaLinear::merge is exact); 0 when nothing was merged.
  double merged_loss = 0;
  double infer_ms = 0;  ///< wall time of one held-out window's forward, as the row infers
};

/// One line on stderr, rewritten in place: step/total, training loss (a moving average over
/// about the last 10 steps), tokens/s, ETA.  When stderr is not a terminal, or `live` is false,
/// only the final line is printed.
class Progress {
 public:
  Progress(std::string label, int total, int tokens_per_step, bool live = true)
      : label_(std::move(label)),
        total_(total),
        tokens_per_step_(tokens_per_step),
        tty_(live && isatty(STDERR_FILENO) != 0),
        start_(Clock::now()),
        last_(start_) {
    std::fflush(stdout);  // what the program printed so far comes before the progress line
  }

  void update(int done, double loss) {
    average_ = 0.9 * average_ + 0.1 * loss;
    weight_ = 0.9 * weight_ + 0.1;
    const Clock::time_point now = Clock::now();
    const bool last = done >= total_;
    if (!last && (!tty_ || now - last_ < std::chrono::milliseconds(100))) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = elapsed / done * (total_ - done);
    std::fprintf(stderr, "\r  %-34s step %4d/%d  loss %6.3f  %7.0f tok/s  %s %5.1f s ",
                 label_.c_str(), done, total_, average_ / weight_,
                 done * tokens_per_step_ / elapsed, last ? "took" : "ETA ", last ? elapsed : eta);
    if (last) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string label_;
  int total_;
  int tokens_per_step_;
  bool tty_;
  Clock::time_point start_, last_;
  double average_ = 0, weight_ = 0;  // the moving average of the loss, and its total weight
};

/// Mean next-token cross-entropy of the exact fp32 model (llama2.c's forward, token by token
/// with a key/value cache) over the windows.
inline double heldout_loss_fp32(const gsq::Llama2Weights& w,
                                const std::vector<std::vector<int>>& windows) {
  gsq::Llama2Runner runner(w);
  double total = 0;
  std::size_t count = 0;
  for (const std::vector<int>& tokens : windows) {
    total += runner.loss_sum(tokens);
    count += tokens.size() - 1;
  }
  return total / static_cast<double>(count);
}

/// Mean next-token cross-entropy of a LoRA model over the windows (all of the same length).
template <typename Model>
double heldout_loss(Model& model, const std::vector<std::vector<int>>& windows) {
  double total = 0;
  for (const std::vector<int>& tokens : windows) total += model.loss(tokens, /*backward=*/false);
  return total / static_cast<double>(windows.size());
}

/// The held-out loss of the quantized base alone: the adapters' B starts at zero.
template <typename Lora>
Measured evaluate_untrained(const gsq::Llama2Weights& w, const Dataset& data) {
  gsq::LoraOptions options;
  options.mode = gsq::LoraMode::kFloat;
  gsq::Llama2LoraModel<Lora> model(w, options);
  Measured m;
  m.heldout_loss = heldout_loss(model, data.heldout);
  return m;
}

/// Runs s.steps optimizer steps of `batch` windows each over `windows` (one seeded shuffle,
/// cycled), each micro-batch in one forward and backward (the gradients of the mean loss),
/// then update(step).  Returns each step's wall time in milliseconds.
template <typename Model, typename Update>
std::vector<double> train(Model& model, const std::vector<std::vector<int>>& windows,
                          const TrainSettings& s, const std::string& label, Update&& update) {
  std::vector<std::size_t> order(windows.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937_64 rng(s.seed);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);

  Progress progress(label, s.steps, s.batch * static_cast<int>(windows.front().size() - 1),
                    s.live_progress);
  std::vector<double> step_ms;
  std::vector<std::vector<int>> batch;
  std::size_t next = 0;
  for (int step = 0; step < s.steps; ++step) {
    const Clock::time_point start = Clock::now();
    model.zero_grad();
    batch.clear();
    for (int b = 0; b < s.batch; ++b) batch.push_back(windows[order[next++ % order.size()]]);
    const double loss = model.loss_batch(batch, /*backward=*/true);
    update(step);
    step_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    progress.update(step + 1, loss);
  }
  return step_ms;
}

/// Fills in what every trained row reports: accounted memory over the layers (and `extra`
/// bytes of optimizer state), step times, and the held-out loss with its forward time.
template <typename Model>
void measure(Model& model, const Dataset& data, const TrainSettings& s, std::vector<double> step_ms,
             std::uint64_t extra, Measured& m) {
  for (const auto* layer : model.loras()) {
    const gsq::LoraMemory mem = layer->memory();
    m.accounted_bytes +=
        mem.base + mem.adapter_master + mem.adapter_gradients + mem.saved_activations;
    m.temporary_bytes = std::max<std::uint64_t>(m.temporary_bytes, mem.largest_temporary);
  }
  m.accounted_bytes += extra;
  const double total_ms = std::accumulate(step_ms.begin(), step_ms.end(), 0.0);
  const double tokens = static_cast<double>(s.batch) * s.steps * (data.train.front().size() - 1);
  m.tokens_per_s = 1000.0 * tokens / total_ms;
  std::nth_element(step_ms.begin(), step_ms.begin() + step_ms.size() / 2, step_ms.end());
  m.step_ms = step_ms[step_ms.size() / 2];
  const Clock::time_point start = Clock::now();
  m.heldout_loss = heldout_loss(model, data.heldout);
  m.infer_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count() /
               static_cast<double>(data.heldout.size());
}

/// Trains adapters on every linear layer of a frozen Lora::WBits base, then evaluates, and with
/// `merge` evaluates again after merging the adapters into the base.  Every configuration sees
/// the same windows in the same order, the same adapter initialisation, schedule and optimizer
/// (AdamW with float state), so only the arithmetic differs.  `after_training`, when set, is
/// called with the trained model before any merge (the demo writes its files there).
/// `attention`: where the model's attention products run (float, or GSE).
template <typename Lora>
Measured train_adapters(
    const gsq::Llama2Weights& w, const Dataset& data, const TrainSettings& s, gsq::LoraMode mode,
    const std::string& label, bool merge = true,
    const std::function<void(const gsq::Llama2LoraModel<Lora>&)>& after_training = {},
    gsq::LoraMode attention = gsq::LoraMode::kFloat) {
  gsq::LoraOptions options;
  options.rank = s.rank;
  options.alpha = s.alpha;
  options.mode = mode;
  options.seed = s.seed;
  gsq::Llama2LoraModel<Lora> model(w, options);
  model.set_attention(attention);
  const std::vector<gsq::Parameter> params = model.parameters();
  gsq::AdamW adam(params);
  const gsq::CosineSchedule schedule{s.lr, s.warmup, s.steps};
  std::vector<double> step_ms = train(model, data.train, s, label, [&](int step) {
    gsq::clip_grad_norm(params, s.clip);
    adam.step(schedule(step));
  });
  Measured m;
  measure(model, data, s, std::move(step_ms), adam.state_bytes(), m);
  if (after_training) after_training(model);
  if (merge) {
    for (Lora* layer : model.loras()) layer->merge();
    m.merged_loss = heldout_loss(model, data.heldout);
  }
  return m;
}

/// The LoTA-QAF row's layer: ternary adapters on the 4-bit base, 8-bit activations and gradients.
using Lota = gsq::LotaLinear<4, 8, 8, 32>;

/// The LoTA-QAF row's layer options: rank s.lota_rank, seeded by s.seed.
inline gsq::LoraOptions lota_options(const TrainSettings& s) {
  gsq::LoraOptions options;
  options.rank = s.lota_rank;
  options.seed = s.seed;
  return options;
}

/// LoTA-QAF: ternary adapters of rank s.lota_rank (omega = s.lota_omega * rank) on the 4-bit
/// grid, t-SignSGD on its default q schedule over s.steps, integer gradients; evaluated after
/// the exact merge, so the held-out loss and the inference time are those of the merged model.
/// `after_merge`, when set, is called with the merged model (the demo writes its file there).
inline Measured train_lota(
    const gsq::Llama2Weights& w, const Dataset& data, const TrainSettings& s,
    const std::string& label,
    const std::function<void(const gsq::Llama2LoraModel<Lota>&)>& after_merge = {}) {
  gsq::Llama2LoraModel<Lota> model(w, lota_options(s));
  for (Lota* layer : model.loras()) layer->set_omega(s.lota_omega * s.lota_rank);
  std::vector<gsq::TernaryParameter<std::int64_t>> params;
  for (Lota* layer : model.loras()) {
    for (const auto& p : layer->parameters()) params.push_back(p);
  }
  gsq::TSignSchedule schedule;  // the paper's q: 0.95 -> 0.999 over 80 % of the steps -> 0.9999
  schedule.total_steps = s.steps;
  gsq::TSignSgd<std::int64_t> optimizer(params, schedule);
  std::vector<double> step_ms = train(model, data.train, s, label, [&](int) { optimizer.step(); });
  const double unmerged = heldout_loss(model, data.heldout);
  for (Lota* layer : model.loras()) layer->merge();
  Measured m;
  measure(model, data, s, std::move(step_ms), 0, m);
  // The merge is exact: every logit, so the loss, is bit-identical before and after.
  if (m.heldout_loss != unmerged)
    throw std::runtime_error(
        format("LoTA merge changed the held-out loss: %.17g -> %.17g", unmerged, m.heldout_loss));
  m.merged_loss = m.heldout_loss;
  if (after_merge) after_merge(model);
  return m;
}

/// This process's peak resident set in KiB (getrusage; KiB on Linux).
inline long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

/// This process's current resident set in KiB (Linux /proc/self/statm; 0 elsewhere).
inline long current_rss_kib() {
  long pages = 0, resident = 0;
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/// Runs functions returning a Measured, each in its own forked child (so that the peak RSS each
/// reports is its own), at most `jobs` at a time, and gives their results in the order they were
/// added.  A child that fails has printed why; wait() then throws std::runtime_error, after every
/// child has ended.
class IsolatedRuns {
 public:
  explicit IsolatedRuns(int jobs) : jobs_(static_cast<std::size_t>(std::max(1, jobs))) {}
  IsolatedRuns(const IsolatedRuns&) = delete;
  IsolatedRuns& operator=(const IsolatedRuns&) = delete;
  ~IsolatedRuns() {
    while (!running_.empty()) finish_one();  // only when an exception left children behind
  }

  /// Starts fn() in a child now, first waiting for one to end when `jobs` are running.  fn runs
  /// on a copy of this process, so what it reads needs only to exist when add() is called.
  template <typename Fn>
  void add(Fn&& fn) {
    while (running_.size() >= jobs_) finish_one();
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe() failed");
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork() failed");
    if (pid == 0) {
      close(fds[0]);
      int status = 0;
      try {
        Measured m = fn();
        m.peak_rss_kib = peak_rss_kib();
        status = write(fds[1], &m, sizeof m) == static_cast<ssize_t>(sizeof m) ? 0 : 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "\nfinetune: %s\n", e.what());
        status = 1;
      }
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(status);
    }
    close(fds[1]);
    running_.push_back({pid, fds[0], results_.size()});
    results_.emplace_back();
  }

  /// Waits for every child; their results in the order of add().
  std::vector<Measured> wait() {
    while (!running_.empty()) finish_one();
    if (failed_) throw std::runtime_error("a training run failed (see above)");
    return results_;
  }

 private:
  struct Child {
    pid_t pid;
    int fd;  // the pipe its Measured arrives on (it fits the pipe's buffer: no deadlock)
    std::size_t index;
  };

  void finish_one() {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    const auto it = std::find_if(running_.begin(), running_.end(),
                                 [pid](const Child& c) { return c.pid == pid; });
    if (it == running_.end()) {  // not ours, or waitpid failed: wait for ours one by one
      if (pid > 0) return;
      waitpid(running_.front().pid, &status, 0);
      return close_child(running_.begin(), status);
    }
    close_child(it, status);
  }

  void close_child(std::vector<Child>::iterator it, int status) {
    Measured m;
    const ssize_t got = read(it->fd, &m, sizeof m);
    close(it->fd);
    if (got == static_cast<ssize_t>(sizeof m) && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      results_[it->index] = m;
    } else {
      failed_ = true;
    }
    running_.erase(it);
  }

  std::size_t jobs_;
  std::vector<Child> running_;
  std::vector<Measured> results_;
  bool failed_ = false;
};

/// Runs fn() in a forked child and returns its Measured, with the child's own peak RSS.
/// Throws std::runtime_error if the child fails (it has printed why).
template <typename Fn>
Measured run_isolated(Fn&& fn) {
  IsolatedRuns run(1);
  run.add(std::forward<Fn>(fn));
  return run.wait().front();
}

}  // namespace finetune
