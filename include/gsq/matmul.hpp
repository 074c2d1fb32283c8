// matmul.hpp: C = alpha * A * B + beta * C on GSE operands, bit-identical on every ISA and
// thread count.  The operation is specified to the bit in kernels/matmul_scalar.hpp.
//
// The entry points live here; matmul/ holds the rest, in the order a call meets it:
//   matmul/options.hpp     MatmulOptions (ISA, threads, block size, workspace), kernel shapes
//   matmul/rhs_source.hpp  RhsSource: the right operand as the driver consumes it
//   matmul/operands.hpp    the operands: a GseView, bit-packed storage (PackedStorageRhs), W^T
//                          regrouped on the fly (TransposedRegroupedRhs), packed ahead
//                          (PackedMatmulRhs); they write panels through kernels/panel.hpp
//   matmul/workspace.hpp   MatmulWorkspace: the caller-owned scratch memory
//   matmul/driver.hpp      the tiled driver (run_tiles) and the ISA dispatch of its kernels
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/format.hpp"
#include "gsq/matmul/driver.hpp"
#include "gsq/matmul/operands.hpp"
#include "gsq/matmul/options.hpp"
#include "gsq/matmul/rhs_source.hpp"
#include "gsq/matmul/workspace.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// C = alpha * A * B + beta * C with B packed ahead (PackedMatmulRhs).  A is M x K grouped along
/// its columns (K), C is M x N float with any strides (row-major is fastest).  The result is
/// specified to the bit in kernels/matmul_scalar.hpp and does not depend on ISA or threads.
/// C is not read when beta == 0.  Throws std::invalid_argument on mismatched shapes or axes,
/// non-finite alpha or beta, or an ISA other than the one B was packed for.
template <int BitsA, int GroupSize>
void matmul(const GseView<BitsA, GroupSize>& a, const RhsSource<GroupSize>& b, MatrixRef<float> c,
            float alpha = 1.0f, float beta = 0.0f, const MatmulOptions& options = {}) {
  GSQ_CHECK(a.axis() == Axis::kCols, "matmul: A is ",
            detail::describe(a.rows(), a.cols(), a.axis()),
            ", but the left operand must be grouped along its columns (the reduction axis K)");
  GSQ_CHECK(a.cols() == b.rows(), "matmul: A is ", detail::describe(a.rows(), a.cols(), a.axis()),
            " and B is ", detail::describe(b.rows(), b.cols(), Axis::kRows),
            ": the inner dimensions differ");
  GSQ_CHECK(c.rows == a.rows() && c.cols == b.cols(), "matmul: C is ", c.rows, "x", c.cols,
            " but A * B is ", a.rows(), "x", b.cols(), " (A is ", a.rows(), "x", a.cols(),
            ", B is ", b.rows(), "x", b.cols(), ")");
  GSQ_CHECK(std::isfinite(alpha) && std::isfinite(beta), "matmul: alpha (", alpha, ") and beta (",
            beta, ") must be finite");
  GSQ_CHECK(c.data != nullptr || c.rows * c.cols == 0, "matmul: null C for a ", c.rows, "x", c.cols,
            " result");
  const std::optional<Isa> packed = b.packed_isa();
  const Isa isa = options.isa || !packed ? detail::matmul_kernel_isa(options.isa) : *packed;
  GSQ_CHECK(!packed || isa == *packed, "matmul: B was packed for ", to_string(*packed),
            ", not for ", to_string(isa));
  if (c.rows == 0 || c.cols == 0) return;
  const int threads = detail::threads_for(
      static_cast<double>(c.rows) * static_cast<double>(c.cols) * static_cast<double>(a.cols()),
      options.threads);
  MatmulWorkspace local;  // only when the caller passed none
  MatmulWorkspace& workspace = options.workspace != nullptr ? *options.workspace : local;
  std::vector<std::int32_t>& comp = detail::WorkspaceAccess{workspace}.comp();
  comp.clear();
  if (detail::panel_shape(isa).biased_rhs) detail::lhs_compensation(a, threads, comp);
  const double scale = std::ldexp(static_cast<double>(alpha), a.offset() + b.offset());
  GSQ_CHECK(options.rhs_block_bytes >= 0, "matmul: rhs_block_bytes must be >= 0, got ",
            options.rhs_block_bytes);
  const Index block_bytes =
      options.rhs_block_bytes > 0 ? options.rhs_block_bytes : detail::kRhsBlockBytes;
  detail::tile_runner<BitsA, GroupSize>(isa)(a, comp.empty() ? nullptr : comp.data(), b, scale,
                                             beta, c, threads, block_bytes, workspace);
}

/// C = alpha * A * B + beta * C for A (M x K) grouped along K (Axis::kCols) and B (K x N)
/// grouped along K (Axis::kRows).  Mantissa widths may differ (W4 x A8): codes are int8 for all.
/// B is packed block by block as the product runs (one L2-sized block per thread, or the whole
/// of a skinny B); pack it once with PackedMatmulRhs when it is reused.
template <int BitsA, int BitsB, int GroupSize>
void matmul(const GseView<BitsA, GroupSize>& a, const GseView<BitsB, GroupSize>& b,
            MatrixRef<float> c, float alpha = 1.0f, float beta = 0.0f,
            const MatmulOptions& options = {}) {
  GSQ_CHECK(a.cols() == b.rows(), "matmul: A is ", detail::describe(a.rows(), a.cols(), a.axis()),
            " and B is ", detail::describe(b.rows(), b.cols(), b.axis()),
            ": the inner dimensions differ");
  GSQ_CHECK(b.axis() == Axis::kRows, "matmul: B is ",
            detail::describe(b.rows(), b.cols(), b.axis()),
            ", but the right operand must be grouped along its rows (the reduction axis K)");
  matmul(a, detail::ViewRhs<BitsB, GroupSize>(b), c, alpha, beta, options);
}

/// C = alpha * quantize(A) * B + beta * C from float (or Bf16/Fp16) activations: A is quantized
/// to GSE-INT<BitsA> along K with `quantize`, then multiplied as above.  Bit-identical to
/// quantize() followed by matmul().
template <int BitsA, int GroupSize, typename T>
void quantize_matmul(MatrixRef<const T> a, const RhsSource<GroupSize>& b, MatrixRef<float> c,
                     float alpha = 1.0f, float beta = 0.0f, const QuantizeOptions& quantize = {},
                     const MatmulOptions& options = {}, ConversionStats* stats = nullptr) {
  GseTensor<BitsA, GroupSize> qa;
  quantize_into(a, Axis::kCols, qa, quantize, stats);
  matmul(qa.view(), b, c, alpha, beta, options);
}

/// The same product, requantized to a GSE tensor grouped along `axis`, for a fully integer
/// pipeline.  The float result (computed as above, alpha = 1, beta = 0) is quantized with
/// `quantize`, so the output equals quantize(matmul(A, B)) bit for bit.
template <int BitsOut, int BitsA, int BitsB, int GroupSize>
void matmul_quantized(const GseView<BitsA, GroupSize>& a, const GseView<BitsB, GroupSize>& b,
                      Axis axis, GseTensor<BitsOut, GroupSize>& out,
                      const QuantizeOptions& quantize = {}, const MatmulOptions& options = {},
                      ConversionStats* stats = nullptr) {
  std::vector<float> c(static_cast<std::size_t>(a.rows() * b.cols()));
  const auto ref = MatrixRef<float>::row_major(c.data(), a.rows(), b.cols());
  matmul(a, b, ref, 1.0f, 0.0f, options);
  quantize_into(MatrixRef<const float>(ref), axis, out, quantize, stats);
}

}  // namespace gsq
