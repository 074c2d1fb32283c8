// gemm_f32.hpp: a plain float GEMM for the reference (float and FP8) modes of the LoRA layer, and
// the transpose of a matrix view.
#pragma once

#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/tensor.hpp"

namespace gsq::detail {

/// The transpose of a matrix view (no copy): rows and columns, and their strides, swapped.
template <typename T>
MatrixRef<T> transposed(MatrixRef<T> m) noexcept {
  return {m.data, m.cols, m.rows, m.col_stride, m.row_stride};
}

/// C = alpha * A * B + beta * C in float, any strides.  Row by row with the K loop outside the
/// N loop, so the inner loop runs along contiguous rows of B and C when they are row-major and
/// compilers vectorise it.  The reference modes need it correct and simple, not fast; the
/// benchmarks compare against Eigen.  C is not read when beta == 0.
inline void gemm_f32(MatrixRef<const float> a, MatrixRef<const float> b, MatrixRef<float> c,
                     float alpha = 1.0f, float beta = 0.0f) {
  GSQ_CHECK(a.cols == b.rows && c.rows == a.rows && c.cols == b.cols, "gemm: A is ", a.rows, "x",
            a.cols, ", B is ", b.rows, "x", b.cols, " and C is ", c.rows, "x", c.cols);
  std::vector<float> row(static_cast<std::size_t>(c.cols));
  for (Index i = 0; i < c.rows; ++i) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (Index k = 0; k < a.cols; ++k) {
      const float aik = a(i, k);
      if (aik == 0.0f) continue;
      for (Index j = 0; j < c.cols; ++j) row[static_cast<std::size_t>(j)] += aik * b(k, j);
    }
    for (Index j = 0; j < c.cols; ++j) {
      const float v = alpha * row[static_cast<std::size_t>(j)];
      c(i, j) = beta == 0.0f ? v : v + beta * c(i, j);
    }
  }
}

}  // namespace gsq::detail
