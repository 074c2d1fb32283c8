// checkpoint.hpp: a versioned, checksummed, atomically written container for training state.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"

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
// corrupt file is rejected whole, with a message naming what is wrong.  Writers write to
// "<path>.tmp" and rename it over <path>, so an interrupted save leaves the old file intact.

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

inline void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

inline std::uint64_t get_le(const std::uint8_t* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}

inline constexpr char kCheckpointMagic[8] = {'G', 'S', 'Q', 'C', 'K', 'P', 'T', '\0'};

}  // namespace detail

enum class CheckpointKind : std::uint32_t { kFloats = 1, kBytes = 2, kInt64 = 3 };

/// Collects named entries and writes them as one checkpoint file.
class CheckpointWriter {
 public:
  void add_floats(const std::string& name, const float* data, std::size_t count) {
    std::vector<std::uint8_t> payload;
    payload.reserve(count * 4);
    for (std::size_t i = 0; i < count; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, data + i, 4);
      detail::put_le(payload, bits, 4);
    }
    add(name, CheckpointKind::kFloats, std::move(payload));
  }
  void add_bytes(const std::string& name, std::vector<std::uint8_t> bytes) {
    add(name, CheckpointKind::kBytes, std::move(bytes));
  }
  void add_int64(const std::string& name, std::int64_t value) {
    std::vector<std::uint8_t> payload;
    detail::put_le(payload, static_cast<std::uint64_t>(value), 8);
    add(name, CheckpointKind::kInt64, std::move(payload));
  }

  /// The file image.
  std::vector<std::uint8_t> serialize() const {
    std::vector<std::uint8_t> out(detail::kCheckpointMagic, detail::kCheckpointMagic + 8);
    detail::put_le(out, kCheckpointVersion, 4);
    detail::put_le(out, entries_.size(), 4);
    for (const auto& [name, entry] : entries_) {
      detail::put_le(out, name.size(), 4);
      out.insert(out.end(), name.begin(), name.end());
      detail::put_le(out, static_cast<std::uint32_t>(entry.first), 4);
      detail::put_le(out, entry.second.size(), 8);
      out.insert(out.end(), entry.second.begin(), entry.second.end());
    }
    detail::put_le(out, detail::crc32(out.data(), out.size()), 4);
    return out;
  }

  /// Writes atomically: to path + ".tmp", flushed and closed, then renamed over path.
  void save(const std::string& path) const {
    const std::vector<std::uint8_t> image = serialize();
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    GSQ_CHECK(f != nullptr, "checkpoint: cannot create '", tmp, "'");
    const bool written = std::fwrite(image.data(), 1, image.size(), f) == image.size();
    const bool flushed = std::fflush(f) == 0;
    const bool closed = std::fclose(f) == 0;
    if (!(written && flushed && closed)) {
      std::remove(tmp.c_str());
      GSQ_CHECK(false, "checkpoint: writing '", tmp, "' failed (disk full?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      GSQ_CHECK(false, "checkpoint: cannot rename '", tmp, "' to '", path, "'");
    }
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
    GSQ_CHECK(std::memcmp(data, detail::kCheckpointMagic, 8) == 0,
              "checkpoint: bad magic (not a gsq checkpoint)");
    const auto version = static_cast<std::uint32_t>(detail::get_le(data + 8, 4));
    GSQ_CHECK(version == kCheckpointVersion, "checkpoint: format version ", version,
              " is not supported (this build reads version ", kCheckpointVersion, ")");
    const auto stored = static_cast<std::uint32_t>(detail::get_le(data + size - 4, 4));
    const std::uint32_t actual = detail::crc32(data, size - 4);
    GSQ_CHECK(stored == actual, "checkpoint: checksum mismatch (stored ", stored, ", computed ",
              actual, "): the file is corrupt or truncated");
    const std::size_t end = size - 4;
    const std::uint64_t count = detail::get_le(data + 12, 4);
    CheckpointReader r;
    std::size_t at = 16;
    for (std::uint64_t e = 0; e < count; ++e) {
      GSQ_CHECK(end - at >= 4, "checkpoint: entry ", e, " of ", count, " is truncated");
      const std::uint64_t name_len = detail::get_le(data + at, 4);
      at += 4;
      GSQ_CHECK(name_len >= 1 && name_len <= 256 && end - at >= name_len + 12, "checkpoint: entry ",
                e, " has a bad name length ", name_len);
      std::string name(reinterpret_cast<const char*>(data + at), name_len);
      at += name_len;
      const auto kind = static_cast<std::uint32_t>(detail::get_le(data + at, 4));
      const std::uint64_t len = detail::get_le(data + at + 4, 8);
      at += 12;
      GSQ_CHECK(kind >= 1 && kind <= 3, "checkpoint: entry '", name, "' has unknown kind ", kind);
      GSQ_CHECK(len <= end - at, "checkpoint: entry '", name, "' claims ", len, " bytes but only ",
                end - at, " remain");
      GSQ_CHECK((kind != 1 || len % 4 == 0) && (kind != 3 || len == 8), "checkpoint: entry '", name,
                "' has a payload of ", len, " bytes, wrong for its kind");
      GSQ_CHECK(r.entries_.count(name) == 0, "checkpoint: duplicate entry '", name, "'");
      r.entries_.emplace(name, Entry{static_cast<CheckpointKind>(kind),
                                     std::vector<std::uint8_t>(data + at, data + at + len)});
      at += len;
    }
    GSQ_CHECK(at == end, "checkpoint: ", end - at, " unexpected bytes after the last entry");
    return r;
  }

  /// Reads and parses a file.
  static CheckpointReader load(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    GSQ_CHECK(f != nullptr, "checkpoint: cannot open '", path, "'");
    std::vector<std::uint8_t> image;
    std::uint8_t buf[1 << 16];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) image.insert(image.end(), buf, buf + n);
    const bool error = std::ferror(f) != 0;
    std::fclose(f);
    GSQ_CHECK(!error, "checkpoint: error reading '", path, "'");
    return parse(image.data(), image.size());
  }

  bool has(const std::string& name) const { return entries_.count(name) != 0; }

  /// The float array `name`, which must hold exactly `count` values.
  void read_floats(const std::string& name, float* dst, std::size_t count) const {
    const Entry& e = get(name, CheckpointKind::kFloats);
    GSQ_CHECK(e.payload.size() == count * 4, "checkpoint: entry '", name, "' holds ",
              e.payload.size() / 4, " floats, expected ", count);
    for (std::size_t i = 0; i < count; ++i) {
      const auto bits = static_cast<std::uint32_t>(detail::get_le(e.payload.data() + 4 * i, 4));
      std::memcpy(dst + i, &bits, 4);
    }
  }
  std::size_t float_count(const std::string& name) const {
    return get(name, CheckpointKind::kFloats).payload.size() / 4;
  }
  const std::vector<std::uint8_t>& bytes(const std::string& name) const {
    return get(name, CheckpointKind::kBytes).payload;
  }
  std::int64_t int64(const std::string& name) const {
    return static_cast<std::int64_t>(
        detail::get_le(get(name, CheckpointKind::kInt64).payload.data(), 8));
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
