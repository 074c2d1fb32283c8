// file.hpp: whole-file reading and atomic writing, the one place gsq touches the file system.
// Not part of the umbrella gsq.hpp: include it (or io/checkpoint_file.hpp, or a model's loader)
// to read or write files.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
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

namespace detail {

/// fsync of the directory holding `path`, so that a rename into it survives a crash.  A file
/// system that cannot sync directories (EINVAL, ENOTSUP) is not an error.
inline bool sync_parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL || errno == ENOTSUP;
  ::close(fd);
  return ok;
}

}  // namespace detail

/// Writes [data, data + size) to `path` atomically and durably: to path + ".tmp", flushed,
/// fsync'ed and closed, renamed over path, then the directory fsync'ed, so an interrupted write
/// (even a power cut) leaves either the old file or the new one, never a mix.  Throws
/// std::invalid_argument naming the step that failed, after removing the temporary file.
inline void write_file_atomic(const std::string& path, const std::uint8_t* data, std::size_t size,
                              const char* who) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  GSQ_CHECK(f != nullptr, who, ": cannot create '", tmp, "'");
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  const bool flushed = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!(written && flushed && closed)) {
    std::remove(tmp.c_str());
    GSQ_CHECK(false, who, ": writing '", tmp, "' failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    GSQ_CHECK(false, who, ": cannot rename '", tmp, "' to '", path, "'");
  }
  GSQ_CHECK(detail::sync_parent_directory(path), who, ": cannot sync the directory of '", path,
            "'");
}

}  // namespace gsq
