// ggml_types.hpp: ggml's tensor types (the block formats GGUF files store) and scalar decoders
// of the supported ones to float32, bit-identical to ggml's reference decoders.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/half.hpp"

namespace gsq::gguf {

/// ggml's type ids as GGUF stores them (ggml.h).  Ids 4, 5, 31-33 and 36-38 were removed from
/// ggml and are unknown here.
enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

namespace detail {

struct GgmlTypeTraits {
  const char* name;    ///< nullptr: unknown id
  std::int32_t block;  ///< elements per block
  std::int32_t bytes;  ///< bytes per block
  bool supported;      ///< dequantize_row decodes it
};

/// The layout of every known id (gguf-py's GGML_QUANT_SIZES), {nullptr, 0, 0} for unknown ones.
inline GgmlTypeTraits ggml_traits(GgmlType type) noexcept {
  switch (type) {
    case GgmlType::kF32:
      return {"F32", 1, 4, true};
    case GgmlType::kF16:
      return {"F16", 1, 2, true};
    case GgmlType::kQ4_0:
      return {"Q4_0", 32, 18, true};
    case GgmlType::kQ4_1:
      return {"Q4_1", 32, 20, true};
    case GgmlType::kQ5_0:
      return {"Q5_0", 32, 22, true};
    case GgmlType::kQ5_1:
      return {"Q5_1", 32, 24, true};
    case GgmlType::kQ8_0:
      return {"Q8_0", 32, 34, true};
    case GgmlType::kQ8_1:
      return {"Q8_1", 32, 36, false};
    case GgmlType::kQ2_K:
      return {"Q2_K", 256, 84, false};
    case GgmlType::kQ3_K:
      return {"Q3_K", 256, 110, false};
    case GgmlType::kQ4_K:
      return {"Q4_K", 256, 144, true};
    case GgmlType::kQ5_K:
      return {"Q5_K", 256, 176, true};
    case GgmlType::kQ6_K:
      return {"Q6_K", 256, 210, true};
    case GgmlType::kQ8_K:
      return {"Q8_K", 256, 292, false};
    case GgmlType::kIQ2_XXS:
      return {"IQ2_XXS", 256, 66, false};
    case GgmlType::kIQ2_XS:
      return {"IQ2_XS", 256, 74, false};
    case GgmlType::kIQ3_XXS:
      return {"IQ3_XXS", 256, 98, false};
    case GgmlType::kIQ1_S:
      return {"IQ1_S", 256, 50, false};
    case GgmlType::kIQ4_NL:
      return {"IQ4_NL", 32, 18, false};
    case GgmlType::kIQ3_S:
      return {"IQ3_S", 256, 110, false};
    case GgmlType::kIQ2_S:
      return {"IQ2_S", 256, 82, false};
    case GgmlType::kIQ4_XS:
      return {"IQ4_XS", 256, 136, false};
    case GgmlType::kI8:
      return {"I8", 1, 1, false};
    case GgmlType::kI16:
      return {"I16", 1, 2, false};
    case GgmlType::kI32:
      return {"I32", 1, 4, false};
    case GgmlType::kI64:
      return {"I64", 1, 8, false};
    case GgmlType::kF64:
      return {"F64", 1, 8, false};
    case GgmlType::kIQ1_M:
      return {"IQ1_M", 256, 56, false};
    case GgmlType::kBF16:
      return {"BF16", 1, 2, true};
    case GgmlType::kTQ1_0:
      return {"TQ1_0", 256, 54, false};
    case GgmlType::kTQ2_0:
      return {"TQ2_0", 256, 66, false};
    case GgmlType::kMXFP4:
      return {"MXFP4", 32, 17, false};
  }
  return {nullptr, 0, 0, false};
}

inline float fp16_at(const std::uint8_t* p) noexcept {
  return to_float(Fp16{static_cast<std::uint16_t>(p[0] | (p[1] << 8))});
}

/// Q4_K and Q5_K pack eight 6-bit scales and eight 6-bit mins in 12 bytes: entries 0-3 in the
/// low six bits of bytes 0-3 (scales) and 4-7 (mins); entries 4-7 take their low four bits from
/// the nibbles of bytes 8-11 and their top two bits from the top of bytes 0-3 and 4-7.
inline void k_scale_min(int j, const std::uint8_t* s, int& scale, int& min) noexcept {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

}  // namespace detail

/// "F32", "Q4_K", ...; "type N" for an unknown id below 1024, "type >= 1024" above.
inline const char* to_string(GgmlType type) noexcept {
  const char* name = detail::ggml_traits(type).name;
  if (name != nullptr) return name;
  static const std::vector<std::string> kUnknown = [] {  // built once, thread-safe
    std::vector<std::string> v(1024);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = "type " + std::to_string(i);
    return v;
  }();
  const auto id = static_cast<std::uint32_t>(type);
  return id < kUnknown.size() ? kUnknown[id].c_str() : "type >= 1024";
}

/// True for ids ggml defines (whether or not gsq decodes them).
inline bool is_known(GgmlType type) noexcept { return detail::ggml_traits(type).name != nullptr; }

/// F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K.
inline bool is_supported(GgmlType type) noexcept { return detail::ggml_traits(type).supported; }

/// Elements per block (1, 32 or 256); throws for an unknown id.
inline std::int64_t block_elements(GgmlType type) {
  const detail::GgmlTypeTraits t = detail::ggml_traits(type);
  GSQ_CHECK(t.name != nullptr, "gguf: unknown ggml type ", static_cast<std::uint32_t>(type));
  return t.block;
}

/// Bytes per block; throws for an unknown id.
inline std::int64_t block_bytes(GgmlType type) {
  const detail::GgmlTypeTraits t = detail::ggml_traits(type);
  GSQ_CHECK(t.name != nullptr, "gguf: unknown ggml type ", static_cast<std::uint32_t>(type));
  return t.bytes;
}

/// Decodes n values (a multiple of block_elements(type)) of a supported type from src (n /
/// block_elements * block_bytes bytes, any alignment) to dst.  Bit-identical to ggml's
/// dequantize_row_* and gguf-py's dequantize: every product and sum is one float operation in
/// ggml's order (the code relies on -ffp-contract=off, which gsq's targets set, so that no
/// multiply and add fuse).  Throws std::invalid_argument for an unsupported type or a partial
/// block.
inline void dequantize_row(GgmlType type, const std::uint8_t* src, float* dst, std::int64_t n) {
  GSQ_CHECK(is_supported(type), "gguf: cannot decode ggml type ", to_string(type), " (id ",
            static_cast<std::uint32_t>(type), ")");
  const std::int64_t bs = block_elements(type);
  GSQ_CHECK(n >= 0 && n % bs == 0, "gguf: ", n, " values are not whole ", to_string(type),
            " blocks of ", bs);
  const std::int64_t nb = n / bs;
  const std::int64_t stride = block_bytes(type);
  switch (type) {
    case GgmlType::kF32:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint32_t u = static_cast<std::uint32_t>(src[4 * i]) |
                          (static_cast<std::uint32_t>(src[4 * i + 1]) << 8) |
                          (static_cast<std::uint32_t>(src[4 * i + 2]) << 16) |
                          (static_cast<std::uint32_t>(src[4 * i + 3]) << 24);
        dst[i] = bits_float(u);
      }
      return;
    case GgmlType::kF16:
      for (std::int64_t i = 0; i < n; ++i) dst[i] = detail::fp16_at(src + 2 * i);
      return;
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i)
        dst[i] = to_float(Bf16{static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8))});
      return;
    default:
      break;
  }
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::uint8_t* p = src + b * stride;
    float* y = dst + b * bs;
    switch (type) {
      case GgmlType::kQ4_0: {  // d, 16 bytes of nibbles: low nibbles are 0-15, high 16-31
        const float d = detail::fp16_at(p);
        const std::uint8_t* qs = p + 2;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
          y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
        break;
      }
      case GgmlType::kQ4_1: {  // d, m, nibbles: q * d + m
        const float d = detail::fp16_at(p), m = detail::fp16_at(p + 2);
        const std::uint8_t* qs = p + 4;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
          y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
        break;
      }
      case GgmlType::kQ5_0:
      case GgmlType::kQ5_1: {  // d, [m], 32 fifth bits (little-endian u32), nibbles
        const bool type1 = type == GgmlType::kQ5_1;
        const float d = detail::fp16_at(p);
        const float m = type1 ? detail::fp16_at(p + 2) : 0.0f;
        const std::uint8_t* h = p + (type1 ? 4 : 2);
        const std::uint32_t qh =
            static_cast<std::uint32_t>(h[0]) | (static_cast<std::uint32_t>(h[1]) << 8) |
            (static_cast<std::uint32_t>(h[2]) << 16) | (static_cast<std::uint32_t>(h[3]) << 24);
        const std::uint8_t* qs = h + 4;
        for (int j = 0; j < 16; ++j) {
          const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
          const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
          const int q0 = (qs[j] & 0x0F) | hi0, q1 = (qs[j] >> 4) | hi1;
          if (type1) {
            y[j] = static_cast<float>(q0) * d + m;
            y[j + 16] = static_cast<float>(q1) * d + m;
          } else {
            y[j] = static_cast<float>(q0 - 16) * d;
            y[j + 16] = static_cast<float>(q1 - 16) * d;
          }
        }
        break;
      }
      case GgmlType::kQ8_0: {  // d, 32 int8
        const float d = detail::fp16_at(p);
        for (int j = 0; j < 32; ++j) {
          y[j] = static_cast<float>(static_cast<std::int8_t>(p[2 + j])) * d;
        }
        break;
      }
      case GgmlType::kQ4_K:
      case GgmlType::kQ5_K: {
        // d, dmin, 12 bytes of 6-bit scales and mins, [32 bytes of fifth bits], 128 bytes of
        // nibbles.  Sub-block k (32 values) is (d * scale_k) * q - (dmin * min_k); 64 values
        // share 32 nibble bytes (low nibbles first), and the fifth bit of value l of sub-block
        // k is bit k of qh[l].
        const bool five = type == GgmlType::kQ5_K;
        const float d = detail::fp16_at(p), dmin = detail::fp16_at(p + 2);
        const std::uint8_t* scales = p + 4;
        const std::uint8_t* qh = p + 16;
        const std::uint8_t* ql = p + (five ? 48 : 16);
        for (int k = 0; k < 8; k += 2) {
          int sc0, m0, sc1, m1;
          detail::k_scale_min(k, scales, sc0, m0);
          detail::k_scale_min(k + 1, scales, sc1, m1);
          const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
          const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
          const std::uint8_t* q = ql + 16 * k;
          float* out = y + 32 * k;
          for (int l = 0; l < 32; ++l) {
            int lo = q[l] & 0x0F, hi = q[l] >> 4;
            if (five) {
              lo += ((qh[l] >> k) & 1) << 4;
              hi += ((qh[l] >> (k + 1)) & 1) << 4;
            }
            out[l] = d0 * static_cast<float>(lo) - mm0;
            out[l + 32] = d1 * static_cast<float>(hi) - mm1;
          }
        }
        break;
      }
      case GgmlType::kQ6_K: {
        // 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, d.  Each half
        // (128 values) uses 64 ql bytes, 32 qh bytes and 8 scales; value = (d * scale) * (q - 32),
        // one scale per 16 values.
        const std::uint8_t* ql = p;
        const std::uint8_t* qh = p + 128;
        const std::uint8_t* sc = p + 192;
        const float d = detail::fp16_at(p + 208);
        for (int half = 0; half < 2; ++half) {
          const std::uint8_t* l8 = ql + 64 * half;
          const std::uint8_t* h8 = qh + 32 * half;
          const std::uint8_t* s8 = sc + 8 * half;
          float* out = y + 128 * half;
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((l8[l] & 0x0F) | (((h8[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((l8[l + 32] & 0x0F) | (((h8[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((l8[l] >> 4) | (((h8[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((l8[l + 32] >> 4) | (((h8[l] >> 6) & 3) << 4)) - 32;
            auto scale = [&](int i) {
              return d * static_cast<float>(static_cast<std::int8_t>(s8[i]));
            };
            out[l] = scale(is) * static_cast<float>(q1);
            out[l + 32] = scale(is + 2) * static_cast<float>(q2);
            out[l + 64] = scale(is + 4) * static_cast<float>(q3);
            out[l + 96] = scale(is + 6) * static_cast<float>(q4);
          }
        }
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace gsq::gguf
