// matmul/options.hpp: how a matmul runs (ISA, threads, blocking, workspace) and the kernels'
// tile geometry.  Nothing here changes a bit of any result.
#pragma once

#include <optional>

#include "gsq/detail/check.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/dispatch.hpp"
#include "gsq/kernels/matmul_avx2.hpp"
#include "gsq/kernels/matmul_avx512_vnni.hpp"
#include "gsq/kernels/matmul_neon.hpp"
#include "gsq/kernels/matmul_scalar.hpp"

namespace gsq {

class MatmulWorkspace;

/// How matmul() runs.  No field changes a single bit of the result.
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
  /// Scratch memory for the call (packed B blocks, the compensation of A, a partial last row
  /// block), owned by the caller and reused across calls; null: a workspace local to the call.
  MatmulWorkspace* workspace = nullptr;
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

/// Calls f(kernels::IsaTag<I>{}) for the matmul kernel I of `isa` (kernels/dispatch.hpp).
template <typename F>
auto dispatch_matmul(Isa isa, F&& f) {
  return kernels::dispatch<Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeonDot>(isa, std::forward<F>(f));
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
  return dispatch_matmul(isa, [](auto tag) { return panel_shape_of<decltype(tag)::value>(); });
}

}  // namespace detail
}  // namespace gsq
