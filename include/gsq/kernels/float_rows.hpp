// float_rows.hpp: the float register-tile product of the model's attention, C (4 rows) (+)= A B,
// with one result on every ISA.
#pragma once

#include <cstring>

#include "gsq/detail/vmath.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/dispatch.hpp"

namespace gsq::kernels {

/// One call: rows r < kFloatRows and columns j < n (a multiple of kFloatLanes) of
///   C[r][j] = ((accumulate ? C[r][j] : 0) + sum over k < depth, ascending, of A[r][k] B[k][j])
///             * scale
/// where C[r][j] = c[r * ldc + j], A[r][k] = a[r * a_row + k * a_col], B[k][j] = b[k * ldb + j].
/// Each term is a float multiply, then a float add into the element's running sum (never a fused
/// multiply-add), so every ISA computes the plain loops' bits (float_rows_spec).
struct FloatRows {
  float* c = nullptr;
  Index ldc = 0;
  const float* a = nullptr;
  Index a_row = 0, a_col = 0;
  const float* b = nullptr;
  Index ldb = 0;
  Index n = 0, depth = 0;
  bool accumulate = false;
  float scale = 1.0f;
};
inline constexpr Index kFloatRows = 4;
inline constexpr Index kFloatLanes = 16;

/// The specification: the plain loops, one element at a time.
inline void float_rows_spec(const FloatRows& p) noexcept {
  for (Index r = 0; r < kFloatRows; ++r) {
    for (Index j = 0; j < p.n; ++j) {
      float acc = p.accumulate ? p.c[r * p.ldc + j] : 0.0f;
      for (Index k = 0; k < p.depth; ++k) acc += p.a[r * p.a_row + k * p.a_col] * p.b[k * p.ldb + j];
      p.c[r * p.ldc + j] = acc * p.scale;
    }
  }
}

namespace detail {

using gsq::detail::F32x16;

/// kFloatRows x (16 * NV) columns starting at j0: the accumulators stay in registers.
template <int NV>
[[gnu::always_inline]] inline void float_rows_block(const FloatRows& p, Index j0) noexcept {
  F32x16 acc[kFloatRows][NV];
#pragma GCC unroll 4
  for (Index r = 0; r < kFloatRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (p.accumulate) {
        std::memcpy(&acc[r][v], p.c + r * p.ldc + j0 + kFloatLanes * v, sizeof(F32x16));
      } else {
        acc[r][v] = F32x16{};
      }
    }
  }
  for (Index k = 0; k < p.depth; ++k) {
    F32x16 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      std::memcpy(&b[v], p.b + k * p.ldb + j0 + kFloatLanes * v, sizeof(F32x16));
#pragma GCC unroll 4
    for (Index r = 0; r < kFloatRows; ++r) {
      const float a = p.a[r * p.a_row + k * p.a_col];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 4
  for (Index r = 0; r < kFloatRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const F32x16 out = acc[r][v] * p.scale;
      std::memcpy(p.c + r * p.ldc + j0 + kFloatLanes * v, &out, sizeof(F32x16));
    }
  }
}

/// All columns, kMaxVectors registers of 16 lanes per row at a time (as many as the ISA keeps
/// in registers with the four rows' accumulators), the rest one at a time.
template <int kMaxVectors>
[[gnu::always_inline]] inline void float_rows_vector(const FloatRows& p) noexcept {
  constexpr Index kWide = kFloatLanes * kMaxVectors;
  Index j = 0;
  for (; j + kWide <= p.n; j += kWide) float_rows_block<kMaxVectors>(p, j);
  if constexpr (kMaxVectors >= 4) {
    if (p.n - j == 3 * kFloatLanes) return float_rows_block<3>(p, j);
  }
  if constexpr (kMaxVectors >= 3) {
    if (p.n - j >= 2 * kFloatLanes) {
      float_rows_block<2>(p, j);
      j += 2 * kFloatLanes;
    }
  }
  for (; j < p.n; j += kFloatLanes) float_rows_block<1>(p, j);
}

}  // namespace detail

/// float_rows for ISA I: kScalar is the specification itself.
template <Isa I>
void float_rows(const FloatRows& p) noexcept;

template <>
inline void float_rows<Isa::kScalar>(const FloatRows& p) noexcept {
  float_rows_spec(p);
}

#if GSQ_X86
template <>
GSQ_TARGET_AVX2 inline void float_rows<Isa::kAvx2>(const FloatRows& p) noexcept {
  detail::float_rows_vector<1>(p);  // 4 x 2 ymm accumulators of 16
}
template <>
GSQ_TARGET_AVX512 inline void float_rows<Isa::kAvx512>(const FloatRows& p) noexcept {
  detail::float_rows_vector<4>(p);  // 16 zmm accumulators of 32
}
#endif
#if GSQ_ARM64
template <>
inline void float_rows<Isa::kNeon>(const FloatRows& p) noexcept {
  detail::float_rows_vector<1>(p);  // 16 q accumulators of 32
}
#endif

using FloatRowsKernel = void (*)(const FloatRows&) noexcept;

/// The float_rows kernel for `isa` (AVX-512 VNNI runs the AVX-512 one, NEON dot-product the NEON
/// one), the specification when `isa` has none.
inline FloatRowsKernel float_rows_kernel(Isa isa) {
  if (isa == Isa::kAvx512Vnni) isa = Isa::kAvx512;
  if (isa == Isa::kNeonDot) isa = Isa::kNeon;
  return dispatch<Isa::kAvx2, Isa::kAvx512, Isa::kNeon>(
      isa, [](auto tag) -> FloatRowsKernel { return &float_rows<decltype(tag)::value>; });
}

}  // namespace gsq::kernels
