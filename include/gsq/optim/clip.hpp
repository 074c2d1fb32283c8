// clip.hpp: gradient clipping by the global L2 norm, which also rejects non-finite gradients.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/optim/parameter.hpp"

namespace gsq {

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

}  // namespace gsq
