// matmul/operands.hpp: the right operands the driver packs block by block (a GseView, a
// bit-packed frozen weight, a weight regrouped on the fly) and the one packed ahead.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "gsq/detail/aligned.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/kernels/dispatch.hpp"
#include "gsq/kernels/encode_scalar.hpp"
#include "gsq/kernels/panel.hpp"
#include "gsq/matmul/options.hpp"
#include "gsq/matmul/rhs_source.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {
namespace detail {

/// B from a GseView (compute form) grouped along its rows.  Group by group, so that the block
/// being written (G * nr bytes) stays in L1 while each column contributes its G contiguous codes.
template <int Bits, int GroupSize>
class ViewRhs final : public RhsSource<GroupSize> {
 public:
  explicit ViewRhs(const GseView<Bits, GroupSize>& b) : b_(b) {
    this->k_ = b.rows();
    this->n_ = b.cols();
    this->offset_ = b.offset();
  }
  void pack(Index first, Index count, const PanelShape& shape, std::uint8_t* out) const override {
    const Index block = kernels::rhs_group_bytes(GroupSize, shape.nr);
    for (Index p = first; p < first + count; ++p) {
      const Index col0 = p * shape.nr;
      const Index cols = std::min<Index>(shape.nr, this->n_ - col0);
      std::uint8_t* panel = out + (p - first) * this->panel_bytes(shape.nr);
      for (Index g = 0; g < this->groups(); ++g) {
        const kernels::PanelBlock<GroupSize> dst{panel + g * block, shape.nr, shape.biased_rhs};
        for (int l = 0; l < shape.nr; ++l) {
          if (l < cols) {
            dst.write_column(l, b_.line_codes(col0 + l) + g * GroupSize,
                             b_.line_exponents(col0 + l)[g]);
          } else {
            dst.write_empty_column(l);
          }
        }
      }
    }
  }

 private:
  GseView<Bits, GroupSize> b_;
};

}  // namespace detail

/// B straight from bit-packed storage (a frozen 4-bit weight, K x N grouped along K): its
/// panels are unpacked into the kernel layout block by block, so the weight never exists in
/// int8.  Identical results to unpacking it and multiplying by the view.
template <int Bits, int GroupSize>
class PackedStorageRhs final : public RhsSource<GroupSize> {
 public:
  explicit PackedStorageRhs(const PackedGseTensor<Bits, GroupSize>& b) : b_(b) {
    GSQ_CHECK(b.axis() == Axis::kRows, "matmul: B is ", b.rows(), "x", b.cols(), " grouped along ",
              to_string(b.axis()),
              ", but the right operand must be grouped along its rows (the reduction axis K)");
    this->k_ = b.rows();
    this->n_ = b.cols();
    this->offset_ = b.offset();
  }
  void pack(Index first, Index count, const detail::PanelShape& shape,
            std::uint8_t* out) const override {
    const Index block = kernels::rhs_group_bytes(GroupSize, shape.nr);
    const Index groups = this->groups();
    std::vector<std::int8_t> line(static_cast<std::size_t>(groups * GroupSize), 0);
    for (Index p = first; p < first + count; ++p) {
      const Index col0 = p * shape.nr;
      const Index cols = std::min<Index>(shape.nr, this->n_ - col0);
      std::uint8_t* panel = out + (p - first) * this->panel_bytes(shape.nr);
      // Column by column: decode its line once, then write it group block by group block.
      for (int l = 0; l < shape.nr; ++l) {
        if (l < cols) b_.codes_at(col0 + l, 0, this->k_, line.data());  // the padding stays 0
        for (Index g = 0; g < groups; ++g) {
          const kernels::PanelBlock<GroupSize> dst{panel + g * block, shape.nr, shape.biased_rhs};
          if (l < cols) {
            dst.write_column(l, line.data() + g * GroupSize, b_.exponent_at(col0 + l, g));
          } else {
            dst.write_empty_column(l);
          }
        }
      }
    }
  }

 private:
  const PackedGseTensor<Bits, GroupSize>& b_;
};

namespace detail {

inline constexpr int kMaxPanelNr = 32;  // the widest kernel panel (AVX-512 VNNI)

/// One tile of TransposedRegroupedRhs's scratch: the old codes, the new ones and the new group
/// exponents (and, for its general path, each code's quantum and each new line's top).
template <int GroupSize>
struct RegroupTile {
  alignas(64) std::array<std::int8_t, GroupSize * kMaxPanelNr> codes, fresh;
  alignas(64) std::array<std::int32_t, GroupSize * kMaxPanelNr> quantum;
  std::array<std::int32_t, kMaxPanelNr> top, s_new;
  std::array<std::uint8_t, kMaxPanelNr> exponent;
};

/// TransposedRegroupedRhs's tile of old lines o0 + [0, members) x new lines i0 + [0, cols) of W
/// when the panel width divides GroupSize: the tile's positions then lie in one group of every
/// old line, so each member q has one quantum, E[q] above W's offset.  Held with row stride
/// kMaxPanelNr and computed on all kMaxPanelNr lanes in bytes (lanes past cols and members past
/// `members` hold zero codes):
///   top[l]   1 + max over q of E[q] + floor(log2 |c|), or 0 when every code is zero;
///   e[l]     the new group exponent from it (format.hpp, steps 1-3), as regroup() derives it;
///   fresh    c * 2^(E[q] - (offset + e[l] - W's offset)) where that shift is >= 0 (exact: the
///            product fits, as the top fits the new group), then nearest-even re-encoding of
///            the rest (a group whose exponent was clamped at 0).
/// Written once, compiled for each ISA below with vectors of kBytes lanes (the ISA's own width,
/// so that no compiler splits them lane by lane); every ISA computes the same bytes.
template <int Bits, int GroupSize, int kBytes>
[[gnu::always_inline]] inline void regroup_tile(const PackedGseTensor<Bits, GroupSize>& w,
                                                int offset, RegroupTile<GroupSize>& t, Index o0,
                                                Index members, Index i0, Index cols) noexcept {
  static_assert(GseFormat<Bits, GroupSize>::kQMax < 128, "codes are bytes");
  typedef std::int8_t I8x16 __attribute__((vector_size(16)));
  typedef std::int8_t I8x32 __attribute__((vector_size(32)));
  typedef std::uint8_t U8x16 __attribute__((vector_size(16)));
  typedef std::uint8_t U8x32 __attribute__((vector_size(32)));
  using I8 = std::conditional_t<kBytes == 16, I8x16, I8x32>;
  using U8 = std::conditional_t<kBytes == 16, U8x16, U8x32>;
  static_assert(sizeof(I8) == kBytes && kMaxPanelNr % kBytes == 0, "whole vectors per row");
  constexpr int kParts = kMaxPanelNr / kBytes;
  constexpr int kFraction = GseFormat<8, GroupSize>::kFractionBits;
  std::fill(t.codes.begin(), t.codes.end(), std::int8_t{0});
  std::array<std::uint8_t, GroupSize> e_old{};
  for (Index q = 0; q < members; ++q) {
    w.codes_at(o0 + q, i0, cols, t.codes.data() + q * kMaxPanelNr);
    e_old[static_cast<std::size_t>(q)] =
        static_cast<std::uint8_t>(w.exponent_at(o0 + q, i0 / GroupSize));
  }
  // Comparisons give masks (-1 where they hold): every select below is bitwise.
  alignas(64) std::array<std::uint8_t, kMaxPanelNr> top;
  for (int part = 0; part < kParts; ++part) {
    U8 top_part{};
    for (Index q = 0; q < members; ++q) {
      I8 c;
      std::memcpy(&c, t.codes.data() + q * kMaxPanelNr + part * kBytes, sizeof c);
      const I8 negative = c < 0;
      const I8 m = (c ^ negative) - negative;  // |c| <= 127: codes are symmetric
      // 1 + E[q] + floor(log2 m): each comparison that holds is -1, so subtracting adds 1.
      I8 v = I8{} + static_cast<std::int8_t>(e_old[static_cast<std::size_t>(q)] + 1);
      for (int bit = 1; bit <= Bits - 2; ++bit) v -= m > static_cast<std::int8_t>((1 << bit) - 1);
      const auto candidate = reinterpret_cast<U8>(v & ~(m == 0));
      top_part = top_part < candidate ? candidate : top_part;  // max of bytes
    }
    std::memcpy(top.data() + part * kBytes, &top_part, sizeof top_part);
  }
  const int base = w.offset() - 1 - kFraction;  // a new group's q is base + its top byte
  // The new quantum above W's offset, offset + e[l] - W's offset, exactly (for the rounding
  // below) and clamped to [-40, 80] in bytes: shifts E[q] - s stay within a byte, and a clamp
  // changes none that matters (below -40 only zero codes shift, above 80 every shift is < 0).
  std::array<int, kMaxPanelNr> s_new{};
  alignas(64) std::array<std::int8_t, kMaxPanelNr> s_clamped{};
  for (std::size_t l = 0; l < kMaxPanelNr; ++l) {
    const int e = kernels::group_exponent(top[l] != 0, top[l] == 0 ? 0 : base + top[l], offset).e;
    t.exponent[l] = static_cast<std::uint8_t>(e);
    s_new[l] = offset + e - w.offset();
    s_clamped[l] = static_cast<std::int8_t>(std::clamp(s_new[l], -40, 80));
  }
  // c << shift in byte lanes: 1, 2 and 4 doublings, each kept where its bit of the shift is
  // set (additions, which every ISA has for bytes; unsigned, so the wraps of lanes not kept
  // are defined; the lanes kept never wrap).
  I8 rounded{};
  for (int part = 0; part < kParts; ++part) {
    I8 s;
    std::memcpy(&s, s_clamped.data() + part * kBytes, sizeof s);
    for (Index q = 0; q < members; ++q) {
      const std::size_t at = static_cast<std::size_t>(q * kMaxPanelNr + part * kBytes);
      I8 c;
      std::memcpy(&c, t.codes.data() + at, sizeof c);
      const I8 shift = static_cast<std::int8_t>(e_old[static_cast<std::size_t>(q)]) - s;
      const I8 negative = shift < 0;
      I8 up = shift & ~negative;
      const I8 big = up > 7;  // zero codes only: a nonzero one's shift is <= 6
      up = (up & ~big) | (big & 7);
      auto f = reinterpret_cast<U8>(c);
      U8 d = f + f;
      f ^= (f ^ d) & reinterpret_cast<U8>((up & 1) != 0);
      d = f + f;
      d += d;
      f ^= (f ^ d) & reinterpret_cast<U8>((up & 2) != 0);
      d = f + f;
      d += d;
      d += d;
      d += d;
      f ^= (f ^ d) & reinterpret_cast<U8>((up & 4) != 0);
      std::memcpy(t.fresh.data() + at, &f, sizeof f);
      rounded |= negative & (c != 0);
    }
  }
  std::fill(t.fresh.begin() + members * kMaxPanelNr, t.fresh.end(), std::int8_t{0});
  bool any = false;
  for (int l = 0; l < kBytes; ++l) any |= rounded[l] != 0;
  if (!any) return;
  Index unused = 0;
  for (Index q = 0; q < members; ++q) {
    const int s_old = w.offset() + e_old[static_cast<std::size_t>(q)];
    for (Index l = 0; l < cols; ++l) {
      const auto k = static_cast<std::size_t>(q * kMaxPanelNr + l);
      const int s = w.offset() + s_new[static_cast<std::size_t>(l)];
      if (s_old < s && t.codes[k] != 0)
        t.fresh[k] = reencode<8, Rounding::kNearestEven>(t.codes[k], s_old, s, 0u, unused);
    }
  }
}

template <int Bits, int GroupSize>
using RegroupTileFn = void (*)(const PackedGseTensor<Bits, GroupSize>&, int,
                               RegroupTile<GroupSize>&, Index, Index, Index, Index) noexcept;

template <int Bits, int GroupSize>
void regroup_tile_generic(const PackedGseTensor<Bits, GroupSize>& w, int offset,
                          RegroupTile<GroupSize>& t, Index o0, Index members, Index i0,
                          Index cols) noexcept {
  regroup_tile<Bits, GroupSize, 16>(w, offset, t, o0, members, i0, cols);
}
#if GSQ_X86
template <int Bits, int GroupSize>
GSQ_TARGET_AVX2 void regroup_tile_avx2(const PackedGseTensor<Bits, GroupSize>& w, int offset,
                                       RegroupTile<GroupSize>& t, Index o0, Index members,
                                       Index i0, Index cols) noexcept {
  regroup_tile<Bits, GroupSize, 32>(w, offset, t, o0, members, i0, cols);
}
template <int Bits, int GroupSize>
GSQ_TARGET_AVX512 void regroup_tile_avx512(const PackedGseTensor<Bits, GroupSize>& w, int offset,
                                           RegroupTile<GroupSize>& t, Index o0, Index members,
                                           Index i0, Index cols) noexcept {
  regroup_tile<Bits, GroupSize, 32>(w, offset, t, o0, members, i0, cols);
}
#endif

/// regroup_tile compiled for `isa` (a conversion ISA: the work is byte lanes, no dot products).
template <int Bits, int GroupSize>
RegroupTileFn<Bits, GroupSize> regroup_tile_kernel(Isa isa) {
  return kernels::dispatch<Isa::kAvx2, Isa::kAvx512>(
      isa, [](auto tag) -> RegroupTileFn<Bits, GroupSize> {
        [[maybe_unused]] constexpr Isa kIsa = decltype(tag)::value;
#if GSQ_X86
        if constexpr (kIsa == Isa::kAvx512) return &regroup_tile_avx512<Bits, GroupSize>;
        if constexpr (kIsa == Isa::kAvx2) return &regroup_tile_avx2<Bits, GroupSize>;
#endif
        return &regroup_tile_generic<Bits, GroupSize>;
      });
}

}  // namespace detail

/// W^T as the right operand, for W (R x C) bit-packed and grouped along its rows: the product
/// reduces over C, so W is regrouped along C to GSE-INT8 on the fly, tile by tile, as it is
/// packed.  Bit-identical to matmul(A, regroup<8>(W.unpack(), Axis::kCols).view().transposed())
/// (nearest-even), without ever holding the regrouped weight.  Construction scans W once for
/// the new offset; keep the object while W is frozen (it refers to W).
template <int Bits, int GroupSize>
class TransposedRegroupedRhs final : public RhsSource<GroupSize> {
 public:
  static constexpr int kFraction = GseFormat<8, GroupSize>::kFractionBits;

  explicit TransposedRegroupedRhs(const PackedGseTensor<Bits, GroupSize>& w)
      : TransposedRegroupedRhs(w, offset_of(w)) {}

  /// With the offset offset_of(w) computed ahead (W is frozen: compute it once).
  TransposedRegroupedRhs(const PackedGseTensor<Bits, GroupSize>& w, int offset) : w_(w) {
    GSQ_CHECK(w.axis() == Axis::kRows, "matmul: W is ", w.rows(), "x", w.cols(), " grouped along ",
              to_string(w.axis()),
              "; the transposed-regrouped operand needs W grouped along its rows");
    this->k_ = w.cols();
    this->n_ = w.rows();
    this->offset_ = offset;
  }

  /// The offset T of the regrouped GSE-INT8 weight (one scan of W); rejects corrupt codes.
  static int offset_of(const PackedGseTensor<Bits, GroupSize>& w) {
    int top = INT_MIN;
    for (Index line = 0; line < w.lines(); ++line) {
      for (Index pos = 0; pos < w.length(); ++pos) {
        const int c = w.code_at(line, pos);
        if (c != 0)
          top = std::max(top,
                         w.offset() + w.exponent_at(line, pos / GroupSize) + detail::code_log2(c));
      }
    }
    return kernels::tensor_offset(top == INT_MIN ? INT_MIN : top - kFraction);
  }

  void pack(Index first, Index count, const detail::PanelShape& shape,
            std::uint8_t* out) const override {
    const int nr = shape.nr;
    const Index block = kernels::rhs_group_bytes(GroupSize, nr);
    // One tile at a time: GroupSize old lines (W's columns, q) x nr positions (W's rows, l),
    // held q-major so that every step below is a loop over l that vectorises.
    // Every kernel's nr is at most kMaxNr, so the tile lives on the stack (pack runs per panel).
    GSQ_CHECK(nr > 0 && nr <= kMaxNr, "matmul: a panel of ", nr, " columns; at most ", kMaxNr);
    Tile t;
    const detail::RegroupTileFn<Bits, GroupSize> uniform =
        detail::regroup_tile_kernel<Bits, GroupSize>(conversion_isa());
    for (Index p = first; p < first + count; ++p) {
      const Index i0 = p * nr;  // new lines: rows of W
      const Index cols = std::min<Index>(nr, this->n_ - i0);
      std::uint8_t* panel = out + (p - first) * this->panel_bytes(nr);
      for (Index g = 0; g < this->groups(); ++g) {
        const Index o0 = g * GroupSize;  // new positions: columns of W (old lines)
        const Index members = std::min<Index>(GroupSize, this->k_ - o0);
        const kernels::PanelBlock<GroupSize> dst{panel + g * block, nr, shape.biased_rhs};
        if (GroupSize % nr == 0) {
          uniform(w_, this->offset_, t, o0, members, i0, cols);  // every kernel's (nr 8, 32)
          dst.write_tile(t.fresh.data(), kMaxNr, t.exponent.data());
        } else {
          general_tile(t, o0, members, i0, cols, nr);
          dst.write_tile(t.fresh.data(), nr, t.exponent.data());
        }
      }
    }
  }

 private:
  static constexpr int kNone = -100000;  // a zero code's log2: branch-free over the members
  static constexpr int kMaxNr = detail::kMaxPanelNr;

  typedef std::int8_t I8x16 __attribute__((vector_size(16)));
  using I32x16 = detail::I32x16;
  using F32x16 = detail::F32x16;

  using Tile = detail::RegroupTile<GroupSize>;

  /// The same tile for any nr (row stride nr), each code with its own quantum.
  void general_tile(Tile& t, Index o0, Index members, Index i0, Index cols, int nr) const {
    const auto tile = static_cast<std::ptrdiff_t>(GroupSize * nr);
    std::fill(t.codes.begin(), t.codes.begin() + tile, std::int8_t{0});
    std::fill(t.quantum.begin(), t.quantum.begin() + tile, 0);
    for (Index q = 0; q < members; ++q) {
      w_.codes_at(o0 + q, i0, cols, t.codes.data() + q * nr);
      std::int32_t* s = t.quantum.data() + q * nr;
      for (Index l = 0; l < cols; l += GroupSize - (i0 + l) % GroupSize) {
        const int e = w_.offset() + w_.exponent_at(o0 + q, (i0 + l) / GroupSize);
        const Index run = std::min<Index>(cols - l, GroupSize - (i0 + l) % GroupSize);
        std::fill(s + l, s + l + run, e);
      }
    }
    // Each new line's group exponent, as regroup() derives it (format.hpp, steps 1-3):
    // the top quantum + floor(log2 |c|) over its members (codes past cols are zero).
    exponent_tops(t.codes.data(), t.quantum.data(), members, nr, t.top.data());
    for (int l = 0; l < nr; ++l) {
      const int e = kernels::group_exponent(t.top[static_cast<std::size_t>(l)] >= kNone / 2,
                                            t.top[static_cast<std::size_t>(l)] - kFraction,
                                            this->offset_).e;
      t.exponent[static_cast<std::size_t>(l)] = static_cast<std::uint8_t>(e);
      t.s_new[static_cast<std::size_t>(l)] = this->offset_ + e;
    }
    // The codes at the new quantum: a left shift (exact) wherever the member's quantum is
    // not below the new one, the common case; rounded (nearest-even) re-encoding of the
    // rest afterwards.  Zero codes give zero either way.
    if (shifted_codes(t.codes.data(), t.quantum.data(), t.s_new.data(), members, nr,
                      t.fresh.data())) {
      Index unused = 0;
      for (Index q = 0; q < members; ++q) {
        for (int l = 0; l < nr; ++l) {
          const auto k = static_cast<std::size_t>(q * nr + l);
          const std::int32_t s_new = t.s_new[static_cast<std::size_t>(l)];
          if (t.quantum[k] < s_new && t.codes[k] != 0)
            t.fresh[k] = detail::reencode<8, Rounding::kNearestEven>(t.codes[k], t.quantum[k],
                                                                      s_new, 0u, unused);
        }
      }
    }
    std::fill(t.fresh.begin() + members * nr, t.fresh.begin() + tile, std::int8_t{0});
  }


  /// floor(log2 |c|) for c in [-128, 127], or kNone for c == 0: from the exponent field of
  /// |c| as a float (exact).
  static int log2_or_none(int c) noexcept {
    const int m = c < 0 ? -c : c;
    std::uint32_t bits;
    const float f = static_cast<float>(m);
    std::memcpy(&bits, &f, sizeof bits);
    const int l = static_cast<int>(bits >> 23) - 127;
    return m == 0 ? kNone : l;
  }

  /// top[l] = the largest quantum[q][l] + floor(log2 |codes[q][l]|) over q < members (kNone
  /// when every code is zero), the tile held q-major with nr columns; 16 columns at a time.
  static void exponent_tops(const std::int8_t* codes, const std::int32_t* quantum, Index members,
                            int nr, std::int32_t* top) noexcept {
    int l0 = 0;
    for (; l0 + 16 <= nr; l0 += 16) {
      I32x16 t = I32x16{} + kNone;
      for (Index q = 0; q < members; ++q) {
        I8x16 c8;
        I32x16 s;
        std::memcpy(&c8, codes + q * nr + l0, sizeof c8);
        std::memcpy(&s, quantum + q * nr + l0, sizeof s);
        const I32x16 c = __builtin_convertvector(c8, I32x16);
        const I32x16 m = c < 0 ? -c : c;
        const F32x16 f = __builtin_convertvector(m, F32x16);
        const I32x16 lg = (reinterpret_cast<I32x16>(f) >> 23) - 127;
        const I32x16 v = s + (m == 0 ? I32x16{} + kNone : lg);
        t = t < v ? v : t;
      }
      std::memcpy(top + l0, &t, sizeof t);
    }
    for (int l = l0; l < nr; ++l) {
      int t = kNone;
      for (Index q = 0; q < members; ++q)
        t = std::max(t, quantum[q * nr + l] + log2_or_none(codes[q * nr + l]));
      top[l] = t;
    }
  }

  /// fresh[q][l] = codes[q][l] * 2^(quantum[q][l] - s_new[l]) where that shift is >= 0 (exact);
  /// returns whether some nonzero code has a negative shift (it needs rounding).
  static bool shifted_codes(const std::int8_t* codes, const std::int32_t* quantum,
                            const std::int32_t* s_new, Index members, int nr,
                            std::int8_t* fresh) noexcept {
    I32x16 any{};
    int rounded = 0;
    for (Index q = 0; q < members; ++q) {
      const std::int8_t* c = codes + q * nr;
      const std::int32_t* s = quantum + q * nr;
      std::int8_t* f = fresh + q * nr;
      int l0 = 0;
      for (; l0 + 16 <= nr; l0 += 16) {
        I8x16 c8;
        I32x16 sv, nv;
        std::memcpy(&c8, c + l0, sizeof c8);
        std::memcpy(&sv, s + l0, sizeof sv);
        std::memcpy(&nv, s_new + l0, sizeof nv);
        const I32x16 cv = __builtin_convertvector(c8, I32x16);
        const I32x16 shift = sv - nv;
        I32x16 up = shift < 0 ? I32x16{} : shift;
        up = up > 24 ? I32x16{} + 24 : up;
        const I8x16 out = __builtin_convertvector(cv * ((I32x16{} + 1) << up), I8x16);
        std::memcpy(f + l0, &out, sizeof out);
        any |= (shift < 0) & (cv != 0);
      }
      for (int l = l0; l < nr; ++l) {
        const int shift = s[l] - s_new[l];
        const int up = shift < 0 ? 0 : (shift > 24 ? 24 : shift);
        f[l] = static_cast<std::int8_t>(c[l] * (1 << up));
        rounded |= static_cast<int>(shift < 0 && c[l] != 0);
      }
    }
    for (int j = 0; j < 16; ++j) rounded |= any[j] != 0;
    return rounded != 0;
  }

  const PackedGseTensor<Bits, GroupSize>& w_;
};

/// The right operand B (K x N, grouped along K) packed once for the matmul kernels, so a frozen
/// weight is laid out for the kernel a single time and reused by every call.  Packing is for one
/// ISA; matmul() with a different ISA rejects it.  Holds K * N code bytes (rounded up to whole
/// panels of columns) plus 4 bytes per group and column.
template <int GroupSize = 32>
class PackedMatmulRhs final : public RhsSource<GroupSize> {
 public:
  PackedMatmulRhs() = default;

  template <int Bits>
  static PackedMatmulRhs pack(const GseView<Bits, GroupSize>& b,
                              const MatmulOptions& options = {}) {
    PackedMatmulRhs p;
    p.assign(b, options);
    return p;
  }

  /// Repacks from `b`, reusing this object's storage when it is large enough (a per-step
  /// operand such as a regrouped weight or an adapter then costs no allocation).
  template <int Bits>
  void assign(const GseView<Bits, GroupSize>& b, const MatmulOptions& options = {}) {
    GSQ_CHECK(b.axis() == Axis::kRows, "matmul: B is ", b.rows(), "x", b.cols(), " grouped along ",
              to_string(b.axis()),
              ", but the right operand must be grouped along its rows (the reduction axis K)");
    assign(detail::ViewRhs<Bits, GroupSize>(b), options);
  }

  /// Packs any right operand (for example a bit-packed frozen weight, see rhs_of) ahead.
  void assign(const RhsSource<GroupSize>& b, const MatmulOptions& options = {}) {
    isa_ = detail::matmul_kernel_isa(options.isa);
    shape_ = detail::panel_shape(isa_);
    this->k_ = b.rows();
    this->n_ = b.cols();
    this->offset_ = b.offset();
    const Index panels = (this->n_ + shape_.nr - 1) / shape_.nr;
    data_.resize(static_cast<std::size_t>(panels * panel_bytes()));
    detail::parallel_for(
        panels,
        detail::threads_for(static_cast<double>(this->k_) * static_cast<double>(this->n_),
                            options.threads),
        [&](Index j) { b.pack(j, 1, shape_, data_.data() + j * panel_bytes()); });
  }

  Isa isa() const noexcept { return isa_; }
  /// Bytes of one panel of the kernel's kNr columns.
  Index panel_bytes() const noexcept { return RhsSource<GroupSize>::panel_bytes(shape_.nr); }
  const std::uint8_t* panel(Index p) const noexcept { return data_.data() + p * panel_bytes(); }
  std::size_t bytes() const noexcept { return sizeof(*this) + data_.size(); }

  void pack(Index first, Index count, const detail::PanelShape& shape,
            std::uint8_t* out) const override {
    GSQ_DASSERT(shape.nr == shape_.nr && shape.biased_rhs == shape_.biased_rhs);
    (void)shape;
    const auto bytes = static_cast<std::size_t>(count * panel_bytes());
    if (bytes != 0) std::memcpy(out, panel(first), bytes);  // K = 0 or no panels: nothing held
  }
  const std::uint8_t* prepacked(Index p) const noexcept override { return panel(p); }
  std::optional<Isa> packed_isa() const noexcept override { return isa_; }

 private:
  detail::AlignedVector<std::uint8_t> data_;
  detail::PanelShape shape_;
  Isa isa_ = Isa::kScalar;
};

}  // namespace gsq
