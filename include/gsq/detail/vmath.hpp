// vmath.hpp: gsq's own elementary functions, one definition on every CPU, so that model code that
// calls them is bit-identical across ISAs (glibc picks its exp, sin and pow code per CPU).
#pragma once

#include <cstdint>
#include <cstring>

#include "gsq/format.hpp"

namespace gsq::detail {

// Every function here is a fixed sequence of IEEE float or double operations (no libm call, no
// FMA: the gsq target builds with -ffp-contract=off, see CMakeLists.txt), so every compiler and
// CPU rounds the same operations the same way.  The float ones are branch-free and inline, so
// loops over arrays of them vectorise.

inline float bits_to_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline std::uint32_t float_to_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

/// Sixteen float (int32) lanes as one value: GCC and Clang vector extensions, each operator the
/// IEEE float (two's complement) operation lane by lane, which the compiler maps to one AVX-512
/// register, two AVX ones or four SSE/NEON ones.  Code on them rounds exactly as the scalar
/// loop over the lanes does.  Only ever local to a function or passed by reference, never passed
/// or returned by value (the calling convention of such values depends on the target).
typedef float F32x16 __attribute__((vector_size(64)));
typedef std::int32_t I32x16 __attribute__((vector_size(64)));

/// p * 2^k for a float p in [1, 2) and an integral k in [-126, 127] (k held as a float): k
/// added to the exponent field.  One overload per lane type of exp_f32_lanes.
inline void scale_by_pow2(float& p, const float& kf) noexcept {
  p = bits_to_float(float_to_bits(p) +
                    (static_cast<std::uint32_t>(static_cast<std::int32_t>(kf)) << 23));
}
inline void scale_by_pow2(F32x16& p, const F32x16& kf) noexcept {
  p = reinterpret_cast<F32x16>(reinterpret_cast<I32x16>(p) +
                               (__builtin_convertvector(kf, I32x16) << 23));
}

/// x = e^x, lane by lane, for V = float or F32x16: the one definition of exp_f32, so the scalar
/// and the 16-lane forms are the same operations.  Within 2 units in the last place of the
/// correctly rounded value for x in [-87, 88]; 0 below -87.3 (softmax weights that small do not
/// matter), +Inf above 88.7.  Cephes' expf: x = k ln2 + r with k = round(x / ln2) (ln2 split in
/// two so k ln2 is exact), e^r by its degree-7 Taylor-like minimax polynomial, then 2^k put into
/// the exponent field.
template <typename V>
inline void exp_f32_lanes(V& x) noexcept {
  const V zero{};
  V xc = x > 88.0f ? zero + 88.0f : x;
  xc = x < -87.0f ? zero - 87.0f : xc;
  const V kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  V r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  V p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r;
  p = p + 1.0f;
  scale_by_pow2(p, kf);
  const V big = x > 88.7f ? zero + bits_to_float(0x7F800000u) : p;
  x = x < -87.3f ? zero : big;
}

/// e^x in float: exp_f32_lanes on one lane.
inline float exp_f32(float x) noexcept {
  exp_f32_lanes(x);
  return x;
}

/// The 16 lanes' sum, pairwise (lane j + lane j + 8, then + 4, + 2, + 1).
inline float lane_tree_sum(const float* lane16) noexcept {
  float lane[16];
  std::memcpy(lane, lane16, sizeof lane);
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  }
  return lane[0];
}

/// Sum of n floats in a fixed order: 16 running lanes (lane j sums x[j], x[j+16], ...), then
/// the lanes pairwise.  Every ISA and the scalar build compute exactly this.
inline float sum_f32(const float* x, Index n) noexcept {
  F32x16 acc{};
  Index i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 v;
    std::memcpy(&v, x + i, sizeof v);
    acc += v;
  }
  float lane[16];
  std::memcpy(lane, &acc, sizeof lane);
  for (int j = 0; i + j < n; ++j) lane[j] += x[i + j];
  return lane_tree_sum(lane);
}

/// Sum of x[i] * y[i], in sum_f32's order.
inline float dot_f32(const float* x, const float* y, Index n) noexcept {
  F32x16 acc{};
  Index i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 u, v;
    std::memcpy(&u, x + i, sizeof u);
    std::memcpy(&v, y + i, sizeof v);
    acc += u * v;
  }
  float lane[16];
  std::memcpy(lane, &acc, sizeof lane);
  for (int j = 0; i + j < n; ++j) lane[j] += x[i + j] * y[i + j];
  return lane_tree_sum(lane);
}

/// Sum of a[i] * b[i] * c[i] (the products left to right), in sum_f32's order.
inline float dot3_f32(const float* a, const float* b, const float* c, Index n) noexcept {
  F32x16 acc{};
  Index i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 u, v, w;
    std::memcpy(&u, a + i, sizeof u);
    std::memcpy(&v, b + i, sizeof v);
    std::memcpy(&w, c + i, sizeof w);
    acc += u * v * w;
  }
  float lane[16];
  std::memcpy(lane, &acc, sizeof lane);
  for (int j = 0; i + j < n; ++j) lane[j] += a[i + j] * b[i + j] * c[i + j];
  return lane_tree_sum(lane);
}

/// 1 / (1 + e^-x) with exp_f32.
inline float sigmoid_f32(float x) noexcept { return 1.0f / (1.0f + exp_f32(-x)); }

/// The largest of n >= 1 floats (NaN-free input): 16 running lanes, then lane by lane.
inline float max_f32(const float* x, Index n) noexcept {
  F32x16 acc;
  for (int j = 0; j < 16; ++j) acc[j] = x[0];
  Index i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 v;
    std::memcpy(&v, x + i, sizeof v);
    acc = acc < v ? v : acc;
  }
  float lane[16];
  std::memcpy(lane, &acc, sizeof lane);
  for (int j = 0; i + j < n; ++j) lane[j] = lane[j] < x[i + j] ? x[i + j] : lane[j];
  float m = lane[0];
  for (int j = 1; j < 16; ++j) m = m < lane[j] ? lane[j] : m;
  return m;
}

/// x[i] = exp_f32(x[i] - shift) for i < n, 16 lanes at a time.
inline void exp_shifted_f32(float* x, Index n, float shift) noexcept {
  Index i = 0;
  for (; i + 16 <= n; i += 16) {
    F32x16 v;
    std::memcpy(&v, x + i, sizeof v);
    v = v - shift;
    exp_f32_lanes(v);
    std::memcpy(x + i, &v, sizeof v);
  }
  for (; i < n; ++i) x[i] = exp_f32(x[i] - shift);
}

/// In place over n >= 1 scores: x = e^(x - max) * (1 / sum), with exp_f32 and sum_f32; the
/// row's max and 1 / sum into max_out and inv_out.
inline void softmax_f32(float* x, Index n, float& max_out, float& inv_out) noexcept {
  max_out = max_f32(x, n);
  exp_shifted_f32(x, n, max_out);
  inv_out = 1.0f / sum_f32(x, n);
  for (Index i = 0; i < n; ++i) x[i] = x[i] * inv_out;
}

/// softmax_f32 again from the scores and the max and 1 / sum it returned: the same values.
inline void softmax_again_f32(float* x, Index n, float max, float inv) noexcept {
  exp_shifted_f32(x, n, max);
  for (Index i = 0; i < n; ++i) x[i] = x[i] * inv;
}

// Double-precision functions for tables (RoPE frequencies and angles), accurate to a few units
// of double roundoff for the arguments tables use, and rounded to float by the caller: the same
// float on every CPU.

/// e^x for |x| <= 700: x = k ln2 + r, |r| <= ln2 / 2, e^r by Taylor to degree 20, times 2^k.
inline double exp_f64(double x) noexcept {
  const double k = static_cast<double>(static_cast<std::int64_t>(
      x * 1.4426950408889634 + (x >= 0 ? 0.5 : -0.5)));
  const double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  double term = 1.0, sum = 1.0;
  for (int i = 1; i <= 20; ++i) {
    term = term * r / static_cast<double>(i);
    sum = sum + term;
  }
  double scale = 1.0;
  const auto ki = static_cast<int>(k);
  for (int i = 0; i < (ki < 0 ? -ki : ki); ++i) scale = scale * 2.0;
  return ki < 0 ? sum / scale : sum * scale;
}

/// ln x for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1) / (m + 1))
/// by its series to degree 41.
inline double log_f64(double x) noexcept {
  int e = 0;
  while (x >= 1.4142135623730951) {
    x = x / 2.0;
    ++e;
  }
  while (x < 0.7071067811865476) {
    x = x * 2.0;
    --e;
  }
  const double z = (x - 1.0) / (x + 1.0), z2 = z * z;
  double term = z, sum = 0.0;
  for (int i = 1; i <= 41; i += 2) {
    sum = sum + term / static_cast<double>(i);
    term = term * z2;
  }
  return 2.0 * sum + static_cast<double>(e) * 6.93147180559945309417e-01;
}

/// sin and cos of x for |x| <= 2^20: x = k pi/2 + r (pi/2 in three parts), Taylor to degree 25.
inline void sincos_f64(double x, double& s, double& c) noexcept {
  const double kd = static_cast<double>(static_cast<std::int64_t>(
      x * 0.63661977236758134 + (x >= 0 ? 0.5 : -0.5)));
  double r = x - kd * 1.57079632673412561417e+00;
  r = r - kd * 6.07710050650619224932e-11;
  r = r - kd * 2.02226624879595063154e-21;
  double ts = r, tc = 1.0, sr = r, cr = 1.0;
  const double r2 = r * r;
  for (int i = 1; i <= 12; ++i) {
    ts = -ts * r2 / static_cast<double>((2 * i) * (2 * i + 1));
    tc = -tc * r2 / static_cast<double>((2 * i - 1) * (2 * i));
    sr = sr + ts;
    cr = cr + tc;
  }
  switch (static_cast<std::int64_t>(kd) & 3) {
    case 0:
      s = sr, c = cr;
      break;
    case 1:
      s = cr, c = -sr;
      break;
    case 2:
      s = -sr, c = -cr;
      break;
    default:
      s = -cr, c = sr;
      break;
  }
}

}  // namespace gsq::detail
