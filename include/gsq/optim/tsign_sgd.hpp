// tsign_sgd.hpp: t-SignSGD (LoTA-QAF's optimizer of ternary adapters) and its schedule of q.
//
// t-SignSGD moves only the entries whose |gradient| exceeds the tensor's q-quantile, by one step
// against the gradient's sign, clamped to {-1, 0, +1}.  No learning rate, momentum or weight
// decay.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/nn/ternary.hpp"

namespace gsq {

/// t-SignSGD's schedule of q: linear from q0 to q1 over the first `warm` fraction of the steps,
/// then linear to q2 at the end.
struct TSignSchedule {
  double q0 = 0.95, q1 = 0.999, q2 = 0.9999;
  double warm = 0.8;
  std::int64_t total_steps = 1000;
  double operator()(std::int64_t step) const {
    GSQ_CHECK(total_steps >= 1 && step >= 0, "TSignSchedule: step ", step, " of ", total_steps);
    const double f = std::min(1.0, static_cast<double>(step) / static_cast<double>(total_steps));
    // The same q whether or not the compiler contracts (an explicit fma; a quotient is never
    // fused), so the quantile index floor(q (n - 1)) is the same on every platform.
    if (f <= warm) return std::fma(q1 - q0, warm > 0 ? f / warm : 1.0, q0);
    return q1 + (q2 - q1) * (f - warm) / (1.0 - warm);
  }
};

namespace detail {

template <typename T>
T magnitude(T v) noexcept {
  return v < 0 ? -v : v;
}

}  // namespace detail

/// The q-quantile of |g| by selection (O(n), std::nth_element): the value at rank
/// floor(q * (n - 1)) of the sorted magnitudes.  `scratch` is reused.  T: float or an integer
/// type (the integer gradients of LotaLinear).
template <typename T>
T abs_quantile(const T* g, std::size_t n, double q, std::vector<T>& scratch) {
  GSQ_CHECK(n > 0 && q >= 0.0 && q <= 1.0, "abs_quantile: n ", n, ", q ", q);
  scratch.resize(n);
  for (std::size_t i = 0; i < n; ++i) scratch[i] = detail::magnitude(g[i]);
  const auto k = static_cast<std::size_t>(q * static_cast<double>(n - 1));
  std::nth_element(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(k),
                   scratch.end());
  return scratch[k];
}

/// One t-SignSGD step on a ternary tensor: entries with |g| > quantile_q(|g|) move to
/// clamp(p - sign(g), -1, 1).  g is row-major over p.  Returns how many entries changed.  No
/// learning rate, momentum or weight decay.
template <typename T>
std::size_t tsign_step(TernaryMatrix& p, const T* g, double q, std::vector<T>& scratch) {
  const auto n = static_cast<std::size_t>(p.rows() * p.cols());
  if (n == 0) return 0;
  const T sigma = abs_quantile(g, n, q, scratch);
  std::size_t changed = 0;
  for (Index r = 0; r < p.rows(); ++r) {
    for (Index c = 0; c < p.cols(); ++c) {
      const T v = g[static_cast<std::size_t>(r * p.cols() + c)];
      if (!(detail::magnitude(v) > sigma)) continue;
      const int now = p.get(r, c), next = std::clamp(now - (v > 0 ? 1 : -1), -1, 1);
      changed += next != now;
      p.set(r, c, next);
    }
  }
  return changed;
}

/// t-SignSGD as an optimizer: each step() moves every tensor by tsign_step at its own
/// q-quantile, q = schedule(steps taken so far).  No learning rate, momentum or weight decay,
/// hence no state beyond the step count.  T: the gradients' type (int64 for LotaLinear).
template <typename T = std::int64_t>
class TSignSgd {
 public:
  TSignSgd(std::vector<TernaryParameter<T>> params, const TSignSchedule& schedule)
      : params_(std::move(params)), schedule_(schedule) {
    for (const TernaryParameter<T>& p : params_)
      GSQ_CHECK(p.value != nullptr && (p.grad != nullptr || p.value->rows() * p.value->cols() == 0),
                "TSignSgd: a parameter without its tensor or gradient");
  }
  /// One step over every tensor; returns how many entries changed.
  std::size_t step() {
    const double q = schedule_(steps_++);
    std::size_t changed = 0;
    for (const TernaryParameter<T>& p : params_)
      changed += tsign_step(*p.value, p.grad, q, scratch_);
    return changed;
  }
  std::int64_t steps() const noexcept { return steps_; }
  const TSignSchedule& schedule() const noexcept { return schedule_; }

 private:
  std::vector<TernaryParameter<T>> params_;
  TSignSchedule schedule_;
  std::int64_t steps_ = 0;
  std::vector<T> scratch_;
};

}  // namespace gsq
