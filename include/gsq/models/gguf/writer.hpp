// writer.hpp: a streaming GGUF v3 writer (metadata of every type, tensors encoded row by row as
// F32, F16, BF16, Q8_0 or Q4_0, or pre-encoded bytes), written atomically.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/half.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/ggml_types.hpp"

namespace gsq::gguf {

/// True for the types quantize_row encodes: F32, F16, BF16, Q8_0, Q4_0.
inline bool is_encodable(GgmlType type) noexcept {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 ||
         type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0;
}

/// Encodes n floats (whole blocks) of an encodable type into dst (n / block * block_bytes bytes).
/// Q8_0 and Q4_0 follow ggml's reference quantizers (quantize_row_q8_0_ref / _q4_0_ref), so the
/// files equal llama.cpp's for the same floats: Q8_0 d = max|x| / 127, q = round(x / d) (halves
/// away from zero); Q4_0 d = m / -8 with m the value of largest magnitude, q = min(15,
/// trunc(x / d + 8.5)).  Scales are stored as fp16.  F16 and BF16 round to nearest even.
/// Quantized types need finite input (throws otherwise).
inline void quantize_row(GgmlType type, const float* src, std::uint8_t* dst, std::int64_t n) {
  GSQ_CHECK(is_encodable(type), "gguf writer: cannot encode ", to_string(type),
            " (F32, F16, BF16, Q8_0, Q4_0)");
  const std::int64_t block = block_elements(type);
  GSQ_CHECK(n >= 0 && n % block == 0, "gguf writer: ", n, " values are not whole ", to_string(type),
            " blocks");
  auto put16 = [](std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
  };
  if (type == GgmlType::kF32) {
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint32_t u = float_bits(src[i]);
      for (int k = 0; k < 4; ++k) dst[4 * i + k] = static_cast<std::uint8_t>(u >> (8 * k));
    }
    return;
  }
  if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    for (std::int64_t i = 0; i < n; ++i)
      put16(dst + 2 * i, type == GgmlType::kF16 ? to_fp16(src[i]).bits : to_bf16(src[i]).bits);
    return;
  }
  for (std::int64_t i = 0; i < n; ++i)
    GSQ_CHECK(std::isfinite(src[i]), "gguf writer: value ", i, " of a ", to_string(type),
              " row is ", src[i], " (quantized types need finite values)");
  const std::int64_t bb = block_bytes(type);
  for (std::int64_t b = 0; b < n / 32; ++b) {
    const float* x = src + 32 * b;
    std::uint8_t* y = dst + bb * b;
    if (type == GgmlType::kQ8_0) {
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      put16(y, to_fp16(d).bits);
      for (int j = 0; j < 32; ++j) {
        const float q = std::round(x[j] * id);  // |q| <= 127
        y[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
      }
    } else {  // Q4_0
      float amax = 0.0f, m = 0.0f;
      for (int j = 0; j < 32; ++j) {
        if (amax < std::fabs(x[j])) {
          amax = std::fabs(x[j]);
          m = x[j];
        }
      }
      const float d = m / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      put16(y, to_fp16(d).bits);
      for (int j = 0; j < 16; ++j) {
        // x * id is in [-8, 8]: + 8.5 lies in [0.5, 16.5], truncated to 0..16, clamped to 15.
        const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
        const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
        y[2 + j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
      }
    }
  }
}

/// Builds a GGUF file: metadata first, then tensors whose data is produced only while the file is
/// written (row by row from a callback, or from bytes handed over), so a model of any size
/// streams to disk without sitting in memory.  Keys and tensor names must be unique.
///
///   GgufWriter w;
///   w.add_string("general.architecture", "llama");
///   w.add_tensor("token_embd.weight", GgmlType::kQ8_0, {dim, vocab},
///                [&](std::int64_t row, float* out) { /* fill ne[0] floats of row */ });
///   w.write("model.gguf");
class GgufWriter {
 public:
  /// Fills out[0, ne[0]) with row `row` (0 .. elements / ne[0] - 1) of a tensor.
  using RowSource = std::function<void(std::int64_t row, float* out)>;

  /// alignment: a power of two; other than 32 it is written as general.alignment (uint32).
  explicit GgufWriter(std::uint64_t alignment = GgufFile::kDefaultAlignment,
                      std::uint32_t version = 3)
      : alignment_(alignment), version_(version) {
    GSQ_CHECK(alignment >= 1 && alignment <= (1u << 30) && (alignment & (alignment - 1)) == 0,
              "gguf writer: alignment ", alignment, " is not a power of two in [1, 2^30]");
    GSQ_CHECK(version == 2 || version == 3, "gguf writer: version ", version, " (2 or 3)");
    if (alignment != GgufFile::kDefaultAlignment) {
      add_scalar("general.alignment", ValueType::kUint32, alignment, true);
    }
  }

  void add_uint8(const std::string& key, std::uint8_t v) { add_scalar(key, ValueType::kUint8, v); }
  void add_int8(const std::string& key, std::int8_t v) {
    add_scalar(key, ValueType::kInt8, static_cast<std::uint64_t>(v));
  }
  void add_uint16(const std::string& key, std::uint16_t v) {
    add_scalar(key, ValueType::kUint16, v);
  }
  void add_int16(const std::string& key, std::int16_t v) {
    add_scalar(key, ValueType::kInt16, static_cast<std::uint64_t>(v));
  }
  void add_uint32(const std::string& key, std::uint32_t v) {
    add_scalar(key, ValueType::kUint32, v);
  }
  void add_int32(const std::string& key, std::int32_t v) {
    add_scalar(key, ValueType::kInt32, static_cast<std::uint64_t>(v));
  }
  void add_uint64(const std::string& key, std::uint64_t v) {
    add_scalar(key, ValueType::kUint64, v);
  }
  void add_int64(const std::string& key, std::int64_t v) {
    add_scalar(key, ValueType::kInt64, static_cast<std::uint64_t>(v));
  }
  void add_float32(const std::string& key, float v) {
    add_scalar(key, ValueType::kFloat32, float_bits(v));
  }
  void add_float64(const std::string& key, double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    add_scalar(key, ValueType::kFloat64, u);
  }
  void add_bool(const std::string& key, bool v) { add_scalar(key, ValueType::kBool, v ? 1 : 0); }
  void add_string(const std::string& key, const std::string& v) {
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    w.u32(static_cast<std::uint32_t>(ValueType::kString));
    put_string(w, v);
    add_entry(key, std::move(b));
  }
  void add_strings(const std::string& key, const std::vector<std::string>& values) {
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    w.u32(static_cast<std::uint32_t>(ValueType::kArray));
    w.u32(static_cast<std::uint32_t>(ValueType::kString));
    w.u64(values.size());
    for (const std::string& s : values) put_string(w, s);
    add_entry(key, std::move(b));
  }
  /// An array of numbers or bools: element type `elem` (not string or array), each value given
  /// as the integer bits to store (float32 and float64 as their bit patterns, signed integers
  /// two's complement).  The typed helpers below are easier.
  /// Copies metadata value v (read by GgufFile) under its own key.  Arrays of arrays are an
  /// error: gsq's reader does not keep their elements.
  void add_value(const Value& v) {
    const std::string& k = v.key();
    switch (v.type()) {
      case ValueType::kString:
        return add_string(k, v.as_string());
      case ValueType::kBool:
        return add_bool(k, v.as_bool());
      case ValueType::kFloat32:
        return add_float32(k, static_cast<float>(v.as_float()));
      case ValueType::kFloat64:
        return add_float64(k, v.as_float());
      case ValueType::kUint8:
        return add_uint8(k, static_cast<std::uint8_t>(v.as_uint()));
      case ValueType::kInt8:
        return add_int8(k, static_cast<std::int8_t>(v.as_int()));
      case ValueType::kUint16:
        return add_uint16(k, static_cast<std::uint16_t>(v.as_uint()));
      case ValueType::kInt16:
        return add_int16(k, static_cast<std::int16_t>(v.as_int()));
      case ValueType::kUint32:
        return add_uint32(k, static_cast<std::uint32_t>(v.as_uint()));
      case ValueType::kInt32:
        return add_int32(k, static_cast<std::int32_t>(v.as_int()));
      case ValueType::kUint64:
        return add_uint64(k, v.as_uint());
      case ValueType::kInt64:
        return add_int64(k, v.as_int());
      case ValueType::kArray:
        break;
    }
    const ValueType e = v.element_type();
    if (e == ValueType::kString) return add_strings(k, v.strings());
    if (e == ValueType::kFloat32) return add_floats(k, v.floats());
    GSQ_CHECK(detail::is_integer(e), "gguf writer: cannot copy key '", k, "' (", v.describe(),
              ")");
    std::vector<std::uint64_t> bits;
    for (std::int64_t x : v.ints()) bits.push_back(static_cast<std::uint64_t>(x));
    add_array_bits(k, e, bits);
  }

  void add_array_bits(const std::string& key, ValueType elem,
                      const std::vector<std::uint64_t>& bits) {
    const int w8 = detail::scalar_bytes(elem);
    GSQ_CHECK(w8 > 0, "gguf writer: key '", key, "': arrays of ", to_string(elem),
              " need add_strings");
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    w.u32(static_cast<std::uint32_t>(ValueType::kArray));
    w.u32(static_cast<std::uint32_t>(elem));
    w.u64(bits.size());
    for (std::uint64_t v : bits) w.uint(v, w8);
    add_entry(key, std::move(b));
  }
  void add_floats(const std::string& key, const std::vector<float>& values) {
    std::vector<std::uint64_t> bits;
    for (float v : values) bits.push_back(float_bits(v));
    add_array_bits(key, ValueType::kFloat32, bits);
  }
  void add_int32s(const std::string& key, const std::vector<std::int32_t>& values) {
    std::vector<std::uint64_t> bits;
    for (std::int32_t v : values) bits.push_back(static_cast<std::uint64_t>(v));
    add_array_bits(key, ValueType::kInt32, bits);
  }
  /// A value written verbatim: its type id, then `payload` (for tests of hostile files and for
  /// values this class has no helper for, such as arrays of arrays).
  void add_raw_value(const std::string& key, std::uint32_t type,
                     const std::vector<std::uint8_t>& payload) {
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    w.u32(type);
    w.bytes(payload.data(), payload.size());
    add_entry(key, std::move(b));
  }

  /// A tensor of an encodable type whose rows (ne[0] values each) come from `rows` while the
  /// file is written.  ne in ggml order (fastest first), 1 to 4 dimensions, each >= 1.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<std::int64_t>& ne,
                  RowSource rows) {
    GSQ_CHECK(is_encodable(type), "gguf writer: tensor '", name, "': cannot encode ",
              to_string(type), " (F32, F16, BF16, Q8_0, Q4_0; add_raw_tensor takes others)");
    GSQ_CHECK(rows != nullptr, "gguf writer: tensor '", name, "' has no row source");
    Tensor t = make(name, type, ne);
    t.rows = std::move(rows);
    tensors_.push_back(std::move(t));
  }
  /// A tensor from floats in memory (copied), row-major with ne[0] fastest.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<std::int64_t>& ne,
                  const std::vector<float>& values) {
    auto data = std::make_shared<const std::vector<float>>(values);
    const std::int64_t n0 = ne.empty() ? 1 : ne[0];
    std::int64_t count = 1;
    for (std::int64_t v : ne) count *= v;
    GSQ_CHECK(static_cast<std::int64_t>(values.size()) == count, "gguf writer: tensor '", name,
              "' has ", values.size(), " values, its shape needs ", count);
    add_tensor(name, type, ne, [data, n0](std::int64_t row, float* out) {
      std::memcpy(out, data->data() + row * n0, static_cast<std::size_t>(n0) * sizeof(float));
    });
  }
  /// A tensor of any known type from its encoded bytes (exactly the size its type and shape
  /// need).
  void add_raw_tensor(const std::string& name, GgmlType type, const std::vector<std::int64_t>& ne,
                      std::vector<std::uint8_t> bytes) {
    GSQ_CHECK(is_known(type), "gguf writer: tensor '", name, "' has unknown type ",
              static_cast<std::uint32_t>(type));
    Tensor t = make(name, type, ne);
    GSQ_CHECK(bytes.size() == t.bytes, "gguf writer: tensor '", name, "' needs ", t.bytes,
              " bytes of ", to_string(type), ", got ", bytes.size());
    t.raw = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
    tensors_.push_back(std::move(t));
  }

  /// Writes the file to `path` + ".tmp", then renames it over `path`.  Tensor data is encoded one
  /// row at a time (memory: one row of floats and its encoding).  On failure the temporary file
  /// is removed and the error rethrown.
  void write(const std::string& path) const {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    GSQ_CHECK(f != nullptr, "gguf writer: cannot create '", tmp, "'");
    bool ok = true;
    try {
      emit([f, &ok](const std::uint8_t* p, std::size_t n) {
        if (n > 0 && std::fwrite(p, 1, n, f) != n) ok = false;
      });
    } catch (...) {
      std::fclose(f);
      std::remove(tmp.c_str());
      throw;
    }
    ok = std::fflush(f) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      std::remove(tmp.c_str());
      GSQ_CHECK(false, "gguf writer: writing '", tmp, "' failed (disk full?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      GSQ_CHECK(false, "gguf writer: cannot rename '", tmp, "' to '", path, "'");
    }
  }

  /// The whole file in memory (tests, small files).
  std::vector<std::uint8_t> serialize() const {
    std::vector<std::uint8_t> out;
    emit([&out](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); });
    return out;
  }

 private:
  struct Tensor {
    std::string name;
    GgmlType type = GgmlType::kF32;
    std::vector<std::int64_t> ne;
    std::uint64_t bytes = 0;
    RowSource rows;
    std::shared_ptr<const std::vector<std::uint8_t>> raw;
  };

  static void put_string(ByteWriter& w, const std::string& s) {
    w.u64(s.size());
    w.bytes(s.data(), s.size());
  }

  void add_scalar(const std::string& key, ValueType t, std::uint64_t bits, bool internal = false) {
    GSQ_CHECK(internal || key != "general.alignment",
              "gguf writer: set general.alignment through the constructor");
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    w.u32(static_cast<std::uint32_t>(t));
    w.uint(bits, detail::scalar_bytes(t));
    add_entry(key, std::move(b));
  }
  void add_entry(const std::string& key, std::vector<std::uint8_t> typed_value) {
    GSQ_CHECK(keys_.insert(key).second, "gguf writer: duplicate key '", key, "'");
    std::vector<std::uint8_t> b;
    ByteWriter w(b);
    put_string(w, key);
    b.insert(b.end(), typed_value.begin(), typed_value.end());
    metadata_.push_back(std::move(b));
  }

  Tensor make(const std::string& name, GgmlType type, const std::vector<std::int64_t>& ne) {
    GSQ_CHECK(ne.size() >= 1 && ne.size() <= 4, "gguf writer: tensor '", name, "' has ", ne.size(),
              " dimensions (1..4)");
    std::int64_t count = 1;
    for (std::int64_t v : ne) {
      GSQ_CHECK(v >= 1 && v <= GgufFile::kMaxElements && count <= GgufFile::kMaxElements / v,
                "gguf writer: tensor '", name, "' has a dimension ", v,
                " outside [1, 2^40] or too many elements");
      count *= v;
    }
    const std::int64_t block = block_elements(type);
    GSQ_CHECK(ne[0] % block == 0, "gguf writer: tensor '", name, "' has rows of ", ne[0],
              ", not a multiple of the ", to_string(type), " block of ", block);
    GSQ_CHECK(names_.insert(name).second, "gguf writer: duplicate tensor '", name, "'");
    Tensor t;
    t.name = name;
    t.type = type;
    t.ne = ne;
    t.bytes =
        static_cast<std::uint64_t>(count / block) * static_cast<std::uint64_t>(block_bytes(type));
    return t;
  }

  template <typename Sink>
  void emit(Sink&& sink) const {
    std::vector<std::uint8_t> head;
    ByteWriter w(head);
    w.bytes("GGUF", 4);
    w.u32(version_);
    w.u64(tensors_.size());
    w.u64(metadata_.size());
    for (const std::vector<std::uint8_t>& m : metadata_) w.bytes(m.data(), m.size());
    std::uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      put_string(w, t.name);
      w.u32(static_cast<std::uint32_t>(t.ne.size()));
      for (std::int64_t v : t.ne) w.u64(static_cast<std::uint64_t>(v));
      w.u32(static_cast<std::uint32_t>(t.type));
      w.u64(offset);
      offset = align(offset + t.bytes);
    }
    head.resize(static_cast<std::size_t>(align(head.size())), 0);
    sink(head.data(), head.size());
    std::uint64_t at = 0;
    const std::uint8_t zeros[64] = {};
    for (const Tensor& t : tensors_) {
      if (t.raw) {
        sink(t.raw->data(), t.raw->size());
      } else {
        const std::int64_t n0 = t.ne[0];
        std::int64_t rows = 1;
        for (std::size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
        std::vector<float> row(static_cast<std::size_t>(n0));
        std::vector<std::uint8_t> enc(
            static_cast<std::size_t>(n0 / block_elements(t.type) * block_bytes(t.type)));
        for (std::int64_t r = 0; r < rows; ++r) {
          t.rows(r, row.data());
          quantize_row(t.type, row.data(), enc.data(), n0);
          sink(enc.data(), enc.size());
        }
      }
      const std::uint64_t end = at + t.bytes;
      at = align(end);
      for (std::uint64_t pad = at - end; pad > 0;) {
        const std::uint64_t k = std::min<std::uint64_t>(pad, sizeof zeros);
        sink(zeros, static_cast<std::size_t>(k));
        pad -= k;
      }
    }
  }

  std::uint64_t align(std::uint64_t x) const {
    return (x + alignment_ - 1) / alignment_ * alignment_;
  }

  std::uint64_t alignment_;
  std::uint32_t version_;
  std::vector<std::vector<std::uint8_t>> metadata_;
  std::set<std::string> keys_, names_;
  std::vector<Tensor> tensors_;
};

}  // namespace gsq::gguf
