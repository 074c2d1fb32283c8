// adamw8bit.hpp: AdamW with 8-bit block-wise quantized state, and its dynamic quantization map.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/parameter.hpp"
#include "gsq/optim/state.hpp"

namespace gsq {

namespace detail {

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
class AdamW8bit : public detail::AdamWBase {
 public:
  /// As AdamW, and throws std::invalid_argument if block_size == 0.
  explicit AdamW8bit(std::vector<Parameter> params, float beta1 = 0.9f, float beta2 = 0.999f,
                     float eps = 1e-8f, float weight_decay = 0.0f, std::size_t block_size = 256,
                     std::size_t min_8bit_size = 4096)
      : AdamWBase("AdamW8bit", std::move(params), beta1, beta2, eps, weight_decay),
        block_size_(block_size),
        min_8bit_size_(min_8bit_size) {
    GSQ_CHECK(block_size > 0, "AdamW8bit: block_size must be > 0");
    state_ = fresh_state();
    scratch_.assign(2 * block_size_, 0.0f);
  }

  /// One update with learning rate lr (finite, >= 0); increments steps().
  void step(float lr) {
    const detail::AdamWStepConstants c = next_step("AdamW8bit", lr);
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

  /// Appends the state blob (layout in optim/state.hpp) to `out`.
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

  std::size_t block_size_;
  std::size_t min_8bit_size_;
  std::vector<State> state_;
  std::vector<float> scratch_;  // dequantized m and v of one block
};

}  // namespace gsq
