// matmul.hpp: C = alpha * A * B + beta * C on GSE operands, bit-identical on every ISA and
// thread count.  The operation is specified to the bit in kernels/matmul_scalar.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/aligned.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/matmul_avx2.hpp"
#include "gsq/kernels/matmul_avx512_vnni.hpp"
#include "gsq/kernels/matmul_neon.hpp"
#include "gsq/kernels/matmul_scalar.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// How matmul() runs.  Neither field changes a single bit of the result.
struct MatmulOptions {
  /// Kernel ISA; empty picks the best this CPU supports (matmul_isa()).  kAvx512 without VNNI
  /// runs the AVX2 kernel and kNeon without the dot product the scalar one.
  std::optional<Isa> isa;
  /// Threads; 0 lets gsq choose: up to OpenMP's default for large products, 1 for small ones
  /// (or without OpenMP).  A positive count is used as given.
  int threads = 0;
  /// Bytes of B's kernel panels that one thread packs and sweeps at a time when B is not packed
  /// ahead; 0 means detail::kRhsBlockBytes (512 KiB, sized for a 1 MiB L2).  Devices with a
  /// smaller L2 may want less.  At least one panel is always packed.
  Index rhs_block_bytes = 0;
};

/// The best ISA for matmul on this machine.
inline Isa matmul_isa() noexcept {
  if (cpu_supports(Isa::kAvx512Vnni)) return Isa::kAvx512Vnni;
  if (cpu_supports(Isa::kAvx2)) return Isa::kAvx2;
  if (cpu_supports(Isa::kNeonDot)) return Isa::kNeonDot;
  return Isa::kScalar;
}

namespace detail {

/// The kernel that runs for a requested ISA (see MatmulOptions::isa).
inline Isa matmul_kernel_isa(const std::optional<Isa>& requested) {
  if (!requested) return matmul_isa();
  GSQ_CHECK(cpu_supports(*requested), "matmul: ISA ", to_string(*requested),
            " is not available on this CPU (or is ruled out by GSQ_ISA)");
  switch (*requested) {
    case Isa::kAvx512:
      return Isa::kAvx2;
    case Isa::kNeon:
      return Isa::kScalar;
    default:
      return *requested;
  }
}

/// Tile geometry of the kernel for an ISA.
struct PanelShape {
  int mr = 0;
  int nr = 0;
  bool biased_rhs = false;
};

template <Isa I>
constexpr PanelShape panel_shape_of() noexcept {
  using K = kernels::MatmulKernel<I>;
  return PanelShape{K::kMr, K::kNr, K::kBiasedRhs};
}

inline PanelShape panel_shape(Isa isa) noexcept {
  switch (isa) {
#if GSQ_X86
    case Isa::kAvx2:
      return panel_shape_of<Isa::kAvx2>();
    case Isa::kAvx512Vnni:
      return panel_shape_of<Isa::kAvx512Vnni>();
#endif
#if GSQ_ARM64
    case Isa::kNeonDot:
      return panel_shape_of<Isa::kNeonDot>();
#endif
    default:
      return panel_shape_of<Isa::kScalar>();
  }
}

/// Packs columns [first, first + count) of B (count <= nr; missing columns are zero) into one
/// panel, in the layout of kernels/matmul_scalar.hpp.  Group by group, so that the block being
/// written (G * nr bytes) stays in L1 while each column contributes its G contiguous codes.
template <int Bits, int GroupSize>
void pack_rhs_panel(const GseView<Bits, GroupSize>& src, Index first, Index count, int nr,
                    bool biased, std::uint8_t* out) noexcept {
  const Index groups = src.groups_per_line();
  const Index block = kernels::rhs_group_bytes(GroupSize, nr);
  const std::uint32_t bias = biased ? 0x80808080u : 0u;  // + 128 bytewise: flip the sign bits
  for (Index g = 0; g < groups; ++g) {
    std::uint8_t* dst = out + g * block;
    for (int l = 0; l < nr; ++l) {
      std::int32_t bits = 127 << 23;
      if (l < count) {
        const std::int8_t* codes = src.line_codes(first + l) + g * GroupSize;
        for (int s = 0; s < GroupSize / 4; ++s) {
          std::uint32_t w;
          std::memcpy(&w, codes + 4 * s, 4);
          w ^= bias;
          std::memcpy(dst + (s * nr + l) * 4, &w, 4);
        }
        bits = (std::int32_t{src.line_exponents(first + l)[g]} + 127) << 23;
      } else {
        for (int s = 0; s < GroupSize / 4; ++s) std::memcpy(dst + (s * nr + l) * 4, &bias, 4);
      }
      std::memcpy(dst + Index{GroupSize} * nr + 4 * l, &bits, 4);
    }
  }
}

/// -128 * (sum of each group's codes) for every line of A: the compensation of kBiasedRhs
/// kernels (kernels/matmul_scalar.hpp).
template <int Bits, int GroupSize>
void lhs_compensation(const GseView<Bits, GroupSize>& a, int threads,
                      std::vector<std::int32_t>& out) {
  const Index groups = a.groups_per_line();
  out.resize(static_cast<std::size_t>(a.lines() * groups));
  parallel_for(a.lines(), threads, [&](Index line) {
    const std::int8_t* codes = a.line_codes(line);
    for (Index g = 0; g < groups; ++g) {
      std::int32_t sum = 0;
      for (int k = 0; k < GroupSize; ++k) sum += codes[g * GroupSize + k];
      out[static_cast<std::size_t>(line * groups + g)] = -128 * sum;
    }
  });
}

}  // namespace detail

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

namespace detail {

/// B from a GseView (compute form) grouped along its rows.
template <int Bits, int GroupSize>
class ViewRhs final : public RhsSource<GroupSize> {
 public:
  explicit ViewRhs(const GseView<Bits, GroupSize>& b) : b_(b) {
    this->k_ = b.rows();
    this->n_ = b.cols();
    this->offset_ = b.offset();
  }
  void pack(Index first, Index count, const PanelShape& shape, std::uint8_t* out) const override {
    for (Index p = first; p < first + count; ++p) {
      const Index col0 = p * shape.nr;
      pack_rhs_panel(b_, col0, std::min<Index>(shape.nr, this->n_ - col0), shape.nr,
                     shape.biased_rhs, out + (p - first) * this->panel_bytes(shape.nr));
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
    const Index padded = groups * GroupSize;
    const std::uint8_t bias = shape.biased_rhs ? 0x80 : 0x00;
    std::vector<std::int8_t> line(static_cast<std::size_t>(padded));
    for (Index p = first; p < first + count; ++p) {
      const Index col0 = p * shape.nr;
      const Index cols = std::min<Index>(shape.nr, this->n_ - col0);
      std::uint8_t* panel = out + (p - first) * this->panel_bytes(shape.nr);
      // Column by column: decode its line once, then scatter it over the group blocks.
      for (int l = 0; l < shape.nr; ++l) {
        if (l < cols) {
          b_.codes_at(col0 + l, 0, this->k_, line.data());
          std::fill(line.begin() + this->k_, line.end(), std::int8_t{0});
        } else {
          std::fill(line.begin(), line.end(), std::int8_t{0});
        }
        for (Index g = 0; g < groups; ++g) {
          std::uint8_t* dst = panel + g * block;
          const std::int8_t* src = line.data() + g * GroupSize;
          for (int q = 0; q < GroupSize; ++q)
            dst[((q / 4) * shape.nr + l) * 4 + q % 4] = static_cast<std::uint8_t>(src[q]) ^ bias;
          const std::int32_t bits = ((l < cols ? b_.exponent_at(col0 + l, g) : 0) + 127) << 23;
          std::memcpy(dst + Index{GroupSize} * shape.nr + 4 * l, &bits, 4);
        }
      }
    }
  }

 private:
  const PackedGseTensor<Bits, GroupSize>& b_;
};

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
    return top == INT_MIN ? 0 : top - kFraction - kMaxGroupExponent;
  }

  void pack(Index first, Index count, const detail::PanelShape& shape,
            std::uint8_t* out) const override {
    const int nr = shape.nr;
    const Index block = kernels::rhs_group_bytes(GroupSize, nr);
    const std::uint8_t bias = shape.biased_rhs ? 0x80 : 0x00;
    // One tile at a time: GroupSize old lines (W's columns) x nr positions (W's rows).
    std::vector<std::int8_t> codes(static_cast<std::size_t>(GroupSize * nr));
    std::vector<int> quantum(static_cast<std::size_t>(GroupSize * nr));
    std::vector<int> s_new(static_cast<std::size_t>(nr));
    Index unused = 0;
    for (Index p = first; p < first + count; ++p) {
      const Index i0 = p * nr;  // new lines: rows of W
      const Index cols = std::min<Index>(nr, this->n_ - i0);
      std::uint8_t* panel = out + (p - first) * this->panel_bytes(nr);
      for (Index g = 0; g < this->groups(); ++g) {
        const Index o0 = g * GroupSize;  // new positions: columns of W (old lines)
        const Index members = std::min<Index>(GroupSize, this->k_ - o0);
        std::fill(codes.begin(), codes.end(), std::int8_t{0});
        for (Index q = 0; q < members; ++q) {
          std::int8_t* c = codes.data() + q * nr;
          w_.codes_at(o0 + q, i0, cols, c);
          int* s = quantum.data() + q * nr;
          for (Index l = 0; l < cols; l += GroupSize - (i0 + l) % GroupSize) {
            const int e = w_.offset() + w_.exponent_at(o0 + q, (i0 + l) / GroupSize);
            const Index run = std::min<Index>(cols - l, GroupSize - (i0 + l) % GroupSize);
            std::fill(s + l, s + l + run, e);
          }
        }
        // The new groups' exponents, as regroup() derives them (format.hpp, steps 1-3).
        std::uint8_t* dst = panel + g * block;
        // Branch-free over the members: a zero code contributes kNone.
        constexpr int kNone = -100000;
        for (int l = 0; l < nr; ++l) {
          int top = kNone;
          for (Index q = 0; q < members && l < cols; ++q) {
            const int c = codes[static_cast<std::size_t>(q * nr + l)];
            top = std::max(top, quantum[static_cast<std::size_t>(q * nr + l)] + log2_or_none(c));
          }
          const int e = top < kNone / 2 || top - kFraction < this->offset_
                            ? 0
                            : top - kFraction - this->offset_;
          s_new[static_cast<std::size_t>(l)] = this->offset_ + e;
          const std::int32_t bits = (e + 127) << 23;
          std::memcpy(dst + Index{GroupSize} * nr + 4 * l, &bits, 4);
        }
        for (int q = 0; q < GroupSize; ++q) {
          for (int l = 0; l < nr; ++l) {
            const int c = q < members ? codes[static_cast<std::size_t>(q * nr + l)] : 0;
            const int s = quantum[static_cast<std::size_t>(q * nr + l)];
            const int shift = s - s_new[static_cast<std::size_t>(l)];
            // shift >= 0: exact, no rounding (the common case; c == 0 gives 0 either way).
            const int code = shift >= 0 ? c * (1 << std::min(shift, 24))
                                        : detail::reencode<8, Rounding::kNearestEven>(
                                              c, s, s_new[static_cast<std::size_t>(l)], 0u, unused);
            dst[((q / 4) * nr + l) * 4 + q % 4] = static_cast<std::uint8_t>(code) ^ bias;
          }
        }
      }
    }
  }

 private:
  /// floor(log2|c|), or -100000 for c == 0, by table.
  static int log2_or_none(int c) noexcept {
    static constexpr auto kTable = [] {
      std::array<int, 256> t{};
      for (int v = -128; v < 128; ++v) {
        const int m = v < 0 ? -v : v;
        int l = -100000;
        for (int b = 0; b < 8; ++b) {
          if ((m >> b) != 0) l = b;
        }
        t[static_cast<std::size_t>(v + 128)] = l;
      }
      return t;
    }();
    return kTable[static_cast<std::size_t>(c + 128)];
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

namespace detail {

/// L2-sized budget for the block of B panels a thread sweeps while one A panel stays in L1.
inline constexpr Index kRhsBlockBytes = 512 * 1024;
/// Blocks of kMr rows of A per work item.
inline constexpr Index kLhsBlocksPerItem = 8;

/// An upper bound of the bytes run_tiles packs a K x N right operand into when it is not packed
/// ahead: an L2-sized block per thread (two, for the block being filled and rounding), or the
/// whole operand when that is smaller (a skinny B is packed whole, once).  For memory accounting.
inline std::size_t rhs_buffer_bytes(Index k, Index n, int group_size, int threads) noexcept {
  constexpr Index kWidestPanel = 32;
  const Index cols = (n + kWidestPanel - 1) / kWidestPanel * kWidestPanel;
  const Index whole = cols * ((k + group_size - 1) / group_size) * (Index{group_size} + 4);
  const Index blocks = 2 * kRhsBlockBytes * std::max(threads, 1);
  return static_cast<std::size_t>(std::min(whole, blocks));
}

/// Runs the tiles of C with kernel I: work items are (block of B panels) x (chunk of row
/// blocks of A), jb-major so that consecutive items of one thread share their B block, which
/// stays in L2 while each block of A rows is reused from L1 across it.  Every output is one
/// kernel call over all of K, so the split never changes a bit.
template <Isa I, int Bits, int GroupSize>
void run_tiles(const GseView<Bits, GroupSize>& a, const std::int32_t* comp,
               const RhsSource<GroupSize>& b, double scale, float beta, MatrixRef<float> c,
               int threads, Index block_bytes) {
  using Kernel = kernels::MatmulKernel<I>;
  constexpr int kMr = Kernel::kMr;
  constexpr int kNr = Kernel::kNr;
  const Index m = a.rows();
  const Index n = b.cols();
  const Index lda = a.padded_length();
  const Index lde = a.groups_per_line();
  const Index a_blocks = (m + kMr - 1) / kMr;
  const Index b_panels = (n + kNr - 1) / kNr;
  const Index panel_bytes = b.panel_bytes(kNr);
  const Index per_block = std::max<Index>(1, block_bytes / std::max<Index>(1, panel_bytes));
  const Index b_blocks = (b_panels + per_block - 1) / per_block;
  const Index a_chunks = (a_blocks + kLhsBlocksPerItem - 1) / kLhsBlocksPerItem;
  const bool direct = c.col_stride == 1;
  const auto scale_f = static_cast<float>(scale);
  const bool float_scale = static_cast<double>(scale_f) == scale && std::isnormal(scale_f);

  // The last block of A rows, when partial, copied with zero rows below it so that the kernel
  // always reads kMr rows.
  const Index tail_rows = m % kMr;
  std::vector<std::int8_t> tail_codes;
  std::vector<std::uint8_t> tail_exps;
  std::vector<std::int32_t> tail_comp;
  if (tail_rows != 0 && lde != 0) {  // lde == 0: K == 0, nothing to read
    tail_codes.assign(static_cast<std::size_t>(kMr * lda), 0);
    tail_exps.assign(static_cast<std::size_t>(kMr * lde), 0);
    tail_comp.assign(static_cast<std::size_t>(kMr * lde), 0);
    const Index first = m - tail_rows;
    std::memcpy(tail_codes.data(), a.line_codes(first), static_cast<std::size_t>(tail_rows * lda));
    std::memcpy(tail_exps.data(), a.line_exponents(first),
                static_cast<std::size_t>(tail_rows * lde));
    if (comp != nullptr) {
      std::memcpy(tail_comp.data(), comp + first * lde,
                  static_cast<std::size_t>(tail_rows * lde) * sizeof(std::int32_t));
    }
  }

  // Where B's panels come from.  Prepacked: in place.  Few blocks (a skinny B): packed whole,
  // once, shared by all threads.  Otherwise each thread packs one block at a time into its own
  // L2-sized buffer and runs every row of A against it, so B never exists as a whole copy.
  const PanelShape shape = panel_shape_of<I>();
  const bool prepacked = b.prepacked(0) != nullptr;
  const bool stream = !prepacked && b_blocks >= 2 * std::max(threads, 1);
  thread_local AlignedVector<std::uint8_t> whole;  // kept: fresh pages cost more than packing
  if (!prepacked && !stream) {
    whole.resize(static_cast<std::size_t>(b_panels * panel_bytes));
    std::uint8_t* out = whole.data();
    parallel_for(b_panels, threads, [&](Index p) { b.pack(p, 1, shape, out + p * panel_bytes); });
  }

  // Runs A's row blocks [ip_begin, ip_end) against B's panels [jp_begin, jp_end), whose panel
  // jp is at panel(jp).
  auto run = [&](Index ip_begin, Index ip_end, Index jp_begin, Index jp_end, auto&& panel) {
    float scratch[kMr * kNr];
    kernels::MatmulTile t;
    t.lda = lda;
    t.lde = lde;
    t.groups = b.groups();
    t.scale = scale;
    t.scale_f = scale_f;
    t.float_scale = float_scale;
    t.beta = beta;
    for (Index ip = ip_begin; ip < ip_end; ++ip) {
      const Index row0 = ip * kMr;
      t.rows = static_cast<int>(std::min<Index>(kMr, m - row0));
      if (t.rows == kMr) {
        t.a = a.line_codes(row0);
        t.ea = a.line_exponents(row0);
        t.comp = comp != nullptr ? comp + row0 * lde : nullptr;
      } else {
        t.a = tail_codes.data();
        t.ea = tail_exps.data();
        t.comp = tail_comp.data();
      }
      for (Index jp = jp_begin; jp < jp_end; ++jp) {
        const Index col0 = jp * kNr;
        t.b = panel(jp);
        t.cols = static_cast<int>(std::min<Index>(kNr, n - col0));
        if (direct) {
          t.c = &c(row0, col0);
          t.ldc = c.row_stride;
          Kernel::template run<GroupSize>(t);
          continue;
        }
        // Strided C: run into a row-major scratch tile and scatter it.
        t.c = scratch;
        t.ldc = kNr;
        for (int r = 0; r < t.rows; ++r) {
          for (int j = 0; j < t.cols; ++j)
            scratch[r * kNr + j] = beta == 0.0f ? 0.0f : c(row0 + r, col0 + j);
        }
        Kernel::template run<GroupSize>(t);
        for (int r = 0; r < t.rows; ++r) {
          for (int j = 0; j < t.cols; ++j) c(row0 + r, col0 + j) = scratch[r * kNr + j];
        }
      }
    }
  };

  if (stream) {
    parallel_for(b_blocks, threads, [&](Index jb) {
      thread_local AlignedVector<std::uint8_t> block;
      const Index jp_begin = jb * per_block;
      const Index jp_end = std::min(b_panels, jp_begin + per_block);
      block.resize(static_cast<std::size_t>((jp_end - jp_begin) * panel_bytes));
      b.pack(jp_begin, jp_end - jp_begin, shape, block.data());
      run(0, a_blocks, jp_begin, jp_end,
          [&](Index jp) { return block.data() + (jp - jp_begin) * panel_bytes; });
    });
    return;
  }
  // The calling thread's buffer, by address: inside the parallel region the name `whole` would
  // denote each worker's own (empty) thread_local.
  const std::uint8_t* whole_data = whole.data();
  auto panel = [&](Index jp) {
    return prepacked ? b.prepacked(jp) : whole_data + jp * panel_bytes;
  };
  parallel_for(b_blocks * a_chunks, threads, [&](Index item) {
    const Index jb = item / a_chunks;
    const Index ib = item % a_chunks;
    run(ib * kLhsBlocksPerItem, std::min(a_blocks, (ib + 1) * kLhsBlocksPerItem), jb * per_block,
        std::min(b_panels, (jb + 1) * per_block), panel);
  });
}

template <int Bits, int GroupSize>
using RunTilesFn = void (*)(const GseView<Bits, GroupSize>&, const std::int32_t*,
                            const RhsSource<GroupSize>&, double, float, MatrixRef<float>, int,
                            Index);

template <int Bits, int GroupSize>
RunTilesFn<Bits, GroupSize> tile_runner(Isa isa) noexcept {
  switch (isa) {
#if GSQ_X86
    case Isa::kAvx2:
      return &run_tiles<Isa::kAvx2, Bits, GroupSize>;
    case Isa::kAvx512Vnni:
      return &run_tiles<Isa::kAvx512Vnni, Bits, GroupSize>;
#endif
#if GSQ_ARM64
    case Isa::kNeonDot:
      return &run_tiles<Isa::kNeonDot, Bits, GroupSize>;
#endif
    default:
      return &run_tiles<Isa::kScalar, Bits, GroupSize>;
  }
}

inline std::string describe(Index rows, Index cols, Axis axis) {
  return cat(rows, "x", cols, " grouped along ", to_string(axis));
}

}  // namespace detail

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
  // Kept per thread between calls: fresh pages would cost more than computing their contents.
  thread_local std::vector<std::int32_t> comp;
  comp.clear();
  if (detail::panel_shape(isa).biased_rhs) detail::lhs_compensation(a, threads, comp);
  const double scale = std::ldexp(static_cast<double>(alpha), a.offset() + b.offset());
  GSQ_CHECK(options.rhs_block_bytes >= 0, "matmul: rhs_block_bytes must be >= 0, got ",
            options.rhs_block_bytes);
  const Index block_bytes =
      options.rhs_block_bytes > 0 ? options.rhs_block_bytes : detail::kRhsBlockBytes;
  detail::tile_runner<BitsA, GroupSize>(isa)(a, comp.empty() ? nullptr : comp.data(), b, scale,
                                             beta, c, threads, block_bytes);
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
/// to GSE-INT<BitsA> along K with `quantize` (into a per-thread buffer kept between calls), then
/// multiplied as above.  Bit-identical to quantize() followed by matmul().
template <int BitsA, int GroupSize, typename T>
void quantize_matmul(MatrixRef<const T> a, const RhsSource<GroupSize>& b, MatrixRef<float> c,
                     float alpha = 1.0f, float beta = 0.0f, const QuantizeOptions& quantize = {},
                     const MatmulOptions& options = {}, ConversionStats* stats = nullptr) {
  thread_local GseTensor<BitsA, GroupSize> qa;
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
