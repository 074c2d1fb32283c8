// rng.hpp: gsq's counter-based random numbers: the streams behind stochastic rounding, and a
// portable generator for everything else that draws (initialisation, tests, benchmarks).
#pragma once

#include <cmath>
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

/// The splitmix64 finaliser: a bijective 64-bit mix with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
  return z ^ (z >> 31);
}

/// A portable random generator: draw k of a stream is mix64(key + k * golden), a pure function
/// of (seed, stream, k) in integer arithmetic, so a seed gives the same numbers with every
/// compiler, standard library and ISA (std::normal_distribution and friends do not: their
/// algorithms are unspecified).  Not for cryptography.
///
/// Exactness: uniform() and uniform(lo, hi) use only integer steps and one correctly rounded
/// double operation, so they are bit-identical everywhere, with or without FMA contraction.
/// normal() is the polar method with one std::log per accepted pair, evaluated in double and
/// rounded to float; it matches wherever libm's log is correctly rounded for the argument (the
/// common libms are, except on rare hard cases, which the final rounding to float hides).
class Rng {
 public:
  explicit constexpr Rng(std::uint64_t seed, std::uint64_t stream = 0) noexcept
      : key_(mix64(mix64(seed) ^ (stream * 0xD1B54A32D192ED03u + 0x8BB84B93962EACC9u))) {}

  /// The next 64 random bits.
  constexpr std::uint64_t next_u64() noexcept {
    return mix64(key_ + (++counter_) * 0x9E3779B97F4A7C15u);
  }
  constexpr std::uint32_t next_u32() noexcept {
    return static_cast<std::uint32_t>(next_u64() >> 32);
  }

  /// Uniform on [0, 1) with 24 random bits: every value is an exact float.
  float uniform() noexcept { return static_cast<float>(next_u64() >> 40) * 0x1p-24f; }

  /// Uniform on [lo, hi): lo + (hi - lo) * u, the product exact in double (24 x 25 bits), the
  /// sum rounded once to double and once to float.
  float uniform(float lo, float hi) noexcept {
    const double u = static_cast<double>(next_u64() >> 40) * 0x1p-24;
    const double width = static_cast<double>(hi) - static_cast<double>(lo);  // exact
    return static_cast<float>(static_cast<double>(lo) + width * u);
  }

  /// An integer uniform on [0, n) (n >= 1), by the multiply-shift map of 32 random bits (bias
  /// below n / 2^32).
  std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>((std::uint64_t{next_u32()} * n) >> 32);
  }

  /// A standard normal draw (mean 0, variance 1), times sigma.
  float normal(float sigma = 1.0f) noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return static_cast<float>(spare_ * sigma);
    }
    for (;;) {
      // u, v on (-1, 1) with 25-bit numerators, so u*u + v*v is exact in double (no rounding
      // for a contracted multiply-add to change) and the rejection test is exact.
      const double u = (static_cast<double>(next_u64() >> 39) - 0x1p24) * 0x1p-24;
      const double v = (static_cast<double>(next_u64() >> 39) - 0x1p24) * 0x1p-24;
      const double s = u * u + v * v;
      if (s >= 1.0 || s == 0.0) continue;
      const double f = std::sqrt(-2.0 * std::log(s) / s);
      spare_ = v * f;
      has_spare_ = true;
      return static_cast<float>(u * f * sigma);
    }
  }

 private:
  std::uint64_t key_;
  std::uint64_t counter_ = 0;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace gsq::detail
