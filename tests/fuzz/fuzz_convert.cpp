// fuzz_convert.cpp: float / bf16 / fp16 -> GSE-INT conversion of arbitrary bit patterns and
// shapes, checked against the format's float definition, across ISAs, through dequantize and
// through the packed form.
//
// Input: [format] [rows] [cols] [flags] [seed] [element bytes, reused cyclically...]
//   format  Bits = 2 + f % 7; element type f / 7 % 3 (float, Bf16, Fp16); GroupSize 16 << (f / 21 %
//   3) rows    0..40, cols 0..130 (partial groups, empty and single-line tensors) flags   bit 0
//   axis (kCols / kRows), bits 1-2 rounding, bit 3 NonFinitePolicy::kZero,
//           bit 4 column-major source, bit 5 a leading dimension with NaN padding (never read),
//           bit 6 corrupt one packed word before from_words
//
// The oracle (format.hpp, "Encoding from float32"): c = clamp(round(x / 2^s_g), -kQMax, kQMax),
// evaluated exactly in double, with q_g = floor(log2 amax_g) - (Bits - 2), T = max q_g - 31,
// E_g = clamp(q_g - T, 0, 31) and s_g = T + E_g.  Every ISA must match it bit for bit (stochastic
// rounding: the same bits on every ISA, each code one of the two neighbours); NaN/Inf throw
// std::invalid_argument (the documented error path) or, under kZero, encode as 0; dequantize
// gives c * 2^(T + E) rounded once; pack / unpack / from_words are lossless.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <gsq/gsq.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::Isa;
using gsq::Rounding;

template <typename T>
double widen(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<double>(x);
  } else {
    return static_cast<double>(gsq::to_float(x));
  }
}

template <typename T>
T load(const std::uint8_t* bytes, std::size_t n, std::size_t k) {
  std::uint8_t raw[sizeof(T)] = {};
  for (std::size_t i = 0; i < sizeof(T); ++i) raw[i] = n == 0 ? 0 : bytes[(k * sizeof(T) + i) % n];
  T x;
  std::memcpy(&x, raw, sizeof(T));
  return x;
}

/// Bits [bit, bit + width) of an LSB-first word stream, read one bit at a time (tensor.hpp's
/// storage layout, restated independently of PackedGseTensor).
std::uint64_t bits_at(const std::vector<std::uint64_t>& words, std::size_t bit, int width) {
  std::uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    const std::size_t b = bit + static_cast<std::size_t>(i);
    v |= ((words[b / 64] >> (b % 64)) & 1u) << i;
  }
  return v;
}

/// Stored value k (line * length + pos) of a packed GSE-INT<Bits> tensor: Bits-bit two's
/// complement at bits [k * Bits, (k + 1) * Bits).
template <int Bits>
int stored_code(const std::vector<std::uint64_t>& words, Index k) {
  const auto raw = static_cast<int>(bits_at(words, static_cast<std::size_t>(k) * Bits, Bits));
  return raw >= (1 << (Bits - 1)) ? raw - (1 << Bits) : raw;
}

struct Reference {
  bool throws = false;
  std::string error;  ///< when it throws: what quantize must say (the first NaN/Inf in line order)
  std::vector<double> scaled;  ///< x / 2^s per padded position (0 for padding and zero groups)
  std::vector<std::uint8_t> exponents;
  int offset = 0;
  gsq::ConversionStats stats;
};

/// The format's float definition, in double.
template <int Bits, int GroupSize, typename T>
Reference reference(gsq::MatrixRef<const T> src, Axis axis, gsq::NonFinitePolicy policy) {
  const gsq::GseShape shape{src.rows, src.cols, axis};
  const Index len = shape.length();
  const Index groups = (len + GroupSize - 1) / GroupSize;
  const Index padded = groups * GroupSize;
  Reference r;
  r.scaled.assign(static_cast<std::size_t>(shape.lines() * padded), 0.0);
  r.exponents.assign(static_cast<std::size_t>(shape.lines() * groups), 0);
  r.stats.groups = shape.lines() * groups;
  constexpr int kZero = 1 << 30;
  std::vector<int> q(r.exponents.size(), kZero);
  int q_max = kZero;
  for (Index line = 0; line < shape.lines(); ++line) {
    for (Index g = 0; g < groups; ++g) {
      double amax = 0.0;
      for (Index p = g * GroupSize; p < std::min(len, (g + 1) * GroupSize); ++p) {
        const double x = widen(src(shape.row_of(line, p), shape.col_of(line, p)));
        if (!std::isfinite(x)) {
          if (policy == gsq::NonFinitePolicy::kThrow) {
            r.throws = true;
            r.error = std::string("quantize: ") + (std::isnan(x) ? "NaN" : "Inf") + " at row " +
                      std::to_string(shape.row_of(line, p)) + ", column " +
                      std::to_string(shape.col_of(line, p)) + " ";
            return r;
          }
          ++r.stats.non_finite;
          continue;
        }
        amax = std::max(amax, std::fabs(x));
      }
      if (amax == 0.0) {
        ++r.stats.zero_groups;
        continue;
      }
      const int qg = std::ilogb(amax) - (Bits - 2);
      q[static_cast<std::size_t>(line * groups + g)] = qg;
      q_max = q_max == kZero ? qg : std::max(q_max, qg);
    }
  }
  r.offset = q_max == kZero ? 0 : q_max - gsq::kMaxGroupExponent;
  for (Index line = 0; line < shape.lines(); ++line) {
    for (Index g = 0; g < groups; ++g) {
      const int qg = q[static_cast<std::size_t>(line * groups + g)];
      if (qg == kZero) continue;
      int s = qg;
      if (qg < r.offset) {
        ++r.stats.clamped_groups;
        s = r.offset;
      }
      r.exponents[static_cast<std::size_t>(line * groups + g)] =
          static_cast<std::uint8_t>(s - r.offset);
      for (Index p = g * GroupSize; p < std::min(len, (g + 1) * GroupSize); ++p) {
        const double x = widen(src(shape.row_of(line, p), shape.col_of(line, p)));
        r.scaled[static_cast<std::size_t>(line * padded + p)] =
            std::isfinite(x) ? std::ldexp(x, -s) : 0.0;
      }
    }
  }
  return r;
}

/// The codes the rounding mode allows for y = x / 2^s (two for stochastic rounding).
template <int Bits>
bool code_allowed(double y, Rounding rounding, int code, gsq::Index* saturated) {
  constexpr int kQMax = gsq::GseFormat<Bits>::kQMax;
  auto clamp = [&](double v, bool count) {
    if (std::fabs(v) > kQMax) {
      if (count) ++*saturated;
      return v < 0 ? -kQMax : kQMax;
    }
    return static_cast<int>(v);
  };
  switch (rounding) {
    case Rounding::kNearestEven:
      return code == clamp(std::nearbyint(y), true);
    case Rounding::kNearestAway:
      return code == clamp(std::round(y), true);
    case Rounding::kTowardZero:
      return code == clamp(std::trunc(y), true);
    case Rounding::kStochastic: {
      const double down = std::trunc(y);
      const double up = down + (y < 0 ? -1.0 : 1.0);
      return code == clamp(down, false) || (y != down && code == clamp(up, false));
    }
  }
  return false;
}

template <int Bits, int GroupSize>
void expect_same(const gsq::GseTensor<Bits, GroupSize>& a, const gsq::GseTensor<Bits, GroupSize>& b,
                 const char* what) {
  const auto va = a.view();
  const auto vb = b.view();
  GSQ_FUZZ_EXPECT(a.rows() == b.rows() && a.cols() == b.cols() && a.axis() == b.axis(), what);
  GSQ_FUZZ_EXPECT(a.offset() == b.offset(), what);
  if (va.lines() == 0) return;
  const auto codes = static_cast<std::size_t>(va.lines() * va.padded_length());
  const auto exps = static_cast<std::size_t>(va.lines() * va.groups_per_line());
  GSQ_FUZZ_EXPECT(codes == 0 || std::memcmp(va.line_codes(0), vb.line_codes(0), codes) == 0, what);
  GSQ_FUZZ_EXPECT(exps == 0 || std::memcmp(va.line_exponents(0), vb.line_exponents(0), exps) == 0,
                  what);
}

bool same_stats(const gsq::ConversionStats& a, const gsq::ConversionStats& b) {
  return a.groups == b.groups && a.zero_groups == b.zero_groups &&
         a.clamped_groups == b.clamped_groups && a.saturated == b.saturated &&
         a.non_finite == b.non_finite;
}

template <int Bits, int GroupSize, typename T>
void run(gsq::fuzz::Bytes& in) {
  const Index rows = in.u8() % 41;
  const Index cols = in.u8() % 131;
  const std::uint8_t flags = in.u8();
  const Axis axis = (flags & 1) != 0 ? Axis::kRows : Axis::kCols;
  gsq::QuantizeOptions options;
  options.rounding = static_cast<Rounding>((flags >> 1) & 3);
  options.non_finite =
      (flags & 8) != 0 ? gsq::NonFinitePolicy::kZero : gsq::NonFinitePolicy::kThrow;
  options.seed = in.u8();
  const bool col_major = (flags & 16) != 0;
  const Index pad = (flags & 32) != 0 ? 3 : 0;
  const bool corrupt = (flags & 64) != 0;

  // The source, with NaN in the padding between lines: no quantizer may read it.
  const Index ld = (col_major ? rows : cols) + pad;
  const Index outer = col_major ? cols : rows;
  T nan_pattern;
  if constexpr (std::is_same_v<T, float>) {
    nan_pattern = std::nanf("");
  } else {
    nan_pattern = T{0x7FC1};  // a NaN as both bf16 and fp16
  }
  std::vector<T> data(static_cast<std::size_t>(std::max<Index>(ld * outer, 1)), nan_pattern);
  std::size_t k = 0;
  for (Index o = 0; o < outer; ++o) {
    for (Index i = 0; i < ld - pad; ++i) {
      data[static_cast<std::size_t>(o * ld + i)] = load<T>(in.rest(), in.remaining(), k++);
    }
  }
  const auto src = col_major ? gsq::MatrixRef<const T>::col_major(data.data(), rows, cols, ld)
                             : gsq::MatrixRef<const T>::row_major(data.data(), rows, cols, ld);

  const Reference ref = reference<Bits, GroupSize>(src, axis, options.non_finite);

  // Every ISA this CPU has: the reference's codes, and the same bits as the scalar kernel.
  gsq::GseTensor<Bits, GroupSize> scalar;
  gsq::ConversionStats scalar_stats;
  bool have_scalar = false;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (!gsq::cpu_supports(isa)) continue;
    options.isa = isa;
    gsq::GseTensor<Bits, GroupSize> t;
    gsq::ConversionStats stats;
    try {
      gsq::quantize_into(src, axis, t, options, &stats);
    } catch (const std::invalid_argument& e) {
      GSQ_FUZZ_EXPECT(ref.throws, "quantize threw std::invalid_argument for finite input");
      GSQ_FUZZ_EXPECT(std::string(e.what()).find(ref.error) == 0,
                      "quantize's error does not name the first NaN/Inf (kind, row, column)");
      continue;
    }
    GSQ_FUZZ_EXPECT(!ref.throws, "quantize accepted NaN/Inf under NonFinitePolicy::kThrow");
    if (!have_scalar) {
      scalar = t;
      scalar_stats = stats;
      have_scalar = true;
    } else {
      expect_same(scalar, t, "an ISA's codes, exponents or offset differ from the scalar kernel's");
      GSQ_FUZZ_EXPECT(same_stats(scalar_stats, stats), "an ISA's ConversionStats differ");
    }
  }
  if (ref.throws) return;
  GSQ_FUZZ_EXPECT(have_scalar, "no ISA ran");

  // The scalar result against the float definition.
  const auto view = scalar.view();
  GSQ_FUZZ_EXPECT(view.offset() == ref.offset, "offset T differs from the format definition");
  gsq::Index saturated = 0;
  for (Index line = 0; line < view.lines(); ++line) {
    for (Index g = 0; g < view.groups_per_line(); ++g) {
      GSQ_FUZZ_EXPECT(
          view.line_exponents(line)[g] ==
              ref.exponents[static_cast<std::size_t>(line * view.groups_per_line() + g)],
          "a group exponent E differs from the format definition");
    }
    for (Index p = 0; p < view.padded_length(); ++p) {
      const double y = ref.scaled[static_cast<std::size_t>(line * view.padded_length() + p)];
      GSQ_FUZZ_EXPECT(code_allowed<Bits>(y, options.rounding, view.line_codes(line)[p], &saturated),
                      "a code differs from the format definition");
    }
  }
  GSQ_FUZZ_EXPECT(scalar_stats.groups == ref.stats.groups &&
                      scalar_stats.zero_groups == ref.stats.zero_groups &&
                      scalar_stats.clamped_groups == ref.stats.clamped_groups &&
                      scalar_stats.non_finite == ref.stats.non_finite,
                  "ConversionStats differ from the format definition");
  if (options.rounding != Rounding::kStochastic) {
    GSQ_FUZZ_EXPECT(scalar_stats.saturated == saturated, "ConversionStats::saturated is wrong");
  }
  // The checked constructor accepts what quantize produced.
  std::vector<std::int8_t> codes(view.line_codes(0),
                                 view.line_codes(0) + view.lines() * view.padded_length());
  std::vector<std::uint8_t> exps(view.line_exponents(0),
                                 view.line_exponents(0) + view.lines() * view.groups_per_line());
  expect_same(
      scalar,
      gsq::GseTensor<Bits, GroupSize>::from_parts(codes, exps, rows, cols, axis, view.offset()),
      "GseTensor::from_parts changed the tensor");

  // Dequantize: c * 2^(T + E), rounded once to float, on every ISA and into both layouts.
  std::vector<float> expected(static_cast<std::size_t>(rows * cols));
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      const Index line = view.shape().line_of(i, j);
      const Index pos = view.shape().pos_of(i, j);
      const int e = view.offset() + view.line_exponents(line)[pos / GroupSize];
      expected[static_cast<std::size_t>(i * cols + j)] =
          static_cast<float>(std::ldexp(static_cast<double>(view.code(i, j)), e));
    }
  }
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (!gsq::cpu_supports(isa)) continue;
    std::vector<float> out(expected.size(), -1.0f), out_cm(expected.size(), -1.0f);
    gsq::dequantize_into(view, gsq::MatrixRef<float>::row_major(out.data(), rows, cols), isa);
    gsq::dequantize_into(view, gsq::MatrixRef<float>::col_major(out_cm.data(), rows, cols), isa);
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) {
        const float want = expected[static_cast<std::size_t>(i * cols + j)];
        GSQ_FUZZ_EXPECT(std::memcmp(&out[static_cast<std::size_t>(i * cols + j)], &want, 4) == 0,
                        "dequantize (row-major) differs from c * 2^(T + E)");
        GSQ_FUZZ_EXPECT(std::memcmp(&out_cm[static_cast<std::size_t>(j * rows + i)], &want, 4) == 0,
                        "dequantize (column-major) differs from c * 2^(T + E)");
      }
    }
  }

  // The packed form: lossless, and its streaming accessors agree with the tensor.
  const auto packed = gsq::PackedGseTensor<Bits, GroupSize>::pack(view);
  expect_same(scalar, packed.unpack(), "pack then unpack changed the tensor");
  const auto rebuilt = gsq::PackedGseTensor<Bits, GroupSize>::from_words(packed.words(), rows, cols,
                                                                         axis, view.offset());
  expect_same(scalar, rebuilt.unpack(), "from_words(pack().words()) changed the tensor");
  std::vector<std::int8_t> run_codes(static_cast<std::size_t>(view.length()));
  for (Index line = 0; line < view.lines(); ++line) {
    for (Index g = 0; g < view.groups_per_line(); ++g) {
      GSQ_FUZZ_EXPECT(packed.exponent_at(line, g) == view.line_exponents(line)[g],
                      "PackedGseTensor::exponent_at differs");
    }
    for (Index p = 0; p < view.length(); ++p) {
      GSQ_FUZZ_EXPECT(packed.code_at(line, p) == view.line_codes(line)[p],
                      "PackedGseTensor::code_at differs");
    }
    const Index first = view.length() == 0 ? 0 : options.seed % view.length();
    packed.codes_at(line, first, view.length() - first, run_codes.data());
    GSQ_FUZZ_EXPECT(
        view.length() == 0 || std::memcmp(run_codes.data(), view.line_codes(line) + first,
                                          static_cast<std::size_t>(view.length() - first)) == 0,
        "PackedGseTensor::codes_at differs");
  }

  // Corrupt storage: from_words checks the count, the offset (both right here) and every code,
  // so it must reject the words exactly when a code is the unused pattern -2^(Bits-1), naming
  // the first; otherwise the tensor holds the corrupted bits, which unpack() returns as they are.
  if (corrupt && !packed.words().empty()) {
    std::vector<std::uint64_t> words = packed.words();
    words[options.seed % words.size()] ^= ~std::uint64_t{0} >> (options.seed % 64);
    const Index len = view.length();
    std::string unused;  // from_words's message for the first unused code, if any
    for (Index k = 0; k < view.lines() * len && unused.empty(); ++k) {
      if (stored_code<Bits>(words, k) == -(1 << (Bits - 1))) {
        unused = "PackedGseTensor: corrupt code " + std::to_string(-(1 << (Bits - 1))) +
                 " at row " + std::to_string(view.shape().row_of(k / len, k % len)) + ", column " +
                 std::to_string(view.shape().col_of(k / len, k % len));
      }
    }
    gsq::PackedGseTensor<Bits, GroupSize> p;
    try {
      p = gsq::PackedGseTensor<Bits, GroupSize>::from_words(words, rows, cols, axis, view.offset());
    } catch (const std::invalid_argument& e) {
      GSQ_FUZZ_EXPECT(!unused.empty(), "from_words rejected words whose every code is valid");
      GSQ_FUZZ_EXPECT(e.what() == unused, "from_words's error does not name the first bad code");
      return;
    }
    GSQ_FUZZ_EXPECT(unused.empty(), "from_words accepted the unused code -2^(Bits-1)");
    const auto t = p.unpack();  // from_words checked every code: must not throw
    const auto tv = t.view();
    const std::size_t exponent_base =
        (static_cast<std::size_t>(view.lines() * len) * Bits + 63) / 64 * 64;
    for (Index line = 0; line < tv.lines(); ++line) {
      for (Index pos = 0; pos < tv.padded_length(); ++pos) {
        const int want = pos < len ? stored_code<Bits>(words, line * len + pos) : 0;
        GSQ_FUZZ_EXPECT(tv.line_codes(line)[pos] == want,
                        "unpack() of corrupt words differs from the stored codes");
      }
      for (Index g = 0; g < tv.groups_per_line(); ++g) {
        const auto k = static_cast<std::size_t>(line * tv.groups_per_line() + g);
        GSQ_FUZZ_EXPECT(tv.line_exponents(line)[g] == bits_at(words, exponent_base + 5 * k, 5),
                        "unpack() of corrupt words differs from the stored exponents");
      }
    }
  }
}

template <int Bits, int GroupSize>
void by_type(int type, gsq::fuzz::Bytes& in) {
  switch (type) {
    case 0:
      return run<Bits, GroupSize, float>(in);
    case 1:
      return run<Bits, GroupSize, gsq::Bf16>(in);
    default:
      return run<Bits, GroupSize, gsq::Fp16>(in);
  }
}

template <int Bits>
void by_group(int group, int type, gsq::fuzz::Bytes& in) {
  switch (group) {
    case 0:
      return by_type<Bits, 16>(type, in);
    case 1:
      return by_type<Bits, 32>(type, in);
    default:
      return by_type<Bits, 64>(type, in);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  gsq::fuzz::Bytes in(data, size);
  const int format = in.u8();
  const int type = format / 7 % 3;
  const int group = format / 21 % 3;
  switch (format % 7) {
    case 0:
      by_group<2>(group, type, in);
      break;
    case 1:
      by_group<3>(group, type, in);
      break;
    case 2:
      by_group<4>(group, type, in);
      break;
    case 3:
      by_group<5>(group, type, in);
      break;
    case 4:
      by_group<6>(group, type, in);
      break;
    case 5:
      by_group<7>(group, type, in);
      break;
    default:
      by_group<8>(group, type, in);
      break;
  }
  return 0;
}
