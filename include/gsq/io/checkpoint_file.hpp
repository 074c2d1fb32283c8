// checkpoint_file.hpp: checkpoints to and from files (the format is in io/checkpoint.hpp).
#pragma once

#include <string>

#include "gsq/io/checkpoint.hpp"
#include "gsq/io/file.hpp"

namespace gsq {

/// Writes the checkpoint atomically: to path + ".tmp", flushed and closed, then renamed over
/// path, so an interrupted save leaves the old file intact.  Throws std::invalid_argument
/// ("checkpoint: cannot create ...", "... failed (disk full?)", "cannot rename ...").
inline void save_checkpoint(const CheckpointWriter& writer, const std::string& path) {
  const std::vector<std::uint8_t> image = writer.serialize();
  write_file_atomic(path, image.data(), image.size(), "checkpoint");
}

/// Reads and verifies a checkpoint file (CheckpointReader::parse); throws std::invalid_argument
/// naming the first problem ("checkpoint: cannot open ...", a parse error).
inline CheckpointReader load_checkpoint(const std::string& path) {
  const std::vector<std::uint8_t> image = read_file(path, "checkpoint");
  return CheckpointReader::parse(image.data(), image.size());
}

namespace detail {

/// What the deprecated CheckpointWriter::save and CheckpointReader::load call.
template <typename Path>
struct CheckpointFiles {
  static void save(const CheckpointWriter& writer, const std::string& path) {
    save_checkpoint(writer, path);
  }
  static CheckpointReader load(const std::string& path) { return load_checkpoint(path); }
};

}  // namespace detail

}  // namespace gsq
