// per_tensor.hpp: shape checks, amax and scale shared by baselines/fp8.hpp and baselines/int8.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "gsq/detail/check.hpp"
#include "gsq/half.hpp"

namespace gsq::detail {

/// Fails naming the first NaN or Inf of `row` (row index `r`, `cols` elements), as
/// "<fn>: NaN at row r, column c (zero-based); the input must be finite". Precondition: the row
/// holds a NaN or Inf. Cost: one scan of the row; only called on the error path.
[[noreturn]] inline void report_non_finite(const char* fn, const float* row, std::ptrdiff_t r,
                                           std::ptrdiff_t cols) {
  for (std::ptrdiff_t c = 0; c < cols; ++c) {
    const std::uint32_t a = float_bits(row[c]) & 0x7FFFFFFFu;
    const bool finite = a < 0x7F800000u;
    const char* what = a > 0x7F800000u ? "NaN" : (row[c] < 0 ? "-Inf" : "Inf");
    GSQ_CHECK(finite, fn, ": ", what, " at row ", r, ", column ", c,
              " (zero-based); the input must be finite");
  }
  // Only reachable if another thread changed the row between the two scans.
  ::gsq::detail::fail(cat(fn, ": non-finite value in row ", r, " vanished on the second scan"),
                      __FILE__, __LINE__);
}

/// Checks the shape of a rows x cols row-major source with leading dimension `ld` (non-negative
/// shape, ld >= cols, no std::ptrdiff_t overflow of the element count or the extent, src not null
/// when there are elements), then returns max |x| exactly (0 for an empty tensor). Fails naming
/// `fn` and the first NaN or Inf in row-major order. Elements between cols and ld are never read.
/// The inner loop is branch-free: the maximum of |x| as integer bits is >= the Inf pattern
/// exactly when the row holds NaN or Inf. Cost: one pass over src.
inline float checked_amax(const char* fn, const float* src, std::ptrdiff_t rows,
                          std::ptrdiff_t cols, std::ptrdiff_t ld) {
  GSQ_CHECK(rows >= 0 && cols >= 0, fn, ": rows (", rows, ") and cols (", cols,
            ") must be non-negative");
  GSQ_CHECK(ld >= cols, fn, ": ld (", ld, ") must be at least cols (", cols,
            ") for a row-major source");
  GSQ_CHECK(cols == 0 || rows <= std::numeric_limits<std::ptrdiff_t>::max() / cols, fn, ": ", rows,
            "x", cols, " elements overflow std::ptrdiff_t");
  GSQ_CHECK(rows <= 1 || ld <= (std::numeric_limits<std::ptrdiff_t>::max() - cols) / (rows - 1), fn,
            ": the source extent (rows - 1) * ld + cols overflows std::ptrdiff_t (rows ", rows,
            ", ld ", ld, ")");
  GSQ_CHECK(src != nullptr || rows == 0 || cols == 0, fn, ": src is null for a ", rows, "x", cols,
            " tensor");
  std::uint32_t amax = 0;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const float* row = src + r * ld;
    std::uint32_t row_max = 0;
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      const std::uint32_t a = float_bits(row[c]) & 0x7FFFFFFFu;
      row_max = a > row_max ? a : row_max;
    }
    if (row_max >= 0x7F800000u) report_non_finite(fn, row, r, cols);
    amax = row_max > amax ? row_max : amax;
  }
  return bits_float(amax);
}

/// The per-tensor scale that maps `amax` (finite, >= 0) to `qmax` (> 0): amax / qmax, one float
/// division rounded to nearest; 1 for an all-zero tensor (amax == 0); never below FLT_MIN, the
/// smallest normal float, so a tiny amax cannot give a zero or subnormal scale.
inline float per_tensor_scale(float amax, float qmax) noexcept {
  if (amax == 0.0f) return 1.0f;
  const float s = amax / qmax;
  return s < std::numeric_limits<float>::min() ? std::numeric_limits<float>::min() : s;
}

/// Checks a per-tensor quantized rows x cols tensor holding `size` codes and its row-major
/// destination `dst` with leading dimension `ld`: non-negative shape, no std::ptrdiff_t overflow,
/// size == rows * cols, ld >= cols, dst not null when there are elements. Fails naming `fn`.
inline void check_dequantize_shape(const char* fn, std::size_t size, std::ptrdiff_t rows,
                                   std::ptrdiff_t cols, const float* dst, std::ptrdiff_t ld) {
  GSQ_CHECK(rows >= 0 && cols >= 0, fn, ": rows (", rows, ") and cols (", cols,
            ") must be non-negative");
  GSQ_CHECK(cols == 0 || rows <= std::numeric_limits<std::ptrdiff_t>::max() / cols, fn, ": ", rows,
            "x", cols, " elements overflow std::ptrdiff_t");
  GSQ_CHECK(size == static_cast<std::size_t>(rows * cols), fn, ": data holds ", size,
            " codes but the tensor is ", rows, "x", cols);
  GSQ_CHECK(ld >= cols, fn, ": ld (", ld, ") must be at least cols (", cols,
            ") for a row-major destination");
  GSQ_CHECK(dst != nullptr || rows == 0 || cols == 0, fn, ": dst is null for a ", rows, "x", cols,
            " tensor");
}

}  // namespace gsq::detail
