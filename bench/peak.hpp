// peak.hpp: this CPU's peak int8 multiply-accumulate rate (AVX-512 VNNI), measured by a loop of
// independent vpdpbusd chains, for the benchmarks that quote a fraction of it (matmul_bench,
// model_bench).
#pragma once

#include <cstdint>

#include "gsq/detail/cpu.hpp"

#if GSQ_X86
#include <immintrin.h>
#endif

namespace bench {

// Each loop keeps several independent accumulator chains in registers, more than the
// instruction's latency times its issue rate, so the loop runs at the instruction's throughput.
// The chains start from different values: identical chains would be merged by the compiler
// (common subexpressions) into one.  The loop's result depends on every chain, so none is dead.

/// Loop steps per call: about 3 ms at one vpdpbusd zmm per cycle.
constexpr std::int64_t kPeakSteps = std::int64_t{1} << 20;
constexpr int kPeakChains = 12;

#if GSQ_X86
/// 12 vpdpbusd zmm per step: 12 * 64 u8 x s8 MACs.  The step is inline asm because GCC 12
/// wraps every _mm512_dpbusd_epi32 of such chains in two register copies (24 vmovdqa per 12
/// vpdpbusd); here the loop is the 12 vpdpbusd, an increment and a branch.  The asm names every
/// accumulator as an input and output, so the chains stay distinct and none can be dropped.
GSQ_TARGET_AVX512VNNI double peak_loop_avx512_vnni(std::int64_t steps, int seed) noexcept {
  static_assert(kPeakChains == 12, "the asm below has 12 accumulators");
  const __m512i a = _mm512_set1_epi8(static_cast<char>(seed + 1));
  const __m512i b = _mm512_set1_epi8(static_cast<char>(seed - 1));
  __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2);
  __m512i c3 = _mm512_set1_epi32(3), c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5);
  __m512i c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7), c8 = _mm512_set1_epi32(8);
  __m512i c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10), c11 = _mm512_set1_epi32(11);
  for (std::int64_t s = 0; s < steps; ++s) {
    __asm__(
        "vpdpbusd %13, %12, %0\n\t"
        "vpdpbusd %13, %12, %1\n\t"
        "vpdpbusd %13, %12, %2\n\t"
        "vpdpbusd %13, %12, %3\n\t"
        "vpdpbusd %13, %12, %4\n\t"
        "vpdpbusd %13, %12, %5\n\t"
        "vpdpbusd %13, %12, %6\n\t"
        "vpdpbusd %13, %12, %7\n\t"
        "vpdpbusd %13, %12, %8\n\t"
        "vpdpbusd %13, %12, %9\n\t"
        "vpdpbusd %13, %12, %10\n\t"
        "vpdpbusd %13, %12, %11"
        : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7), "+v"(c8),
          "+v"(c9), "+v"(c10), "+v"(c11)
        : "v"(a), "v"(b));
  }
  __m512i sum = c0;
  for (const __m512i c : {c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11})
    sum = _mm512_add_epi32(sum, c);
  alignas(64) std::int32_t lanes[16];  // not _mm512_reduce_add_*: GCC bug 105593 again
  _mm512_store_si512(lanes, sum);
  std::int64_t total = 0;
  for (const std::int32_t v : lanes) total += v;
  return static_cast<double>(total);
}
#endif  // GSQ_X86

}  // namespace bench
