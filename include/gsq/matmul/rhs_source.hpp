// matmul/rhs_source.hpp: the right operand as the matmul driver consumes it.
#pragma once

#include <optional>

#include "gsq/kernels/panel.hpp"
#include "gsq/matmul/options.hpp"

namespace gsq {

/// A right operand as the matmul driver consumes it: K x N, grouped along K, able to write its
/// kernel panels (kernels/matmul_scalar.hpp) for any range of columns.  The driver packs one
/// L2-sized block of panels at a time, so an operand that is not packed ahead (a GseView, a
/// bit-packed frozen weight, a weight regrouped on the fly) never exists as a whole int8 copy.
template <int GroupSize>
class RhsSource {
 public:
  virtual ~RhsSource() = default;
  Index rows() const noexcept { return k_; }
  Index cols() const noexcept { return n_; }
  Index groups() const noexcept { return (k_ + GroupSize - 1) / GroupSize; }
  int offset() const noexcept { return offset_; }
  /// Writes panels [first, first + count) of `shape` (panel p holds columns
  /// [p * nr, p * nr + nr)) to out, one after the other.
  virtual void pack(Index first, Index count, const detail::PanelShape& shape,
                    std::uint8_t* out) const = 0;
  /// Panel p when the operand is already packed (PackedMatmulRhs), else null.
  virtual const std::uint8_t* prepacked(Index /*panel*/) const noexcept { return nullptr; }
  /// The ISA a prepacked operand was packed for.
  virtual std::optional<Isa> packed_isa() const noexcept { return std::nullopt; }
  /// Bytes of one panel of nr columns.
  Index panel_bytes(int nr) const noexcept {
    return groups() * kernels::rhs_group_bytes(GroupSize, nr);
  }

 protected:
  Index k_ = 0;
  Index n_ = 0;
  int offset_ = 0;
};

}  // namespace gsq
