// aligned.hpp: a std::allocator replacement that aligns storage to a cache line.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace gsq::detail {

inline constexpr std::size_t kCacheLine = 64;

/// Allocates with operator new(std::align_val_t{Alignment}); stateless, so vectors compare equal.
template <typename T, std::size_t Alignment = kCacheLine>
struct AlignedAllocator {
  using value_type = T;
  template <typename U>
  struct rebind {
    using other = AlignedAllocator<U, Alignment>;
  };

  AlignedAllocator() noexcept = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U, Alignment>&) noexcept {}

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{Alignment}));
  }
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete (p, std::align_val_t{Alignment});
  }

  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) noexcept { return true; }
  friend bool operator!=(const AlignedAllocator&, const AlignedAllocator&) noexcept {
    return false;
  }
};

/// A std::vector whose data() is cache-line aligned.
template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace gsq::detail
