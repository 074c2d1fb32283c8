// float_rows.hpp: the float register-tile product of the model's attention, C (4 rows) (+)= A B
// with fused multiply-adds, one result on every ISA.
#pragma once

#include <cmath>
#include <cstring>

#include "gsq/detail/cpu.hpp"
#if GSQ_X86
#include <immintrin.h>
#endif
#if GSQ_ARM64
#include <arm_neon.h>
#endif

#include "gsq/format.hpp"
#include "gsq/kernels/dispatch.hpp"

namespace gsq::kernels {

/// One call: rows r < kFloatRows and columns j < n (a multiple of kFloatLanes) of
///   C[r][j] = ((accumulate ? C[r][j] : 0) + sum over k < depth, ascending, of A[r][k] B[k][j])
///             * scale
/// where C[r][j] = c[r * ldc + j], A[r][k] = a[r * a_row + k * a_col], B[k][j] = b[k * ldb + j].
/// Each term is one fused multiply-add into the element's running sum (std::fma: rounded once,
/// exactly defined), so every ISA computes the plain loops' bits (float_rows_spec).
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
      for (Index k = 0; k < p.depth; ++k)
        acc = std::fma(p.a[r * p.a_row + k * p.a_col], p.b[k * p.ldb + j], acc);
      p.c[r * p.ldc + j] = acc * p.scale;
    }
  }
}

namespace detail {

// One body for every ISA: kFloatRows x (LANES * NV) columns starting at j0 on the ISA's vector
// type V of LANES floats (the accumulators stay in registers), then all columns, WIDE vectors
// per row at a time and the rest kFloatLanes columns at a time.  A macro, because a body that
// uses an ISA's intrinsics must itself be compiled for that ISA (a target attribute cannot
// depend on a template parameter); SET1(x) is x in every lane, MADD(c, a, b) sets
// c = a * b + c, fused.
#define GSQ_FLOAT_ROWS_KERNEL(TARGET, NAME, V, LANES, WIDE, SET1, MADD)                         \
  template <int NV>                                                                            \
  [[gnu::always_inline]] TARGET inline void NAME##_block(const FloatRows& p, Index j0) noexcept { \
    V acc[kFloatRows][NV];                                                                     \
    _Pragma("GCC unroll 4") for (Index r = 0; r < kFloatRows; ++r) {                         \
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {                                 \
        if (p.accumulate) {                                                                    \
          std::memcpy(&acc[r][v], p.c + r * p.ldc + j0 + (LANES) * v, sizeof(V));              \
        } else {                                                                               \
          std::memset(&acc[r][v], 0, sizeof(V));                                               \
        }                                                                                      \
      }                                                                                        \
    }                                                                                          \
    for (Index k = 0; k < p.depth; ++k) {                                                      \
      V b[NV];                                                                                 \
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                                   \
        std::memcpy(&b[v], p.b + k * p.ldb + j0 + (LANES) * v, sizeof(V));                     \
      _Pragma("GCC unroll 4") for (Index r = 0; r < kFloatRows; ++r) {                       \
        const V a = SET1(p.a[r * p.a_row + k * p.a_col]);                                      \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) MADD(acc[r][v], a, b[v]);       \
      }                                                                                        \
    }                                                                                          \
    _Pragma("GCC unroll 4") for (Index r = 0; r < kFloatRows; ++r) {                         \
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {                                 \
        const V out = acc[r][v] * p.scale;                                                     \
        std::memcpy(p.c + r * p.ldc + j0 + (LANES) * v, &out, sizeof(V));                      \
      }                                                                                        \
    }                                                                                          \
  }                                                                                            \
  TARGET inline void NAME(const FloatRows& p) noexcept {                                      \
    constexpr int kNarrow = static_cast<int>(kFloatLanes) / (LANES);                           \
    Index j = 0;                                                                               \
    for (; j + (WIDE) * (LANES) <= p.n; j += (WIDE) * (LANES)) NAME##_block<(WIDE)>(p, j);     \
    if constexpr ((WIDE) >= 3 * kNarrow) {                                                     \
      if (p.n - j >= 2 * kFloatLanes) {                                                        \
        NAME##_block<2 * kNarrow>(p, j);                                                       \
        j += 2 * kFloatLanes;                                                                  \
      }                                                                                        \
    }                                                                                          \
    for (; j < p.n; j += kFloatLanes) NAME##_block<kNarrow>(p, j);                             \
  }

#if GSQ_X86
#define GSQ_MADD_AVX2(c, a, b) ((c) = _mm256_fmadd_ps((a), (b), (c)))
#define GSQ_MADD_AVX512(c, a, b) ((c) = _mm512_fmadd_ps((a), (b), (c)))
GSQ_FLOAT_ROWS_KERNEL(GSQ_TARGET_AVX2, float_rows_avx2, __m256, 8, 2, _mm256_set1_ps, GSQ_MADD_AVX2)
GSQ_FLOAT_ROWS_KERNEL(GSQ_TARGET_AVX512, float_rows_avx512, __m512, 16, 4, _mm512_set1_ps,
                      GSQ_MADD_AVX512)
#undef GSQ_MADD_AVX2
#undef GSQ_MADD_AVX512
#endif
#if GSQ_ARM64
#define GSQ_MADD_NEON(c, a, b) ((c) = vfmaq_f32((c), (a), (b)))
#define GSQ_TARGET_NONE
GSQ_FLOAT_ROWS_KERNEL(GSQ_TARGET_NONE, float_rows_neon, float32x4_t, 4, 4, vdupq_n_f32,
                      GSQ_MADD_NEON)
#undef GSQ_TARGET_NONE
#undef GSQ_MADD_NEON
#endif
#undef GSQ_FLOAT_ROWS_KERNEL

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
  detail::float_rows_avx2(p);  // 4 rows x 2 ymm accumulators
}
template <>
GSQ_TARGET_AVX512 inline void float_rows<Isa::kAvx512>(const FloatRows& p) noexcept {
  detail::float_rows_avx512(p);  // 4 rows x 4 zmm accumulators
}
#endif
#if GSQ_ARM64
template <>
inline void float_rows<Isa::kNeon>(const FloatRows& p) noexcept {
  detail::float_rows_neon(p);  // 4 rows x 4 q accumulators
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
