// fp.hpp: float arithmetic whose result no compiler can change by contracting a multiply and an
// add into an FMA.
#pragma once

namespace gsq::detail {

// GCC and Clang contract a * b + c into one fused multiply-add by default wherever the target
// has one (every AArch64 CPU; x86 code built with -mfma or -march=native), and a fused result
// rounds once where the written one rounds twice.  So plain float code that is bit-identical
// across x86 builds differs on ARM.  The helpers below evaluate a sum of products of floats in
// double, where a product of two floats is exact (24 + 24 <= 53 significand bits): the fused
// and the unfused evaluation then round the same exact value once, so the compiler's choice
// cannot show.  The double result is rounded to float, the same way on every platform.

/// a * b + c, rounded to double, then to float.
inline float mul_add(float a, float b, float c) noexcept {
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) +
                            static_cast<double>(c));
}

/// a * b + c * d, rounded to double, then to float.
inline float dot2(float a, float b, float c, float d) noexcept {
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) +
                            static_cast<double>(c) * static_cast<double>(d));
}

}  // namespace gsq::detail
