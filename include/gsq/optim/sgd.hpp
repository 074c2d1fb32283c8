// sgd.hpp: SGD with heavy-ball momentum and decoupled weight decay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/fp.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/optim/parameter.hpp"
#include "gsq/optim/state.hpp"

namespace gsq {

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

  /// Appends the state blob (layout in optim/state.hpp) to `out`.
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

}  // namespace gsq
