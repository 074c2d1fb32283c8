// eigen.hpp: Eigen interop (the only gsq header that includes Eigen).
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "gsq/convert.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// A MatrixRef over an Eigen object with direct storage access (Matrix, Map, Ref, Block), row- or
/// column-major, any strides.  No copy.
template <typename Derived>
MatrixRef<const typename Derived::Scalar> as_matrix_ref(const Eigen::DenseBase<Derived>& m) {
  static_assert((Derived::Flags & Eigen::DirectAccessBit) != 0,
                "as_matrix_ref needs an Eigen object with direct storage access; call .eval()");
  const auto& d = m.derived();
  const Index inner = d.innerStride();
  const Index outer = d.outerStride();
  if constexpr ((Derived::Flags & Eigen::RowMajorBit) != 0) {
    return {d.data(), d.rows(), d.cols(), outer, inner};
  } else {
    return {d.data(), d.rows(), d.cols(), inner, outer};
  }
}

/// Quantizes any float Eigen expression (Matrix, Map, Ref, Block, or an expression, which is
/// evaluated first) with groups along `axis`.  See quantize_into in convert.hpp.
template <int Bits, int GroupSize = 32, typename Derived>
GseTensor<Bits, GroupSize> quantize(const Eigen::MatrixBase<Derived>& m, Axis axis,
                                    const QuantizeOptions& options = {},
                                    ConversionStats* stats = nullptr) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>,
                "gsq::quantize reads float Eigen matrices");
  if constexpr ((Derived::Flags & Eigen::DirectAccessBit) != 0) {
    return quantize<Bits, GroupSize>(as_matrix_ref(m), axis, options, stats);
  } else {
    const auto evaluated = m.eval();
    return quantize<Bits, GroupSize>(as_matrix_ref(evaluated), axis, options, stats);
  }
}

/// The values of a GSE tensor as an Eigen matrix (column-major unless Options says RowMajor).
template <int Options = Eigen::ColMajor, int Bits, int GroupSize>
Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Options> to_eigen(
    const GseView<Bits, GroupSize>& src) {
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Options> out(src.rows(), src.cols());
  if (out.size() == 0) return out;
  if constexpr ((Options & Eigen::RowMajor) != 0) {
    dequantize_into(src, MatrixRef<float>::row_major(out.data(), src.rows(), src.cols()));
  } else {
    dequantize_into(src, MatrixRef<float>::col_major(out.data(), src.rows(), src.cols()));
  }
  return out;
}
template <int Options = Eigen::ColMajor, int Bits, int GroupSize>
Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Options> to_eigen(
    const GseTensor<Bits, GroupSize>& src) {
  return to_eigen<Options>(src.view());
}

}  // namespace gsq
