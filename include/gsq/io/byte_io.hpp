// byte_io.hpp: little-endian byte writing and bounds-checked reading, the one implementation
// behind checkpoints (io/checkpoint.hpp) and optimizer state blobs (optim/state.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gsq/detail/check.hpp"

namespace gsq {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "gsq's byte formats store IEEE binary32 floats");

namespace detail {

/// The unsigned little-endian integer in p[0..bytes), bytes in 1..8, on any host byte order.
inline std::uint64_t load_le(const std::uint8_t* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace detail

/// Appends little-endian integers, IEEE floats and raw bytes to a byte vector, whatever the
/// host's byte order.  Refers to the vector (keep it alive).
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<std::uint8_t>& out) noexcept : out_(&out) {}

  /// The low `bytes` bytes of v (1..8), least significant first.
  void uint(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_->push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void u32(std::uint32_t v) { uint(v, 4); }
  void u64(std::uint64_t v) { uint(v, 8); }
  /// n floats as their binary32 bit patterns, 4 bytes each.
  void floats(const float* x, std::size_t n) {
    out_->reserve(out_->size() + 4 * n);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, &x[i], 4);
      u32(bits);
    }
  }
  void bytes(const void* x, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(x);
    out_->insert(out_->end(), p, p + n);
  }

 private:
  std::vector<std::uint8_t>* out_;
};

/// Reads what ByteWriter writes, front to back, from [data, data + size).  Every read checks the
/// remaining length first: reading past the end throws std::invalid_argument, "<who>: <noun> is
/// truncated: <what> needs n bytes at offset k but the <noun> has size bytes", and reads nothing.
/// Refers to the bytes (keep them alive).
class ByteReader {
 public:
  /// `who` names the caller and `noun` the data in messages ("AdamW::load_state", "state blob").
  ByteReader(const char* who, const char* noun, const std::uint8_t* data, std::size_t size)
      : who_(who), noun_(noun), data_(data), size_(size) {
    GSQ_CHECK(data != nullptr || size == 0, who, ": ", noun, " is null but its size is ", size);
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t position() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return size_ - pos_; }

  /// An unsigned integer of `bytes` bytes (1..8).
  std::uint64_t uint(int bytes, const char* what) {
    const std::uint8_t* p = take(static_cast<std::size_t>(bytes), what);
    return detail::load_le(p, bytes);
  }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(uint(4, what)); }
  std::uint64_t u64(const char* what) { return uint(8, what); }
  /// n floats from their binary32 bit patterns.
  void floats(float* dst, std::size_t n, const char* what) {
    need(n, 4, what);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t bits = u32(what);
      std::memcpy(&dst[i], &bits, 4);
    }
  }
  void bytes(std::uint8_t* dst, std::size_t n, const char* what) {
    const std::uint8_t* p = take(n, what);
    if (n > 0) std::memcpy(dst, p, n);
  }
  /// The next n bytes in place (no copy), and moves past them.
  const std::uint8_t* take(std::size_t n, const char* what) {
    need(n, 1, what);
    const std::uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

 private:
  /// Throws unless count items of `item` bytes remain (count * item cannot wrap: it is compared
  /// in items).
  void need(std::size_t count, std::size_t item, const char* what) const {
    GSQ_CHECK(count <= remaining() / item, who_, ": ", noun_, " is truncated: ", what, " needs ",
              count * item, " bytes at offset ", pos_, " but the ", noun_, " has ", size_,
              " bytes");
  }

  const char* who_;
  const char* noun_;
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace gsq
