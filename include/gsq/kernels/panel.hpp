// panel.hpp: the layout of a packed B panel (kernels/matmul_scalar.hpp) and its one writer.
#pragma once

#include <cstdint>
#include <cstring>

#include "gsq/format.hpp"

namespace gsq::kernels {

/// Bytes of one group block of a B panel of nr columns: the codes, then one int32 per column.
constexpr Index rhs_group_bytes(int group_size, int nr) noexcept {
  return Index{group_size} * nr + 4 * Index{nr};
}

/// One group block of a B panel of nr columns, as every kernel reads it:
///   codes [G/4][nr][4]  4 consecutive K positions of each column together, as u8 = code + 128
///                       when `biased` (x86 VNNI's unsigned x signed dot product), else as int8;
///   nr int32            (E + 127) << 23, the float bits of 2^E for the column's group exponent.
/// Every operand source writes its panels through write_column / write_empty_column, so the
/// layout lives here only.
template <int GroupSize>
struct PanelBlock {
  std::uint8_t* data;  ///< the group block: rhs_group_bytes(GroupSize, nr) bytes
  int nr;
  bool biased;

  /// Writes column l: its GroupSize codes (zero past K) and its group exponent.
  void write_column(int l, const std::int8_t* codes, int exponent) const noexcept {
    const std::uint32_t bias = biased ? 0x80808080u : 0u;  // + 128 bytewise: flip the sign bits
    for (int s = 0; s < GroupSize / 4; ++s) {
      std::uint32_t w;
      std::memcpy(&w, codes + 4 * s, 4);
      w ^= bias;
      std::memcpy(data + (Index{s} * nr + l) * 4, &w, 4);
    }
    write_exponent(l, exponent);
  }

  /// Writes every column at once from a tile held position-major: codes[q * stride + l] is code
  /// q of column l (zero past K and past the matrix edge), exponents[l] its group exponent.  The
  /// same bytes as write_column for each l.
  void write_tile(const std::int8_t* codes, Index stride,
                  const std::uint8_t* exponents) const noexcept {
    const std::uint32_t bias = biased ? 0x80808080u : 0u;
    for (int s = 0; s < GroupSize / 4; ++s) {
      std::uint8_t* out = data + Index{s} * nr * 4;
      const std::int8_t* row = codes + Index{4 * s} * stride;
      int l = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      // 16 columns at a time: a column's 4 codes are the bytes of one little-endian word.
      typedef std::uint8_t U8x16 __attribute__((vector_size(16)));
      typedef std::uint32_t U32x16 __attribute__((vector_size(64)));
      for (; l + 16 <= nr; l += 16) {
        U8x16 b0, b1, b2, b3;
        std::memcpy(&b0, row + l, sizeof b0);
        std::memcpy(&b1, row + stride + l, sizeof b1);
        std::memcpy(&b2, row + 2 * stride + l, sizeof b2);
        std::memcpy(&b3, row + 3 * stride + l, sizeof b3);
        const U32x16 w = (__builtin_convertvector(b0, U32x16) |
                          (__builtin_convertvector(b1, U32x16) << 8) |
                          (__builtin_convertvector(b2, U32x16) << 16) |
                          (__builtin_convertvector(b3, U32x16) << 24)) ^
                         bias;
        std::memcpy(out + 4 * l, &w, sizeof w);
      }
#endif
      for (; l < nr; ++l) {
        std::uint8_t w[4];
        for (int j = 0; j < 4; ++j)
          w[j] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(row[j * stride + l]) ^
                                           static_cast<std::uint8_t>(bias));
        std::memcpy(out + 4 * l, w, 4);
      }
    }
    for (int l = 0; l < nr; ++l) write_exponent(l, exponents[l]);
  }

  /// Writes column l past the matrix edge: zero codes and exponent 0.
  void write_empty_column(int l) const noexcept {
    const std::uint32_t zero = biased ? 0x80808080u : 0u;
    for (int s = 0; s < GroupSize / 4; ++s) std::memcpy(data + (Index{s} * nr + l) * 4, &zero, 4);
    write_exponent(l, 0);
  }

 private:
  void write_exponent(int l, int exponent) const noexcept {
    const std::int32_t bits = (exponent + 127) << 23;
    std::memcpy(data + Index{GroupSize} * nr + 4 * l, &bits, 4);
  }
};

// The layout is part of the kernels' contract: pin it.
static_assert(rhs_group_bytes(32, 32) == 32 * 32 + 32 * 4, "VNNI panel block: codes + exponents");
static_assert(rhs_group_bytes(32, 8) == 288, "AVX2/NEON panel block");
static_assert(sizeof(float) == sizeof(std::int32_t), "exponents are stored as float bit patterns");

}  // namespace gsq::kernels
