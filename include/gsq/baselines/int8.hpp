// int8.hpp: symmetric INT8 with one per-tensor scale, the integer comparison format.
//
// Format policy: code in [-127, 127] (-128 is never produced, so negation is closed), element
// value = code * scale, scale = amax / 127. Rounding of x / scale is kNearestEven, computed with
// integer operations so that it never depends on the floating-point environment. NaN and Inf in
// the input are errors. The sign of zero is not kept (an int8 code has none).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/per_tensor.hpp"

namespace gsq {

/// Row-major INT8 tensor with one per-tensor scale: element (r, c) stands for
/// data[r * cols + c] * scale. Owns its codes; `data.size() == rows * cols`.
struct Int8Tensor {
  static constexpr int kQMax = 127;  // symmetric [-kQMax, kQMax]
  std::vector<std::int8_t> data;
  float scale = 1.0f;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;

  /// Dequantized element (r, c), one float multiply. Precondition (unchecked): 0 <= r < rows,
  /// 0 <= c < cols.
  float at(std::ptrdiff_t r, std::ptrdiff_t c) const noexcept {
    GSQ_DASSERT(r >= 0 && r < rows && c >= 0 && c < cols);
    return static_cast<float>(data[static_cast<std::size_t>(r * cols + c)]) * scale;
  }
};

namespace detail {

/// Rounds y to the nearest integer, ties to even, and clamps to [-127, 127]. Precondition:
/// |y| < 2^31. Truncation and the fraction |y| - trunc(|y|) are exact (Sterbenz), so the tie
/// test is exact and no rounding mode is involved.
inline std::int8_t int8_round_clamp(float y) noexcept {
  const float ay = y < 0.0f ? -y : y;
  const auto t = static_cast<std::int32_t>(ay);
  const float frac = ay - static_cast<float>(t);
  const std::int32_t tie_odd = static_cast<std::int32_t>(frac == 0.5f) & t & 1;
  const std::int32_t q0 = t + (static_cast<std::int32_t>(frac > 0.5f) | tie_odd);
  const std::int32_t q = q0 < Int8Tensor::kQMax ? q0 : Int8Tensor::kQMax;
  return static_cast<std::int8_t>(y < 0.0f ? -q : q);
}

}  // namespace detail

/// Quantizes the rows x cols row-major matrix at `src` (leading dimension `ld` >= cols) to
/// symmetric INT8: scale = amax / 127 (one float division; 1 if every element is zero; never
/// below FLT_MIN, the smallest normal float), code = x / scale rounded kNearestEven and clamped
/// to [-127, 127]. Error: |x - at(r, c)| <= scale / 2, up to the float roundings of x / scale
/// and code * scale (each at most 127 * 2^-24 * scale).
/// Throws std::invalid_argument for a negative shape, ld < cols, a null src with elements, or a
/// NaN or Inf in the matrix; the message names the first one's row and column (zero-based).
/// Elements between cols and ld are never read. Cost: two passes over src, one allocation.
inline Int8Tensor quantize_int8(const float* src, std::ptrdiff_t rows, std::ptrdiff_t cols,
                                std::ptrdiff_t ld) {
  const float amax = detail::checked_amax("quantize_int8", src, rows, cols, ld);
  Int8Tensor t;
  t.rows = rows;
  t.cols = cols;
  t.scale = detail::per_tensor_scale(amax, static_cast<float>(Int8Tensor::kQMax));
  t.data.resize(static_cast<std::size_t>(rows * cols));
  std::int8_t* out = t.data.data();
  const float scale = t.scale;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const float* row = src + r * ld;
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      out[r * cols + c] = detail::int8_round_clamp(row[c] / scale);
    }
  }
  return t;
}

/// Writes code * scale (one float rounding) for every element of `t` into the row-major matrix
/// at `dst` with leading dimension `ld` >= t.cols; entries between cols and ld are left
/// untouched. Throws std::invalid_argument if t.data.size() != rows * cols, ld < cols, or dst
/// is null while t has elements.
inline void dequantize_int8(const Int8Tensor& t, float* dst, std::ptrdiff_t ld) {
  detail::check_dequantize_shape("dequantize_int8", t.data.size(), t.rows, t.cols, dst, ld);
  const std::int8_t* in = t.data.data();
  for (std::ptrdiff_t r = 0; r < t.rows; ++r) {
    for (std::ptrdiff_t c = 0; c < t.cols; ++c) {
      dst[r * ld + c] = static_cast<float>(in[r * t.cols + c]) * t.scale;
    }
  }
}

/// Returns the dequantized tensor as a dense row-major vector of rows * cols floats.
inline std::vector<float> dequantize_int8(const Int8Tensor& t) {
  std::vector<float> out(t.data.size());
  dequantize_int8(t, out.data(), t.cols);
  return out;
}

}  // namespace gsq
