// fuzz_checkpoint.cpp: the checkpoint reader on untrusted bytes, and writer -> reader round trips.
//
// Input: [mode] [bytes...]
//   mode % 3 == 0  bytes are a file image: CheckpointReader::parse(bytes)
//   mode % 3 == 1  bytes are a file image without its CRC-32, which is appended first, so the
//                  fuzzer gets past the checksum into the entry parser
//   mode % 3 == 2  bytes are records [name length u8][name][kind u8][payload length u8][payload]:
//                  written with CheckpointWriter, parsed back and compared; the image with one
//                  byte flipped must then be rejected (CRC-32 catches every single-byte error)
// parse() may throw std::invalid_argument (the documented error path) and nothing else; anything
// it accepts must be readable without going out of bounds.
#include <cstdint>
#include <cstring>
#include <gsq/io/checkpoint.hpp>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

/// Reads every accessor of a parsed checkpoint for the names a test might use.
void touch(const gsq::CheckpointReader& r, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (!r.has(name)) continue;
    try {
      std::vector<float> f(r.float_count(name));
      r.read_floats(name, f.data(), f.size());
    } catch (const std::invalid_argument&) {
    }
    try {
      (void)r.bytes(name).size();
    } catch (const std::invalid_argument&) {
    }
    try {
      (void)r.int64(name);
    } catch (const std::invalid_argument&) {
    }
  }
}

/// The names of the entries in a well-formed image (for touch()); stops at the first oddity.
std::vector<std::string> names_in(const std::vector<std::uint8_t>& image) {
  std::vector<std::string> names;
  std::size_t at = 16;
  while (image.size() >= 4 && at + 4 <= image.size() - 4) {
    const std::uint64_t len = gsq::detail::load_le(image.data() + at, 4);
    at += 4;
    if (len > 256 || at + len + 12 > image.size()) break;
    names.emplace_back(reinterpret_cast<const char*>(image.data() + at), len);
    at += len;
    const std::uint64_t payload = gsq::detail::load_le(image.data() + at + 4, 8);
    at += 12;
    if (payload > image.size() - at) break;
    at += payload;
  }
  return names;
}

void parse_image(const std::vector<std::uint8_t>& image) {
  try {
    const auto r = gsq::CheckpointReader::parse(image.data(), image.size());
    touch(r, names_in(image));
    touch(r, {"", "a", "step", "missing"});
  } catch (const std::invalid_argument&) {
  }
}

void round_trip(gsq::fuzz::Bytes& in) {
  gsq::CheckpointWriter writer;
  struct Expected {
    int kind;
    std::vector<std::uint8_t> payload;
  };
  std::map<std::string, Expected> expected;
  while (in.remaining() > 0) {
    const std::size_t name_len = in.u8();
    std::string name;
    for (std::size_t i = 0; i < name_len && in.remaining() > 0; ++i) {
      name.push_back(static_cast<char>(in.u8()));
    }
    const int kind = 1 + in.u8() % 3;
    std::vector<std::uint8_t> payload(in.u8());
    for (auto& b : payload) b = in.u8();
    try {
      if (kind == 1) {
        payload.resize(payload.size() / 4 * 4);
        std::vector<float> floats(payload.size() / 4);
        if (!floats.empty()) std::memcpy(floats.data(), payload.data(), payload.size());
        writer.add_floats(name, floats.data(), floats.size());
      } else if (kind == 2) {
        writer.add_bytes(name, payload);
      } else {
        payload.resize(8);
        std::int64_t v;
        std::memcpy(&v, payload.data(), 8);
        writer.add_int64(name, v);
      }
    } catch (const std::invalid_argument&) {
      // Empty, too long or duplicate names are rejected; anything else is a finding.
      GSQ_FUZZ_EXPECT(name.empty() || name.size() > 256 || expected.count(name) != 0,
                      "CheckpointWriter rejected a valid entry");
      continue;
    }
    GSQ_FUZZ_EXPECT(!name.empty() && expected.count(name) == 0,
                    "CheckpointWriter accepted an empty or duplicate name");
    expected[name] = Expected{kind, payload};
  }

  std::vector<std::uint8_t> image = writer.serialize();
  const auto r = gsq::CheckpointReader::parse(image.data(), image.size());  // must not throw
  for (const auto& [name, e] : expected) {
    GSQ_FUZZ_EXPECT(r.has(name), "an entry written is missing");
    if (e.kind == 1) {
      GSQ_FUZZ_EXPECT(r.float_count(name) * 4 == e.payload.size(), "float count changed");
      std::vector<float> f(r.float_count(name));
      r.read_floats(name, f.data(), f.size());
      GSQ_FUZZ_EXPECT(f.empty() || std::memcmp(f.data(), e.payload.data(), e.payload.size()) == 0,
                      "float bits changed");
    } else if (e.kind == 2) {
      GSQ_FUZZ_EXPECT(r.bytes(name) == e.payload, "bytes changed");
    } else {
      std::int64_t v;
      std::memcpy(&v, e.payload.data(), 8);
      GSQ_FUZZ_EXPECT(r.int64(name) == v, "int64 changed");
    }
  }

  // One flipped byte anywhere: rejected, never accepted or crashed on.
  const std::size_t at = (expected.size() * 7919 + image.size()) % image.size();
  image[at] ^= static_cast<std::uint8_t>(1 + expected.size() % 255);
  bool rejected = false;
  try {
    (void)gsq::CheckpointReader::parse(image.data(), image.size());
  } catch (const std::invalid_argument&) {
    rejected = true;
  }
  GSQ_FUZZ_EXPECT(rejected, "a checkpoint with a flipped byte was accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  gsq::fuzz::Bytes in(data, size);
  const int mode = in.u8() % 3;
  if (mode == 2) {
    round_trip(in);
    return 0;
  }
  // A copy of exactly the bytes given, so that reads past the end are caught by ASan.
  std::vector<std::uint8_t> image(in.rest(), in.rest() + in.remaining());
  if (mode == 1) {
    const std::uint32_t crc = gsq::detail::crc32(image.data(), image.size());
    for (int i = 0; i < 4; ++i) image.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));
  }
  parse_image(image);
  return 0;
}
