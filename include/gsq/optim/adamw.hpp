// adamw.hpp: AdamW with float state, and the one AdamW element update (also AdamW8bit's).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/fp.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/optim/parameter.hpp"
#include "gsq/optim/state.hpp"

namespace gsq {

namespace detail {

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

/// The hyper-parameters AdamW and AdamW8bit share, checked once.  Not API.
class AdamWBase : public OptimizerBase {
 protected:
  /// Throws std::invalid_argument unless 0 <= beta1, beta2 < 1, eps is finite and > 0,
  /// weight_decay is finite and >= 0, and every parameter with size > 0 has distinct non-null
  /// value and grad (the messages start with `name`).
  AdamWBase(const char* name, std::vector<Parameter> params, float beta1, float beta2, float eps,
            float weight_decay)
      : OptimizerBase(name, std::move(params)),
        beta1_(beta1),
        beta2_(beta2),
        eps_(eps),
        weight_decay_(weight_decay) {
    check_unit_interval(name, "beta1", beta1);
    check_unit_interval(name, "beta2", beta2);
    GSQ_CHECK(eps > 0.0f && std::isfinite(eps), name, ": eps must be finite and > 0, got ", eps);
    check_non_negative(name, "weight_decay", weight_decay);
  }

  /// The constants of the next step (t = steps() + 1) at learning rate lr, which must be finite
  /// and >= 0.
  AdamWStepConstants next_step(const char* name, float lr) const {
    check_lr(name, lr);
    return AdamWStepConstants(beta1_, beta2_, eps_, weight_decay_, lr, steps_ + 1);
  }

  float beta1_, beta2_, eps_, weight_decay_;
};

}  // namespace detail

/// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization") with float state:
///   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = steps() + 1
///   p = p - lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p)
/// Bias corrections in double, everything else in float (detail::adamw_update).  m and v start
/// at 0, so the first step moves each value by about lr * sign(g).
/// State: 8 bytes per value.  State blob arrays: for each parameter, m then v (size floats each).
class AdamW : public detail::AdamWBase {
 public:
  /// Throws std::invalid_argument unless 0 <= beta1, beta2 < 1, eps is finite and > 0,
  /// weight_decay is finite and >= 0, and every parameter with size > 0 has distinct non-null
  /// value and grad.
  explicit AdamW(std::vector<Parameter> params, float beta1 = 0.9f, float beta2 = 0.999f,
                 float eps = 1e-8f, float weight_decay = 0.0f)
      : AdamWBase("AdamW", std::move(params), beta1, beta2, eps, weight_decay) {
    m_.resize(params_.size());
    v_.resize(params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      m_[k].assign(params_[k].size, 0.0f);
      v_[k].assign(params_[k].size, 0.0f);
    }
  }

  /// One update with learning rate lr (finite, >= 0); increments steps().  Parameters are
  /// updated in parallel (the ThreadPool in scope, else OpenMP) when there are enough values;
  /// each value's update is independent, so the result never depends on the split.
  void step(float lr) {
    const detail::AdamWStepConstants c = next_step("AdamW", lr);
    std::size_t values = 0;
    for (const Parameter& p : params_) values += p.size;
    const auto count = static_cast<Index>(params_.size());
    detail::parallel_for(count, detail::threads_for(static_cast<double>(values) * 16.0, 0),
                         [&](Index k) {
                           // c and the size as locals: read through the closure, the compiler
                           // must assume the stores to p, m and v change them (1 thread, 1.9 M
                           // values: 10.5 ms a step that way, 9.2 as locals).
                           const detail::AdamWStepConstants local = c;
                           const auto u = static_cast<std::size_t>(k);
                           float* p = params_[u].value;
                           const float* g = params_[u].grad;
                           float* m = m_[u].data();
                           float* v = v_[u].data();
                           const std::size_t n = params_[u].size;
                           for (std::size_t i = 0; i < n; ++i)
                             detail::adamw_update(p[i], g[i], m[i], v[i], local);
                         });
    ++steps_;
  }

  /// Bytes of m and v held: 8 per value.
  std::size_t state_bytes() const noexcept {
    std::size_t bytes = 0;
    for (std::size_t k = 0; k < m_.size(); ++k)
      bytes += (m_[k].size() + v_[k].size()) * sizeof(float);
    return bytes;
  }

  /// Appends the state blob (layout in optim/state.hpp) to `out`.
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
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace gsq
