// cpu.hpp: instruction-set detection, the GSQ_ISA override, and the target attributes kernels use.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

// Kernels are compiled for their ISA by target attributes, never by -m flags, so one binary
// carries every path and picks one at run time.  A kernel is only ever called after
// cpu_supports() said yes.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(GSQ_DISABLE_SIMD)
#define GSQ_X86 1
#define GSQ_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2")))
#define GSQ_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi2")))
#define GSQ_TARGET_AVX512VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,bmi2")))
#else
#define GSQ_X86 0
#endif

#if defined(__aarch64__) && !defined(GSQ_DISABLE_SIMD)
#define GSQ_ARM64 1
#if defined(__clang__)
#define GSQ_TARGET_NEON_DOT __attribute__((target("dotprod")))
#else
#define GSQ_TARGET_NEON_DOT __attribute__((target("+dotprod")))
#endif
#else
#define GSQ_ARM64 0
#endif

namespace gsq {

/// Instruction sets gsq has kernels for, in increasing order of capability per architecture.
enum class Isa : std::uint8_t { kScalar, kAvx2, kAvx512, kAvx512Vnni, kNeon, kNeonDot };

constexpr const char* to_string(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Vnni:
      return "avx512-vnni";
    case Isa::kNeon:
      return "neon";
    case Isa::kNeonDot:
      return "neon-dotprod";
  }
  return "?";
}

namespace detail {

inline bool hardware_supports(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar:
      return true;
#if GSQ_X86
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi2");
    case Isa::kAvx512:
      return hardware_supports(Isa::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
    case Isa::kAvx512Vnni:
      return hardware_supports(Isa::kAvx512) && __builtin_cpu_supports("avx512vnni");
#endif
#if GSQ_ARM64
    case Isa::kNeon:
      return true;  // Advanced SIMD is mandatory on AArch64
    case Isa::kNeonDot:
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
      return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
      return false;
#endif
#endif
    default:
      return false;
  }
}

/// The most capable ISA the user allows: GSQ_ISA=scalar|avx2|avx512|avx512-vnni|neon|neon-dotprod
/// caps the choice (read once per process).  Unknown values leave the cap off.
inline Isa isa_cap() noexcept {
  static const Isa cap = [] {
    const char* env = std::getenv("GSQ_ISA");
    if (env == nullptr) return Isa::kNeonDot;  // no cap
    for (Isa isa :
         {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kNeon, Isa::kNeonDot}) {
      if (std::strcmp(env, to_string(isa)) == 0) return isa;
    }
    return Isa::kNeonDot;
  }();
  return cap;
}

}  // namespace detail

/// True when this CPU runs `isa` and the GSQ_ISA environment variable does not rule it out.
/// x86 and ARM levels are ordered separately: GSQ_ISA=avx2 allows kScalar and kAvx2 only.
inline bool cpu_supports(Isa isa) noexcept {
  const Isa cap = detail::isa_cap();
  const bool arm = isa == Isa::kNeon || isa == Isa::kNeonDot;
  const bool cap_arm = cap == Isa::kNeon || cap == Isa::kNeonDot;
  if (isa != Isa::kScalar) {
    if (cap == Isa::kScalar) return false;
    if (cap != Isa::kNeonDot && arm != cap_arm) return false;  // a cap names one architecture
    if (static_cast<int>(isa) > static_cast<int>(cap)) return false;
  }
  return detail::hardware_supports(isa);
}

/// The best ISA for float <-> GSE conversion on this machine (conversion needs no dot products,
/// so AVX-512 and AVX-512 VNNI share one kernel, as do NEON and NEON dot-product).
inline Isa conversion_isa() noexcept {
  if (cpu_supports(Isa::kAvx512)) return Isa::kAvx512;
  if (cpu_supports(Isa::kAvx2)) return Isa::kAvx2;
  if (cpu_supports(Isa::kNeon)) return Isa::kNeon;
  return Isa::kScalar;
}

}  // namespace gsq
