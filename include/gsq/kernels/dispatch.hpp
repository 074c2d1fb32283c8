// dispatch.hpp: the one place that maps an Isa value to a kernel compiled for it.
#pragma once

#include <type_traits>

#include "gsq/detail/cpu.hpp"

namespace gsq::kernels {

/// An Isa as a type, so that a generic lambda can instantiate a kernel template for it.
template <Isa I>
using IsaTag = std::integral_constant<Isa, I>;

/// True when this target compiles kernels for I (x86 ISAs on x86-64, ARM ISAs on AArch64, and
/// never under GSQ_DISABLE_SIMD; scalar everywhere).
template <Isa I>
constexpr bool compiled_on_target() noexcept {
  if constexpr (I == Isa::kScalar) {
    return true;
  } else if constexpr (I == Isa::kNeon || I == Isa::kNeonDot) {
    return GSQ_ARM64 != 0;
  } else {
    return GSQ_X86 != 0;
  }
}

/// Calls f(IsaTag<I>{}) for the member I of the kernel family `Family...` that `isa` names, or
/// f(IsaTag<Isa::kScalar>{}) when `isa` is not in the family or not compiled on this target.
/// Callers resolve the ISA once per call (a whole tile loop, a whole conversion), then run the
/// kernel they get back: target-attributed code is never inlined into generic callers.
///   auto run = kernels::dispatch<Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeonDot>(
///       isa, [](auto tag) { return &run_tiles<decltype(tag)::value, Bits, G>; });
template <Isa... Family, typename F>
auto dispatch(Isa isa, F&& f) -> decltype(f(IsaTag<Isa::kScalar>{})) {
  using Result = decltype(f(IsaTag<Isa::kScalar>{}));
  static_assert(std::is_default_constructible_v<Result> && std::is_copy_assignable_v<Result>,
                "dispatch returns a value (a kernel pointer, a tile shape)");
  Result result{};
  bool found = false;
  auto try_member = [&](auto tag) {
    constexpr Isa kMember = decltype(tag)::value;
    if constexpr (compiled_on_target<kMember>()) {
      if (!found && isa == kMember) {
        result = f(tag);
        found = true;
      }
    }
  };
  (try_member(IsaTag<Family>{}), ...);
  return found ? result : f(IsaTag<Isa::kScalar>{});
}

}  // namespace gsq::kernels
