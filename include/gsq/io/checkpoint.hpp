// checkpoint.hpp: a versioned, checksummed container for training state, in memory.  Files:
// io/checkpoint_file.hpp (save_checkpoint, load_checkpoint).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/byte_io.hpp"

namespace gsq {

// File format (all integers little-endian)
// ---------------------------------------------------------------------------------------------
//   offset 0   8 bytes   magic "GSQCKPT\0"
//          8   u32       format version (kCheckpointVersion)
//         12   u32       entry count n
//         16   n entries, each:
//                u32 name length L (1..256), L bytes of name,
//                u32 kind (1 = float32 array, 2 = raw bytes, 3 = int64),
//                u64 payload length P, P bytes of payload
//   end - 4    u32       CRC-32 (IEEE 802.3, as zlib's crc32) of every byte before it
// A reader checks the magic, the version, every length against the bytes that remain, the
// names' uniqueness and the checksum before it hands out a single value, so a truncated or
// corrupt file is rejected whole, with a message naming what is wrong.  save_checkpoint
// (io/checkpoint_file.hpp) writes "<path>.tmp" and renames it over <path>, so an interrupted
// save leaves the old file intact.

inline constexpr std::uint32_t kCheckpointVersion = 1;

namespace detail {

inline const std::array<std::uint32_t, 256>& crc32_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

/// CRC-32 (IEEE), as zlib's crc32(0, data, size).
inline std::uint32_t crc32(const std::uint8_t* data, std::size_t size) noexcept {
  const auto& table = crc32_table();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline constexpr char kCheckpointMagic[8] = {'G', 'S', 'Q', 'C', 'K', 'P', 'T', '\0'};

/// Defined by io/checkpoint_file.hpp: the deprecated file members below reach the file
/// functions through it, so that this header does no file I/O.
template <typename Path>
struct CheckpointFiles;

}  // namespace detail

enum class CheckpointKind : std::uint32_t { kFloats = 1, kBytes = 2, kInt64 = 3 };

/// Collects named entries and writes them as one checkpoint file.
class CheckpointWriter {
 public:
  void add_floats(const std::string& name, const float* data, std::size_t count) {
    std::vector<std::uint8_t> payload;
    ByteWriter(payload).floats(data, count);
    add(name, CheckpointKind::kFloats, std::move(payload));
  }
  void add_bytes(const std::string& name, std::vector<std::uint8_t> bytes) {
    add(name, CheckpointKind::kBytes, std::move(bytes));
  }
  void add_int64(const std::string& name, std::int64_t value) {
    std::vector<std::uint8_t> payload;
    ByteWriter(payload).u64(static_cast<std::uint64_t>(value));
    add(name, CheckpointKind::kInt64, std::move(payload));
  }

  /// The file image.
  std::vector<std::uint8_t> serialize() const {
    std::vector<std::uint8_t> out;
    ByteWriter w(out);
    w.bytes(detail::kCheckpointMagic, 8);
    w.u32(kCheckpointVersion);
    w.u32(static_cast<std::uint32_t>(entries_.size()));
    for (const auto& [name, entry] : entries_) {
      w.u32(static_cast<std::uint32_t>(name.size()));
      w.bytes(name.data(), name.size());
      w.u32(static_cast<std::uint32_t>(entry.first));
      w.u64(entry.second.size());
      w.bytes(entry.second.data(), entry.second.size());
    }
    w.u32(detail::crc32(out.data(), out.size()));
    return out;
  }

  /// Deprecated since 0.2, removed in 0.3: include <gsq/io/checkpoint_file.hpp> and call
  /// save_checkpoint(writer, path).
  template <typename Path>
  [[deprecated("use gsq::save_checkpoint (io/checkpoint_file.hpp)")]] void save(
      const Path& path) const {
    detail::CheckpointFiles<Path>::save(*this, path);
  }

 private:
  void add(const std::string& name, CheckpointKind kind, std::vector<std::uint8_t> payload) {
    GSQ_CHECK(!name.empty() && name.size() <= 256, "checkpoint: entry names are 1..256 bytes");
    GSQ_CHECK(entries_.count(name) == 0, "checkpoint: duplicate entry '", name, "'");
    entries_.emplace(name, std::make_pair(kind, std::move(payload)));
  }
  std::map<std::string, std::pair<CheckpointKind, std::vector<std::uint8_t>>> entries_;
};

/// A checkpoint read and verified in full (see the format above).
class CheckpointReader {
 public:
  /// Parses a file image; throws std::invalid_argument naming the first problem.
  static CheckpointReader parse(const std::uint8_t* data, std::size_t size) {
    GSQ_CHECK(data != nullptr || size == 0, "checkpoint: null data");
    GSQ_CHECK(size >= 20, "checkpoint: ", size, " bytes is too short for a checkpoint (needs 20)");
    ByteReader in("checkpoint", "checkpoint", data, size - 4);  // everything before the CRC
    GSQ_CHECK(std::memcmp(in.take(8, "the magic"), detail::kCheckpointMagic, 8) == 0,
              "checkpoint: bad magic (not a gsq checkpoint)");
    const std::uint32_t version = in.u32("the version");
    GSQ_CHECK(version == kCheckpointVersion, "checkpoint: format version ", version,
              " is not supported (this build reads version ", kCheckpointVersion, ")");
    const auto stored = static_cast<std::uint32_t>(detail::load_le(data + size - 4, 4));
    const std::uint32_t actual = detail::crc32(data, size - 4);
    GSQ_CHECK(stored == actual, "checkpoint: checksum mismatch (stored ", stored, ", computed ",
              actual, "): the file is corrupt or truncated");
    const std::uint64_t count = in.u32("the entry count");
    CheckpointReader r;
    for (std::uint64_t e = 0; e < count; ++e) {
      GSQ_CHECK(in.remaining() >= 4, "checkpoint: entry ", e, " of ", count, " is truncated");
      const std::uint64_t name_len = in.u32("a name length");
      GSQ_CHECK(name_len >= 1 && name_len <= 256 && in.remaining() >= name_len + 12,
                "checkpoint: entry ", e, " has a bad name length ", name_len);
      std::string name(reinterpret_cast<const char*>(in.take(name_len, "a name")), name_len);
      const std::uint32_t kind = in.u32("an entry kind");
      const std::uint64_t len = in.u64("a payload length");
      GSQ_CHECK(kind >= 1 && kind <= 3, "checkpoint: entry '", name, "' has unknown kind ", kind);
      GSQ_CHECK(len <= in.remaining(), "checkpoint: entry '", name, "' claims ", len,
                " bytes but only ", in.remaining(), " remain");
      GSQ_CHECK((kind != 1 || len % 4 == 0) && (kind != 3 || len == 8), "checkpoint: entry '", name,
                "' has a payload of ", len, " bytes, wrong for its kind");
      GSQ_CHECK(r.entries_.count(name) == 0, "checkpoint: duplicate entry '", name, "'");
      const std::uint8_t* payload = in.take(len, "a payload");
      r.entries_.emplace(name, Entry{static_cast<CheckpointKind>(kind),
                                     std::vector<std::uint8_t>(payload, payload + len)});
    }
    GSQ_CHECK(in.remaining() == 0, "checkpoint: ", in.remaining(),
              " unexpected bytes after the last entry");
    return r;
  }

  /// Deprecated since 0.2, removed in 0.3: include <gsq/io/checkpoint_file.hpp> and call
  /// load_checkpoint(path).
  template <typename Path>
  [[deprecated("use gsq::load_checkpoint (io/checkpoint_file.hpp)")]] static CheckpointReader load(
      const Path& path) {
    return detail::CheckpointFiles<Path>::load(path);
  }

  bool has(const std::string& name) const { return entries_.count(name) != 0; }

  /// The float array `name`, which must hold exactly `count` values.
  void read_floats(const std::string& name, float* dst, std::size_t count) const {
    const Entry& e = get(name, CheckpointKind::kFloats);
    GSQ_CHECK(e.payload.size() == count * 4, "checkpoint: entry '", name, "' holds ",
              e.payload.size() / 4, " floats, expected ", count);
    ByteReader("checkpoint", "entry", e.payload.data(), e.payload.size())
        .floats(dst, count, name.c_str());
  }
  std::size_t float_count(const std::string& name) const {
    return get(name, CheckpointKind::kFloats).payload.size() / 4;
  }
  const std::vector<std::uint8_t>& bytes(const std::string& name) const {
    return get(name, CheckpointKind::kBytes).payload;
  }
  std::int64_t int64(const std::string& name) const {
    return static_cast<std::int64_t>(
        detail::load_le(get(name, CheckpointKind::kInt64).payload.data(), 8));
  }

 private:
  struct Entry {
    CheckpointKind kind;
    std::vector<std::uint8_t> payload;
  };
  const Entry& get(const std::string& name, CheckpointKind kind) const {
    const auto it = entries_.find(name);
    GSQ_CHECK(it != entries_.end(), "checkpoint: no entry '", name, "'");
    GSQ_CHECK(it->second.kind == kind, "checkpoint: entry '", name, "' has kind ",
              static_cast<std::uint32_t>(it->second.kind), ", expected ",
              static_cast<std::uint32_t>(kind));
    return it->second;
  }
  std::map<std::string, Entry> entries_;
};

}  // namespace gsq
