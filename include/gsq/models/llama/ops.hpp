// ops.hpp: the float numerics of a llama block outside its linear layers (RMSNorm, RoPE, softmax,
// SiLU, cross-entropy) as llama2.c's run.c computes them, for the fp32 runner (runner.hpp).  The
// training model (lora_model.hpp) has its own, in a fixed vectorisable order with gsq's own
// exp (detail/vmath.hpp), so that it is bit-identical across ISAs.
#pragma once

#include <algorithm>
#include <cmath>

#include "gsq/tensor.hpp"

namespace gsq::llama {

// Every function is plain float (or, where noted, double) arithmetic in a fixed order, the order
// of llama2.c's run.c, so that the runner reproduces llama2.c.

/// out = W x for W (rows x cols, any strides): one float sum per row, in order.
inline void matvec(float* out, const float* x, MatrixRef<const float> w) noexcept {
  for (Index i = 0; i < w.rows; ++i) {
    float val = 0.0f;
    for (Index j = 0; j < w.cols; ++j) val += w(i, j) * x[j];
    out[i] = val;
  }
}

/// out = weight * x / rms(x), rms(x) = sqrt(mean(x^2) + 1e-5), over n values (out may be x).
/// Returns 1 / rms(x).
inline float rmsnorm(float* out, const float* x, const float* weight, Index n) noexcept {
  float ss = 0.0f;
  for (Index j = 0; j < n; ++j) ss += x[j] * x[j];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + 1e-5f);
  for (Index j = 0; j < n; ++j) out[j] = weight[j] * (inv * x[j]);
  return inv;
}

/// Rotates each pair (2i, 2i+1) of each head of vec (width values, heads of head_size) by the
/// angle pos * 10000^(-2i / head_size), frequencies in float as run.c computes them; by the
/// opposite angle when `inverse` (which is the backward pass of the rotation).
inline void rope(float* vec, Index width, int head_size, Index pos, bool inverse = false) {
  for (Index i = 0; i < width; i += 2) {
    const int head_dim = static_cast<int>(i % head_size);
    const float freq =
        1.0f / std::pow(10000.0f, static_cast<float>(head_dim) / static_cast<float>(head_size));
    const float val = static_cast<float>(pos) * freq;
    const float fcr = std::cos(val), fci = inverse ? -std::sin(val) : std::sin(val);
    const float v0 = vec[i], v1 = vec[i + 1];
    vec[i] = v0 * fcr - v1 * fci;
    vec[i + 1] = v0 * fci + v1 * fcr;
  }
}

/// In place: x[i] = exp(x[i] - max) / sum, the sum in float, in order (n >= 1).
inline void softmax(float* x, Index n) {
  float max_val = x[0];
  for (Index i = 1; i < n; ++i) max_val = std::max(max_val, x[i]);
  float sum = 0.0f;
  for (Index i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  for (Index i = 0; i < n; ++i) x[i] /= sum;
}

/// 1 / (1 + e^-x).
inline float sigmoid(float x) noexcept { return 1.0f / (1.0f + std::exp(-x)); }

/// SiLU as llama2.c's run.c computes it: x * (1 / (1 + e^-x)), the reciprocal rounded first.
inline float silu(float x) noexcept { return x * sigmoid(x); }

/// An attention score from a query-key dot product: dot / sqrt(head_size), as run.c computes it
/// (a division, not a multiplication by the rounded reciprocal).
inline float attention_score(float dot, int head_size) noexcept {
  return dot / std::sqrt(static_cast<float>(head_size));
}

/// The normaliser of a softmax over a row of logits, in double: the row's largest logit and the
/// sum of exp(logit - max), in order.
struct SoftmaxSum {
  float max;
  double sum;

  /// exp(logit - max): the probability of `logit` times sum.
  double weight(float logit) const { return std::exp(double{logit} - max); }
  double probability(float logit) const { return weight(logit) / sum; }
  /// The cross-entropy -log p(target), nats.
  double cross_entropy(float target_logit) const { return std::log(sum) + max - target_logit; }
};

/// The softmax normaliser of logits[0..n) (n >= 1).
inline SoftmaxSum softmax_sum(const float* logits, Index n) {
  SoftmaxSum z{-INFINITY, 0.0};
  for (Index v = 0; v < n; ++v) z.max = std::max(z.max, logits[v]);
  for (Index v = 0; v < n; ++v) z.sum += z.weight(logits[v]);
  return z;
}

/// -log softmax(logits)[target], nats, with the normaliser in double.
inline double cross_entropy(const float* logits, Index n, Index target) {
  return softmax_sum(logits, n).cross_entropy(logits[target]);
}

}  // namespace gsq::llama
