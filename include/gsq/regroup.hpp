// regroup.hpp: re-encode a GSE tensor with its groups along the other axis, in integers.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/encode_scalar.hpp"
#include "gsq/kernels/quantize_scalar.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

// Why regroup
// ---------------------------------------------------------------------------------------------
// A matmul reduces along the axis its operands are grouped along.  The LoRA backward reduces a
// frozen weight along out_features (dX = dY * W^T) although its forward groups it along
// in_features, and reduces activations along tokens (dA = X^T * ...) although the forward
// groups them along in_features.  Rather than keep float copies, or kernels that rescale every
// value on the fly, gsq re-encodes the integer tensor once with groups along the other axis.
//
// What regroup computes
//   regroup(src, axis) = the encoding (format.hpp, "Encoding") of the exact values
//   c * 2^(T + E) of src, with groups along `axis`.
// It runs in integers only: each new group's exponent is the largest floor(log2|value|) among
// its members (the old exponent plus the code's bit length), and each code is shifted to the
// new quantum and rounded exactly as the float encoder rounds (same 32 fraction bits, same
// stochastic stream keyed by (seed, new line, position)).  So for every tensor whose values are
// float32 numbers (every tensor quantize() produced), regroup(src, axis) equals
// quantize(dequantize(src), axis) bit for bit, on every rounding mode.
//
// The error it adds
//   One more rounding: each value moves by at most half a new quantum (nearest modes), on top
//   of the first quantization's error.  Values whose old group exponent was below the new
//   group's lose low bits; none is lost when BitsOut - BitsIn covers the spread of old
//   exponents within the new group, so regrouping a 4-bit weight into 8-bit codes (the kernels
//   run int8 for every width anyway) is exact whenever that spread is at most 4 binades.
//   examples/quant_report prints the measured error of both choices.

namespace detail {

/// floor(log2(|c|)) for a nonzero code.
inline int code_log2(int c) noexcept {
  const auto mag = static_cast<std::uint32_t>(c < 0 ? -c : c);
  return 31 - kernels::detail::count_leading_zeros(mag);
}

/// Encodes code c of quantum s at quantum s_new >= (its group's q), format.hpp step 4.
template <int BitsOut, Rounding R>
std::int8_t reencode(int c, int s, int s_new, std::uint32_t random, Index& saturated) noexcept {
  constexpr auto kQMax = static_cast<std::uint32_t>(GseFormat<BitsOut>::kQMax);
  const auto mag = static_cast<std::uint32_t>(c < 0 ? -c : c);
  const int sh = s_new - s;
  std::uint32_t out;
  if (sh <= 0) {
    out = mag << std::min(-sh, 31);  // exact; fits, since s_new >= q of the group
  } else {
    const std::uint64_t t = (std::uint64_t{mag} << 32) >> std::min(sh, 63);
    out = static_cast<std::uint32_t>(t >> 32);
    out += kernels::detail::round_up<R>(static_cast<std::uint32_t>(t), out, random);
  }
  if (out > kQMax) {
    out = kQMax;
    ++saturated;
  }
  const auto code = static_cast<std::int8_t>(out);
  return c < 0 ? static_cast<std::int8_t>(-code) : code;
}

/// Visits every nonzero code of `src` that lands in new lines [nl_begin, nl_end) as
/// visit(code, old quantum, new line, new pos), in tiles of 64 x 64 so that a transposing regroup
/// reads and writes within cache-sized blocks.
template <bool Transposed, int Bits, int GroupSize, typename Visit>
void for_each_code(const GseView<Bits, GroupSize>& src, Index nl_begin, Index nl_end,
                   Visit&& visit) {
  constexpr Index kTile = 64;
  // New lines are old positions when transposing, else old lines.
  const Index l_begin = Transposed ? 0 : nl_begin, l_end = Transposed ? src.lines() : nl_end;
  const Index p_begin = Transposed ? nl_begin : 0, p_end = Transposed ? nl_end : src.length();
  for (Index l0 = l_begin; l0 < l_end; l0 += kTile) {
    const Index l1 = std::min(l_end, l0 + kTile);
    for (Index p0 = p_begin; p0 < p_end; p0 += kTile) {
      const Index p1 = std::min(p_end, p0 + kTile);
      for (Index l = l0; l < l1; ++l) {
        const std::int8_t* codes = src.line_codes(l);
        const std::uint8_t* exps = src.line_exponents(l);
        for (Index p = p0; p < p1; ++p) {
          const int c = codes[p];
          if (c == 0) continue;
          const int s = src.offset() + exps[p / GroupSize];
          if constexpr (Transposed) {
            visit(c, s, p, l);
          } else {
            visit(c, s, l, p);
          }
        }
      }
    }
  }
}

/// visit as for_each_code over all of `src`, in blocks of 64 new lines split over `threads`:
/// visit(slot, code, old quantum, new line, new pos), where each new line is visited by one
/// thread only, whose slot is in [0, threads).
template <int Bits, int GroupSize, typename Visit>
void for_each_code_threaded(const GseView<Bits, GroupSize>& src, bool transposed,
                            Index new_lines, int threads, Visit&& visit) {
  constexpr Index kBlock = 64;
  parallel_for_blocks(new_lines, kBlock, threads, [&](Index first, Index count, int slot) {
    const Index nl0 = first, nl1 = first + count;
    auto at = [&](int c, int s, Index nl, Index np) { visit(slot, c, s, nl, np); };
    if (transposed) {
      for_each_code<true>(src, nl0, nl1, at);
    } else {
      for_each_code<false>(src, nl0, nl1, at);
    }
  });
}

}  // namespace detail

/// Re-encodes `src` as GSE-INT<BitsOut> with groups along `axis` (see above), into `dst`,
/// reusing its storage.  Uses options.rounding and options.seed (options.non_finite and
/// options.isa do not apply: the input is finite and the work is integer).  Reports clamped,
/// zero and saturated groups in `stats` as quantize() does.
template <int BitsOut, int BitsIn, int GroupSize>
void regroup_into(const GseView<BitsIn, GroupSize>& src, Axis axis,
                  GseTensor<BitsOut, GroupSize>& dst, const QuantizeOptions& options = {},
                  ConversionStats* stats = nullptr) {
  GSQ_CHECK(src.lines() == 0 || src.length() <= INT_MAX - 4096, "regroup: lines of ", src.length(),
            " values are longer than supported (2^31 - 4096)");
  GSQ_CHECK(static_cast<const void*>(src.line_codes(0)) !=
                    static_cast<const void*>(dst.mutable_codes()) ||
                src.empty(),
            "regroup: the destination must not be the source");
  dst.reshape(src.rows(), src.cols(), axis);
  const auto view = dst.view();
  const Index groups = view.groups_per_line();
  ConversionStats st;
  st.groups = view.lines() * groups;

  // Pass 1: the largest floor(log2|value|) of every new group, held in dst's exponent bytes
  // until step 3 replaces it: 1 + its height above the source's offset (group exponent plus the
  // code's own log2, at most 31 + 6), or 0 when the group has no nonzero value.  Both passes
  // split the new lines over threads, so every thread writes its own lines only.
  static_assert(kMaxGroupExponent + BitsIn < 255, "regroup: a group's top must fit a byte");
  std::uint8_t* top = dst.mutable_exponents();
  std::fill(top, top + st.groups, std::uint8_t{0});
  const bool transposed = src.axis() != axis;
  const int threads = detail::threads_for(
      static_cast<double>(src.lines()) * static_cast<double>(src.length()) * 4.0, options.threads);
  detail::for_each_code_threaded(
      src, transposed, view.lines(), threads, [&](int, int c, int s, Index nl, Index np) {
        std::uint8_t& t = top[nl * groups + np / GroupSize];
        t = std::max(t, static_cast<std::uint8_t>(s - src.offset() + detail::code_log2(c) + 1));
      });

  // The offset and exponents, exactly as quantize() derives them (format.hpp, steps 1-3).
  constexpr int kFraction = GseFormat<BitsOut, GroupSize>::kFractionBits;
  const int base = src.offset() - 1 - kFraction;  // a group's q is base + its top byte
  int q_max = INT_MIN;
  for (Index g = 0; g < st.groups; ++g) {
    if (top[g] != 0) q_max = std::max(q_max, base + top[g]);
  }
  const int offset = kernels::tensor_offset(q_max);
  GSQ_CHECK(q_max == INT_MIN || (offset >= GseFormat<BitsOut, GroupSize>::kMinOffset &&
                                 offset <= GseFormat<BitsOut, GroupSize>::kMaxOffset),
            "regroup: the tensor's largest value needs an offset of ", offset,
            ", outside the format's range");
  dst.set_offset(offset);
  for (Index g = 0; g < st.groups; ++g) {
    const kernels::GroupExponent ge =
        kernels::group_exponent(top[g] != 0, top[g] == 0 ? 0 : base + top[g], offset);
    top[g] = ge.e;  // the group's exponent replaces its top
    st.zero_groups += ge.zero;
    st.clamped_groups += ge.clamped;
  }

  // Pass 2: every code at its new quantum.
  const Index padded = view.padded_length();
  std::vector<Index> saturated(static_cast<std::size_t>(std::max(threads, 1)), 0);
  auto encode_all = [&](auto rounding) {
    constexpr Rounding R = decltype(rounding)::value;
    std::int8_t* codes = dst.mutable_codes();
    const std::uint8_t* exponents = dst.mutable_exponents();
    detail::for_each_code_threaded(
        src, transposed, view.lines(), threads, [&](int slot, int c, int s, Index nl, Index np) {
          const int s_new = offset + exponents[nl * groups + np / GroupSize];
          const std::uint32_t random =
              R == Rounding::kStochastic
                  ? gsq::detail::random_at(
                        gsq::detail::line_key(options.seed, static_cast<std::uint64_t>(nl)),
                        static_cast<std::uint32_t>(np))
                  : 0u;
          codes[nl * padded + np] = detail::reencode<BitsOut, R>(
              c, s, s_new, random, saturated[static_cast<std::size_t>(slot)]);
        });
  };
  switch (options.rounding) {
    case Rounding::kNearestEven:
      encode_all(std::integral_constant<Rounding, Rounding::kNearestEven>{});
      break;
    case Rounding::kNearestAway:
      encode_all(std::integral_constant<Rounding, Rounding::kNearestAway>{});
      break;
    case Rounding::kTowardZero:
      encode_all(std::integral_constant<Rounding, Rounding::kTowardZero>{});
      break;
    case Rounding::kStochastic:
      encode_all(std::integral_constant<Rounding, Rounding::kStochastic>{});
      break;
  }
  for (const Index n : saturated) st.saturated += n;
  if (stats != nullptr) *stats = st;
}

/// Re-encodes `src` with groups along `axis` into a new tensor; see regroup_into.
template <int BitsOut, int BitsIn, int GroupSize>
GseTensor<BitsOut, GroupSize> regroup(const GseView<BitsIn, GroupSize>& src, Axis axis,
                                      const QuantizeOptions& options = {},
                                      ConversionStats* stats = nullptr) {
  GseTensor<BitsOut, GroupSize> t;
  regroup_into(src, axis, t, options, stats);
  return t;
}

}  // namespace gsq
