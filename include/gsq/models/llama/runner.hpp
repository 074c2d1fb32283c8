// runner.hpp: exact fp32 inference of a llama2.c checkpoint, operation for operation as
// llama2.c's run.c computes it (same float operations in the same order, through ops.hpp), so
// greedy decoding reproduces its output token for token.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/llama/ops.hpp"
#include "gsq/models/llama/weights.hpp"

namespace gsq {

/// Token-by-token fp32 inference with a key/value cache.  Refers to the weights (keep them).
class Llama2Runner {
 public:
  explicit Llama2Runner(const Llama2Weights& w) : w_(w), c_(w.config()) {
    const auto d = static_cast<std::size_t>(c_.dim);
    const auto kv = static_cast<std::size_t>(c_.kv_dim());
    const auto hid = static_cast<std::size_t>(c_.hidden_dim);
    x_.resize(d);
    xb_.resize(d);
    xb2_.resize(d);
    hb_.resize(hid);
    hb2_.resize(hid);
    q_.resize(d);
    att_.resize(static_cast<std::size_t>(c_.n_heads) * static_cast<std::size_t>(c_.seq_len));
    logits_.resize(static_cast<std::size_t>(c_.vocab_size));
    const std::size_t cache =
        static_cast<std::size_t>(c_.n_layers) * static_cast<std::size_t>(c_.seq_len) * kv;
    key_cache_.resize(cache);
    value_cache_.resize(cache);
  }

  /// The logits after `token` at position `pos` (positions 0..pos-1 must have been run before).
  const std::vector<float>& forward(int token, int pos) {
    GSQ_CHECK(token >= 0 && token < c_.vocab_size, "llama2: token ", token, " is outside [0, ",
              c_.vocab_size, ")");
    GSQ_CHECK(pos >= 0 && pos < c_.seq_len, "llama2: position ", pos,
              " is outside [0, seq_len = ", c_.seq_len, ")");
    const int dim = c_.dim, kv_dim = c_.kv_dim(), hs = c_.head_size();
    const int kv_mul = c_.n_heads / c_.n_kv_heads;
    const float* emb = &w_.token_embedding()(token, 0);
    std::copy(emb, emb + dim, x_.begin());
    for (int l = 0; l < c_.n_layers; ++l) {
      llama::rmsnorm(xb_.data(), x_.data(), w_.rms_att(l), dim);
      const std::size_t loff = static_cast<std::size_t>(l) * static_cast<std::size_t>(c_.seq_len) *
                               static_cast<std::size_t>(kv_dim);
      float* k = key_cache_.data() + loff +
                 static_cast<std::size_t>(pos) * static_cast<std::size_t>(kv_dim);
      float* v = value_cache_.data() + loff +
                 static_cast<std::size_t>(pos) * static_cast<std::size_t>(kv_dim);
      llama::matvec(q_.data(), xb_.data(), w_.wq(l));
      llama::matvec(k, xb_.data(), w_.wk(l));
      llama::matvec(v, xb_.data(), w_.wv(l));
      llama::rope(q_.data(), dim, hs, pos);
      llama::rope(k, kv_dim, hs, pos);
      for (int h = 0; h < c_.n_heads; ++h) {
        const float* qh = q_.data() + h * hs;
        float* att =
            att_.data() + static_cast<std::size_t>(h) * static_cast<std::size_t>(c_.seq_len);
        const std::size_t kvh = static_cast<std::size_t>((h / kv_mul) * hs);
        for (int t = 0; t <= pos; ++t) {
          const float* kt = key_cache_.data() + loff +
                            static_cast<std::size_t>(t) * static_cast<std::size_t>(kv_dim) + kvh;
          float score = 0.0f;
          for (int i = 0; i < hs; ++i) score += qh[i] * kt[i];
          att[t] = llama::attention_score(score, hs);
        }
        llama::softmax(att, pos + 1);
        float* xbh = xb_.data() + h * hs;
        std::fill(xbh, xbh + hs, 0.0f);
        for (int t = 0; t <= pos; ++t) {
          const float* vt = value_cache_.data() + loff +
                            static_cast<std::size_t>(t) * static_cast<std::size_t>(kv_dim) + kvh;
          const float a = att[t];
          for (int i = 0; i < hs; ++i) xbh[i] += a * vt[i];
        }
      }
      llama::matvec(xb2_.data(), xb_.data(), w_.wo(l));
      for (int i = 0; i < dim; ++i)
        x_[static_cast<std::size_t>(i)] += xb2_[static_cast<std::size_t>(i)];
      llama::rmsnorm(xb_.data(), x_.data(), w_.rms_ffn(l), dim);
      llama::matvec(hb_.data(), xb_.data(), w_.w1(l));
      llama::matvec(hb2_.data(), xb_.data(), w_.w3(l));
      for (std::size_t i = 0; i < hb_.size(); ++i) hb_[i] = llama::silu(hb_[i]) * hb2_[i];
      llama::matvec(xb_.data(), hb_.data(), w_.w2(l));
      for (int i = 0; i < dim; ++i)
        x_[static_cast<std::size_t>(i)] += xb_[static_cast<std::size_t>(i)];
    }
    llama::rmsnorm(x_.data(), x_.data(), w_.rms_final(), dim);
    llama::matvec(logits_.data(), x_.data(), w_.classifier());
    return logits_;
  }

  /// The next-token cross-entropy (nats) summed over tokens[1..]: token t + 1 predicted from
  /// tokens[0..t], run from position 0.
  double loss_sum(const std::vector<int>& tokens) {
    double total = 0;
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
      const std::vector<float>& logits = forward(tokens[t], static_cast<int>(t));
      total += llama::cross_entropy(logits.data(), c_.vocab_size, tokens[t + 1]);
    }
    return total;
  }

  /// Greedy decoding from BOS: `steps` forward passes at positions 0 .. steps - 1, each
  /// choosing one token, so up to `steps` tokens (fewer when one is BOS, where run.c stops too),
  /// as llama2.c's `run -n steps` prints.  The leading BOS is not returned.
  std::vector<int> generate_greedy(int steps) {
    GSQ_CHECK(steps >= 1 && steps <= c_.seq_len, "llama2: steps ", steps, " is outside [1, ",
              c_.seq_len, "]");
    std::vector<int> out;
    int token = 1;  // BOS
    for (int pos = 0; pos < steps; ++pos) {
      const std::vector<float>& logits = forward(token, pos);
      int next = 0;
      for (int i = 1; i < c_.vocab_size; ++i) {
        if (logits[static_cast<std::size_t>(i)] > logits[static_cast<std::size_t>(next)]) next = i;
      }
      if (next == 1) break;
      out.push_back(next);
      token = next;
    }
    return out;
  }

 private:
  const Llama2Weights& w_;
  Llama2Config c_;
  std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, att_, logits_, key_cache_, value_cache_;
};

}  // namespace gsq
