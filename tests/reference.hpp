// reference.hpp: the float definitions the tests hold the integer kernels to, written with
// double arithmetic and <cmath> only, independent of the library's bit manipulation.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/detail/rng.hpp"
#include "gsq/format.hpp"

namespace gsq::test {

/// Rounds v (exactly representable in double) the way `rounding` says; kStochastic is not
/// covered here (it has its own statistical test).
inline double round_as(double v, Rounding rounding) {
  switch (rounding) {
    case Rounding::kNearestEven: {
      const double fl = std::floor(v);
      const double d = v - fl;
      if (d > 0.5) return fl + 1;
      if (d < 0.5) return fl;
      return std::fmod(fl, 2.0) == 0.0 ? fl : fl + 1;
    }
    case Rounding::kNearestAway:
      return std::round(v);
    case Rounding::kTowardZero:
      return std::trunc(v);
    case Rounding::kStochastic:
      break;
  }
  return NAN;
}

/// The GSE encoding by its float definition (format.hpp): row-major rows x cols input, result
/// codes in the same row-major order plus the per-element quantum s.
struct RefGse {
  std::vector<int> codes;    // row-major
  std::vector<int> quantum;  // row-major: s of the element's group
  int offset = 0;
  long clamped_groups = 0;
  long saturated = 0;
};

inline RefGse ref_quantize(const std::vector<float>& x, long rows, long cols, Axis axis, int bits,
                           int group, Rounding rounding) {
  const long lines = axis == Axis::kCols ? rows : cols;
  const long len = axis == Axis::kCols ? cols : rows;
  const long groups = (len + group - 1) / group;
  auto at = [&](long line, long pos) -> long {
    return axis == Axis::kCols ? line * cols + pos : pos * cols + line;
  };
  std::vector<int> q(static_cast<std::size_t>(lines * groups), INT_MIN);
  int q_max = INT_MIN;
  for (long l = 0; l < lines; ++l) {
    for (long g = 0; g < groups; ++g) {
      double amax = 0;
      for (long p = g * group; p < std::min(len, (g + 1) * group); ++p) {
        amax =
            std::max(amax, std::fabs(static_cast<double>(x[static_cast<std::size_t>(at(l, p))])));
      }
      if (amax == 0) continue;
      const int qg = std::ilogb(amax) - (bits - 2);
      q[static_cast<std::size_t>(l * groups + g)] = qg;
      q_max = std::max(q_max, qg);
    }
  }
  RefGse r;
  r.offset = q_max == INT_MIN ? 0 : q_max - 31;
  r.codes.assign(x.size(), 0);
  r.quantum.assign(x.size(), 0);
  const double qmax = (1 << (bits - 1)) - 1;
  for (long l = 0; l < lines; ++l) {
    for (long g = 0; g < groups; ++g) {
      const int qg = q[static_cast<std::size_t>(l * groups + g)];
      const int s = qg == INT_MIN ? r.offset : std::max(qg, r.offset);
      if (qg != INT_MIN && qg < r.offset) ++r.clamped_groups;
      for (long p = g * group; p < std::min(len, (g + 1) * group); ++p) {
        const auto k = static_cast<std::size_t>(at(l, p));
        double c = round_as(std::ldexp(static_cast<double>(x[k]), -s), rounding);
        if (std::fabs(c) > qmax) {
          c = std::copysign(qmax, c);
          ++r.saturated;
        }
        r.codes[k] = static_cast<int>(c);
        r.quantum[k] = s;
      }
    }
  }
  return r;
}

/// Random floats with a spread of magnitudes: normal(0,1) times 2^k, k uniform in [lo, hi], with
/// some exact zeros, subnormals and values on rounding ties mixed in.
inline std::vector<float> mixed_data(std::size_t n, std::uint32_t seed, int lo = -20, int hi = 20) {
  detail::Rng rng(seed);
  auto binade = [&] {
    return lo + static_cast<int>(rng.below(static_cast<std::uint32_t>(hi - lo + 1)));
  };
  auto kind = [&] { return static_cast<int>(rng.below(20)); };
  std::vector<float> x(n);
  for (auto& v : x) {
    switch (kind()) {
      case 0:
        v = 0.0f;
        break;
      case 1:
        v = std::ldexp(static_cast<float>(kind() + 1), -140);
        break;  // subnormal
      case 2:
        v = std::ldexp(static_cast<float>(2 * kind() + 1), binade() - 8);
        break;  // tie-prone
      default: {
        const float g = rng.normal();
        v = std::ldexp(g, binade());
      } break;
    }
  }
  return x;
}

}  // namespace gsq::test
