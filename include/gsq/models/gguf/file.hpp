// file.hpp: a hardened reader of GGUF files (versions 2 and 3, little-endian): metadata, tensor
// directory, and per-tensor decoding to float32 with bounded memory.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/models/gguf/ggml_types.hpp"

namespace gsq::gguf {

/// GGUF metadata value types (the spec's gguf_metadata_value_type).
enum class ValueType : std::uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

/// "uint8", ..., "float64"; "unknown" for an id outside the enum.
inline const char* to_string(ValueType t) noexcept {
  constexpr const char* kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                    "int32",  "float32", "bool",   "string", "array",
                                    "uint64", "int64",   "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? kNames[i] : "unknown";
}

namespace detail {

/// Bytes of one scalar of type t (0 for string and array, -1 for an unknown id).
inline int scalar_bytes(ValueType t) noexcept {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return -1;
}

inline bool is_integer(ValueType t) noexcept {
  return t == ValueType::kUint8 || t == ValueType::kInt8 || t == ValueType::kUint16 ||
         t == ValueType::kInt16 || t == ValueType::kUint32 || t == ValueType::kInt32 ||
         t == ValueType::kUint64 || t == ValueType::kInt64;
}
inline bool is_signed(ValueType t) noexcept {
  return t == ValueType::kInt8 || t == ValueType::kInt16 || t == ValueType::kInt32 ||
         t == ValueType::kInt64;
}

/// A little-endian scalar of type t at p, widened: integers to (sign-extended) 64-bit bits,
/// floats to double.
struct Scalar {
  std::uint64_t bits = 0;  ///< integers and bool; signed ones sign-extended
  double real = 0.0;       ///< float32 and float64
};
inline Scalar load_scalar(ValueType t, const std::uint8_t* p) noexcept {
  Scalar s;
  const int n = scalar_bytes(t);
  const std::uint64_t raw = gsq::detail::load_le(p, n);
  if (t == ValueType::kFloat32) {
    s.real = static_cast<double>(bits_float(static_cast<std::uint32_t>(raw)));
  } else if (t == ValueType::kFloat64) {
    std::memcpy(&s.real, &raw, 8);
  } else if (is_signed(t) && n < 8 && (raw >> (8 * n - 1)) != 0) {
    s.bits = raw | (~std::uint64_t{0} << (8 * n));
  } else {
    s.bits = raw;
  }
  return s;
}

class GgufInput;

}  // namespace detail

/// One metadata value.  It knows its key, so that accessors can name it when they throw.
class Value {
 public:
  const std::string& key() const noexcept { return key_; }
  ValueType type() const noexcept { return type_; }
  bool is_array() const noexcept { return type_ == ValueType::kArray; }
  /// Arrays only (kArray for arrays of arrays, whose elements gsq does not keep).
  ValueType element_type() const {
    require_array();
    return elem_;
  }
  std::size_t array_size() const {
    require_array();
    return static_cast<std::size_t>(count_);
  }
  const std::string& as_string() const {
    GSQ_CHECK(type_ == ValueType::kString, "gguf: key '", key_, "' is ", describe(),
              ", not a string");
    return str_;
  }
  /// Any integer type holding a value >= 0.
  std::uint64_t as_uint() const {
    GSQ_CHECK(detail::is_integer(type_), "gguf: key '", key_, "' is ", describe(),
              ", not an integer");
    GSQ_CHECK(!detail::is_signed(type_) || static_cast<std::int64_t>(scalar_.bits) >= 0,
              "gguf: key '", key_, "' is negative (", static_cast<std::int64_t>(scalar_.bits), ")");
    return scalar_.bits;
  }
  /// Any integer type whose value fits in int64.
  std::int64_t as_int() const {
    GSQ_CHECK(detail::is_integer(type_), "gguf: key '", key_, "' is ", describe(),
              ", not an integer");
    GSQ_CHECK(detail::is_signed(type_) || scalar_.bits <= kInt64Max, "gguf: key '", key_,
              "' = ", scalar_.bits, " does not fit in int64");
    return static_cast<std::int64_t>(scalar_.bits);
  }
  /// float32, float64 or any integer.
  double as_float() const {
    if (type_ == ValueType::kFloat32 || type_ == ValueType::kFloat64) return scalar_.real;
    GSQ_CHECK(detail::is_integer(type_), "gguf: key '", key_, "' is ", describe(),
              ", not a number");
    return detail::is_signed(type_) ? static_cast<double>(static_cast<std::int64_t>(scalar_.bits))
                                    : static_cast<double>(scalar_.bits);
  }
  bool as_bool() const {
    GSQ_CHECK(type_ == ValueType::kBool, "gguf: key '", key_, "' is ", describe(), ", not a bool");
    return scalar_.bits != 0;
  }
  /// An array of strings.
  const std::vector<std::string>& strings() const {
    GSQ_CHECK(is_array() && elem_ == ValueType::kString, "gguf: key '", key_, "' is ", describe(),
              ", not an array of strings");
    return strs_;
  }
  /// An array of float32, float64 or integers, each rounded to float.
  std::vector<float> floats() const {
    GSQ_CHECK(is_array() && (detail::is_integer(elem_) || elem_ == ValueType::kFloat32 ||
                             elem_ == ValueType::kFloat64),
              "gguf: key '", key_, "' is ", describe(), ", not an array of numbers");
    std::vector<float> out(static_cast<std::size_t>(count_));
    const int w = detail::scalar_bytes(elem_);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const detail::Scalar s = detail::load_scalar(elem_, raw_.data() + i * w);
      if (elem_ == ValueType::kFloat32 || elem_ == ValueType::kFloat64) {
        out[i] = static_cast<float>(s.real);
      } else {
        out[i] = detail::is_signed(elem_) ? static_cast<float>(static_cast<std::int64_t>(s.bits))
                                          : static_cast<float>(s.bits);
      }
    }
    return out;
  }
  /// An array of integers, each of which fits in int64.
  std::vector<std::int64_t> ints() const {
    GSQ_CHECK(is_array() && detail::is_integer(elem_), "gguf: key '", key_, "' is ", describe(),
              ", not an array of integers");
    std::vector<std::int64_t> out(static_cast<std::size_t>(count_));
    const int w = detail::scalar_bytes(elem_);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const detail::Scalar s = detail::load_scalar(elem_, raw_.data() + i * w);
      GSQ_CHECK(detail::is_signed(elem_) || s.bits <= kInt64Max, "gguf: key '", key_, "' element ",
                i, " = ", s.bits, " does not fit in int64");
      out[i] = static_cast<std::int64_t>(s.bits);
    }
    return out;
  }

  /// "a uint32", "an array of string", ...
  std::string describe() const {
    if (!is_array()) return std::string("a ") + to_string(type_);
    return std::string("an array of ") + to_string(elem_);
  }

 private:
  friend class detail::GgufInput;
  friend class GgufFile;
  static constexpr std::uint64_t kInt64Max =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

  void require_array() const {
    GSQ_CHECK(is_array(), "gguf: key '", key_, "' is ", describe(), ", not an array");
  }

  std::string key_;
  ValueType type_ = ValueType::kUint8;
  ValueType elem_ = ValueType::kUint8;  // arrays
  std::uint64_t count_ = 0;             // arrays
  detail::Scalar scalar_;
  std::string str_;
  std::vector<std::string> strs_;  // arrays of strings
  std::vector<std::uint8_t> raw_;  // arrays of numbers and bools, little-endian as stored
};

/// One entry of the tensor directory.
struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 1;                              ///< 1..4
  std::array<std::int64_t, 4> ne{1, 1, 1, 1};  ///< ggml order, fastest first; unused dims are 1
  std::int64_t elements() const noexcept { return ne[0] * ne[1] * ne[2] * ne[3]; }
  std::uint64_t offset = 0;  ///< absolute byte offset in the file
  std::uint64_t bytes = 0;   ///< stored size
};

namespace detail {

/// The bytes of a GGUF file, from memory or from a file descriptor (closed when the last owner
/// goes).
struct GgufStorage {
  std::vector<std::uint8_t> image;  // parse()
  int fd = -1;                      // open()
  std::string path;
  std::uint64_t size = 0;
  GgufStorage() = default;
  GgufStorage(const GgufStorage&) = delete;
  GgufStorage& operator=(const GgufStorage&) = delete;
  ~GgufStorage() {
    if (fd >= 0) ::close(fd);
  }

  /// Copies [offset, offset + n) into dst; the caller has checked the range.
  void read(std::uint64_t offset, void* dst, std::size_t n, const std::string& what) const {
    if (n == 0) return;
    if (fd < 0) {
      std::memcpy(dst, image.data() + offset, n);
      return;
    }
    auto* p = static_cast<std::uint8_t*>(dst);
    while (n > 0) {
      const std::size_t step = std::min<std::size_t>(n, std::size_t{1} << 30);
      const ssize_t got = ::pread(fd, p, step, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      GSQ_CHECK(got > 0, "gguf: reading ", what, " from '", path, "' failed at offset ", offset,
                got == 0 ? " (the file shrank?)" : " (I/O error)");
      p += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }
};

/// Reads the header front to back with bounded reads (64 KiB buffered preads from a file).  Every
/// read checks the bytes that remain first: a length never causes an allocation larger than the
/// rest of the file.
class GgufInput {
 public:
  explicit GgufInput(const GgufStorage& s) : s_(s) {}

  std::uint64_t position() const noexcept { return pos_; }
  std::uint64_t remaining() const noexcept { return s_.size - pos_; }

  /// Throws "gguf: truncated: ..." unless n bytes remain.
  void need(std::uint64_t n, const char* what, const std::string& whose) const {
    GSQ_CHECK(n <= remaining(), "gguf: truncated: ", what, whose.empty() ? "" : " of ", whose,
              " needs ", n, " bytes at offset ", pos_, " but the file has ", s_.size, " bytes");
  }
  void read(void* dst, std::uint64_t n, const char* what, const std::string& whose) {
    need(n, what, whose);
    auto* out = static_cast<std::uint8_t*>(dst);
    if (s_.fd < 0) {
      if (n > 0) std::memcpy(out, s_.image.data() + pos_, static_cast<std::size_t>(n));
      pos_ += n;
      return;
    }
    while (n > 0) {
      if (pos_ < buf_at_ || pos_ >= buf_at_ + buf_.size()) {
        const std::uint64_t len = std::min<std::uint64_t>(kBuffer, remaining());
        buf_.resize(static_cast<std::size_t>(len));
        s_.read(pos_, buf_.data(), buf_.size(), "the header");
        buf_at_ = pos_;
      }
      const std::uint64_t in_buf = buf_at_ + buf_.size() - pos_;
      const std::uint64_t k = std::min(n, in_buf);
      std::memcpy(out, buf_.data() + (pos_ - buf_at_), static_cast<std::size_t>(k));
      out += k;
      pos_ += k;
      n -= k;
    }
  }
  std::uint64_t uint(int bytes, const char* what, const std::string& whose) {
    std::uint8_t b[8];
    read(b, static_cast<std::uint64_t>(bytes), what, whose);
    return gsq::detail::load_le(b, bytes);
  }
  std::uint32_t u32(const char* what, const std::string& whose) {
    return static_cast<std::uint32_t>(uint(4, what, whose));
  }
  std::uint64_t u64(const char* what, const std::string& whose) { return uint(8, what, whose); }
  std::string str(const char* what, const std::string& whose) {
    const std::uint64_t n = u64(what, whose);
    need(n, what, whose);  // before allocating
    std::string s(static_cast<std::size_t>(n), '\0');
    read(s.data(), n, what, whose);
    return s;
  }
  void skip(std::uint64_t n, const char* what, const std::string& whose) {
    need(n, what, whose);
    pos_ += n;
  }

  /// Reads a value of type t (already read) into v, whose key is set.
  void value(Value& v, ValueType t) {
    const std::string& key = v.key_;
    v.type_ = t;
    if (t == ValueType::kString) {
      v.str_ = str("a string value", key_name(key));
      return;
    }
    if (t == ValueType::kArray) {
      const std::uint32_t et = u32("an array's element type", key_name(key));
      GSQ_CHECK(et <= 12, "gguf: key '", key, "' is an array of unknown value type ", et);
      v.elem_ = static_cast<ValueType>(et);
      v.count_ = u64("an array's length", key_name(key));
      const int w = scalar_bytes(v.elem_);
      if (v.elem_ == ValueType::kString) {
        // Each string takes at least its 8-byte length.
        GSQ_CHECK(v.count_ <= remaining() / 8, "gguf: key '", key, "' is an array of ", v.count_,
                  " strings, more than the ", remaining(), " bytes left in the file can hold");
        v.strs_.reserve(static_cast<std::size_t>(v.count_));
        for (std::uint64_t i = 0; i < v.count_; ++i)
          v.strs_.push_back(str("an array's string", key_name(key)));
      } else if (v.elem_ == ValueType::kArray) {
        skip_nested(key, v.count_, 1);
      } else {
        GSQ_CHECK(v.count_ <= remaining() / static_cast<std::uint64_t>(w), "gguf: key '", key,
                  "' is an array of ", v.count_, " ", to_string(v.elem_), " values, more than the ",
                  remaining(), " bytes left in the file hold");
        v.raw_.resize(static_cast<std::size_t>(v.count_) * static_cast<std::size_t>(w));
        read(v.raw_.data(), v.raw_.size(), "an array's values", key_name(key));
      }
      return;
    }
    const int w = scalar_bytes(t);
    GSQ_CHECK(w > 0, "gguf: key '", key, "' has unknown value type ",
              static_cast<std::uint32_t>(t));
    std::uint8_t b[8];
    read(b, static_cast<std::uint64_t>(w), "a value", key_name(key));
    v.scalar_ = load_scalar(t, b);
  }

 private:
  static constexpr std::uint64_t kBuffer = std::uint64_t{1} << 16;
  static constexpr int kMaxNesting = 8;

  static std::string key_name(const std::string& key) { return "key '" + key + "'"; }

  /// Walks `count` arrays nested `depth` deep without keeping them.
  void skip_nested(const std::string& key, std::uint64_t count, int depth) {
    GSQ_CHECK(depth <= kMaxNesting, "gguf: key '", key, "' nests arrays more than ", kMaxNesting,
              " deep");
    // Each nested array takes at least its element type and length (12 bytes).
    GSQ_CHECK(count <= remaining() / 12, "gguf: key '", key, "' is an array of ", count,
              " arrays, more than the ", remaining(), " bytes left in the file can hold");
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint32_t et = u32("a nested array's element type", key_name(key));
      GSQ_CHECK(et <= 12, "gguf: key '", key, "' nests an array of unknown value type ", et);
      const std::uint64_t n = u64("a nested array's length", key_name(key));
      const auto t = static_cast<ValueType>(et);
      if (t == ValueType::kArray) {
        skip_nested(key, n, depth + 1);
      } else if (t == ValueType::kString) {
        GSQ_CHECK(n <= remaining() / 8, "gguf: key '", key, "' nests an array of ", n,
                  " strings, more than the file can hold");
        for (std::uint64_t j = 0; j < n; ++j)
          skip(u64("a nested string's length", key_name(key)), "a nested string", key_name(key));
      } else {
        const auto w = static_cast<std::uint64_t>(scalar_bytes(t));
        GSQ_CHECK(n <= remaining() / w, "gguf: key '", key, "' nests an array of ", n, " ",
                  to_string(t), " values, more than the file can hold");
        skip(n * w, "a nested array's values", key_name(key));
      }
    }
  }

  const GgufStorage& s_;
  std::uint64_t pos_ = 0;
  std::vector<std::uint8_t> buf_;
  std::uint64_t buf_at_ = 0;
};

}  // namespace detail

/// A GGUF file: its metadata and tensor directory, parsed and checked when opened, and its
/// tensors decoded one at a time on request.
///
/// Checked: magic, version (2 or 3; 1 and big-endian files are refused), every count and length
/// against the bytes left before anything is allocated, value types, arrays of arrays (walked,
/// at most 8 deep, not kept), duplicate keys and tensor names, keys and names without NUL
/// bytes, general.alignment (a power of two, default 32), n_dims 1..4, each ne >= 1 with a
/// product below 2^40, known ggml types, rows of whole blocks, offsets aligned and relative to
/// the aligned end of the header, every tensor inside the file, no two overlapping.  Errors are
/// std::invalid_argument starting "gguf: ".
class GgufFile {
 public:
  static constexpr std::uint64_t kDefaultAlignment = 32;
  static constexpr std::int64_t kMaxElements = std::int64_t{1} << 40;

  /// Opens a file and reads its header, metadata and tensor directory only (bounded reads; the
  /// header of a large vocabulary can be tens of MB).  Tensor data is read by read_f32.
  static GgufFile open(const std::string& path) {
    auto s = std::make_shared<detail::GgufStorage>();
    s->path = path;
    s->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    GSQ_CHECK(s->fd >= 0, "gguf: cannot open '", path, "'");
    struct stat st;
    GSQ_CHECK(::fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode), "gguf: '", path,
              "' is not a regular file");
    s->size = static_cast<std::uint64_t>(st.st_size);
    GgufFile f;
    f.storage_ = std::move(s);
    f.parse_header();
    return f;
  }

  /// Parses a whole image in memory (copied: the file does not refer to `data`).
  static GgufFile parse(const std::uint8_t* data, std::size_t size) {
    GSQ_CHECK(data != nullptr || size == 0, "gguf: null buffer");
    auto s = std::make_shared<detail::GgufStorage>();
    s->image.assign(data, data + size);
    s->size = size;
    s->path = "(memory)";
    GgufFile f;
    f.storage_ = std::move(s);
    f.parse_header();
    return f;
  }

  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  /// Byte offset of the tensor data section (the aligned end of the header).
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  std::uint64_t file_size() const noexcept { return storage_ ? storage_->size : 0; }

  const std::vector<Value>& metadata() const noexcept { return metadata_; }
  const Value* find(std::string_view key) const noexcept {
    const auto it = keys_.find(key);
    return it == keys_.end() ? nullptr : &metadata_[it->second];
  }
  const Value& at(std::string_view key) const {
    const Value* v = find(key);
    GSQ_CHECK(v != nullptr, "gguf: key '", key, "' is missing");
    return *v;
  }

  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const noexcept {
    const auto it = names_.find(name);
    return it == names_.end() ? nullptr : &tensors_[it->second];
  }
  const TensorInfo& tensor(std::string_view name) const {
    const TensorInfo* t = find_tensor(name);
    GSQ_CHECK(t != nullptr, "gguf: tensor '", name, "' is missing");
    return *t;
  }

  /// Decodes the whole tensor to float32 (row-major, ne[0] fastest), reading its bytes with
  /// pread (open) or from the image (parse), in chunks of at most 1 MiB: memory is out's floats
  /// plus one chunk (none for F32 on a little-endian host, read straight into out).  Throws for
  /// a type gsq does not decode, naming the tensor and the type.
  void read_f32(const TensorInfo& t, std::vector<float>& out) const {
    GSQ_CHECK(storage_ != nullptr, "gguf: read_f32 on an empty GgufFile");
    GSQ_CHECK(is_supported(t.type), "gguf: tensor '", t.name, "' has type ", to_string(t.type),
              ", which gsq cannot decode (it decodes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, "
              "Q5_1, Q4_K, Q5_K, Q6_K)");
    const std::int64_t block = block_elements(t.type);
    const auto bb = static_cast<std::uint64_t>(block_bytes(t.type));
    const std::int64_t n = t.elements();
    GSQ_CHECK(n >= 1 && n <= kMaxElements && n % block == 0 &&
                  static_cast<std::uint64_t>(n / block) * bb == t.bytes &&
                  t.offset <= file_size() && t.bytes <= file_size() - t.offset,
              "gguf: tensor '", t.name, "' does not describe ", t.bytes, " bytes at offset ",
              t.offset, " inside this file");
    out.resize(static_cast<std::size_t>(n));
    const std::string what = "tensor '" + t.name + "'";
    if (t.type == GgmlType::kF32 && host_little_endian()) {
      storage_->read(t.offset, out.data(), static_cast<std::size_t>(t.bytes), what);
      return;
    }
    const std::uint64_t blocks = static_cast<std::uint64_t>(n / block);
    const std::uint64_t chunk_blocks = std::max<std::uint64_t>(1, kChunk / bb);
    std::vector<std::uint8_t> buf;
    for (std::uint64_t b = 0; b < blocks; b += chunk_blocks) {
      const std::uint64_t k = std::min(chunk_blocks, blocks - b);
      const std::uint8_t* src;
      if (storage_->fd < 0) {
        src = storage_->image.data() + t.offset + b * bb;
      } else {
        buf.resize(static_cast<std::size_t>(k * bb));
        storage_->read(t.offset + b * bb, buf.data(), buf.size(), what);
        src = buf.data();
      }
      dequantize_row(t.type, src, out.data() + b * static_cast<std::uint64_t>(block),
                     static_cast<std::int64_t>(k) * block);
    }
  }

 private:
  static constexpr std::uint64_t kChunk = std::uint64_t{1} << 20;

  static bool host_little_endian() noexcept {
    const std::uint32_t one = 1;
    std::uint8_t b;
    std::memcpy(&b, &one, 1);
    return b == 1;
  }

  void parse_header() {
    detail::GgufInput in(*storage_);
    const std::string none;
    std::uint8_t magic[4] = {0, 0, 0, 0};
    GSQ_CHECK(in.remaining() >= 4, "gguf: truncated: the file has ", in.remaining(),
              " bytes, too few for the magic 'GGUF'");
    in.read(magic, 4, "the magic", none);
    GSQ_CHECK(std::memcmp(magic, "GGUF", 4) == 0, "gguf: bad magic (not a GGUF file)");
    version_ = in.u32("the version", none);
    GSQ_CHECK(version_ != 0x02000000u && version_ != 0x03000000u,
              "gguf: big-endian GGUF files are not supported");
    GSQ_CHECK(version_ == 2 || version_ == 3, "gguf: unsupported version ", version_,
              " (gsq reads versions 2 and 3)");
    const std::uint64_t n_tensors = in.u64("the tensor count", none);
    const std::uint64_t n_kv = in.u64("the metadata count", none);
    // A key-value pair takes at least 13 bytes (key length, type, a one-byte value) and a tensor
    // entry at least 32 (name length, n_dims, one ne, type, offset).
    GSQ_CHECK(n_kv <= in.remaining() / 13, "gguf: metadata count ", n_kv, " cannot fit in the ",
              in.remaining(), " bytes left in the file");
    GSQ_CHECK(n_tensors <= (in.remaining() - n_kv * 13) / 32, "gguf: tensor count ", n_tensors,
              " cannot fit in the bytes left in the file");

    for (std::uint64_t i = 0; i < n_kv; ++i) {
      Value v;
      v.key_ = in.str("a key", "metadata entry " + std::to_string(i));
      GSQ_CHECK(v.key_.find('\0') == std::string::npos, "gguf: metadata entry ", i,
                " has a key with a NUL byte");
      GSQ_CHECK(keys_.find(v.key_) == keys_.end(), "gguf: duplicate key '", v.key_, "'");
      const std::uint32_t t = in.u32("a value type", "key '" + v.key_ + "'");
      GSQ_CHECK(t <= 12, "gguf: key '", v.key_, "' has unknown value type ", t);
      in.value(v, static_cast<ValueType>(t));
      keys_.emplace(v.key_, metadata_.size());
      metadata_.push_back(std::move(v));
    }

    alignment_ = kDefaultAlignment;
    if (const Value* a = find("general.alignment")) {
      GSQ_CHECK(detail::is_integer(a->type()), "gguf: general.alignment is ", a->describe(),
                ", not an integer");
      const std::uint64_t al = a->as_uint();
      GSQ_CHECK(al >= 1 && al <= (std::uint64_t{1} << 30) && (al & (al - 1)) == 0,
                "gguf: general.alignment ", al, " is not a power of two in [1, 2^30]");
      alignment_ = al;
    }

    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      TensorInfo t;
      t.name = in.str("a tensor name", "tensor entry " + std::to_string(i));
      // Names appear in messages, which are C strings: a NUL would cut them short.
      GSQ_CHECK(t.name.find('\0') == std::string::npos, "gguf: tensor entry ", i,
                " has a name with a NUL byte");
      const std::string whose = "tensor '" + t.name + "'";
      GSQ_CHECK(names_.find(t.name) == names_.end(), "gguf: duplicate tensor '", t.name, "'");
      const std::uint32_t n_dims = in.u32("n_dims", whose);
      GSQ_CHECK(n_dims >= 1 && n_dims <= 4, "gguf: tensor '", t.name, "' has n_dims ", n_dims,
                ", outside 1..4");
      t.n_dims = static_cast<int>(n_dims);
      std::int64_t elements = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const std::uint64_t ne = in.u64("a dimension", whose);
        GSQ_CHECK(ne >= 1 && ne <= static_cast<std::uint64_t>(kMaxElements) &&
                      static_cast<std::uint64_t>(elements) <=
                          static_cast<std::uint64_t>(kMaxElements) / ne,
                  "gguf: tensor '", t.name, "' has ne[", d, "] = ", ne, ne == 0 ? " (empty)" : "",
                  ", the element count leaves [1, 2^40]");
        t.ne[d] = static_cast<std::int64_t>(ne);
        elements *= t.ne[d];
      }
      const std::uint32_t type = in.u32("the type", whose);
      t.type = static_cast<GgmlType>(type);
      GSQ_CHECK(is_known(t.type), "gguf: tensor '", t.name, "' has unknown ggml type ", type);
      const std::int64_t block = block_elements(t.type);
      GSQ_CHECK(t.ne[0] % block == 0, "gguf: tensor '", t.name, "' has rows of ne[0] = ", t.ne[0],
                ", not a multiple of the ", to_string(t.type), " block of ", block);
      t.bytes = static_cast<std::uint64_t>(elements / block) *
                static_cast<std::uint64_t>(block_bytes(t.type));
      t.offset = in.u64("the offset", whose);
      GSQ_CHECK(t.offset % alignment_ == 0, "gguf: tensor '", t.name, "' has offset ", t.offset,
                ", not a multiple of the alignment ", alignment_);
      names_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }

    const std::uint64_t end = in.position();
    data_offset_ = (end + alignment_ - 1) / alignment_ * alignment_;  // end < 2^64 - 2^30
    const std::uint64_t size = storage_->size;
    if (!tensors_.empty()) {
      GSQ_CHECK(data_offset_ <= size, "gguf: the data section would start at ", data_offset_,
                ", past the end of the file (", size, " bytes)");
    }
    for (TensorInfo& t : tensors_) {
      const std::uint64_t room = size - data_offset_;
      GSQ_CHECK(t.offset <= room && t.bytes <= room - t.offset, "gguf: tensor '", t.name, "' (",
                t.bytes, " bytes at data offset ", t.offset, ") extends past the end of the file (",
                size, " bytes)");
      t.offset += data_offset_;
    }
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [this](std::size_t a, std::size_t b) {
      return tensors_[a].offset < tensors_[b].offset;
    });
    for (std::size_t i = 1; i < order.size(); ++i) {
      const TensorInfo& a = tensors_[order[i - 1]];
      const TensorInfo& b = tensors_[order[i]];
      GSQ_CHECK(a.offset + a.bytes <= b.offset, "gguf: tensors '", a.name, "' and '", b.name,
                "' overlap (", a.bytes, " bytes at ", a.offset, " and ", b.bytes, " at ", b.offset,
                ")");
    }
  }

  std::shared_ptr<const detail::GgufStorage> storage_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = kDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::vector<Value> metadata_;
  std::map<std::string, std::size_t, std::less<>> keys_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> names_;
};

}  // namespace gsq::gguf
