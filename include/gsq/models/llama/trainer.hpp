// trainer.hpp: LoRA fine-tuning of a LLaMA model on a TextDataset, with gradient accumulation,
// a step callback, and checkpoints that resume bit-identically.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/llama/trainer.hpp needs nlohmann/json (gsq::json)"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/fp.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/detail/sha256.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/io/checkpoint_file.hpp"
#include "gsq/models/llama/adapter.hpp"
#include "gsq/models/llama/dataset.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/adamw8bit.hpp"
#include "gsq/optim/clip.hpp"
#include "gsq/optim/schedule.hpp"
#include "gsq/optim/sgd.hpp"

namespace gsq {

// A training step
// ---------------------------------------------------------------------------------------------
//   1. grad_accum micro-batches of `batch` windows each are drawn in the data order (below).
//   2. Each runs forward and backward (LlamaLoraModel::loss_batch with the windows' masks).
//      With grad_accum > 1 the gradients are combined weighted by each micro-batch's counted
//      predictions (n_i / N, accumulated in float with detail::mul_add in micro-batch order),
//      so the step's gradient is that of the mean loss over all N counted predictions, as one
//      batch of batch * grad_accum windows would give, up to float rounding (and, in the GSE
//      modes, the stochastic rounding streams, which differ between the two).
//   3. clip_grad_norm(clip) over the targeted adapters, then one optimizer step at the learning
//      rate CosineSchedule{lr, warmup, total_steps, min_lr}(step).
// Only the targeted linears' A and B are optimizer parameters; the others keep B = 0 (their
// gradients are computed and ignored), so they add nothing to the model.
//
// Data order: epoch e visits the training windows in a permutation drawn from
// detail::Rng(seed ^ kDataStream, e) (Fisher-Yates); the position is (epoch, index), and a step
// that runs past the end of an epoch continues in the next one.
//
// Checkpoints (save_checkpoint / load_checkpoint; io/checkpoint.hpp's checksummed container,
// written atomically: temp file, fsync, rename, fsync of the directory) hold every layer's A, B
// and rounding step ("layer.<l>.<target>.a/b/step"), the model's step ("model.step"), the
// optimizer's state blob ("optimizer"), the step and the data position ("trainer.step",
// "trainer.epoch", "trainer.index"), and "trainer.config": the run's description, one
// "key=value" line each: every option that changes the trajectory, sha256 of the training
// windows and of the data file, and sha256 of the base (its configuration and every float of
// every tensor as the model read it).  The learning-rate schedule is a pure function of the step
// and the data order of (seed, epoch), so these restore the run exactly: training k steps,
// saving, loading into a new trainer and training on gives the adapters of an uninterrupted run
// bit for bit (tested for every optimizer, GSE and float modes, grad_accum 2).  Threads and the
// ISA are not part of the description: gsq's steps are bit-identical across both.

/// What a fine-tuning run does (the defaults are those of examples/finetune).
struct TrainOptions {
  int rank = 8;
  float alpha = 16.0f;
  /// The linears that get adapters; empty means all seven.
  std::vector<AdapterTarget> targets;
  /// Activations-gradients-adapters bits: "8-8-8", "6-6-6", "5-5-5" (GSE-INT, every matmul
  /// integer), "float" (QLoRA-style float adapters on the frozen low-bit base) or "fp8" (FP8
  /// E4M3/E5M2 operands, the comparison mode).
  std::string bits = "8-8-8";
  int base_bits = 4;       ///< the frozen base: GSE-INT4 (any bits) or GSE-INT8 (8-8-8, float, fp8)
  std::int64_t steps = 0;  ///< optimizer steps; 0: from epochs
  double epochs = 1.0;     ///< passes over the training windows, when steps == 0 (rounded up)
  int batch = 4;           ///< windows per micro-batch
  int grad_accum = 1;      ///< micro-batches per optimizer step
  float lr = 3e-3f;        ///< peak learning rate of the cosine schedule
  std::int64_t warmup = 10;         ///< linear warmup steps (capped at the total)
  float min_lr = 0.0f;              ///< the schedule's final learning rate
  std::string optimizer = "adamw";  ///< "adamw", "adamw8bit" or "sgd"
  float weight_decay = 0.0f;        ///< decoupled weight decay (all three optimizers)
  float clip = 1.0f;                ///< global gradient-norm clip; 0 disables
  float momentum = 0.9f;            ///< SGD's heavy-ball momentum
  std::uint64_t seed = 1;           ///< adapter initialisation, rounding streams and the data order
  int threads = 0;                  ///< 0: gsq chooses (changes no bit of the result)
  /// Keep each frozen base's W^T packed for backward (LoraOptions::cache_transposed_base):
  /// 1.125 more bytes per base weight for a faster backward; changes no bit of the result.
  bool cache_transposed_base = false;
  /// With a checkpoint_path, train() writes a checkpoint there every save_every steps and after
  /// the last one.
  std::int64_t save_every = 0;
  std::string checkpoint_path;
};

/// What the step callback sees after each optimizer step.
struct StepInfo {
  std::int64_t step = 0;  ///< steps done (1 after the first)
  std::int64_t total_steps = 0;
  std::int64_t epoch = 0;     ///< the epoch of the next window
  double loss = 0;            ///< mean loss over the step's counted predictions, nats
  float lr = 0;               ///< the learning rate this step used
  float grad_norm = 0;        ///< before clipping
  std::int64_t tokens = 0;    ///< predictions computed this step (windows * seq)
  double tokens_per_s = 0;    ///< since train() was called
  double elapsed_s = 0;       ///< since train() was called
  bool checkpointed = false;  ///< save_every wrote a checkpoint after this step
};

namespace trainer_detail {

inline constexpr std::uint64_t kDataStream = 0xDA7A0D3Eull;

/// A weight source that hashes what it serves: the base's fingerprint as the model reads it.
class HashingSource final : public LlamaWeightSource {
 public:
  explicit HashingSource(const LlamaWeightSource& inner) : inner_(inner) {
    const LlamaConfig& c = inner.config();
    char text[512];
    const int n =
        std::snprintf(text, sizeof text,
                      "dim %d hidden %d layers %d heads %d kv %d head %d vocab %d seq %d "
                      "theta %.17g eps %.9g tied %d scaling %.17g freqs %zu",
                      c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
                      c.vocab_size, c.seq_len, c.rope_theta, static_cast<double>(c.norm_eps),
                      c.tied_classifier ? 1 : 0, c.rope_scaling.factor, c.rope_freq_factors.size());
    sha_.update(text, static_cast<std::size_t>(std::max(n, 0)));
    sha_.update(c.rope_freq_factors.data(), c.rope_freq_factors.size() * sizeof(float));
  }
  const LlamaConfig& config() const noexcept override { return inner_.config(); }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    inner_.read(t, layer, out);
    const std::int32_t head[2] = {static_cast<std::int32_t>(t), layer};
    sha_.update(head, sizeof head);
    sha_.update(out.data(), out.size() * sizeof(float));
  }
  std::string hex() const { return sha_.hex(); }

 private:
  const LlamaWeightSource& inner_;
  mutable detail::Sha256 sha_;
};

/// The model behind the trainer, its layer type chosen at run time.
class ModelSlot {
 public:
  virtual ~ModelSlot() = default;
  virtual double loss_batch(const std::vector<std::vector<int>>& windows,
                            const std::vector<std::vector<std::uint8_t>>& masks, bool backward) = 0;
  virtual void zero_grad() = 0;
  /// A and B of the targeted linears, layer by layer in AdapterTarget order.
  virtual std::vector<Parameter> parameters(const std::vector<AdapterTarget>& targets) = 0;
  virtual void save(CheckpointWriter& w) const = 0;
  virtual void check(const CheckpointReader& r) const = 0;
  virtual void load(const CheckpointReader& r) = 0;
  virtual LlamaAdapter adapter(const std::string& format, const std::string& sha256,
                               const std::vector<AdapterTarget>& targets) const = 0;
  virtual LlamaMemory memory() const = 0;
  virtual const LlamaConfig& config() const noexcept = 0;
};

template <typename Lora>
class ModelOf final : public ModelSlot {
 public:
  ModelOf(const LlamaWeightSource& source, const LoraOptions& options) : model_(source, options) {}
  double loss_batch(const std::vector<std::vector<int>>& windows,
                    const std::vector<std::vector<std::uint8_t>>& masks, bool backward) override {
    return model_.loss_batch(windows, masks, backward);
  }
  void zero_grad() override { model_.zero_grad(); }
  std::vector<Parameter> parameters(const std::vector<AdapterTarget>& targets) override {
    std::vector<Parameter> out;
    const std::vector<Lora*> loras = model_.loras();
    for (std::size_t l = 0; l * kAdapterTargets < loras.size(); ++l) {
      for (AdapterTarget t : targets) {
        Lora* p = loras[l * kAdapterTargets + static_cast<std::size_t>(t)];
        out.push_back({p->a().data(), p->grad_a().data(), p->a().size()});
        out.push_back({p->b().data(), p->grad_b().data(), p->b().size()});
      }
    }
    return out;
  }
  void save(CheckpointWriter& w) const override {
    const std::vector<const Lora*> loras = model_.loras();
    for (std::size_t i = 0; i < loras.size(); ++i) loras[i]->save_to(w, prefix(i));
    w.add_int64("model.step", model_.step());
  }
  void check(const CheckpointReader& r) const override {
    const std::vector<const Lora*> loras = model_.loras();
    for (std::size_t i = 0; i < loras.size(); ++i) loras[i]->check(r, prefix(i));
    (void)r.int64("model.step");
  }
  void load(const CheckpointReader& r) override {
    const std::vector<Lora*> loras = model_.loras();
    for (std::size_t i = 0; i < loras.size(); ++i) loras[i]->load_from(r, prefix(i));
    model_.set_step(r.int64("model.step"));
  }
  LlamaAdapter adapter(const std::string& format, const std::string& sha256,
                       const std::vector<AdapterTarget>& targets) const override {
    return adapter_from_model(model_, format, sha256, targets);
  }
  LlamaMemory memory() const override { return model_.memory(); }
  const LlamaConfig& config() const noexcept override { return model_.config(); }

 private:
  static std::string prefix(std::size_t i) {
    return "layer." + std::to_string(i / kAdapterTargets) + "." +
           to_string(static_cast<AdapterTarget>(i % kAdapterTargets)) + ".";
  }
  LlamaLoraModel<Lora> model_;
};

/// The optimizer behind the trainer.
class OptimizerSlot {
 public:
  virtual ~OptimizerSlot() = default;
  virtual void step(float lr) = 0;
  virtual void save(std::vector<std::uint8_t>& out) const = 0;
  virtual void load(const std::vector<std::uint8_t>& blob) = 0;
  virtual std::size_t state_bytes() const noexcept = 0;
};

template <typename O>
class OptimizerOf final : public OptimizerSlot {
 public:
  explicit OptimizerOf(O o) : o_(std::move(o)) {}
  void step(float lr) override { o_.step(lr); }
  void save(std::vector<std::uint8_t>& out) const override { o_.save_state(out); }
  void load(const std::vector<std::uint8_t>& blob) override {
    o_.load_state(blob.data(), blob.size());
  }
  std::size_t state_bytes() const noexcept override { return o_.state_bytes(); }

 private:
  O o_;
};

inline std::string format_float(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace trainer_detail

/// "q,k,v,o,gate,down,up" (AdapterTarget order) of a target list; empty means all seven.
inline std::string targets_string(const std::vector<AdapterTarget>& targets) {
  std::string s;
  for (AdapterTarget t : targets) s += (s.empty() ? "" : ",") + std::string(to_string(t));
  return s;
}

/// Parses "q,k,v,o,gate,up,down" (any order, any subset, no repeats needed); throws
/// "trainer: unknown target 'x' (q, k, v, o, gate, up, down)".
inline std::vector<AdapterTarget> parse_targets(const std::string& list) {
  std::vector<AdapterTarget> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    std::size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    const std::string name = list.substr(pos, end - pos);
    AdapterTarget t{};
    GSQ_CHECK(adapter_target_from_string(name, t), "trainer: unknown target '", name,
              "' (q, k, v, o, gate, up, down)");
    out.push_back(t);
    pos = end + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// LoRA fine-tuning of a LLaMA model (see "A training step" and "Checkpoints" above).  The
/// layer type (bits, base_bits) is chosen at run time behind one interface.  Not thread-safe.
class LlamaTrainer {
 public:
  using Callback = std::function<bool(const StepInfo&)>;

  /// Builds the model from `source` (read once; it need not outlive the trainer), the
  /// optimizer and the data order.  Throws std::invalid_argument "trainer: ..." for bad
  /// options (unknown bits or optimizer, a seq longer than the model's context, no training
  /// window, ...).
  LlamaTrainer(const LlamaWeightSource& source, const TrainOptions& options, TextDataset data)
      : options_(options), data_(std::move(data)) {
    if (options_.targets.empty()) {
      for (int i = 0; i < kAdapterTargets; ++i)
        options_.targets.push_back(static_cast<AdapterTarget>(i));
    }
    std::sort(options_.targets.begin(), options_.targets.end());
    options_.targets.erase(std::unique(options_.targets.begin(), options_.targets.end()),
                           options_.targets.end());
    const LlamaConfig& c = source.config();
    GSQ_CHECK(!data_.train.empty(), "trainer: the data set has no training window");
    for (const auto& w : data_.train.tokens)
      GSQ_CHECK(static_cast<int>(w.size()) == data_.seq + 1, "trainer: a training window has ",
                w.size(), " tokens, the data set's seq + 1 is ", data_.seq + 1);
    GSQ_CHECK(data_.train.masks.size() == data_.train.size() &&
                  data_.eval.masks.size() == data_.eval.size(),
              "trainer: every window needs a mask");
    GSQ_CHECK(data_.seq >= 1 && data_.seq <= c.seq_len, "trainer: seq ", data_.seq,
              " is outside [1, ", c.seq_len, "], the model's context");
    GSQ_CHECK(options_.batch >= 1 && options_.grad_accum >= 1, "trainer: batch (", options_.batch,
              ") and grad_accum (", options_.grad_accum, ") must be >= 1");
    GSQ_CHECK(options_.steps >= 0 && std::isfinite(options_.epochs) && options_.epochs >= 0 &&
                  options_.epochs <= 1e6,
              "trainer: steps must be >= 0 and epochs in [0, 1e6]");
    GSQ_CHECK(options_.warmup >= 0 && options_.save_every >= 0,
              "trainer: warmup and save_every must be >= 0");
    GSQ_CHECK(std::isfinite(options_.clip) && options_.clip >= 0, "trainer: clip ", options_.clip,
              " must be finite and >= 0");
    GSQ_CHECK(data_.train.size() < (std::size_t{1} << 32), "trainer: more than 2^32 windows");
    const std::int64_t per_step = static_cast<std::int64_t>(options_.batch) * options_.grad_accum;
    total_steps_ = options_.steps > 0
                       ? options_.steps
                       : std::max<std::int64_t>(
                             1, static_cast<std::int64_t>(std::ceil(
                                    options_.epochs * static_cast<double>(data_.train.size()) /
                                    static_cast<double>(per_step))));

    LoraOptions lo;
    lo.rank = options_.rank;
    lo.alpha = options_.alpha;
    lo.seed = options_.seed;
    lo.matmul.threads = options_.threads;
    lo.cache_transposed_base = options_.cache_transposed_base;
    lo.mode = options_.bits == "float" ? LoraMode::kFloat
              : options_.bits == "fp8" ? LoraMode::kFp8
                                       : LoraMode::kGse;
    GSQ_CHECK(options_.rank >= 1 && options_.rank <= 4096, "trainer: rank ", options_.rank,
              " is outside [1, 4096]");
    GSQ_CHECK(std::isfinite(options_.alpha) && options_.alpha > 0, "trainer: alpha ",
              options_.alpha, " must be finite and > 0");
    trainer_detail::HashingSource hashed(source);
    model_ = make_model(hashed, lo);
    base_sha256_ = hashed.hex();

    params_ = model_->parameters(options_.targets);
    if (options_.grad_accum > 1) {
      accum_.resize(params_.size());
      for (std::size_t k = 0; k < params_.size(); ++k) accum_[k].assign(params_[k].size, 0.0f);
    }
    if (options_.optimizer == "adamw") {
      optimizer_ = std::make_unique<trainer_detail::OptimizerOf<AdamW>>(
          AdamW(params_, 0.9f, 0.999f, 1e-8f, options_.weight_decay));
    } else if (options_.optimizer == "adamw8bit") {
      optimizer_ = std::make_unique<trainer_detail::OptimizerOf<AdamW8bit>>(
          AdamW8bit(params_, 0.9f, 0.999f, 1e-8f, options_.weight_decay));
    } else if (options_.optimizer == "sgd") {
      optimizer_ = std::make_unique<trainer_detail::OptimizerOf<Sgd>>(
          Sgd(params_, options_.momentum, options_.weight_decay));
    } else {
      GSQ_CHECK(false, "trainer: unknown optimizer '", options_.optimizer,
                "' (adamw, adamw8bit, sgd)");
    }
    schedule_ = CosineSchedule{options_.lr, std::min(options_.warmup, total_steps_), total_steps_,
                               options_.min_lr};
    GSQ_CHECK(std::isfinite(options_.lr) && options_.lr >= 0 && std::isfinite(options_.min_lr) &&
                  options_.min_lr >= 0,
              "trainer: lr and min_lr must be finite and >= 0");
    data_sha256_ = windows_sha256(data_.train);
    config_ = describe();
    shuffle();
  }

  LlamaTrainer(const LlamaTrainer&) = delete;
  LlamaTrainer& operator=(const LlamaTrainer&) = delete;

  const TrainOptions& options() const noexcept { return options_; }
  const TextDataset& dataset() const noexcept { return data_; }
  const LlamaConfig& config() const noexcept { return model_->config(); }
  std::int64_t step() const noexcept { return step_; }
  std::int64_t total_steps() const noexcept { return total_steps_; }
  /// The data position: the epoch and the index of the next window within its order.
  std::int64_t epoch() const noexcept { return epoch_; }
  std::int64_t data_index() const noexcept { return static_cast<std::int64_t>(index_); }
  /// sha256 of the base (its configuration and tensors as read), lowercase hex.
  const std::string& base_fingerprint() const noexcept { return base_sha256_; }
  /// The run's description stored in checkpoints ("key=value" lines).
  const std::string& run_description() const noexcept { return config_; }

  /// Mean loss over the eval windows' counted predictions (forward only, `batch` windows at a
  /// time; changes no training state).  Throws "trainer: no eval windows" when there are none.
  double eval_loss() { return windows_loss(data_.eval, "eval"); }
  /// The same over the training windows, in file order.
  double train_loss() { return windows_loss(data_.train, "training"); }

  /// Runs steps until total_steps() or until `callback` (called after every step, when given)
  /// returns false.  Returns true when training is complete.  The callback may call
  /// save_checkpoint(): the trainer is between steps.  Throws what the model or optimizer throw
  /// (e.g. "clip_grad_norm: gradient ... holds NaN"); the state is then undefined.
  bool train(const Callback& callback = {}) {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    std::int64_t tokens = 0;
    while (step_ < total_steps_) {
      StepInfo info = run_step();
      tokens += info.tokens;
      info.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
      info.tokens_per_s = info.elapsed_s > 0 ? static_cast<double>(tokens) / info.elapsed_s : 0;
      if (options_.save_every > 0 && !options_.checkpoint_path.empty() &&
          (step_ % options_.save_every == 0 || step_ == total_steps_)) {
        save_checkpoint(options_.checkpoint_path);
        info.checkpointed = true;
      }
      if (callback && !callback(info)) break;
    }
    return step_ >= total_steps_;
  }

  /// Writes the checkpoint (see "Checkpoints") atomically to `path`.
  void save_checkpoint(const std::string& path) const {
    CheckpointWriter w;
    const std::string& c = config_;
    w.add_bytes("trainer.config", std::vector<std::uint8_t>(c.begin(), c.end()));
    w.add_int64("trainer.step", step_);
    w.add_int64("trainer.epoch", epoch_);
    w.add_int64("trainer.index", static_cast<std::int64_t>(index_));
    model_->save(w);
    std::vector<std::uint8_t> blob;
    optimizer_->save(blob);
    w.add_bytes("optimizer", std::move(blob));
    gsq::save_checkpoint(w, path);
  }

  /// Restores a checkpoint of this run.  Throws std::invalid_argument, changing nothing:
  /// "checkpoint: ..." for an unreadable, truncated or corrupt file (checksum), and
  /// "checkpoint: 'path' was written for <key> = <theirs>, this run has <key> = <ours>" for a
  /// checkpoint of another run, configuration, data or base.
  void load_checkpoint(const std::string& path) {
    const CheckpointReader r = gsq::load_checkpoint(path);
    GSQ_CHECK(r.has("trainer.config"), "checkpoint: '", path,
              "' is not a gsq training checkpoint (no trainer.config entry)");
    const std::vector<std::uint8_t>& bytes = r.bytes("trainer.config");
    check_same_run(path, std::string(bytes.begin(), bytes.end()));
    const std::int64_t step = r.int64("trainer.step");
    const std::int64_t epoch = r.int64("trainer.epoch");
    const std::int64_t index = r.int64("trainer.index");
    GSQ_CHECK(step >= 0 && step <= total_steps_ && epoch >= 0 && index >= 0 &&
                  static_cast<std::uint64_t>(index) <= data_.train.size(),
              "checkpoint: '", path, "' holds an impossible position (step ", step, " of ",
              total_steps_, ", epoch ", epoch, ", index ", index, " of ", data_.train.size(), ")");
    model_->check(r);
    optimizer_->load(r.bytes("optimizer"));  // all or nothing
    model_->load(r);
    step_ = step;
    epoch_ = epoch;
    index_ = static_cast<std::size_t>(index);
    shuffle();
  }

  /// The adapters of the targeted linears (adapter_from_model), naming the base they were
  /// trained on (`base_format` "gguf", "hf" or "llama2c" and the base file's sha256).
  LlamaAdapter adapter(const std::string& base_format = "",
                       const std::string& base_sha256 = "") const {
    return model_->adapter(base_format, base_sha256, options_.targets);
  }

  /// Bytes the model holds, and the optimizer's state.
  LlamaMemory memory() const { return model_->memory(); }
  std::size_t optimizer_bytes() const noexcept { return optimizer_->state_bytes(); }

 private:
  std::unique_ptr<trainer_detail::ModelSlot> make_model(const LlamaWeightSource& s,
                                                        const LoraOptions& o) {
    using trainer_detail::ModelOf;
    const std::string& b = options_.bits;
    GSQ_CHECK(b == "8-8-8" || b == "6-6-6" || b == "5-5-5" || b == "float" || b == "fp8",
              "trainer: unknown bits '", b, "' (8-8-8, 6-6-6, 5-5-5, float, fp8)");
    GSQ_CHECK(options_.base_bits == 4 || options_.base_bits == 8, "trainer: base_bits ",
              options_.base_bits, " is not built (4, or 8 with 8-8-8, float and fp8)");
    if (options_.base_bits == 8) {
      GSQ_CHECK(b != "6-6-6" && b != "5-5-5", "trainer: bits ", b,
                " with base_bits 8 is not built (8-8-8, float, fp8)");
      return std::make_unique<ModelOf<LoraLinear<8, 8, 8, 8, 32>>>(s, o);
    }
    if (b == "6-6-6") return std::make_unique<ModelOf<LoraLinear<4, 6, 6, 6, 32>>>(s, o);
    if (b == "5-5-5") return std::make_unique<ModelOf<LoraLinear<4, 5, 5, 5, 32>>>(s, o);
    return std::make_unique<ModelOf<LoraLinear<4, 8, 8, 8, 32>>>(s, o);
  }

  static std::string windows_sha256(const TextWindows& w) {
    detail::Sha256 sha;
    for (std::size_t i = 0; i < w.size(); ++i) {
      for (int t : w.tokens[i]) {
        const std::uint8_t b[4] = {static_cast<std::uint8_t>(t), static_cast<std::uint8_t>(t >> 8),
                                   static_cast<std::uint8_t>(t >> 16),
                                   static_cast<std::uint8_t>(t >> 24)};
        sha.update(b, 4);
      }
      sha.update(w.masks[i].data(), w.masks[i].size());
    }
    return sha.hex();
  }

  /// The "key=value" lines a checkpoint must match.
  std::string describe() const {
    using trainer_detail::format_float;
    const TrainOptions& o = options_;
    std::string s;
    auto put = [&s](const char* key, const std::string& value) {
      s += key;
      s += '=';
      s += value;
      s += '\n';
    };
    put("format", "gsq-trainer-1");
    put("bits", o.bits);
    put("base_bits", std::to_string(o.base_bits));
    put("rank", std::to_string(o.rank));
    put("alpha", format_float(o.alpha));
    put("targets", targets_string(o.targets));
    put("optimizer", o.optimizer);
    put("lr", format_float(o.lr));
    put("min_lr", format_float(o.min_lr));
    put("warmup", std::to_string(o.warmup));
    put("weight_decay", format_float(o.weight_decay));
    put("clip", format_float(o.clip));
    if (o.optimizer == "sgd") put("momentum", format_float(o.momentum));
    put("seed", std::to_string(o.seed));
    put("total_steps", std::to_string(total_steps_));
    put("batch", std::to_string(o.batch));
    put("grad_accum", std::to_string(o.grad_accum));
    put("seq", std::to_string(data_.seq));
    put("data_file_sha256", data_.sha256);
    put("data_windows_sha256", data_sha256_);
    put("base_sha256", base_sha256_);
    return s;
  }

  /// Throws naming the first key whose value differs between `theirs` and this run.
  void check_same_run(const std::string& path, const std::string& theirs) const {
    auto lines = [](const std::string& text) {
      std::vector<std::pair<std::string, std::string>> out;
      std::size_t pos = 0;
      while (pos < text.size()) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        const std::string line = text.substr(pos, end - pos);
        const std::size_t eq = line.find('=');
        out.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
        pos = end + 1;
      }
      return out;
    };
    const auto ours = lines(config_), them = lines(theirs);
    for (const auto& [key, value] : ours) {
      std::string other = "(missing)";
      for (const auto& kv : them) {
        if (kv.first == key) other = kv.second;
      }
      GSQ_CHECK(other == value, "checkpoint: '", path, "' was written for ", key, " = ", other,
                ", this run has ", key, " = ", value,
                " (a checkpoint of another run, data or base; it is not resumed)");
    }
    GSQ_CHECK(ours.size() == them.size(), "checkpoint: '", path,
              "' describes a run with other settings (", them.size(), " entries, this run ",
              ours.size(), ")");
  }

  /// The permutation of the current epoch.
  void shuffle() {
    const std::size_t n = data_.train.size();
    order_.resize(n);
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    detail::Rng rng(options_.seed ^ trainer_detail::kDataStream,
                    static_cast<std::uint64_t>(epoch_));
    for (std::size_t i = n; i > 1; --i)
      std::swap(order_[i - 1], order_[rng.below(static_cast<std::uint32_t>(i))]);
  }

  std::size_t next_window() {
    if (index_ >= order_.size()) {
      ++epoch_;
      index_ = 0;
      shuffle();
    }
    return order_[index_++];
  }

  StepInfo run_step() {
    const int accum = options_.grad_accum;
    std::vector<std::vector<std::vector<int>>> windows(static_cast<std::size_t>(accum));
    std::vector<std::vector<std::vector<std::uint8_t>>> masks(windows.size());
    std::vector<std::int64_t> counted(windows.size(), 0);
    std::int64_t total = 0;
    for (std::size_t a = 0; a < windows.size(); ++a) {
      for (int b = 0; b < options_.batch; ++b) {
        const std::size_t i = next_window();
        windows[a].push_back(data_.train.tokens[i]);
        masks[a].push_back(data_.train.masks[i]);
        for (std::uint8_t m : data_.train.masks[i]) counted[a] += m != 0;
      }
      total += counted[a];
    }
    double loss = 0;
    for (std::size_t a = 0; a < windows.size(); ++a) {
      model_->zero_grad();
      const double l = model_->loss_batch(windows[a], masks[a], true);
      loss += l * static_cast<double>(counted[a]);
      if (accum == 1) break;
      const auto w =
          static_cast<float>(static_cast<double>(counted[a]) / static_cast<double>(total));
      for (std::size_t k = 0; k < params_.size(); ++k) {
        float* acc = accum_[k].data();
        const float* g = params_[k].grad;
        for (std::size_t i = 0; i < params_[k].size; ++i)
          acc[i] = a == 0 ? w * g[i] : detail::mul_add(w, g[i], acc[i]);
      }
    }
    if (accum > 1) {
      for (std::size_t k = 0; k < params_.size(); ++k)
        std::copy(accum_[k].begin(), accum_[k].end(), params_[k].grad);
    }
    StepInfo info;
    info.grad_norm = clip_grad_norm(params_, options_.clip);
    info.lr = schedule_(step_);
    optimizer_->step(info.lr);
    ++step_;
    info.step = step_;
    info.total_steps = total_steps_;
    info.epoch = epoch_;
    info.loss = loss / static_cast<double>(total);
    info.tokens = static_cast<std::int64_t>(accum) * options_.batch * data_.seq;
    return info;
  }

  double windows_loss(const TextWindows& w, const char* what) {
    GSQ_CHECK(!w.empty(), "trainer: no ", what, " windows");
    double sum = 0;
    std::int64_t count = 0;
    const auto batch = static_cast<std::size_t>(options_.batch);
    for (std::size_t first = 0; first < w.size(); first += batch) {
      const std::size_t last = std::min(w.size(), first + batch);
      const std::vector<std::vector<int>> tokens(w.tokens.begin() + first, w.tokens.begin() + last);
      const std::vector<std::vector<std::uint8_t>> masks(w.masks.begin() + first,
                                                         w.masks.begin() + last);
      std::int64_t n = 0;
      for (const auto& m : masks) {
        for (std::uint8_t v : m) n += v != 0;
      }
      if (n == 0) continue;
      sum += model_->loss_batch(tokens, masks, false) * static_cast<double>(n);
      count += n;
    }
    GSQ_CHECK(count > 0, "trainer: the ", what, " windows hold no counted prediction");
    return sum / static_cast<double>(count);
  }

  TrainOptions options_;
  TextDataset data_;
  std::int64_t total_steps_ = 0;
  std::unique_ptr<trainer_detail::ModelSlot> model_;
  std::unique_ptr<trainer_detail::OptimizerSlot> optimizer_;
  std::vector<Parameter> params_;
  std::vector<std::vector<float>> accum_;  // the combined gradient, grad_accum > 1
  CosineSchedule schedule_{0, 0, 0, 0};
  std::string base_sha256_, data_sha256_, config_;
  std::int64_t step_ = 0;
  std::int64_t epoch_ = 0;
  std::size_t index_ = 0;
  std::vector<std::size_t> order_;
};

}  // namespace gsq
