// optim.hpp: optimizers (SGD, AdamW, 8-bit AdamW), learning-rate schedules and gradient clipping
// for LoRA adapters, over any set of float parameters owned elsewhere.
//
// Optimizers are separate from layers: they see only Parameter {value, grad, size} triples and
// never allocate or free the tensors themselves.  One call of step(lr) applies one update from the
// current gradients (it does not zero them; call zero_grad()).  Everything is single-threaded,
// deterministic and free of global floating-point state: the same binary given the same inputs
// produces bit-identical parameters, also across save_state / load_state.
//
// Non-finite gradients are not checked by step() (that would cost a pass per step); they give
// unspecified but memory-safe results.  clip_grad_norm() rejects them, so calling it every step
// (with max_norm <= 0 for no clipping) guards the optimizer.
//
// State blobs (save_state / load_state), all integers and floats little-endian:
//   u8[4]  magic "GSQO"
//   u32    tag: 1 Sgd, 2 AdamW, 3 AdamW8bit
//   u32    version (kOptimizerStateVersion)
//   i64    step counter
//   layout, by tag: Sgd: u32 1 if momentum buffers follow, else 0; AdamW: nothing;
//                   AdamW8bit: u64 block_size, u64 min_8bit_size
//   u64    parameter count, then one u64 size per parameter
//   arrays, parameter by parameter (see each optimizer)
// Hyper-parameters (momentum, betas, eps, weight decay) are not part of the state: construct the
// restored optimizer with the values you want.  load_state checks everything before it changes
// anything: on error it throws std::invalid_argument and the optimizer is left as it was.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/fp.hpp"
#include "gsq/io/byte_io.hpp"

namespace gsq {

/// One trainable tensor: `size` float master values and their gradient (same size), owned
/// elsewhere.  Both pointers must stay valid while an optimizer uses them; they may be null only
/// when size == 0.
struct Parameter {
  float* value;
  float* grad;
  std::size_t size;
};

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules
// ---------------------------------------------------------------------------------------------

/// Linear warmup from lr / warmup_steps to lr: lr(step) = lr * (step + 1) / warmup_steps for
/// step < warmup_steps, then lr.  Computed in double, rounded once to float.
/// Throws std::invalid_argument for step < 0 or warmup_steps < 0.
struct ConstantWithWarmup {
  float lr;
  std::int64_t warmup_steps;

  float operator()(std::int64_t step) const {
    GSQ_CHECK(step >= 0 && warmup_steps >= 0, "ConstantWithWarmup: step (", step,
              ") and warmup_steps (", warmup_steps, ") must be >= 0");
    if (step < warmup_steps) {
      return static_cast<float>(static_cast<double>(lr) * static_cast<double>(step + 1) /
                                static_cast<double>(warmup_steps));
    }
    return lr;
  }
};

/// Linear warmup as in ConstantWithWarmup, then cosine decay from lr to min_lr:
///   lr(step) = min_lr + (lr - min_lr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
/// for warmup_steps <= step < total_steps, and min_lr for step >= total_steps.  So
/// lr(warmup_steps) = lr, the midpoint of the decay gives (lr + min_lr) / 2 and
/// lr(total_steps) = min_lr.  Computed in double, rounded once to float.
/// Throws std::invalid_argument for step < 0, warmup_steps < 0 or total_steps < warmup_steps.
struct CosineSchedule {
  float lr;
  std::int64_t warmup_steps;
  std::int64_t total_steps;
  float min_lr = 0.0f;

  float operator()(std::int64_t step) const {
    GSQ_CHECK(step >= 0 && warmup_steps >= 0 && total_steps >= warmup_steps,
              "CosineSchedule: need step >= 0 and 0 <= warmup_steps <= total_steps (step ", step,
              ", warmup_steps ", warmup_steps, ", total_steps ", total_steps, ")");
    if (step < warmup_steps) {
      return static_cast<float>(static_cast<double>(lr) * static_cast<double>(step + 1) /
                                static_cast<double>(warmup_steps));
    }
    if (step >= total_steps) return min_lr;
    constexpr double kPi = 3.14159265358979323846;
    const double progress =
        static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    const double lo = min_lr;
    const double hi = lr;
    // An explicit fma: the same rounding whether or not the compiler contracts (detail/fp.hpp).
    return static_cast<float>(std::fma((hi - lo) * 0.5, 1.0 + std::cos(kPi * progress), lo));
  }
};

// ---------------------------------------------------------------------------------------------
// Gradient clipping
// ---------------------------------------------------------------------------------------------

/// Returns the global L2 norm of all gradients, sum of squares accumulated in double over the
/// parameters in order and their elements in order, rounded once to float.  If max_norm > 0 and
/// the norm exceeds it, every gradient element is multiplied by max_norm / norm (in double, one
/// rounding to float per element), so the new norm is max_norm up to float rounding.  No-op
/// otherwise.  Throws std::invalid_argument, before changing anything, if a gradient holds NaN or
/// Inf (the message names the parameter index and element), if a parameter with size > 0 has a
/// null grad, or if max_norm is NaN.
inline float clip_grad_norm(const std::vector<Parameter>& params, float max_norm) {
  GSQ_CHECK(!std::isnan(max_norm), "clip_grad_norm: max_norm is NaN");
  double sum = 0.0;
  for (std::size_t k = 0; k < params.size(); ++k) {
    const Parameter& p = params[k];
    GSQ_CHECK(p.size == 0 || p.grad != nullptr, "clip_grad_norm: parameter ", k,
              " has a null grad and size ", p.size);
    for (std::size_t i = 0; i < p.size; ++i) {
      const double g = p.grad[i];
      GSQ_CHECK(std::isfinite(g), "clip_grad_norm: gradient of parameter ", k, " holds ",
                std::isnan(g) ? "NaN" : "Inf", " at element ", i);
      sum += g * g;
    }
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0.0f && norm > static_cast<double>(max_norm)) {
    const double scale = static_cast<double>(max_norm) / norm;
    for (const Parameter& p : params) {
      for (std::size_t i = 0; i < p.size; ++i) {
        p.grad[i] = static_cast<float>(static_cast<double>(p.grad[i]) * scale);
      }
    }
  }
  return static_cast<float>(norm);
}

/// Version of the state blob layout written by save_state (see the top of this file).
inline constexpr std::uint32_t kOptimizerStateVersion = 1;

namespace detail {

// ---------------------------------------------------------------------------------------------
// State blobs (written and read by io/byte_io.hpp)
// ---------------------------------------------------------------------------------------------

enum class OptimizerTag : std::uint32_t { kSgd = 1, kAdamW = 2, kAdamW8bit = 3 };

inline const char* to_string(OptimizerTag tag) noexcept {
  switch (tag) {
    case OptimizerTag::kSgd:
      return "Sgd";
    case OptimizerTag::kAdamW:
      return "AdamW";
    case OptimizerTag::kAdamW8bit:
      return "AdamW8bit";
  }
  return "?";
}

inline constexpr std::uint8_t kStateMagic[4] = {'G', 'S', 'Q', 'O'};

// ---------------------------------------------------------------------------------------------
// Shared optimizer plumbing
// ---------------------------------------------------------------------------------------------

/// Parameters, the step counter and the common parts of the state blob.  Not API.
class OptimizerBase {
 public:
  /// Sets every gradient element to 0.
  void zero_grad() noexcept {
    for (const Parameter& p : params_) std::fill(p.grad, p.grad + p.size, 0.0f);
  }

  /// Number of step() calls so far (restored by load_state).
  std::int64_t steps() const noexcept { return steps_; }

  const std::vector<Parameter>& parameters() const noexcept { return params_; }

 protected:
  OptimizerBase(const char* name, std::vector<Parameter> params) : params_(std::move(params)) {
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const Parameter& p = params_[k];
      GSQ_CHECK(p.size == 0 || (p.value != nullptr && p.grad != nullptr), name, ": parameter ", k,
                " has size ", p.size, " but a null ", p.value == nullptr ? "value" : "grad");
      GSQ_CHECK(p.size == 0 || p.value != p.grad, name, ": parameter ", k,
                " uses the same memory for value and grad");
    }
  }

  static void check_lr(const char* name, float lr) {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), name, "::step: lr must be finite and >= 0, got ",
              lr);
  }

  /// Magic, tag, version and step counter.
  void put_header(std::vector<std::uint8_t>& out, OptimizerTag tag) const {
    ByteWriter w(out);
    w.bytes(kStateMagic, 4);
    w.u32(static_cast<std::uint32_t>(tag));
    w.u32(kOptimizerStateVersion);
    w.u64(static_cast<std::uint64_t>(steps_));
  }

  /// Parameter count and sizes.
  void put_sizes(std::vector<std::uint8_t>& out) const {
    ByteWriter w(out);
    w.u64(params_.size());
    for (const Parameter& p : params_) w.u64(p.size);
  }

  /// Checks magic, tag and version; returns the step counter.
  static std::int64_t read_header(ByteReader& in, const char* who, OptimizerTag tag) {
    std::uint8_t magic[4];
    in.bytes(magic, 4, "the magic");
    GSQ_CHECK(std::memcmp(magic, kStateMagic, 4) == 0, who,
              ": not an optimizer state blob (the magic is not \"GSQO\")");
    const std::uint32_t got = in.u32("the optimizer tag");
    const char* got_name = to_string(static_cast<OptimizerTag>(got));
    GSQ_CHECK(got == static_cast<std::uint32_t>(tag), who, ": wrong optimizer tag ", got, " (",
              got_name, "), this optimizer is ", to_string(tag), " (tag ",
              static_cast<std::uint32_t>(tag), ")");
    const std::uint32_t version = in.u32("the version");
    GSQ_CHECK(version == kOptimizerStateVersion, who, ": unsupported state version ", version,
              " (this build reads version ", kOptimizerStateVersion, ")");
    const auto saved_steps = static_cast<std::int64_t>(in.u64("the step counter"));
    GSQ_CHECK(saved_steps >= 0, who, ": negative step counter ", saved_steps);
    return saved_steps;
  }

  /// Checks that the blob's parameter count and sizes equal this optimizer's.
  void read_sizes(ByteReader& in, const char* who) const {
    const std::uint64_t count = in.u64("the parameter count");
    GSQ_CHECK(count == params_.size(), who, ": wrong parameter count: the blob has ", count,
              ", this optimizer has ", params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const std::uint64_t size = in.u64("a parameter size");
      GSQ_CHECK(size == params_[k].size, who, ": wrong size of parameter ", k, ": the blob has ",
                size, ", this optimizer has ", params_[k].size);
    }
  }

  /// Checks that exactly `expected` bytes remain for the state arrays.
  static void check_remaining(const ByteReader& in, const char* who, std::size_t expected) {
    const std::size_t left = in.remaining();
    GSQ_CHECK(left >= expected, who, ": state blob is truncated: ", in.size(),
              " bytes, the header asks for ", expected - left, " more");
    GSQ_CHECK(left == expected, who, ": state blob has ", left - expected,
              " trailing bytes after the state arrays (", in.size(), " bytes in all)");
  }

  std::vector<Parameter> params_;
  std::int64_t steps_ = 0;
};

inline void check_unit_interval(const char* name, const char* what, float x) {
  GSQ_CHECK(x >= 0.0f && x < 1.0f, name, ": ", what, " must be in [0, 1), got ", x);
}

inline void check_non_negative(const char* name, const char* what, float x) {
  GSQ_CHECK(x >= 0.0f && std::isfinite(x), name, ": ", what, " must be finite and >= 0, got ", x);
}

/// Per-step AdamW constants.  Bias corrections 1 - beta^t are computed in double (std::pow) and
/// rounded once to float.
struct AdamWStepConstants {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float correction1, correction2;  // 1 - beta1^t, 1 - beta2^t
  float eps, lr, weight_decay;

  AdamWStepConstants(float b1, float b2, float e, float wd, float rate, std::int64_t t)
      : beta1(b1),
        one_minus_beta1(static_cast<float>(1.0 - static_cast<double>(b1))),
        beta2(b2),
        one_minus_beta2(static_cast<float>(1.0 - static_cast<double>(b2))),
        correction1(
            static_cast<float>(1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t)))),
        correction2(
            static_cast<float>(1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t)))),
        eps(e),
        lr(rate),
        weight_decay(wd) {}
};

/// One AdamW element update, the single definition both AdamW and AdamW8bit use:
///   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
///   p = p - lr * ((m / c1) / (sqrt(v / c2) + eps) + wd * p)
/// Each sum of products is evaluated by detail::dot2 / mul_add (exact products in double, one
/// rounding to double, one to float), so FMA contraction cannot change a bit (detail/fp.hpp);
/// g^2, the divisions and the square root are float operations.
inline void adamw_update(float& p, float g, float& m, float& v,
                         const AdamWStepConstants& c) noexcept {
  m = dot2(c.beta1, m, c.one_minus_beta1, g);
  v = dot2(c.beta2, v, c.one_minus_beta2, g * g);
  const float m_hat = m / c.correction1;
  const float v_hat = v / c.correction2;
  const float direction = mul_add(c.weight_decay, p, m_hat / (std::sqrt(v_hat) + c.eps));
  p = mul_add(-c.lr, direction, p);
}

// ---------------------------------------------------------------------------------------------
// 8-bit block-wise state quantization (AdamW8bit)
// ---------------------------------------------------------------------------------------------

/// The 256-entry dynamic quantization map of Dettmers, "8-Bit Approximations for Parallelism in
/// Deep Learning" (2016), as used by bitsandbytes' 8-bit optimizers, generated here and sorted
/// ascending.  Values are |x| / absmax in [0, 1] spread over 7 decades: decade i = 0..6 covers
/// [10^(i-6) * 0.1, 10^(i-6)] with n_i linearly spaced points, the midpoints of n_i equal steps
/// of [0.1, 1] scaled by 10^(i-6).  Signed map: n_i = 2^i per sign (127 negative, 127 positive)
/// plus 0 and +1; its most negative entry is about -0.993.  Unsigned map: n_i = 2^(i+1) (254
/// positive) plus 0 and 1.  The smallest nonzero magnitudes are 5.5e-7 (signed) and 3.25e-7
/// (unsigned) of the block's absmax.  Computed in double, each entry rounded once to float.
inline std::array<float, 256> make_dynamic_code_map(bool is_signed) {
  // Literals, not std::pow, so the table is the same on every platform.
  constexpr double kDecade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::array<double, 256> table{};
  std::size_t n = 0;
  for (int i = 0; i < 7; ++i) {
    const int count = is_signed ? (1 << i) : (2 << i);
    for (int k = 0; k < count; ++k) {
      const double value = kDecade[i] * (0.1 + 0.9 * (k + 0.5) / count);
      table[n++] = value;
      if (is_signed) table[n++] = -value;
    }
  }
  table[n++] = 0.0;
  table[n++] = 1.0;
  GSQ_DASSERT(n == 256);
  std::sort(table.begin(), table.end());
  std::array<float, 256> out{};
  for (std::size_t i = 0; i < 256; ++i) out[i] = static_cast<float>(table[i]);
  return out;
}

/// The signed map (first moments); built once, thread-safely.
inline const std::array<float, 256>& signed_code_map() {
  static const std::array<float, 256> table = make_dynamic_code_map(true);
  return table;
}

/// The unsigned map (second moments); built once, thread-safely.
inline const std::array<float, 256>& unsigned_code_map() {
  static const std::array<float, 256> table = make_dynamic_code_map(false);
  return table;
}

/// Index of the entry of the sorted `table` nearest to x (binary search); ties go to the lower
/// index.  Values outside the table clamp to its ends, NaN gives 255.
inline std::uint8_t nearest_code(const std::array<float, 256>& table, float x) noexcept {
  if (std::isnan(x)) return 255;
  // The number of entries <= x (= the index of the first entry > x), by a branch-free binary
  // descent: unpredictable branches made the plain upper_bound the optimizer's bottleneck.
  std::size_t hi = 0;
  for (std::size_t step = 128; step > 0; step /= 2)
    hi += step & (std::size_t{0} - static_cast<std::size_t>(table[hi + step - 1] <= x));
  if (hi == 0) return 0;
  if (hi == 256) return 255;
  const float above = table[hi];
  const float below = table[hi - 1];
  return static_cast<std::uint8_t>(above - x < x - below ? hi : hi - 1);
}

/// Encodes x[0..n) as codes into the sorted `table`, scaled by the block's absmax, which is
/// returned (0 for an all-zero block, whose codes are then the code of 0).  code = nearest entry
/// to x / absmax (one float division).
inline float quantize_block(const std::array<float, 256>& table, const float* x, std::size_t n,
                            std::uint8_t* codes) noexcept {
  float absmax = 0.0f;
  for (std::size_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  if (!(absmax > 0.0f)) {
    const std::uint8_t zero = nearest_code(table, 0.0f);
    std::fill(codes, codes + n, zero);
    return 0.0f;
  }
  for (std::size_t i = 0; i < n; ++i) codes[i] = nearest_code(table, x[i] / absmax);
  return absmax;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Optimizers
// ---------------------------------------------------------------------------------------------

/// SGD with heavy-ball momentum and decoupled weight decay (SGDW, Loshchilov & Hutter):
///   v = momentum * v + g;   p = p - lr * (v + weight_decay * p)
/// The decay does not enter the momentum buffer (with momentum 0 it equals L2 regularisation).
/// v starts at 0, so the first step uses v = g, as in PyTorch.  No Nesterov, no dampening.
/// Arithmetic in float.  State: one float per value when momentum > 0, none when momentum == 0.
/// State blob arrays: for each parameter, its `size` momentum floats (when momentum > 0).
class Sgd : public detail::OptimizerBase {
 public:
  /// Throws std::invalid_argument unless 0 <= momentum < 1, weight_decay is finite and >= 0,
  /// and every parameter with size > 0 has distinct non-null value and grad.
  explicit Sgd(std::vector<Parameter> params, float momentum = 0.0f, float weight_decay = 0.0f)
      : OptimizerBase("Sgd", std::move(params)), momentum_(momentum), weight_decay_(weight_decay) {
    detail::check_unit_interval("Sgd", "momentum", momentum);
    detail::check_non_negative("Sgd", "weight_decay", weight_decay);
    if (momentum_ > 0.0f) {
      velocity_.resize(params_.size());
      for (std::size_t k = 0; k < params_.size(); ++k) velocity_[k].assign(params_[k].size, 0.0f);
    }
  }

  /// One update with learning rate lr (finite, >= 0); increments steps().
  void step(float lr) {
    check_lr("Sgd", lr);
    const float mu = momentum_;
    const float wd = weight_decay_;
    for (std::size_t k = 0; k < params_.size(); ++k) {
      float* p = params_[k].value;
      const float* g = params_[k].grad;
      const std::size_t n = params_[k].size;
      // Sums of products through detail::mul_add: FMA contraction cannot change them.
      if (velocity_.empty()) {
        for (std::size_t i = 0; i < n; ++i)
          p[i] = detail::mul_add(-lr, detail::mul_add(wd, p[i], g[i]), p[i]);
      } else {
        float* v = velocity_[k].data();
        for (std::size_t i = 0; i < n; ++i) {
          v[i] = detail::mul_add(mu, v[i], g[i]);
          p[i] = detail::mul_add(-lr, detail::mul_add(wd, p[i], v[i]), p[i]);
        }
      }
    }
    ++steps_;
  }

  /// Bytes of momentum buffers held: 4 per value when momentum > 0, else 0.
  std::size_t state_bytes() const noexcept {
    std::size_t bytes = 0;
    for (const auto& v : velocity_) bytes += v.size() * sizeof(float);
    return bytes;
  }

  /// Appends the state blob (layout at the top of this file) to `out`.
  void save_state(std::vector<std::uint8_t>& out) const {
    put_header(out, detail::OptimizerTag::kSgd);
    ByteWriter(out).u32(velocity_.empty() ? 0u : 1u);
    put_sizes(out);
    for (const auto& v : velocity_) ByteWriter(out).floats(v.data(), v.size());
  }

  /// Restores a blob written by save_state of an Sgd over parameters of the same sizes and the
  /// same momentum on/off.  Strong guarantee: throws std::invalid_argument, naming the problem,
  /// and changes nothing if the blob is malformed or does not match.
  void load_state(const std::uint8_t* data, std::size_t size) {
    constexpr const char* kWho = "Sgd::load_state";
    ByteReader in(kWho, "state blob", data, size);
    const std::int64_t saved_steps = read_header(in, kWho, detail::OptimizerTag::kSgd);
    const std::uint32_t has_momentum = in.u32("the momentum flag");
    GSQ_CHECK(has_momentum <= 1, kWho, ": bad momentum flag ", has_momentum);
    GSQ_CHECK((has_momentum == 1) == !velocity_.empty(), kWho, ": the blob ",
              has_momentum ? "has" : "has no", " momentum buffers, this optimizer ",
              velocity_.empty() ? "has momentum 0" : "uses momentum");
    read_sizes(in, kWho);
    std::size_t expected = 0;
    if (has_momentum) {
      for (const Parameter& p : params_) expected += 4 * p.size;
    }
    check_remaining(in, kWho, expected);
    std::vector<std::vector<float>> velocity(velocity_.size());
    for (std::size_t k = 0; k < velocity.size(); ++k) {
      velocity[k].resize(params_[k].size);
      in.floats(velocity[k].data(), velocity[k].size(), "momentum");
    }
    velocity_.swap(velocity);
    steps_ = saved_steps;
  }

 private:
  float momentum_;
  float weight_decay_;
  std::vector<std::vector<float>> velocity_;  // empty when momentum == 0
};

/// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization") with float state:
///   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = steps() + 1
///   p = p - lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p)
/// Bias corrections in double, everything else in float (detail::adamw_update).  m and v start
/// at 0, so the first step moves each value by about lr * sign(g).
/// State: 8 bytes per value.  State blob arrays: for each parameter, m then v (size floats each).
class AdamW : public detail::OptimizerBase {
 public:
  /// Throws std::invalid_argument unless 0 <= beta1, beta2 < 1, eps is finite and > 0,
  /// weight_decay is finite and >= 0, and every parameter with size > 0 has distinct non-null
  /// value and grad.
  explicit AdamW(std::vector<Parameter> params, float beta1 = 0.9f, float beta2 = 0.999f,
                 float eps = 1e-8f, float weight_decay = 0.0f)
      : OptimizerBase("AdamW", std::move(params)),
        beta1_(beta1),
        beta2_(beta2),
        eps_(eps),
        weight_decay_(weight_decay) {
    detail::check_unit_interval("AdamW", "beta1", beta1);
    detail::check_unit_interval("AdamW", "beta2", beta2);
    GSQ_CHECK(eps > 0.0f && std::isfinite(eps), "AdamW: eps must be finite and > 0, got ", eps);
    detail::check_non_negative("AdamW", "weight_decay", weight_decay);
    m_.resize(params_.size());
    v_.resize(params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      m_[k].assign(params_[k].size, 0.0f);
      v_[k].assign(params_[k].size, 0.0f);
    }
  }

  /// One update with learning rate lr (finite, >= 0); increments steps().
  void step(float lr) {
    check_lr("AdamW", lr);
    const detail::AdamWStepConstants c(beta1_, beta2_, eps_, weight_decay_, lr, steps_ + 1);
    for (std::size_t k = 0; k < params_.size(); ++k) {
      float* p = params_[k].value;
      const float* g = params_[k].grad;
      float* m = m_[k].data();
      float* v = v_[k].data();
      for (std::size_t i = 0; i < params_[k].size; ++i)
        detail::adamw_update(p[i], g[i], m[i], v[i], c);
    }
    ++steps_;
  }

  /// Bytes of m and v held: 8 per value.
  std::size_t state_bytes() const noexcept {
    std::size_t bytes = 0;
    for (std::size_t k = 0; k < m_.size(); ++k)
      bytes += (m_[k].size() + v_[k].size()) * sizeof(float);
    return bytes;
  }

  /// Appends the state blob (layout at the top of this file) to `out`.
  void save_state(std::vector<std::uint8_t>& out) const {
    put_header(out, detail::OptimizerTag::kAdamW);
    put_sizes(out);
    ByteWriter w(out);
    for (std::size_t k = 0; k < m_.size(); ++k) {
      w.floats(m_[k].data(), m_[k].size());
      w.floats(v_[k].data(), v_[k].size());
    }
  }

  /// Restores a blob written by save_state of an AdamW over parameters of the same sizes.
  /// Strong guarantee: throws std::invalid_argument, naming the problem, and changes nothing if
  /// the blob is malformed or does not match.
  void load_state(const std::uint8_t* data, std::size_t size) {
    constexpr const char* kWho = "AdamW::load_state";
    ByteReader in(kWho, "state blob", data, size);
    const std::int64_t saved_steps = read_header(in, kWho, detail::OptimizerTag::kAdamW);
    read_sizes(in, kWho);
    std::size_t expected = 0;
    for (const Parameter& p : params_) expected += 8 * p.size;
    check_remaining(in, kWho, expected);
    std::vector<std::vector<float>> m(params_.size()), v(params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      m[k].resize(params_[k].size);
      v[k].resize(params_[k].size);
      in.floats(m[k].data(), m[k].size(), "first moments");
      in.floats(v[k].data(), v[k].size(), "second moments");
    }
    m_.swap(m);
    v_.swap(v);
    steps_ = saved_steps;
  }

 private:
  float beta1_, beta2_, eps_, weight_decay_;
  std::vector<std::vector<float>> m_, v_;
};

/// AdamW with 8-bit block-wise quantized state, after bitsandbytes' 8-bit Adam (Dettmers et al.,
/// "8-bit Optimizers via Block-wise Quantization", 2022).
///
/// Storage.  Each parameter of at least min_8bit_size values is cut into blocks of block_size
/// consecutive values (the last block may be shorter).  Per block, m is stored as 8-bit codes
/// into the signed dynamic map and v as codes into the unsigned dynamic map
/// (detail::make_dynamic_code_map), each with one float absmax: m[i] = signed_map[code] *
/// absmax_m.  Smaller parameters (biases, norms; as bitsandbytes does) keep float m and v and
/// are updated exactly as by AdamW, bit for bit.
///
/// Step, per block: dequantize m and v to float, apply the AdamW update of each value with these
/// float m and v (detail::adamw_update: the parameter moves with the unquantized new moments),
/// then requantize the new m and v: absmax = max |x| over the block, code = the nearest map
/// entry to x / absmax (ties to the lower entry).  Deterministic; no stochastic rounding.
///
/// state_bytes: 2 bytes per quantized value + 8 bytes per block, 8 bytes per value of small
/// parameters (about 0.254x of AdamW for large tensors with 256-value blocks).  The two
/// 256-entry maps are shared static tables; a 2 * block_size float scratch is not counted.
/// State blob arrays, for each parameter: quantized: m codes (size bytes), v codes (size
/// bytes), m absmax (one float per block), v absmax (one float per block); small: m then v
/// (size floats each).
class AdamW8bit : public detail::OptimizerBase {
 public:
  /// As AdamW, and throws std::invalid_argument if block_size == 0.
  explicit AdamW8bit(std::vector<Parameter> params, float beta1 = 0.9f, float beta2 = 0.999f,
                     float eps = 1e-8f, float weight_decay = 0.0f, std::size_t block_size = 256,
                     std::size_t min_8bit_size = 4096)
      : OptimizerBase("AdamW8bit", std::move(params)),
        beta1_(beta1),
        beta2_(beta2),
        eps_(eps),
        weight_decay_(weight_decay),
        block_size_(block_size),
        min_8bit_size_(min_8bit_size) {
    detail::check_unit_interval("AdamW8bit", "beta1", beta1);
    detail::check_unit_interval("AdamW8bit", "beta2", beta2);
    GSQ_CHECK(eps > 0.0f && std::isfinite(eps), "AdamW8bit: eps must be finite and > 0, got ", eps);
    detail::check_non_negative("AdamW8bit", "weight_decay", weight_decay);
    GSQ_CHECK(block_size > 0, "AdamW8bit: block_size must be > 0");
    state_ = fresh_state();
    scratch_.assign(2 * block_size_, 0.0f);
  }

  /// One update with learning rate lr (finite, >= 0); increments steps().
  void step(float lr) {
    check_lr("AdamW8bit", lr);
    const detail::AdamWStepConstants c(beta1_, beta2_, eps_, weight_decay_, lr, steps_ + 1);
    const auto& map_m = detail::signed_code_map();
    const auto& map_v = detail::unsigned_code_map();
    float* m = scratch_.data();
    float* v = m + block_size_;
    for (std::size_t k = 0; k < params_.size(); ++k) {
      float* p = params_[k].value;
      const float* g = params_[k].grad;
      const std::size_t n = params_[k].size;
      State& s = state_[k];
      if (!s.quantized) {
        for (std::size_t i = 0; i < n; ++i) detail::adamw_update(p[i], g[i], s.m[i], s.v[i], c);
        continue;
      }
      for (std::size_t b = 0, start = 0; start < n; ++b, start += block_size_) {
        const std::size_t len = std::min(block_size_, n - start);
        std::uint8_t* mc = s.m_codes.data() + start;
        std::uint8_t* vc = s.v_codes.data() + start;
        for (std::size_t i = 0; i < len; ++i) {
          m[i] = map_m[mc[i]] * s.m_absmax[b];
          v[i] = map_v[vc[i]] * s.v_absmax[b];
          detail::adamw_update(p[start + i], g[start + i], m[i], v[i], c);
        }
        s.m_absmax[b] = detail::quantize_block(map_m, m, len, mc);
        s.v_absmax[b] = detail::quantize_block(map_v, v, len, vc);
      }
    }
    ++steps_;
  }

  /// Bytes of state held: 2 per quantized value + 8 per block, 8 per value of small parameters.
  std::size_t state_bytes() const noexcept {
    std::size_t bytes = 0;
    for (const State& s : state_) {
      bytes += s.m_codes.size() + s.v_codes.size();
      bytes += (s.m_absmax.size() + s.v_absmax.size() + s.m.size() + s.v.size()) * sizeof(float);
    }
    return bytes;
  }

  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t min_8bit_size() const noexcept { return min_8bit_size_; }
  /// Whether parameter k keeps 8-bit state (size >= min_8bit_size).
  bool quantized(std::size_t k) const { return state_.at(k).quantized; }

  /// Appends the state blob (layout at the top of this file) to `out`.
  void save_state(std::vector<std::uint8_t>& out) const {
    put_header(out, detail::OptimizerTag::kAdamW8bit);
    ByteWriter w(out);
    w.u64(block_size_);
    w.u64(min_8bit_size_);
    put_sizes(out);
    for (const State& s : state_) {
      if (s.quantized) {
        w.bytes(s.m_codes.data(), s.m_codes.size());
        w.bytes(s.v_codes.data(), s.v_codes.size());
        w.floats(s.m_absmax.data(), s.m_absmax.size());
        w.floats(s.v_absmax.data(), s.v_absmax.size());
      } else {
        w.floats(s.m.data(), s.m.size());
        w.floats(s.v.data(), s.v.size());
      }
    }
  }

  /// Restores a blob written by save_state of an AdamW8bit over parameters of the same sizes,
  /// with the same block_size and min_8bit_size.  Strong guarantee: throws
  /// std::invalid_argument, naming the problem, and changes nothing if the blob is malformed or
  /// does not match.
  void load_state(const std::uint8_t* data, std::size_t size) {
    constexpr const char* kWho = "AdamW8bit::load_state";
    ByteReader in(kWho, "state blob", data, size);
    const std::int64_t saved_steps = read_header(in, kWho, detail::OptimizerTag::kAdamW8bit);
    const std::uint64_t saved_block_size = in.u64("the block size");
    const std::uint64_t saved_min_8bit_size = in.u64("min_8bit_size");
    GSQ_CHECK(saved_block_size == block_size_, kWho, ": wrong block size: the blob has ",
              saved_block_size, ", this optimizer has ", block_size_);
    GSQ_CHECK(saved_min_8bit_size == min_8bit_size_, kWho, ": wrong min_8bit_size: the blob has ",
              saved_min_8bit_size, ", this optimizer has ", min_8bit_size_);
    read_sizes(in, kWho);
    std::vector<State> state = fresh_state();
    std::size_t expected = 0;
    for (const State& s : state) {
      expected += s.m_codes.size() + s.v_codes.size();
      expected += (s.m_absmax.size() + s.v_absmax.size() + s.m.size() + s.v.size()) * 4;
    }
    check_remaining(in, kWho, expected);
    for (State& s : state) {
      if (s.quantized) {
        in.bytes(s.m_codes.data(), s.m_codes.size(), "first-moment codes");
        in.bytes(s.v_codes.data(), s.v_codes.size(), "second-moment codes");
        in.floats(s.m_absmax.data(), s.m_absmax.size(), "first-moment absmax");
        in.floats(s.v_absmax.data(), s.v_absmax.size(), "second-moment absmax");
      } else {
        in.floats(s.m.data(), s.m.size(), "first moments");
        in.floats(s.v.data(), s.v.size(), "second moments");
      }
    }
    state_.swap(state);
    steps_ = saved_steps;
  }

 private:
  struct State {
    bool quantized = false;
    std::vector<std::uint8_t> m_codes, v_codes;  // quantized: one code per value
    std::vector<float> m_absmax, v_absmax;       // quantized: one scale per block
    std::vector<float> m, v;                     // small parameters: float state
  };

  /// Zero state for the current parameters: codes of 0 with absmax 0, or float zeros.
  std::vector<State> fresh_state() const {
    const std::uint8_t zero_m = detail::nearest_code(detail::signed_code_map(), 0.0f);
    const std::uint8_t zero_v = detail::nearest_code(detail::unsigned_code_map(), 0.0f);
    std::vector<State> state(params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const std::size_t n = params_[k].size;
      State& s = state[k];
      s.quantized = n > 0 && n >= min_8bit_size_;
      if (s.quantized) {
        const std::size_t blocks = (n + block_size_ - 1) / block_size_;
        s.m_codes.assign(n, zero_m);
        s.v_codes.assign(n, zero_v);
        s.m_absmax.assign(blocks, 0.0f);
        s.v_absmax.assign(blocks, 0.0f);
      } else {
        s.m.assign(n, 0.0f);
        s.v.assign(n, 0.0f);
      }
    }
    return state;
  }

  float beta1_, beta2_, eps_, weight_decay_;
  std::size_t block_size_;
  std::size_t min_8bit_size_;
  std::vector<State> state_;
  std::vector<float> scratch_;  // dequantized m and v of one block
};

}  // namespace gsq
