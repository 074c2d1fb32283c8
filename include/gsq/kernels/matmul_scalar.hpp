// matmul_scalar.hpp: the packed-panel layout and the reference matmul micro-kernel; every ISA
// must match it bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gsq/detail/cpu.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/panel.hpp"

namespace gsq::kernels {

// ---------------------------------------------------------------------------------------------
// What a matmul computes, to the bit
// ---------------------------------------------------------------------------------------------
//
// C = alpha * A * B + beta * C, with A (M x K) and B (K x N) GSE tensors grouped along K, so
// that group g of row i of A and group g of column j of B cover the same K range.  With codes a,
// b, group exponents Ea, Eb and offsets Ta, Tb, for each output (i, j):
//
//   d_g = sum over the group of a * b                     int32, exact (|d_g| <= G * 127^2)
//   acc = 0.0f; for g = 0, 1, ...: acc = acc + float(d_g) * 2^(Ea_g + Eb_g)
//                                  float32, groups in increasing order; float(d_g) is exact for
//                                  G <= 1024 and each product is an exact power-of-two scaling,
//                                  so only the additions round (once each, to nearest-even)
//   r   = float(double(acc) * double(alpha * 2^(Ta + Tb)))
//                                  the double product is exact (24 x 24 significand bits, and the
//                                  exponent stays inside double's range), so r is alpha * acc *
//                                  2^(Ta + Tb) rounded once: no double rounding, even for
//                                  subnormal or overflowing results
//   C   = beta == 0 ? r : fma(beta, C, r)                 one rounding; C is not read when
//                                  beta == 0 (so it may hold NaN), as in BLAS
//
// Every kernel performs exactly these operations in exactly this order, which is what makes
// the result bit-identical across ISAs and thread counts: threads split M and N, never K.
// Error: acc differs from the exact sum of the group terms by at most gamma_(n-1) * sum|terms|
// with n the number of groups and gamma_k = k u / (1 - k u), u = 2^-24, and r adds one rounding.
//
// Operands as kernels read them
// ---------------------------------------------------------------------------------------------
// A is read in place: Mr rows of its compute form (line-major int8 codes, lines padded to whole
// groups) and their group exponents; the driver copies a last partial block of rows into a
// zero-padded scratch block, so a kernel always reads Mr rows.
// B is packed into panels of Nr columns (columns past the matrix edge are zero), laid out in the
// order the kernel consumes them: one group block after the other (kernels/panel.hpp, whose
// PanelBlock is the one writer of the layout):
//   codes [G/4][Nr][4]: 4 consecutive K positions of each column together, stored as
//                       u8 = code + 128 when the kernel's kBiasedRhs is true, else as int8;
//   Nr int32:           (Eb + 127) << 23.
// A kernel builds the float 2^(Ea + Eb) (Ea + Eb <= 62) as the bit pattern
// (Ea << 23) + ((Eb + 127) << 23): one integer add per group and accumulator.
//
// The bias serves unsigned x signed dot-product instructions (x86 VNNI vpdpbusd): summed over a
// group, a * (b + 128) - 128 * sum(a) is exactly sum(a * b).  Codes are symmetric (|b| <= 127),
// so b + 128 fits in u8; the driver computes the compensation -128 * sum(a) for each row and
// group of A, and the int32 partial sums stay below G * 127 * 255 < 2^31 for every allowed G.

/// One call of a micro-kernel: the full K reduction of a rows x cols tile (rows <= Mr,
/// cols <= Nr), written to C (row-major with leading dimension ldc) through the epilogue.
struct MatmulTile {
  const std::int8_t* a = nullptr;      ///< codes of the tile's first row of A
  Index lda = 0;                       ///< codes between rows of A
  const std::uint8_t* ea = nullptr;    ///< group exponents of the first row of A
  const std::int32_t* comp = nullptr;  ///< -128 * group sums of A (kBiasedRhs kernels), stride lde
  Index lde = 0;                       ///< exponents (and compensations) between rows of A
  const std::uint8_t* b = nullptr;     ///< B panel
  Index groups = 0;                    ///< groups along K
  double scale = 1.0;                  ///< alpha * 2^(Ta + Tb), exact in double
  /// The same scale as a float when it is one exactly and is normal; then acc * scale_f rounds
  /// exactly as the double product does (both are the correctly rounded acc * scale), and SIMD
  /// epilogues use the cheaper float multiply.
  float scale_f = 1.0f;
  bool float_scale = false;
  float beta = 0.0f;
  float* c = nullptr;
  Index ldc = 0;
  int rows = 0;
  int cols = 0;
};

/// Per-ISA micro-kernels.  Each specialisation provides kMr, kNr, kBiasedRhs and
///   template <int GroupSize> static void run(const MatmulTile& tile) noexcept;
template <Isa I>
struct MatmulKernel;

namespace detail {

inline std::int32_t load_i32(const std::uint8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float float_from_bits(std::int32_t bits) noexcept {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// The epilogue of one output: *c = r or fma(beta, *c, r), r = acc * scale rounded once.
inline void epilogue(float acc, double scale, float beta, float* c) noexcept {
  const auto r = static_cast<float>(static_cast<double>(acc) * scale);
  *c = beta == 0.0f ? r : std::fma(beta, *c, r);
}

}  // namespace detail

/// The reference: plain loops.  Also the kernel for CPUs without a SIMD dot product (compilers
/// vectorise its inner loops).
template <>
struct MatmulKernel<Isa::kScalar> {
  static constexpr int kMr = 4;
  static constexpr int kNr = 16;
  static constexpr bool kBiasedRhs = false;

  template <int GroupSize>
  static void run(const MatmulTile& t) noexcept {
    float acc[kMr][kNr] = {};
    const std::uint8_t* b = t.b;
    for (Index g = 0; g < t.groups; ++g) {
      std::int32_t d[kMr][kNr] = {};
      for (int s = 0; s < GroupSize / 4; ++s) {
        const auto* bs = reinterpret_cast<const std::int8_t*>(b + s * kNr * 4);
        for (int r = 0; r < kMr; ++r) {
          const std::int8_t* as = t.a + r * t.lda + g * GroupSize + 4 * s;
          for (int c = 0; c < kNr; ++c) {
            for (int k = 0; k < 4; ++k) d[r][c] += as[k] * bs[c * 4 + k];
          }
        }
      }
      const std::uint8_t* eb = b + GroupSize * kNr;
      for (int r = 0; r < kMr; ++r) {
        const std::int32_t era = std::int32_t{t.ea[r * t.lde + g]} << 23;
        for (int c = 0; c < kNr; ++c) {
          const float scale = detail::float_from_bits(era + detail::load_i32(eb + 4 * c));
          acc[r][c] += static_cast<float>(d[r][c]) * scale;  // exact product: fused or not alike
        }
      }
      b += rhs_group_bytes(GroupSize, kNr);
    }
    for (int r = 0; r < t.rows; ++r) {
      float* c = t.c + r * t.ldc;
      for (int j = 0; j < t.cols; ++j) detail::epilogue(acc[r][j], t.scale, t.beta, c + j);
    }
  }
};

}  // namespace gsq::kernels
