// rng.hpp: the counter-based random numbers behind stochastic rounding.
#pragma once

#include <cstdint>

namespace gsq::detail {

/// A 32-bit integer hash with full avalanche (the "lowbias32" constants of C. Wellons' hash
/// prospector).  Vector kernels compute the same function lane by lane with 32-bit multiplies.
constexpr std::uint32_t mix32(std::uint32_t x) noexcept {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

/// The Weyl increment between consecutive positions of a line.
inline constexpr std::uint32_t kPositionStep = 0x9E3779B9u;

/// The key of one line (a row or column of a GSE tensor) for a given seed.
constexpr std::uint32_t line_key(std::uint64_t seed, std::uint64_t line) noexcept {
  const auto lo = static_cast<std::uint32_t>(seed);
  const auto hi = static_cast<std::uint32_t>(seed >> 32);
  const auto l_lo = static_cast<std::uint32_t>(line);
  const auto l_hi = static_cast<std::uint32_t>(line >> 32);
  return mix32(lo ^ mix32(hi + mix32(l_lo ^ mix32(l_hi + 0x632BE5ABu))));
}

/// The random 32-bit number for position `pos` of the line with key `key`:
/// r = mix32(key + pos * kPositionStep).  A pure function of (seed, line, pos), so stochastic
/// rounding is reproducible on every ISA and thread count, and independent of call order.
constexpr std::uint32_t random_at(std::uint32_t key, std::uint32_t pos) noexcept {
  return mix32(key + pos * kPositionStep);
}

}  // namespace gsq::detail
