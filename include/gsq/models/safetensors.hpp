// safetensors.hpp: a hardened reader and a small writer for Hugging Face safetensors files, single
// or sharded by a model.safetensors.index.json, read one tensor at a time.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/safetensors.hpp needs nlohmann/json (gsq::json)"
#endif

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/half.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/io/file.hpp"

/// The safetensors format (https://github.com/huggingface/safetensors):
///   [u64 N, little-endian] [N bytes: a JSON object] [data section]
/// The JSON object maps each tensor name to {"dtype": "F32", "shape": [rows, cols],
/// "data_offsets": [begin, end]} (byte offsets into the data section, row-major, little-endian),
/// and may hold "__metadata__", an object of string -> string.  This reader accepts what the
/// reference Rust crate accepts: the tensors' byte ranges tile the data section exactly, in some
/// order, with no overlap, no gap and no trailing byte.  Every error is a std::invalid_argument
/// "safetensors: '<file>': ..." naming the tensor and the problem.
namespace gsq::safetensors {

/// The element types of the format.  F32, F16 and BF16 decode to float; the others can be read
/// as raw bytes only.
enum class Dtype : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
};

namespace detail {
struct DtypeInfo {
  Dtype dtype;
  const char* name;
  int size;
};
inline constexpr DtypeInfo kDtypes[] = {
    {Dtype::kBool, "BOOL", 1},      {Dtype::kU8, "U8", 1},          {Dtype::kI8, "I8", 1},
    {Dtype::kF8E5M2, "F8_E5M2", 1}, {Dtype::kF8E4M3, "F8_E4M3", 1}, {Dtype::kI16, "I16", 2},
    {Dtype::kU16, "U16", 2},        {Dtype::kF16, "F16", 2},        {Dtype::kBF16, "BF16", 2},
    {Dtype::kI32, "I32", 4},        {Dtype::kU32, "U32", 4},        {Dtype::kF32, "F32", 4},
    {Dtype::kI64, "I64", 8},        {Dtype::kU64, "U64", 8},        {Dtype::kF64, "F64", 8},
};
}  // namespace detail

/// The format's name of a dtype ("F32", "BF16", ...).
inline const char* to_string(Dtype d) noexcept { return detail::kDtypes[static_cast<int>(d)].name; }
/// Bytes per element.
inline int dtype_size(Dtype d) noexcept { return detail::kDtypes[static_cast<int>(d)].size; }
/// Whether read_floats() decodes this dtype (F32, F16, BF16).
inline bool decodes_to_float(Dtype d) noexcept {
  return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}
/// The dtype named `name`, or false when the format has no such dtype.
inline bool dtype_from_string(const std::string& name, Dtype& out) noexcept {
  for (const detail::DtypeInfo& d : detail::kDtypes) {
    if (name == d.name) {
      out = d.dtype;
      return true;
    }
  }
  return false;
}

/// The largest JSON header accepted (the reference crate's limit is the same 100 MB).  The header
/// is parsed into an nlohmann::json tree, which may take some 20 times its text's size in memory
/// for a hostile header of tiny objects: a bounded, not a small, cost.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
/// The deepest JSON nesting a header or index may have (a header needs 3: the object, a
/// tensor's object, its shape).
inline constexpr int kMaxJsonDepth = 4;
/// The most dimensions a tensor may have.
inline constexpr std::size_t kMaxRank = 16;

/// One tensor of a file: byte range [begin, end) of the data section.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<std::int64_t> shape;  ///< empty for a scalar
  std::int64_t elements = 0;        ///< the product of shape (1 for a scalar)
  std::uint64_t begin = 0, end = 0;
  std::uint64_t bytes() const noexcept { return end - begin; }
};

/// "[64, 172]": a shape for messages.
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace detail {

/// Parses JSON text with nlohmann/json, rejecting what the DOM would silently accept: duplicate
/// keys (nlohmann keeps the last), and nesting deeper than max_depth.  `who` prefixes errors
/// ("safetensors: 'file': header").
inline nlohmann::json parse_json_strict(const char* first, const char* last, const std::string& who,
                                        int max_depth) {
  std::vector<std::set<std::string>> keys;  // the keys of each open object
  int depth = 0;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        GSQ_CHECK(++depth <= max_depth, who, " is nested deeper than ", max_depth, " levels");
        if (event == E::object_start) keys.emplace_back();
        break;
      case E::object_end:
        keys.pop_back();
        --depth;
        break;
      case E::array_end:
        --depth;
        break;
      case E::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        GSQ_CHECK(!keys.empty() && keys.back().insert(key).second, who, " has the key '", key,
                  "' twice in one object");
        break;
      }
      case E::value:
        break;
    }
    return true;
  };
#if GSQ_HAS_EXCEPTIONS
  try {
    return nlohmann::json::parse(first, last, callback, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    GSQ_CHECK(false, who, " is not valid JSON (", e.what(), ")");
  }
  return {};
#else
  nlohmann::json j = nlohmann::json::parse(first, last, callback, /*allow_exceptions=*/false,
                                           /*ignore_comments=*/false);
  GSQ_CHECK(!j.is_discarded(), who, " is not valid JSON");
  return j;
#endif
}

/// A non-negative JSON integer, or an error naming `what`.
inline std::uint64_t json_unsigned(const nlohmann::json& v, const std::string& who,
                                   const char* what) {
  GSQ_CHECK(v.is_number_integer(), who, ": ", what, " is not an integer (", v.type_name(), ")");
  GSQ_CHECK(v.is_number_unsigned(), who, ": ", what, " is negative (", v.get<std::int64_t>(), ")");
  return v.get<std::uint64_t>();
}

/// An open file descriptor, closed with its last owner.
class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace detail

/// One safetensors file: its header parsed and checked, its tensors read on demand.  open()
/// keeps the file open and reads only the header; each read is a pread of that tensor's bytes
/// (decoded in chunks of 1 MiB), so reading a model costs one tensor's floats at a time.  Copies
/// share the open file.  Reads are const and safe from several threads.
class File {
 public:
  File() = default;

  /// Opens `path` and parses its header.  Throws on an unreadable file or a bad header.
  static File open(const std::string& path) {
    File f;
    f.label_ = path;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    GSQ_CHECK(fd >= 0, "safetensors: cannot open '", path, "' (", std::strerror(errno), ")");
    f.fd_ = std::make_shared<detail::Fd>(fd);
    struct stat st;
    GSQ_CHECK(::fstat(fd, &st) == 0 && S_ISREG(st.st_mode), "safetensors: '", path,
              "' is not a regular file");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    std::uint8_t prefix[8];
    GSQ_CHECK(size >= 8, "safetensors: '", path, "': file holds ", size,
              " bytes, less than the 8-byte header length");
    f.pread_all(prefix, 8, 0, "the header length");
    const std::uint64_t n = header_length(prefix, size, path);
    std::vector<char> header(static_cast<std::size_t>(n));
    f.pread_all(header.data(), header.size(), 8, "the header");
    f.parse_header(header.data(), header.size(), size - 8 - n);
    f.data_offset_ = 8 + n;
    return f;
  }

  /// Parses an in-memory image [bytes, bytes + size), called `label` in messages.  The File
  /// refers to the bytes: keep them alive while it is used.
  static File parse(const std::uint8_t* bytes, std::size_t size,
                    const std::string& label = "<memory>") {
    GSQ_CHECK(bytes != nullptr || size == 0, "safetensors: '", label, "': null buffer");
    GSQ_CHECK(size >= 8, "safetensors: '", label, "': file holds ", size,
              " bytes, less than the 8-byte header length");
    File f;
    f.label_ = label;
    f.memory_ = bytes;
    const std::uint64_t n = header_length(bytes, size, label);
    f.parse_header(reinterpret_cast<const char*>(bytes) + 8, static_cast<std::size_t>(n),
                   size - 8 - n);
    f.data_offset_ = 8 + n;
    return f;
  }

  /// The path (or label) the file was opened with.
  const std::string& name() const noexcept { return label_; }
  /// The tensors, in the order of their bytes in the data section.
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  /// The `__metadata__` entries (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// The byte offset of the data section in the file (8 + header length).
  std::uint64_t data_offset() const noexcept { return data_offset_; }

  /// The tensor called `name`, or nullptr.
  const TensorInfo* find(const std::string& name) const noexcept {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  /// The tensor called `name`; throws if the file has none.
  const TensorInfo& tensor(const std::string& name) const {
    const TensorInfo* t = find(name);
    GSQ_CHECK(t != nullptr, "safetensors: '", label_, "' has no tensor '", name, "'");
    return *t;
  }

  /// The raw little-endian bytes of tensor t (which must be one of tensors()).
  void read_bytes(const TensorInfo& t, std::vector<std::uint8_t>& out) const {
    out.resize(static_cast<std::size_t>(t.bytes()));
    read_range(t, 0, out.data(), out.size());
  }

  /// Tensor t decoded to float, row-major (exact: F16 and BF16 widen exactly).  Throws for the
  /// dtypes that are not floating point of at most 32 bits, naming the tensor and its dtype.
  void read_floats(const TensorInfo& t, std::vector<float>& out) const {
    GSQ_CHECK(decodes_to_float(t.dtype), "safetensors: '", label_, "': tensor '", t.name,
              "' has dtype ", to_string(t.dtype),
              ", which gsq does not read as weights (F32, F16 and BF16 only)");
    const std::size_t size = static_cast<std::size_t>(dtype_size(t.dtype));
    const std::size_t n = static_cast<std::size_t>(t.elements);
    out.resize(n);
    constexpr std::size_t kChunk = std::size_t{1} << 20;
    std::vector<std::uint8_t> buf(std::min<std::size_t>(kChunk, n * size));
    for (std::size_t done = 0; done < n;) {
      const std::size_t count = std::min(n - done, kChunk / size);
      read_range(t, done * size, buf.data(), count * size);
      float* dst = out.data() + done;
      const std::uint8_t* p = buf.data();
      switch (t.dtype) {
        case Dtype::kF32:
          for (std::size_t i = 0; i < count; ++i)
            dst[i] = bits_float(static_cast<std::uint32_t>(gsq::detail::load_le(p + 4 * i, 4)));
          break;
        case Dtype::kF16:
          for (std::size_t i = 0; i < count; ++i)
            dst[i] = to_float(Fp16{static_cast<std::uint16_t>(gsq::detail::load_le(p + 2 * i, 2))});
          break;
        default:  // kBF16
          for (std::size_t i = 0; i < count; ++i)
            dst[i] = to_float(Bf16{static_cast<std::uint16_t>(gsq::detail::load_le(p + 2 * i, 2))});
          break;
      }
      done += count;
    }
  }
  void read_floats(const std::string& name, std::vector<float>& out) const {
    read_floats(tensor(name), out);
  }

 private:
  static std::uint64_t header_length(const std::uint8_t* prefix, std::uint64_t file_size,
                                     const std::string& label) {
    const std::uint64_t n = gsq::detail::load_le(prefix, 8);
    GSQ_CHECK(n <= kMaxHeaderBytes, "safetensors: '", label, "': header length ", n,
              " exceeds the ", kMaxHeaderBytes, "-byte limit");
    GSQ_CHECK(n <= file_size - 8, "safetensors: '", label, "': header length ", n,
              " runs past the end of the file (", file_size - 8, " bytes follow it)");
    return n;
  }

  void parse_header(const char* text, std::size_t n, std::uint64_t data_size) {
    const std::string who = "safetensors: '" + label_ + "'";
    const nlohmann::json j =
        detail::parse_json_strict(text, text + n, who + ": header", kMaxJsonDepth);
    GSQ_CHECK(j.is_object(), who, ": header is a JSON ", j.type_name(), ", not an object");
    for (const auto& item : j.items()) {
      const std::string& key = item.key();
      const nlohmann::json& v = item.value();
      if (key == "__metadata__") {
        GSQ_CHECK(v.is_object(), who, ": __metadata__ is a ", v.type_name(), ", not an object");
        for (const auto& m : v.items()) {
          GSQ_CHECK(m.value().is_string(), who, ": __metadata__ entry '", m.key(), "' is a ",
                    m.value().type_name(), ", not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_tensor(key, v, who, data_size));
    }
    // The byte ranges must tile the data section: sorted by offsets, each starts where the
    // previous one ended (empty tensors may sit anywhere on that path).
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t at = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo& t : tensors_) {
      GSQ_CHECK(t.begin >= at, who, ": tensor '", t.name, "' (bytes ", t.begin, "..", t.end,
                ") overlaps tensor '", previous ? previous->name : "", "' (which ends at ", at,
                ")");
      GSQ_CHECK(t.begin == at, who, ": tensor '", t.name, "' starts at byte ", t.begin,
                " of the data section, leaving a gap of ", t.begin - at, " bytes after ",
                previous ? "tensor '" + previous->name + "'" : std::string("the header"));
      at = t.end;
      previous = &t;
    }
    GSQ_CHECK(at == data_size, who, ": the data section holds ", data_size,
              " bytes but its tensors cover ", at, " (", data_size - at, " trailing bytes)");
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  static TensorInfo parse_tensor(const std::string& name, const nlohmann::json& v,
                                 const std::string& who, std::uint64_t data_size) {
    const std::string at = who + ": tensor '" + name + "'";
    GSQ_CHECK(v.is_object(), at, " is a JSON ", v.type_name(), ", not an object");
    TensorInfo t;
    t.name = name;
    const auto dtype = v.find("dtype");
    const auto shape = v.find("shape");
    const auto offsets = v.find("data_offsets");
    GSQ_CHECK(dtype != v.end(), at, " has no dtype");
    GSQ_CHECK(shape != v.end(), at, " has no shape");
    GSQ_CHECK(offsets != v.end(), at, " has no data_offsets");
    GSQ_CHECK(dtype->is_string(), at, ": dtype is a ", dtype->type_name(), ", not a string");
    GSQ_CHECK(dtype_from_string(dtype->get<std::string>(), t.dtype), at, " has unknown dtype '",
              dtype->get<std::string>(), "'");
    GSQ_CHECK(shape->is_array(), at, ": shape is a ", shape->type_name(), ", not an array");
    GSQ_CHECK(shape->size() <= kMaxRank, at, " has ", shape->size(), " dimensions (at most ",
              kMaxRank, ")");
    // The element count and byte size stay below 2^62: no product can wrap.
    constexpr std::uint64_t kLimit = std::uint64_t{1} << 62;
    std::uint64_t elements = 1;
    for (const nlohmann::json& d : *shape) {
      const std::uint64_t dim = detail::json_unsigned(d, at, "a shape dimension");
      GSQ_CHECK(dim < kLimit && (dim == 0 || elements <= kLimit / dim), at, ": shape ",
                shape->dump(), " has too many elements");
      elements *= dim;
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    GSQ_CHECK(offsets->is_array() && offsets->size() == 2, at,
              ": data_offsets is not an array of two integers");
    t.begin = detail::json_unsigned((*offsets)[0], at, "data_offsets[0]");
    t.end = detail::json_unsigned((*offsets)[1], at, "data_offsets[1]");
    GSQ_CHECK(t.begin <= t.end, at, ": data_offsets [", t.begin, ", ", t.end,
              "] end before they begin");
    GSQ_CHECK(t.end <= data_size, at, ": data_offsets [", t.begin, ", ", t.end,
              "] run past the data section (", data_size, " bytes)");
    const auto size = static_cast<std::uint64_t>(dtype_size(t.dtype));
    GSQ_CHECK(elements <= kLimit / size && t.end - t.begin == elements * size, at, ": shape ",
              shape_string(t.shape), " of ", to_string(t.dtype), " needs ", elements, " x ", size,
              " bytes but data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin);
    t.elements = static_cast<std::int64_t>(elements);
    return t;
  }

  /// Copies bytes [offset, offset + n) of tensor t (offset + n <= t.bytes()) into dst.
  void read_range(const TensorInfo& t, std::uint64_t offset, std::uint8_t* dst,
                  std::size_t n) const {
    const TensorInfo* own = find(t.name);
    GSQ_CHECK(own != nullptr && own->begin == t.begin && own->end == t.end, "safetensors: '",
              label_, "': tensor '", t.name, "' is not one of this file's");
    GSQ_DASSERT(offset <= t.bytes() && n <= t.bytes() - offset);
    if (n == 0) return;
    const std::uint64_t at = data_offset_ + t.begin + offset;
    if (memory_ != nullptr) {
      std::memcpy(dst, memory_ + at, n);
    } else {
      pread_all(dst, n, at, ("tensor '" + t.name + "'").c_str());
    }
  }

  void pread_all(void* dst, std::size_t n, std::uint64_t at, const char* what) const {
    auto* p = static_cast<std::uint8_t*>(dst);
    while (n > 0) {
      const ::ssize_t got = ::pread(fd_->get(), p, n, static_cast<::off_t>(at));
      if (got < 0 && errno == EINTR) continue;
      GSQ_CHECK(got > 0, "safetensors: '", label_, "': cannot read ", what, " at byte ", at,
                got == 0 ? " (the file is shorter than when it was opened)"
                         : std::string(" (") + std::strerror(errno) + ")");
      p += got;
      at += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }

  std::string label_;
  std::shared_ptr<detail::Fd> fd_;        // open(): the file
  const std::uint8_t* memory_ = nullptr;  // parse(): the image
  std::uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Parses a model.safetensors.index.json text: {"metadata": {...}, "weight_map": {tensor:
/// shard}}, returning the weight map.  A shard name must be a plain file name in the index's
/// directory: empty names, ".", "..", and names with '/', '\\' or NUL are rejected.
inline std::map<std::string, std::string> parse_index(const std::string& text,
                                                      const std::string& label = "<memory>") {
  const std::string who = "safetensors: '" + label + "'";
  const nlohmann::json j =
      detail::parse_json_strict(text.data(), text.data() + text.size(), who, kMaxJsonDepth);
  GSQ_CHECK(j.is_object(), who, " is a JSON ", j.type_name(), ", not an object");
  const auto map = j.find("weight_map");
  GSQ_CHECK(map != j.end(), who, " has no weight_map");
  GSQ_CHECK(map->is_object(), who, ": weight_map is a ", map->type_name(), ", not an object");
  std::map<std::string, std::string> out;
  for (const auto& item : map->items()) {
    GSQ_CHECK(item.value().is_string(), who, ": weight_map entry '", item.key(), "' is a ",
              item.value().type_name(), ", not a file name");
    const std::string& shard = item.value().get_ref<const std::string&>();
    GSQ_CHECK(!shard.empty() && shard != "." && shard != ".." &&
                  shard.find_first_of(std::string("/\\\0", 3)) == std::string::npos,
              who, ": tensor '", item.key(), "' is mapped to shard '", shard,
              "', which is not a plain file name in the index's directory");
    out[item.key()] = shard;
  }
  return out;
}

/// A model's tensors across one file or several shards.
class Model {
 public:
  /// One tensor and the file holding it.
  struct Entry {
    const File* file = nullptr;
    const TensorInfo* info = nullptr;
  };

  /// The model in directory `dir`: model.safetensors.index.json and its shards when the index
  /// exists, else model.safetensors.  Every shard's header is read and checked up front.
  static Model open_directory(const std::string& dir) {
    const std::string base = dir.empty() ? std::string(".") : dir;
    const std::string index = base + "/model.safetensors.index.json";
    struct stat st;
    if (::stat(index.c_str(), &st) == 0) return open_index(index);
    Model m;
    m.files_.push_back(std::make_unique<File>(File::open(base + "/model.safetensors")));
    for (const TensorInfo& t : m.files_[0]->tensors()) m.entries_[t.name] = {m.files_[0].get(), &t};
    return m;
  }

  /// The model of a model.safetensors.index.json file; the shards are in its directory.  A
  /// tensor listed in the map but absent from its shard is an error naming both.  Tensors in a
  /// shard that the map does not list are not served.
  static Model open_index(const std::string& index_path) {
    const std::vector<std::uint8_t> bytes =
        read_file(index_path, "safetensors", std::uint64_t{1} << 28);
    const std::map<std::string, std::string> map =
        parse_index(std::string(bytes.begin(), bytes.end()), index_path);
    const std::size_t slash = index_path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : index_path.substr(0, slash);
    Model m;
    std::map<std::string, const File*> shards;
    for (const auto& [tensor, shard] : map) {
      auto it = shards.find(shard);
      if (it == shards.end()) {
        m.files_.push_back(std::make_unique<File>(File::open(dir + "/" + shard)));
        it = shards.emplace(shard, m.files_.back().get()).first;
      }
      const TensorInfo* info = it->second->find(tensor);
      GSQ_CHECK(info != nullptr, "safetensors: '", index_path, "' maps tensor '", tensor,
                "' to shard '", shard, "', which has no such tensor");
      m.entries_[tensor] = {it->second, info};
    }
    return m;
  }

  /// The tensor called `name` (entry.info null when absent).
  Entry find(const std::string& name) const noexcept {
    const auto it = entries_.find(name);
    return it == entries_.end() ? Entry{} : it->second;
  }
  /// The tensor called `name`; throws naming it when absent.
  Entry at(const std::string& name) const {
    const Entry e = find(name);
    GSQ_CHECK(e.info != nullptr, "safetensors: the model has no tensor '", name, "'");
    return e;
  }
  /// Tensor `name` decoded to float (File::read_floats).
  void read_floats(const std::string& name, std::vector<float>& out) const {
    const Entry e = at(name);
    e.file->read_floats(*e.info, out);
  }
  /// The names of the tensors, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  /// The files (one, or the shards in the order first named by the index).
  std::size_t file_count() const noexcept { return files_.size(); }
  const File& file(std::size_t i) const { return *files_.at(i); }

 private:
  std::vector<std::unique_ptr<File>> files_;  // stable addresses for the entries
  std::map<std::string, Entry> entries_;
};

/// A tensor to write: its raw little-endian bytes (see encode()).
struct TensorData {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
};

/// n floats as F32, F16 or BF16 little-endian bytes (F16 and BF16 rounded to nearest-even).
inline std::vector<std::uint8_t> encode(const float* x, std::size_t n, Dtype dtype) {
  GSQ_CHECK(decodes_to_float(dtype), "safetensors: encode: dtype ", to_string(dtype),
            " is not F32, F16 or BF16");
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  out.reserve(n * static_cast<std::size_t>(dtype_size(dtype)));
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == Dtype::kF32) w.u32(float_bits(x[i]));
    if (dtype == Dtype::kF16) w.uint(to_fp16(x[i]).bits, 2);
    if (dtype == Dtype::kBF16) w.uint(to_bf16(x[i]).bits, 2);
  }
  return out;
}

/// A safetensors image of `tensors`, laid out in the order given, with `metadata` as
/// __metadata__ when not empty.  The header is padded with spaces to a multiple of 8 bytes, as
/// the reference writer does, so the data section is aligned.  Throws on a duplicate or reserved
/// name, or bytes that do not match a shape.
inline std::vector<std::uint8_t> serialize(
    const std::vector<TensorData>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t at = 0;
  for (const TensorData& t : tensors) {
    GSQ_CHECK(t.name != "__metadata__" && !header.contains(t.name),
              "safetensors: serialize: tensor name '", t.name, "' is reserved or repeated");
    std::uint64_t elements = 1;
    for (const std::int64_t d : t.shape) {
      const auto dim = static_cast<std::uint64_t>(d);
      GSQ_CHECK(d >= 0 && (dim == 0 || elements <= (std::uint64_t{1} << 62) / dim),
                "safetensors: serialize: tensor '", t.name, "' has shape ", shape_string(t.shape));
      elements *= dim;
    }
    GSQ_CHECK(elements * static_cast<std::uint64_t>(dtype_size(t.dtype)) == t.bytes.size(),
              "safetensors: serialize: tensor '", t.name, "' of shape ", shape_string(t.shape),
              " and dtype ", to_string(t.dtype), " has ", t.bytes.size(), " bytes");
    header[t.name] = {{"dtype", to_string(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {at, at + t.bytes.size()}}};
    at += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<std::uint8_t> out;
  out.reserve(8 + text.size() + static_cast<std::size_t>(at));
  ByteWriter w(out);
  w.u64(text.size());
  w.bytes(text.data(), text.size());
  for (const TensorData& t : tensors) w.bytes(t.bytes.data(), t.bytes.size());
  return out;
}

/// Writes serialize(tensors, metadata) to `path` atomically (io/file.hpp).
inline void write(const std::string& path, const std::vector<TensorData>& tensors,
                  const std::map<std::string, std::string>& metadata = {}) {
  const std::vector<std::uint8_t> image = serialize(tensors, metadata);
  write_file_atomic(path, image.data(), image.size(), "safetensors");
}

}  // namespace gsq::safetensors
