// convert.hpp: float32 / bfloat16 / float16 -> GSE-INT quantization and GSE-INT -> float32.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/format.hpp"
#include "gsq/half.hpp"
#include "gsq/kernels/dispatch.hpp"
#include "gsq/kernels/encode_scalar.hpp"
#include "gsq/kernels/quantize_avx2.hpp"
#include "gsq/kernels/quantize_avx512.hpp"
#include "gsq/kernels/quantize_neon.hpp"
#include "gsq/kernels/quantize_scalar.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// How quantize() encodes.
struct QuantizeOptions {
  Rounding rounding = Rounding::kNearestEven;
  NonFinitePolicy non_finite = NonFinitePolicy::kThrow;
  /// Seed of the stochastic-rounding stream: the random number of element (line, pos) is a pure
  /// function of (seed, line, pos) (detail/rng.hpp).  Use a new seed per step.
  std::uint64_t seed = 0;
  /// Kernel ISA; empty picks the best this CPU supports (conversion_isa()).  Every ISA gives
  /// bit-identical results, so this exists for tests and benchmarks.
  std::optional<Isa> isa;
  /// Threads (OpenMP): 0 lets gsq choose (OpenMP's count for large tensors, 1 for small ones),
  /// a positive count is used as given.  Results never depend on it.
  int threads = 0;
};

/// What one conversion did, for the format's lossy corners (format.hpp).
struct ConversionStats {
  Index groups = 0;          ///< groups encoded, including all-zero groups
  Index zero_groups = 0;     ///< groups whose values were all zero
  Index clamped_groups = 0;  ///< groups more than 31 binades below the largest (step 3)
  Index saturated = 0;       ///< codes that rounded up past kQMax and were clamped to it
  Index non_finite = 0;      ///< NaN/Inf encoded as 0 under NonFinitePolicy::kZero
};

namespace detail {

template <typename T>
inline float widen(T x) noexcept {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return to_float(x);
  }
}

using LineQuantizeFn = kernels::LineResult (*)(const float*, int, std::uint32_t, std::uint32_t,
                                               std::int8_t*, std::int16_t*) noexcept;
using LineDequantizeFn = void (*)(const std::int8_t*, int, int, float*) noexcept;

template <int Bits, int GroupSize, Isa I>
LineQuantizeFn line_quantizer_for(Rounding rounding) noexcept {
  using K = kernels::LineKernels<I>;
  switch (rounding) {
    case Rounding::kNearestEven:
      return &K::template quantize<Bits, GroupSize, Rounding::kNearestEven>;
    case Rounding::kNearestAway:
      return &K::template quantize<Bits, GroupSize, Rounding::kNearestAway>;
    case Rounding::kTowardZero:
      return &K::template quantize<Bits, GroupSize, Rounding::kTowardZero>;
    case Rounding::kStochastic:
      return &K::template quantize<Bits, GroupSize, Rounding::kStochastic>;
  }
  return nullptr;
}

/// Resolves the requested ISA to one that has conversion kernels and that this CPU runs.
inline Isa conversion_kernel_isa(const std::optional<Isa>& requested) {
  if (!requested) return conversion_isa();
  GSQ_CHECK(cpu_supports(*requested), "conversion: ISA ", to_string(*requested),
            " is not available on this CPU (or is ruled out by GSQ_ISA)");
  switch (*requested) {
    case Isa::kAvx512Vnni:
      return Isa::kAvx512;
    case Isa::kNeonDot:
      return Isa::kNeon;
    default:
      return *requested;
  }
}

/// The conversion kernels' ISAs (kernels/quantize_<isa>.hpp).
template <typename F>
auto dispatch_conversion(Isa isa, F&& f) {
  return kernels::dispatch<Isa::kAvx2, Isa::kAvx512, Isa::kNeon>(isa, std::forward<F>(f));
}

template <int Bits, int GroupSize>
LineQuantizeFn line_quantizer(Isa isa, Rounding rounding) noexcept {
  return dispatch_conversion(isa, [rounding](auto tag) {
    return line_quantizer_for<Bits, GroupSize, decltype(tag)::value>(rounding);
  });
}

inline LineDequantizeFn line_dequantizer(Isa isa) noexcept {
  return dispatch_conversion(isa, [](auto tag) -> LineDequantizeFn {
    return &kernels::LineKernels<decltype(tag)::value>::dequantize;
  });
}

/// Copies lines [first, first + count) of `src` into `out` (line k at out + k * stride, padded
/// with zeros to `padded`), widening to float.  Reads follow the source's fastest axis: line by
/// line when the line is contiguous, otherwise position by position across the block of lines, so a
/// row-major source grouped along rows is read row by row.  With `zero_non_finite`, NaN and Inf
/// become 0; returns how many did.
template <typename T>
Index gather_lines(MatrixRef<const T> src, const GseShape& shape, Index first, Index count,
                   float* out, Index stride, Index padded, bool zero_non_finite) noexcept {
  const Index len = shape.length();
  const Index pos_step = shape.axis == Axis::kCols ? src.col_stride : src.row_stride;
  const Index line_step = shape.axis == Axis::kCols ? src.row_stride : src.col_stride;
  const T* base = src.data + first * line_step;
  if (pos_step == 1 || count == 1) {
    for (Index l = 0; l < count; ++l) {
      for (Index p = 0; p < len; ++p)
        out[l * stride + p] = widen(base[l * line_step + p * pos_step]);
    }
  } else {
    for (Index p = 0; p < len; ++p) {
      for (Index l = 0; l < count; ++l)
        out[l * stride + p] = widen(base[l * line_step + p * pos_step]);
    }
  }
  Index non_finite = 0;
  for (Index l = 0; l < count; ++l) {
    float* line = out + l * stride;
    std::fill(line + len, line + padded, 0.0f);
    if (!zero_non_finite) continue;
    for (Index p = 0; p < len; ++p) {
      if ((float_bits(line[p]) & 0x7F800000u) == 0x7F800000u) {
        line[p] = 0.0f;
        ++non_finite;
      }
    }
  }
  return non_finite;
}

/// Lines gathered per block when the source is not read in place.
inline constexpr Index kGatherBlock = 16;

}  // namespace detail

/// Quantizes `src` (float, Bf16 or Fp16; any strides) into `dst`, with groups of GroupSize
/// running along `axis` (format.hpp, "Encoding").  Rounding and non-finite handling follow
/// `options`; every ISA gives bit-identical output.  Reuses dst's storage when large enough.
/// Throws std::invalid_argument for NaN/Inf under NonFinitePolicy::kThrow (naming the row and
/// column, and leaving dst unspecified) and for lines longer than 2^31 - 4096.
/// Cost: one pass over src when no group is clamped; clamped groups are read once more.
template <int Bits, int GroupSize, typename T>
void quantize_into(MatrixRef<const T> src, Axis axis, GseTensor<Bits, GroupSize>& dst,
                   const QuantizeOptions& options = {}, ConversionStats* stats = nullptr) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, Bf16> || std::is_same_v<T, Fp16>,
                "quantize reads float, gsq::Bf16 or gsq::Fp16");
  GSQ_CHECK(src.rows >= 0 && src.cols >= 0, "quantize: negative shape ", src.rows, "x", src.cols);
  GSQ_CHECK(src.data != nullptr || src.rows * src.cols == 0, "quantize: null data for a ", src.rows,
            "x", src.cols, " matrix");
  const GseShape shape{src.rows, src.cols, axis};
  GSQ_CHECK(shape.length() <= INT_MAX - 4096, "quantize: lines of ", shape.length(),
            " values are longer than supported (2^31 - 4096)");
  const detail::LineQuantizeFn kernel = detail::line_quantizer<Bits, GroupSize>(
      detail::conversion_kernel_isa(options.isa), options.rounding);
  dst.reshape(src.rows, src.cols, axis);
  const auto view = dst.view();
  const Index len = view.length();
  const Index padded = view.padded_length();
  const Index groups = view.groups_per_line();
  ConversionStats st;
  st.groups = view.lines() * groups;
  if (st.groups == 0) {
    if (stats != nullptr) *stats = st;
    return;
  }

  std::vector<std::int16_t> quantum(static_cast<std::size_t>(view.lines() * groups));
  const Index pos_step = axis == Axis::kCols ? src.col_stride : src.row_stride;
  const bool direct = std::is_same_v<T, float> && pos_step == 1 && len == padded;
  const Index block = direct ? 1 : std::min(view.lines(), detail::kGatherBlock);
  // Lines of a gathered block sit one cache line further apart than their length, so that
  // writing a position across the block does not hit one cache set 16 times.
  const Index stride = padded + 16;
  // Blocks of lines are independent: threads take whole blocks, each with its own scratch and
  // counters, so the result does not depend on the split.  Non-finite lines are set aside and
  // handled after, in order, on the calling thread (the first one is the one reported).
  const Index blocks = (view.lines() + block - 1) / block;
  const int threads = static_cast<int>(std::min<Index>(
      blocks, detail::threads_for(static_cast<double>(view.lines()) * static_cast<double>(padded) *
                                      4.0,
                                  options.threads)));
  const Index scratch_floats = direct ? 0 : block * stride;
  detail::AlignedVector<float> scratch(
      static_cast<std::size_t>(scratch_floats * std::max(threads, 1) + stride));
  float* line_scratch = scratch.data() + scratch_floats * std::max(threads, 1);  // slow paths
  std::vector<Index> saturated(static_cast<std::size_t>(std::max(threads, 1)), 0);
  std::vector<std::uint8_t> non_finite(static_cast<std::size_t>(view.lines()), 0);

  detail::parallel_for_blocks(view.lines(), block, threads, [&](Index first, Index count,
                                                                 int slot) {
    float* gathered = scratch.data() + slot * scratch_floats;
    if (!direct) detail::gather_lines(src, shape, first, count, gathered, stride, padded, false);
    for (Index line = first; line < first + count; ++line) {
      const std::uint32_t key = detail::line_key(options.seed, static_cast<std::uint64_t>(line));
      std::int8_t* codes = dst.mutable_codes() + line * padded;
      std::int16_t* q = quantum.data() + line * groups;
      const float* x = gathered + (line - first) * stride;
      if constexpr (std::is_same_v<T, float>) {
        if (direct) x = &src(shape.row_of(line, 0), shape.col_of(line, 0));
      }
      const kernels::LineResult r = kernel(x, static_cast<int>(padded), key, 0, codes, q);
      if (r.finite) {
        saturated[static_cast<std::size_t>(slot)] += r.saturated;
      } else {
        non_finite[static_cast<std::size_t>(line)] = 1;
      }
    }
  });
  for (const Index n : saturated) st.saturated += n;
  for (Index line = 0; line < view.lines(); ++line) {
    if (non_finite[static_cast<std::size_t>(line)] == 0) continue;
    if (options.non_finite == NonFinitePolicy::kThrow) {
      for (Index p = 0; p < len; ++p) {
        const Index i = shape.row_of(line, p);
        const Index j = shape.col_of(line, p);
        const float v = detail::widen(src(i, j));
        GSQ_CHECK((float_bits(v) & 0x7F800000u) != 0x7F800000u,
                  "quantize: ", std::isnan(v) ? "NaN" : "Inf", " at row ", i, ", column ", j,
                  " (NonFinitePolicy::kZero encodes non-finite values as 0)");
      }
    }
    const std::uint32_t key = detail::line_key(options.seed, static_cast<std::uint64_t>(line));
    st.non_finite += detail::gather_lines(src, shape, line, 1, line_scratch, stride, padded, true);
    const kernels::LineResult r =
        kernel(line_scratch, static_cast<int>(padded), key, 0, dst.mutable_codes() + line * padded,
               quantum.data() + line * groups);
    GSQ_DASSERT(r.finite);
    st.saturated += r.saturated;
  }

  // The offset T puts the largest group at E = 31 (format.hpp, step 2).
  int q_max = INT_MIN;
  for (const std::int16_t q : quantum) {
    if (q != kernels::kZeroGroup) q_max = std::max(q_max, int{q});
  }
  const int offset = kernels::tensor_offset(q_max);
  GSQ_DASSERT(q_max == INT_MIN || (offset >= GseFormat<Bits, GroupSize>::kMinOffset &&
                                   offset <= GseFormat<Bits, GroupSize>::kMaxOffset));
  dst.set_offset(offset);

  // Exponents, and re-encoding of clamped groups at s = T (step 3), with the scalar reference
  // (bit-identical to every kernel, and clamped groups are rare).
  std::vector<std::int8_t> discard(GroupSize);
  Index fetched_line = -1;
  for (Index line = 0; line < view.lines(); ++line) {
    const std::uint32_t key = detail::line_key(options.seed, static_cast<std::uint64_t>(line));
    for (Index g = 0; g < groups; ++g) {
      const int q = quantum[static_cast<std::size_t>(line * groups + g)];
      const kernels::GroupExponent ge =
          kernels::group_exponent(q != kernels::kZeroGroup, q, offset);
      dst.mutable_exponents()[line * groups + g] = ge.e;
      st.zero_groups += ge.zero;
      if (!ge.clamped) continue;
      ++st.clamped_groups;
      if (fetched_line != line) {
        detail::gather_lines(src, shape, line, 1, line_scratch, stride, padded,
                             options.non_finite == NonFinitePolicy::kZero);
        fetched_line = line;
      }
      const float* x = line_scratch + g * GroupSize;
      std::int8_t* codes = dst.mutable_codes() + line * padded + g * GroupSize;
      const auto pos = static_cast<std::uint32_t>(g * GroupSize);
      auto encode = [&](int s, std::int8_t* out) {
        switch (options.rounding) {
          case Rounding::kNearestEven:
            return kernels::encode_values<Bits, Rounding::kNearestEven>(x, GroupSize, s, key, pos,
                                                                        out);
          case Rounding::kNearestAway:
            return kernels::encode_values<Bits, Rounding::kNearestAway>(x, GroupSize, s, key, pos,
                                                                        out);
          case Rounding::kTowardZero:
            return kernels::encode_values<Bits, Rounding::kTowardZero>(x, GroupSize, s, key, pos,
                                                                       out);
          case Rounding::kStochastic:
            return kernels::encode_values<Bits, Rounding::kStochastic>(x, GroupSize, s, key, pos,
                                                                       out);
        }
        return 0;
      };
      st.saturated -= encode(q, discard.data());  // the first pass counted these at s = q
      st.saturated += encode(offset, codes);
    }
  }
  if (stats != nullptr) *stats = st;
}

/// Quantizes `src` into a new tensor; see quantize_into.
template <int Bits, int GroupSize = 32, typename T>
GseTensor<Bits, GroupSize> quantize(MatrixRef<const T> src, Axis axis,
                                    const QuantizeOptions& options = {},
                                    ConversionStats* stats = nullptr) {
  GseTensor<Bits, GroupSize> t;
  quantize_into(src, axis, t, options, stats);
  return t;
}
template <int Bits, int GroupSize = 32, typename T>
GseTensor<Bits, GroupSize> quantize(MatrixRef<T> src, Axis axis,
                                    const QuantizeOptions& options = {},
                                    ConversionStats* stats = nullptr) {
  return quantize<Bits, GroupSize>(MatrixRef<const T>(src), axis, options, stats);
}

/// Writes the values of `src` into `dst` (same shape, any strides): c * 2^(T + E), rounded once
/// to nearest-even float32 (exact whenever representable).  Bit-identical on every ISA and thread
/// count; `threads` as MatmulOptions::threads (0: gsq chooses by size).
template <int Bits, int GroupSize>
void dequantize_into(const GseView<Bits, GroupSize>& src, MatrixRef<float> dst,
                     std::optional<Isa> isa = std::nullopt, int threads = 1) {
  GSQ_CHECK(dst.rows == src.rows() && dst.cols == src.cols(), "dequantize: destination is ",
            dst.rows, "x", dst.cols, " but the tensor is ", src.rows(), "x", src.cols());
  const detail::LineDequantizeFn kernel =
      detail::line_dequantizer(detail::conversion_kernel_isa(isa));
  if (src.empty()) return;
  const GseShape& shape = src.shape();
  const Index len = src.length();
  const Index pos_step = shape.axis == Axis::kCols ? dst.col_stride : dst.row_stride;
  // Blocks of 16 lines over threads, each thread with its own line of scratch (strided dst).
  constexpr Index kBlock = 16;
  const Index blocks = (src.lines() + kBlock - 1) / kBlock;
  const int used = static_cast<int>(std::min<Index>(
      blocks, detail::threads_for(static_cast<double>(src.size()) * 2.0, threads)));
  detail::AlignedVector<float> scratch(
      pos_step == 1 ? 0 : static_cast<std::size_t>(len * std::max(used, 1)));
  detail::parallel_for_blocks(src.lines(), kBlock, used, [&](Index first, Index count, int slot) {
    for (Index line = first; line < first + count; ++line) {
      float* out = pos_step == 1 ? &dst(shape.row_of(line, 0), shape.col_of(line, 0))
                                 : scratch.data() + slot * len;
      const std::int8_t* codes = src.line_codes(line);
      for (Index g = 0; g * GroupSize < len; ++g) {
        const Index begin = g * GroupSize;
        kernel(codes + begin, static_cast<int>(std::min<Index>(GroupSize, len - begin)),
               src.offset() + src.line_exponents(line)[g], out + begin);
      }
      if (pos_step != 1) {
        for (Index p = 0; p < len; ++p) dst(shape.row_of(line, p), shape.col_of(line, p)) = out[p];
      }
    }
  });
}

/// The values of `src` as a new row-major rows x cols float vector.
template <int Bits, int GroupSize>
std::vector<float> dequantize(const GseView<Bits, GroupSize>& src) {
  std::vector<float> out(static_cast<std::size_t>(src.size()));
  dequantize_into(src, MatrixRef<float>::row_major(out.data(), src.rows(), src.cols()));
  return out;
}
template <int Bits, int GroupSize>
std::vector<float> dequantize(const GseTensor<Bits, GroupSize>& src) {
  return dequantize(src.view());
}

}  // namespace gsq
