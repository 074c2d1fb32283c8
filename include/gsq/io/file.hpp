// file.hpp: whole-file reading and atomic writing, the one place gsq touches the file system.
// Not part of the umbrella gsq.hpp: include it (or io/checkpoint_file.hpp, or a model's loader)
// to read or write files.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gsq/detail/check.hpp"

namespace gsq {

/// The bytes of the file at `path`.  Throws std::invalid_argument, "<who>: cannot open 'path'",
/// "<who>: 'path' holds more than max_bytes bytes" or "<who>: error reading 'path'".
inline std::vector<std::uint8_t> read_file(const std::string& path, const char* who,
                                           std::uint64_t max_bytes = std::uint64_t{1} << 40) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  GSQ_CHECK(f != nullptr, who, ": cannot open '", path, "'");
  std::vector<std::uint8_t> image;
  std::uint8_t buf[1 << 16];
  std::size_t n;
  bool too_large = false;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    if (image.size() + n > max_bytes) {
      too_large = true;
      break;
    }
    image.insert(image.end(), buf, buf + n);
  }
  const bool error = std::ferror(f) != 0;
  std::fclose(f);
  GSQ_CHECK(!too_large, who, ": '", path, "' holds more than ", max_bytes, " bytes");
  GSQ_CHECK(!error, who, ": error reading '", path, "'");
  return image;
}

/// Writes [data, data + size) to `path` atomically: to path + ".tmp", flushed and closed, then
/// renamed over path, so an interrupted write leaves the old file intact.  Throws
/// std::invalid_argument naming the step that failed, after removing the temporary file.
inline void write_file_atomic(const std::string& path, const std::uint8_t* data, std::size_t size,
                              const char* who) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  GSQ_CHECK(f != nullptr, who, ": cannot create '", tmp, "'");
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  const bool flushed = std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!(written && flushed && closed)) {
    std::remove(tmp.c_str());
    GSQ_CHECK(false, who, ": writing '", tmp, "' failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    GSQ_CHECK(false, who, ": cannot rename '", tmp, "' to '", path, "'");
  }
}

}  // namespace gsq
