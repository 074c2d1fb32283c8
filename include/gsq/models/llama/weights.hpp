// weights.hpp: a hardened reader for llama2.c checkpoints (karpathy/llama2.c "legacy" format).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/file.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// The seven int32 of a llama2.c checkpoint header.
struct Llama2Config {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  ///< always positive here; shared_classifier keeps the sign's meaning
  int seq_len = 0;
  bool shared_classifier = true;  ///< the file's vocab_size was positive: wcls = token embedding

  int head_size() const noexcept { return dim / n_heads; }
  int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

/// A llama2.c checkpoint in memory.  Matrices are returned as llama2.c stores them, row-major
/// (out_features x in_features), so their reduction axis is Axis::kCols.
class Llama2Weights {
 public:
  /// Parses a checkpoint image.  Every size is checked before it is used; a truncated, padded or
  /// inconsistent image throws std::invalid_argument saying what is wrong.
  static Llama2Weights parse(const unsigned char* bytes, std::size_t size) {
    GSQ_CHECK(bytes != nullptr || size == 0, "llama2: null buffer");
    GSQ_CHECK(size >= 28, "llama2: file holds ", size,
              " bytes, less than the 28-byte header (7 int32)");
    std::int32_t h[7];
    std::memcpy(h, bytes, sizeof h);
    Llama2Weights w;
    Llama2Config& c = w.config_;
    const char* names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                            "n_kv_heads", "vocab_size", "seq_len"};
    for (int k = 0; k < 7; ++k) {
      const std::int64_t v = k == 5 && h[k] < 0 ? -std::int64_t{h[k]} : h[k];
      GSQ_CHECK(v >= 1 && v <= (1 << 20), "llama2: header field ", names[k], " = ", h[k],
                " is outside [1, 2^20]");
    }
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    c.shared_classifier = h[5] > 0;
    c.vocab_size = h[5] > 0 ? h[5] : -h[5];
    c.seq_len = h[6];
    GSQ_CHECK(c.dim % c.n_heads == 0, "llama2: dim ", c.dim, " is not a multiple of n_heads ",
              c.n_heads);
    GSQ_CHECK(c.n_kv_heads <= c.n_heads && c.n_heads % c.n_kv_heads == 0, "llama2: n_kv_heads ",
              c.n_kv_heads, " does not divide n_heads ", c.n_heads);
    GSQ_CHECK(c.head_size() % 2 == 0, "llama2: head size ", c.head_size(), " is odd (RoPE pairs)");

    // Offsets in floats, in llama2.c's order, in 64-bit arithmetic (no overflow: each factor
    // is at most 2^20 and no product has more than three).
    const std::uint64_t d = static_cast<std::uint64_t>(c.dim);
    const std::uint64_t L = static_cast<std::uint64_t>(c.n_layers);
    const std::uint64_t kv = static_cast<std::uint64_t>(c.kv_dim());
    const std::uint64_t hid = static_cast<std::uint64_t>(c.hidden_dim);
    std::uint64_t n = 0;
    auto take = [&n](std::uint64_t count) {
      const std::uint64_t at = n;
      n += count;
      return at;
    };
    w.token_embedding_ = take(static_cast<std::uint64_t>(c.vocab_size) * d);
    w.rms_att_ = take(L * d);
    w.wq_ = take(L * d * d);
    w.wk_ = take(L * d * kv);
    w.wv_ = take(L * d * kv);
    w.wo_ = take(L * d * d);
    w.rms_ffn_ = take(L * d);
    w.w1_ = take(L * hid * d);
    w.w2_ = take(L * d * hid);
    w.w3_ = take(L * hid * d);
    w.rms_final_ = take(d);
    take(static_cast<std::uint64_t>(c.seq_len) *
         static_cast<std::uint64_t>(c.head_size()));  // freq_cis
    w.wcls_ = c.shared_classifier ? w.token_embedding_
                                  : take(static_cast<std::uint64_t>(c.vocab_size) * d);
    const std::uint64_t payload = size - 28;
    // Compare in floats, not bytes: n * 4 can wrap around 2^64 for hostile headers.
    GSQ_CHECK(payload % 4 == 0 && payload / 4 == n, "llama2: the header (dim ", c.dim,
              ", hidden_dim ", c.hidden_dim, ", n_layers ", c.n_layers, ", vocab ", c.vocab_size,
              ", seq_len ", c.seq_len, ") needs ", n, " floats of weights, the file holds ",
              payload, " bytes", payload / 4 < n ? " (truncated)" : " (trailing data)");
    w.data_.resize(static_cast<std::size_t>(n));
    std::memcpy(w.data_.data(), bytes + 28, static_cast<std::size_t>(n) * 4);
    return w;
  }

  /// A model with the given shape and random weights (normal, sigma 0.02; RMSNorm gains 1), for
  /// tests and for pretraining from scratch.  Shared classifier.
  static Llama2Weights random(const Llama2Config& config, std::uint64_t seed) {
    const std::int32_t header[7] = {config.dim,     config.hidden_dim, config.n_layers,
                                    config.n_heads, config.n_kv_heads, config.vocab_size,
                                    config.seq_len};
    // The bounds parse() puts on each header field, checked before the size is computed.
    for (const std::int32_t v : header)
      GSQ_CHECK(v >= 1 && v <= (1 << 20), "llama2: random model: a config field is ", v,
                ", outside [1, 2^20]");
    Llama2Weights w;
    // The layout comes from parse(): build a zero image of the right size first.
    std::vector<unsigned char> img(28);
    std::memcpy(img.data(), header, 28);
    const Llama2Config& c = config;
    const std::uint64_t d = static_cast<std::uint64_t>(c.dim),
                        L = static_cast<std::uint64_t>(c.n_layers);
    const std::uint64_t kv =
        d / static_cast<std::uint64_t>(c.n_heads) * static_cast<std::uint64_t>(c.n_kv_heads);
    const std::uint64_t hid = static_cast<std::uint64_t>(c.hidden_dim);
    const std::uint64_t n =
        static_cast<std::uint64_t>(c.vocab_size) * d + 2 * L * d + 2 * L * d * d + 2 * L * d * kv +
        3 * L * hid * d + d +
        static_cast<std::uint64_t>(c.seq_len) * (d / static_cast<std::uint64_t>(c.n_heads));
    img.resize(28 + static_cast<std::size_t>(n) * 4);
    w = parse(img.data(), img.size());
    std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    auto uniform = [&state]() {  // splitmix64 -> (0, 1)
      state += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      return (static_cast<double>(z >> 11) + 0.5) / 9007199254740992.0;
    };
    for (float& v : w.data_) {
      const double r =
          std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
      v = static_cast<float>(0.02 * r);
    }
    auto ones = [&w](std::uint64_t at, std::uint64_t count) {
      std::fill(w.data_.begin() + static_cast<std::ptrdiff_t>(at),
                w.data_.begin() + static_cast<std::ptrdiff_t>(at + count), 1.0f);
    };
    ones(w.rms_att_, L * d);
    ones(w.rms_ffn_, L * d);
    ones(w.rms_final_, d);
    return w;
  }

  /// The checkpoint image (llama2.c format), e.g. to export a fine-tuned model.
  std::vector<unsigned char> serialize() const {
    const std::int32_t header[7] = {
        config_.dim,        config_.hidden_dim,
        config_.n_layers,   config_.n_heads,
        config_.n_kv_heads, config_.shared_classifier ? config_.vocab_size : -config_.vocab_size,
        config_.seq_len};
    std::vector<unsigned char> img(28 + data_.size() * 4);
    std::memcpy(img.data(), header, 28);
    std::memcpy(img.data() + 28, data_.data(), data_.size() * 4);
    return img;
  }

  /// Mutable access to one layer matrix (out x in, row-major), e.g. to write merged weights.
  float* mutable_data(MatrixRef<const float> m) noexcept {
    return data_.data() + (m.data - data_.data());
  }

  /// Reads and parses a checkpoint file (at most 2^36 bytes).
  static Llama2Weights load(const std::string& path) {
    const std::vector<std::uint8_t> bytes = read_file(path, "llama2", std::uint64_t{1} << 36);
    return parse(bytes.data(), bytes.size());
  }

  const Llama2Config& config() const noexcept { return config_; }

  MatrixRef<const float> token_embedding() const noexcept {
    return mat(token_embedding_, config_.vocab_size, config_.dim);
  }
  MatrixRef<const float> classifier() const noexcept {
    return mat(wcls_, config_.vocab_size, config_.dim);
  }
  MatrixRef<const float> wq(int l) const { return layer(wq_, l, config_.dim, config_.dim); }
  MatrixRef<const float> wk(int l) const { return layer(wk_, l, config_.kv_dim(), config_.dim); }
  MatrixRef<const float> wv(int l) const { return layer(wv_, l, config_.kv_dim(), config_.dim); }
  MatrixRef<const float> wo(int l) const { return layer(wo_, l, config_.dim, config_.dim); }
  MatrixRef<const float> w1(int l) const { return layer(w1_, l, config_.hidden_dim, config_.dim); }
  MatrixRef<const float> w2(int l) const { return layer(w2_, l, config_.dim, config_.hidden_dim); }
  MatrixRef<const float> w3(int l) const { return layer(w3_, l, config_.hidden_dim, config_.dim); }
  const float* rms_att(int l) const { return layer(rms_att_, l, 1, config_.dim).data; }
  const float* rms_ffn(int l) const { return layer(rms_ffn_, l, 1, config_.dim).data; }
  const float* rms_final() const noexcept { return data_.data() + rms_final_; }

 private:
  MatrixRef<const float> mat(std::uint64_t at, Index rows, Index cols) const noexcept {
    return MatrixRef<const float>::row_major(data_.data() + at, rows, cols);
  }
  MatrixRef<const float> layer(std::uint64_t at, int l, Index rows, Index cols) const {
    GSQ_CHECK(l >= 0 && l < config_.n_layers, "llama2: layer ", l, " out of range [0, ",
              config_.n_layers, ")");
    return mat(at + static_cast<std::uint64_t>(l) * static_cast<std::uint64_t>(rows * cols), rows,
               cols);
  }

  Llama2Config config_;
  std::vector<float> data_;
  std::uint64_t token_embedding_ = 0, rms_att_ = 0, wq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0,
                rms_ffn_ = 0, w1_ = 0, w2_ = 0, w3_ = 0, rms_final_ = 0, wcls_ = 0;
};

}  // namespace gsq
