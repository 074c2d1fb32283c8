// fuzz_common.hpp: what the fuzz targets share: a reader over the input bytes, and the way a
// target reports a finding (a message on stderr, then abort(), which libFuzzer records as a crash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace gsq::fuzz {

/// Consumes the fuzzer's bytes from the front; past the end it reads zeros.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint8_t u8() { return at_ < size_ ? data_[at_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return u16() | (std::uint32_t{u16()} << 16); }
  std::uint64_t u64() { return u32() | (std::uint64_t{u32()} << 32); }

  const std::uint8_t* rest() const { return data_ + at_; }
  std::size_t remaining() const { return size_ - at_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

/// Reports a finding: prints what broke and aborts, so the fuzzer saves the input.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "gsq fuzz: %s\n", what);
  std::abort();
}

#define GSQ_FUZZ_EXPECT(cond, what)       \
  do {                                    \
    if (!(cond)) ::gsq::fuzz::fail(what); \
  } while (0)

}  // namespace gsq::fuzz
