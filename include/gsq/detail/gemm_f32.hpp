// gemm_f32.hpp: the float GEMM of the reference (float and FP8) modes of the LoRA layer and the
// model, and the transpose of a matrix view.
#pragma once

#include <type_traits>
#include <vector>

// Define GSQ_FLOAT_GEMM_EIGEN (and put Eigen on the include path) to run the float GEMM with
// Eigen's, so that the float modes are an honest float baseline (the benchmarks and examples
// do, when Eigen is found).  Define it for every translation unit of a program or none: the
// two GEMMs round differently.  gsq's GSE paths never use it.
#if defined(GSQ_FLOAT_GEMM_EIGEN)
#include <Eigen/Core>
#endif

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
#if defined(GSQ_FLOAT_GEMM_EIGEN)
  // Each operand as an Eigen map of its layout: row-major (unit column stride) or column-major
  // (unit row stride); other strides take the loop below.
  using Dyn = Eigen::OuterStride<>;
  auto with_map = [](auto m, auto&& f) {
    using T = std::remove_pointer_t<decltype(m.data)>;
    using Row = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic,
                              Eigen::RowMajor>;
    using Col = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic>;
    using RowMap = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Row, Row>, 0, Dyn>;
    using ColMap = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Col, Col>, 0, Dyn>;
    if (m.col_stride == 1) return f(RowMap(m.data, m.rows, m.cols, Dyn(m.row_stride))), true;
    if (m.row_stride == 1) return f(ColMap(m.data, m.rows, m.cols, Dyn(m.col_stride))), true;
    return false;
  };
  bool done = false;
  if (a.rows > 0 && a.cols > 0 && b.cols > 0) {
    with_map(a, [&](auto am) {
      with_map(b, [&](auto bm) {
        done = with_map(c, [&](auto cm) {
          if (beta == 0.0f) {
            cm.noalias() = alpha * (am * bm);
          } else {
            cm *= beta;
            cm.noalias() += alpha * (am * bm);
          }
        });
      });
    });
  }
  if (done) return;
#endif
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
