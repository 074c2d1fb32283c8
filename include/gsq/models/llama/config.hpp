// config.hpp: the shape and constants of a LLaMA-family model (llama2.c, Llama 2/3, TinyLlama,
// SmolLM2, ...), beyond llama2.c's seven integers, and the RoPE table it implies.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/format.hpp"

namespace gsq {

/// Llama-3-style RoPE frequency scaling ("rope_type": "llama3" in Hugging Face configs).
/// factor <= 1 means none.  Frequencies whose wavelength exceeds original_context /
/// low_freq_factor are divided by factor, those below original_context / high_freq_factor are
/// kept, and those between are interpolated smoothly.
struct RopeScaling {
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_context = 8192;
  bool enabled() const noexcept { return factor > 1.0; }
};

/// A LLaMA-family configuration.  Weight matrices are stored out x in (as llama2.c, GGUF and
/// Hugging Face store them): wq is q_dim() x dim, wk and wv kv_dim() x dim, wo dim x q_dim(),
/// w1 and w3 hidden_dim x dim, w2 dim x hidden_dim, the embedding and classifier vocab x dim.
struct LlamaConfig {
  int dim = 0;         ///< the residual stream's width
  int hidden_dim = 0;  ///< the feed-forward width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  ///< grouped-query attention: n_heads / n_kv_heads query heads share one
  int head_dim = 0;    ///< per head; 0 means dim / n_heads
  int vocab_size = 0;
  int seq_len = 0;  ///< the longest window the RoPE table covers
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  /// Per-pair RoPE frequency divisors (GGUF's rope_freqs.weight, how llama.cpp stores Llama-3.x
  /// scaling): pair i turns at frequency theta^(-2i / head_size) / rope_freq_factors[i].  Empty
  /// means none; otherwise head_size() / 2 finite values > 0.  Applied after rope_scaling
  /// (a file normally carries one or the other).
  std::vector<float> rope_freq_factors;
  float norm_eps = 1e-5f;       ///< RMSNorm's epsilon
  bool tied_classifier = true;  ///< the classifier is the token embedding

  int head_size() const noexcept { return head_dim > 0 ? head_dim : dim / n_heads; }
  int q_dim() const noexcept { return head_size() * n_heads; }
  int kv_dim() const noexcept { return head_size() * n_kv_heads; }

  /// Parameters of the frozen model (embedding, classifier if separate, linears, norms).
  std::int64_t parameters() const noexcept {
    const std::int64_t d = dim, hid = hidden_dim, v = vocab_size;
    const std::int64_t per_layer = d * q_dim() * 2 + d * kv_dim() * 2 + 3 * d * hid + 2 * d;
    return v * d * (tied_classifier ? 1 : 2) + n_layers * per_layer + d;
  }

  /// Throws std::invalid_argument naming the first field out of range.  The bounds keep every
  /// size a model derives from the config within 64-bit arithmetic and a sane allocation.
  void validate() const {
    auto in = [](const char* name, std::int64_t v, std::int64_t lo, std::int64_t hi) {
      GSQ_CHECK(v >= lo && v <= hi, "llama config: ", name, " = ", v, " is outside [", lo, ", ",
                hi, "]");
    };
    in("dim", dim, 1, 1 << 16);
    in("hidden_dim", hidden_dim, 1, 1 << 18);
    in("n_layers", n_layers, 1, 1024);
    in("n_heads", n_heads, 1, 1024);
    in("n_kv_heads", n_kv_heads, 1, n_heads);
    in("head_dim", head_dim, 0, 1 << 12);
    in("vocab_size", vocab_size, 1, 1 << 20);
    in("seq_len", seq_len, 1, 1 << 20);
    GSQ_CHECK(n_heads % n_kv_heads == 0, "llama config: n_kv_heads ", n_kv_heads,
              " does not divide n_heads ", n_heads);
    GSQ_CHECK(head_dim > 0 || dim % n_heads == 0, "llama config: dim ", dim,
              " is not a multiple of n_heads ", n_heads, " and head_dim is not given");
    GSQ_CHECK(head_size() >= 2 && head_size() % 2 == 0, "llama config: head size ", head_size(),
              " is not even (RoPE rotates pairs)");
    GSQ_CHECK(std::isfinite(rope_theta) && rope_theta > 1.0, "llama config: rope_theta ",
              rope_theta, " must be finite and > 1");
    GSQ_CHECK(std::isfinite(norm_eps) && norm_eps > 0.0f, "llama config: norm_eps ", norm_eps,
              " must be finite and positive");
    if (!rope_freq_factors.empty()) {
      GSQ_CHECK(rope_freq_factors.size() == static_cast<std::size_t>(head_size() / 2),
                "llama config: rope_freq_factors has ", rope_freq_factors.size(),
                " values, head size ", head_size(), " needs ", head_size() / 2);
      for (std::size_t i = 0; i < rope_freq_factors.size(); ++i)
        GSQ_CHECK(std::isfinite(rope_freq_factors[i]) && rope_freq_factors[i] > 0.0f,
                  "llama config: rope_freq_factors[", i, "] = ", rope_freq_factors[i],
                  " must be finite and > 0");
    }
    if (rope_scaling.enabled()) {
      GSQ_CHECK(std::isfinite(rope_scaling.factor) && rope_scaling.factor <= 1024 &&
                    rope_scaling.low_freq_factor > 0 &&
                    rope_scaling.high_freq_factor > rope_scaling.low_freq_factor &&
                    rope_scaling.original_context >= 1,
                "llama config: RoPE scaling (factor ", rope_scaling.factor, ", low ",
                rope_scaling.low_freq_factor, ", high ", rope_scaling.high_freq_factor,
                ", original context ", rope_scaling.original_context, ") is inconsistent");
    }
  }

  /// Shapes of well-known models, for benchmarks and tests (random weights stand in for the
  /// real ones until a loader fills them).
  static LlamaConfig stories15m() { return make(288, 768, 6, 6, 6, 32000, 256, true); }
  static LlamaConfig stories260k() { return make(64, 172, 5, 8, 4, 512, 512, true); }
  static LlamaConfig smollm2_135m() {
    LlamaConfig c = make(576, 1536, 30, 9, 3, 49152, 2048, true);
    c.rope_theta = 100000.0;
    return c;
  }
  static LlamaConfig tinyllama_1_1b() { return make(2048, 5632, 22, 32, 4, 32000, 2048, false); }

  /// One of the names above ("stories15m", "stories260k", "smollm2-135m", "tinyllama-1.1b").
  static LlamaConfig named(const std::string& name) {
    if (name == "stories15m") return stories15m();
    if (name == "stories260k") return stories260k();
    if (name == "smollm2-135m") return smollm2_135m();
    if (name == "tinyllama-1.1b") return tinyllama_1_1b();
    GSQ_CHECK(false, "llama config: unknown name '", name,
              "' (stories260k, stories15m, smollm2-135m, tinyllama-1.1b)");
    return {};
  }

 private:
  static LlamaConfig make(int d, int hid, int layers, int heads, int kv_heads, int vocab, int seq,
                          bool tied) {
    LlamaConfig c;
    c.dim = d;
    c.hidden_dim = hid;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.seq_len = seq;
    c.tied_classifier = tied;
    return c;
  }
};

/// The RoPE rotation of every position and pair, as float cos and sin: pair i of a head
/// (values 2i and 2i + 1, Meta's interleaved layout, which llama2.c and GGUF keep) at position
/// p turns by p * theta^(-2i / head_size), with Llama-3 scaling applied to the frequency and
/// then divided by rope_freq_factors[i] when the config has them.
/// Computed once in double by gsq's own functions (vmath.hpp) and rounded to float, so every
/// CPU gets the same table.
class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const LlamaConfig& c, int positions) : pairs_(c.head_size() / 2) {
    GSQ_CHECK(positions >= 1, "RopeTable: need at least one position");
    std::vector<double> freq(static_cast<std::size_t>(pairs_));
    const double log_theta = detail::log_f64(c.rope_theta);
    for (int i = 0; i < pairs_; ++i) {
      double f = detail::exp_f64(-log_theta * static_cast<double>(2 * i) /
                                 static_cast<double>(c.head_size()));
      if (c.rope_scaling.enabled()) f = scaled(f, c.rope_scaling);
      // Without factors nothing changes (no division by 1.0 either, so tables stay the same).
      if (!c.rope_freq_factors.empty() && static_cast<std::size_t>(i) < c.rope_freq_factors.size())
        f /= static_cast<double>(c.rope_freq_factors[static_cast<std::size_t>(i)]);
      freq[static_cast<std::size_t>(i)] = f;
    }
    cos_.resize(static_cast<std::size_t>(positions) * static_cast<std::size_t>(pairs_));
    sin_.resize(cos_.size());
    for (int p = 0; p < positions; ++p) {
      for (int i = 0; i < pairs_; ++i) {
        double s, co;
        detail::sincos_f64(static_cast<double>(p) * freq[static_cast<std::size_t>(i)], s, co);
        cos_[static_cast<std::size_t>(p * pairs_ + i)] = static_cast<float>(co);
        sin_[static_cast<std::size_t>(p * pairs_ + i)] = static_cast<float>(s);
      }
    }
  }

  int positions() const noexcept { return pairs_ == 0 ? 0 : static_cast<int>(cos_.size()) / pairs_; }
  const float* cos(Index pos) const noexcept { return cos_.data() + pos * pairs_; }
  const float* sin(Index pos) const noexcept { return sin_.data() + pos * pairs_; }

  /// Rotates each head of vec (width values, heads of 2 * pairs values) to position pos, or
  /// back from it when `inverse` (the backward pass of the rotation).
  void rotate(float* vec, Index width, Index pos, bool inverse) const noexcept {
    const float* c = cos(pos);
    const float* s = sin(pos);
    const Index hs = 2 * pairs_;
    for (Index h = 0; h < width; h += hs) {
      float* v = vec + h;
      for (Index i = 0; i < pairs_; ++i) {
        const float si = inverse ? -s[i] : s[i];
        const float v0 = v[2 * i], v1 = v[2 * i + 1];
        v[2 * i] = v0 * c[i] - v1 * si;
        v[2 * i + 1] = v0 * si + v1 * c[i];
      }
    }
  }

 private:
  static double scaled(double f, const RopeScaling& s) {
    const double pi2 = 6.283185307179586;
    const double wavelen = pi2 / f;
    const double ctx = static_cast<double>(s.original_context);
    if (wavelen < ctx / s.high_freq_factor) return f;
    if (wavelen > ctx / s.low_freq_factor) return f / s.factor;
    const double smooth =
        (ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1.0 - smooth) * f / s.factor + smooth * f;
  }

  int pairs_ = 0;
  std::vector<float> cos_, sin_;
};

}  // namespace gsq
