// testing.hpp: small helpers shared by the test files.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsq/detail/rng.hpp"

namespace gsq::test {

/// n draws of N(0, sigma^2) from gsq's portable generator (detail/rng.hpp), so that thresholds
/// measured here hold with every standard library.
inline std::vector<float> normal_vector(std::size_t n, std::uint32_t seed, float sigma = 1.0f) {
  detail::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.normal(sigma);
  return v;
}

/// n draws uniform on [lo, hi), bit-identical on every platform (detail/rng.hpp).
inline std::vector<float> uniform_vector(std::size_t n, std::uint32_t seed, float lo, float hi) {
  detail::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

/// The message of the std::invalid_argument that `fn` throws, or "(no exception)".
inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

/// error_message, but "" when `fn` throws nothing (for .empty() checks).
inline std::string error_of(const std::function<void()>& fn) {
  const std::string m = error_message(fn);
  return m == "(no exception)" ? std::string() : m;
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// A matrix with a wide spread of magnitudes and signs, rows x cols with leading dimension ld.
/// The padding between cols and ld holds NaN, which a quantizer must never read.
inline std::vector<float> spread_matrix(std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t ld,
                                        unsigned seed) {
  detail::Rng rng(seed);
  std::vector<float> m(static_cast<std::size_t>(rows * ld), std::nanf(""));
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) {
      const float v = rng.normal();
      m[static_cast<std::size_t>(r * ld + c)] = std::ldexp(v, static_cast<int>(rng.below(31)) - 24);
    }
  }
  return m;
}

}  // namespace gsq::test
