// schedule.hpp: learning-rate schedules (constant or cosine, after a linear warmup).
#pragma once

#include <cmath>
#include <cstdint>

#include "gsq/detail/check.hpp"

namespace gsq {

namespace detail {

/// lr * (step + 1) / warmup_steps, computed in double and rounded once to float: the warmup both
/// schedules share.
inline float linear_warmup(float lr, std::int64_t step, std::int64_t warmup_steps) noexcept {
  return static_cast<float>(static_cast<double>(lr) * static_cast<double>(step + 1) /
                            static_cast<double>(warmup_steps));
}

}  // namespace detail

/// Linear warmup from lr / warmup_steps to lr: lr(step) = lr * (step + 1) / warmup_steps for
/// step < warmup_steps, then lr.  Computed in double, rounded once to float.
/// Throws std::invalid_argument for step < 0 or warmup_steps < 0.
struct ConstantWithWarmup {
  float lr;
  std::int64_t warmup_steps;

  float operator()(std::int64_t step) const {
    GSQ_CHECK(step >= 0 && warmup_steps >= 0, "ConstantWithWarmup: step (", step,
              ") and warmup_steps (", warmup_steps, ") must be >= 0");
    return step < warmup_steps ? detail::linear_warmup(lr, step, warmup_steps) : lr;
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
    if (step < warmup_steps) return detail::linear_warmup(lr, step, warmup_steps);
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

}  // namespace gsq
