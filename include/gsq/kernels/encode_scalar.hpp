// encode_scalar.hpp: steps 2 and 3 of the encoding (format.hpp), the one implementation that
// quantize(), regroup() and the regrouping matmul operand share.
#pragma once

#include <climits>
#include <cstdint>

#include "gsq/format.hpp"

namespace gsq::kernels {

/// Step 2: the tensor offset T that puts the largest group quantum q_max at E = 31, or 0 when
/// every group is zero (q_max == INT_MIN).
constexpr int tensor_offset(int q_max) noexcept {
  return q_max == INT_MIN ? 0 : q_max - kMaxGroupExponent;
}

/// A group's stored exponent and how it was reached.
struct GroupExponent {
  std::uint8_t e = 0;    ///< E, in [0, 31]
  bool zero = false;     ///< every value of the group is zero: E = 0
  bool clamped = false;  ///< q < T: E = 0 and the group encodes at quantum T (loses low bits)
};

/// Step 3: the exponent of a group of quantum q (ignored when `nonzero` is false) under offset
/// T: E = q - T when q >= T, else 0 (clamped).
constexpr GroupExponent group_exponent(bool nonzero, int q, int offset) noexcept {
  GroupExponent g;
  if (!nonzero) {
    g.zero = true;
  } else if (q < offset) {
    g.clamped = true;
  } else {
    g.e = static_cast<std::uint8_t>(q - offset);
  }
  return g;
}

static_assert(group_exponent(true, 7, 3).e == 4 && !group_exponent(true, 7, 3).clamped);
static_assert(group_exponent(true, 2, 3).clamped && group_exponent(true, 2, 3).e == 0);
static_assert(group_exponent(false, 0, 3).zero && tensor_offset(INT_MIN) == 0);

}  // namespace gsq::kernels
