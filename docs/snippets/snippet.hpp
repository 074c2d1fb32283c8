// snippet.hpp: what the README snippet programs share outside their quoted regions: test data
// and the checks that make each program fail when its snippet stops doing what the README says.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace snippet {

/// n Gaussian values (mean 0, standard deviation sigma) from a fixed seed: splitmix64 and
/// Box-Muller, so the data are the same with every standard library.
inline std::vector<float> normal(std::size_t n, std::uint64_t seed, float sigma = 1.0f) {
  std::uint64_t state = seed;
  auto uniform = [&state] {  // (0, 1), 53 bits
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) * 0x1.0p-53;
  };
  std::vector<float> out(n);
  for (float& v : out) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    v = static_cast<float>(sigma * r * std::cos(6.283185307179586 * uniform()));
  }
  return out;
}

/// Counts failed checks; each check prints one line, so ctest's output says what failed.
class Checks {
 public:
  explicit Checks(const char* program) : program_(program) {}
  void operator()(bool ok, const char* what) {
    std::printf("%s: %s: %s\n", program_, ok ? "ok" : "FAILED", what);
    failures_ += ok ? 0 : 1;
  }
  /// main's return value: 0 when every check held.
  int exit_code() const {
    if (failures_ != 0) std::printf("%s: %d check(s) failed\n", program_, failures_);
    return failures_ == 0 ? 0 : 1;
  }

 private:
  const char* program_;
  int failures_ = 0;
};

}  // namespace snippet
