// fuzz_checkpoint.cpp: the checkpoint reader on untrusted bytes, and writer -> reader round trips.
//
// Input: [mode] [bytes...]
//   mode % 3 == 0  bytes are a file image: CheckpointReader::parse(bytes)
//   mode % 3 == 1  bytes are a file image without its CRC-32, which is appended first, so the
//                  fuzzer gets past the checksum into the entry parser
//   mode % 3 == 2  bytes are records [name length u8][name][kind u8][payload length u8][payload]:
//                  written with CheckpointWriter, parsed back and compared; the image with one
//                  byte flipped must then be rejected (CRC-32 catches every single-byte error)
// The harness restates the format (read_spec): parse() must accept exactly the images it allows,
// reject the others with std::invalid_argument naming the first problem, and give every entry
// of an accepted image back bit for bit, through accessors that do not throw for the right
// kind and say why for the wrong kind or an absent name.
#include <cstdint>
#include <cstring>
#include <gsq/io/checkpoint.hpp>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

/// CRC-32 (IEEE, reflected polynomial 0xEDB88320) bit by bit, independent of the library's table.
std::uint32_t crc32_bitwise(const std::uint8_t* data, std::size_t size) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) {
    c ^= data[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::uint64_t le(const std::vector<std::uint8_t>& image, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= std::uint64_t{image[at + static_cast<std::size_t>(i)]} << (8 * i);
  return v;
}

struct Entry {
  std::uint32_t kind;
  std::vector<std::uint8_t> payload;
};

/// The file format of checkpoint.hpp, restated: the entries of a valid image, or (in `error`)
/// the part of the message CheckpointReader::parse must give for the first thing wrong, checked
/// in the order the format lists them.
struct Spec {
  std::map<std::string, Entry> entries;
  std::string error;
};

Spec read_spec(const std::vector<std::uint8_t>& image) {
  Spec s;
  const std::size_t size = image.size();
  if (size < 20) {
    s.error = "is too short for a checkpoint (needs 20)";
    return s;
  }
  if (std::memcmp(image.data(), "GSQCKPT\0", 8) != 0) {
    s.error = "checkpoint: bad magic";
    return s;
  }
  if (le(image, 8, 4) != 1) {
    s.error = "checkpoint: format version " + std::to_string(le(image, 8, 4)) + " is not supported";
    return s;
  }
  if (le(image, size - 4, 4) != crc32_bitwise(image.data(), size - 4)) {
    s.error = "checkpoint: checksum mismatch";
    return s;
  }
  const std::size_t end = size - 4;
  const std::uint64_t count = le(image, 12, 4);
  std::size_t at = 16;
  for (std::uint64_t e = 0; e < count; ++e) {
    if (end - at < 4) {
      s.error = "checkpoint: entry " + std::to_string(e) + " of " + std::to_string(count) +
                " is truncated";
      return s;
    }
    const std::uint64_t name_len = le(image, at, 4);
    at += 4;
    if (name_len < 1 || name_len > 256 || end - at < name_len + 12) {
      s.error = "checkpoint: entry " + std::to_string(e) + " has a bad name length " +
                std::to_string(name_len);
      return s;
    }
    const std::string name(reinterpret_cast<const char*>(image.data() + at), name_len);
    at += name_len;
    const std::uint64_t kind = le(image, at, 4);
    const std::uint64_t len = le(image, at + 4, 8);
    at += 12;
    if (kind < 1 || kind > 3) {
      s.error = "checkpoint: entry '" + name + "' has unknown kind " + std::to_string(kind);
      return s;
    }
    if (len > end - at) {
      s.error = "checkpoint: entry '" + name + "' claims " + std::to_string(len) + " bytes";
      return s;
    }
    if ((kind == 1 && len % 4 != 0) || (kind == 3 && len != 8)) {
      s.error = "checkpoint: entry '" + name + "' has a payload of " + std::to_string(len) +
                " bytes, wrong for its kind";
      return s;
    }
    if (s.entries.count(name) != 0) {
      s.error = "checkpoint: duplicate entry '" + name + "'";
      return s;
    }
    s.entries[name] =
        Entry{static_cast<std::uint32_t>(kind),
              std::vector<std::uint8_t>(image.begin() + static_cast<std::ptrdiff_t>(at),
                                        image.begin() + static_cast<std::ptrdiff_t>(at + len))};
    at += len;
  }
  if (at != end) s.error = "checkpoint: " + std::to_string(end - at) + " unexpected bytes";
  return s;
}

/// What what() shows of a message: up to its first NUL (entry names may hold any byte).
std::string visible(const std::string& message) { return message.substr(0, message.find('\0')); }

/// Runs fn, which must throw std::invalid_argument with a message containing `part`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& part, const char* what) {
  std::string message = "(no exception)";
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  GSQ_FUZZ_EXPECT(message.find(visible(part)) != std::string::npos, what);
}

/// A parsed checkpoint against the entries the format says it holds: each is there, readable
/// through the accessor of its kind (outside any try: it must not throw) with the stored bits,
/// and the other accessors and absent names are errors that say so.
void check_entries(const gsq::CheckpointReader& r, const std::map<std::string, Entry>& entries) {
  for (const auto& entry : entries) {
    const std::string& name = entry.first;  // (lambdas cannot capture structured bindings)
    const Entry& e = entry.second;
    GSQ_FUZZ_EXPECT(r.has(name), "an entry of the image is missing");
    const std::string quoted =
        "checkpoint: entry '" + name + "' has kind " + std::to_string(e.kind);
    if (e.kind == 1) {
      GSQ_FUZZ_EXPECT(r.float_count(name) * 4 == e.payload.size(), "float count differs");
      std::vector<float> f(r.float_count(name));
      r.read_floats(name, f.data(), f.size());
      GSQ_FUZZ_EXPECT(f.empty() || std::memcmp(f.data(), e.payload.data(), e.payload.size()) == 0,
                      "float bits differ from the image");
      expect_error([&] { r.read_floats(name, f.data(), f.size() + 1); },
                   "checkpoint: entry '" + name + "' holds " + std::to_string(f.size()) +
                       " floats, expected " + std::to_string(f.size() + 1),
                   "read_floats with the wrong count did not say so");
    } else if (e.kind == 2) {
      GSQ_FUZZ_EXPECT(r.bytes(name) == e.payload, "bytes differ from the image");
    } else {
      GSQ_FUZZ_EXPECT(static_cast<std::uint64_t>(r.int64(name)) == le(e.payload, 0, 8),
                      "int64 differs from the image");
    }
    for (std::uint32_t other = 1; other <= 3; ++other) {
      if (other == e.kind) continue;
      const std::string part = quoted + ", expected " + std::to_string(other);
      if (other == 1)
        expect_error([&] { (void)r.float_count(name); }, part, "float_count of another kind");
      if (other == 2) expect_error([&] { (void)r.bytes(name); }, part, "bytes of another kind");
      if (other == 3) expect_error([&] { (void)r.int64(name); }, part, "int64 of another kind");
    }
  }
  for (const std::string name : {"missing", "", "a"}) {
    if (entries.count(name) != 0) continue;
    GSQ_FUZZ_EXPECT(!r.has(name), "has() found an entry the image does not hold");
    const std::string part = "checkpoint: no entry '" + name + "'";
    expect_error([&] { (void)r.float_count(name); }, part, "float_count of an absent entry");
    expect_error([&] { (void)r.bytes(name); }, part, "bytes of an absent entry");
    expect_error([&] { (void)r.int64(name); }, part, "int64 of an absent entry");
  }
}

/// parse() accepts exactly the images the format allows, and rejects the others saying why.
void parse_image(const std::vector<std::uint8_t>& image) {
  const Spec spec = read_spec(image);
  gsq::CheckpointReader r;
  try {
    r = gsq::CheckpointReader::parse(image.data(), image.size());
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(!spec.error.empty(), "parse rejected an image the format allows");
    GSQ_FUZZ_EXPECT(std::string(e.what()).find(visible(spec.error)) != std::string::npos,
                    "parse's error is not the first problem of the image");
    return;
  }
  GSQ_FUZZ_EXPECT(spec.error.empty(), "parse accepted an image the format rejects");
  check_entries(r, spec.entries);
}

void round_trip(gsq::fuzz::Bytes& in) {
  gsq::CheckpointWriter writer;
  std::map<std::string, Entry> expected;
  while (in.remaining() > 0) {
    const std::size_t name_len = in.u8();
    std::string name;
    for (std::size_t i = 0; i < name_len && in.remaining() > 0; ++i) {
      name.push_back(static_cast<char>(in.u8()));
    }
    const std::uint32_t kind = 1 + in.u8() % 3;
    std::vector<std::uint8_t> payload(in.u8());
    for (auto& b : payload) b = in.u8();
    // Empty names (the u8 length keeps them under 257 bytes) and duplicates are rejected.
    std::string reason;
    if (name.empty()) reason = "checkpoint: entry names are 1..256 bytes";
    if (expected.count(name) != 0) reason = "checkpoint: duplicate entry '" + name + "'";
    std::string error;
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
    } catch (const std::invalid_argument& e) {
      error = e.what();
    }
    GSQ_FUZZ_EXPECT(error == visible(reason),
                    "CheckpointWriter accepted a bad entry or rejected a good one");
    if (reason.empty()) expected[name] = Entry{kind, payload};
  }

  std::vector<std::uint8_t> image = writer.serialize();
  const auto r = gsq::CheckpointReader::parse(image.data(), image.size());  // must not throw
  const Spec spec = read_spec(image);
  GSQ_FUZZ_EXPECT(spec.error.empty(), "CheckpointWriter wrote an image the format rejects");
  GSQ_FUZZ_EXPECT(spec.entries.size() == expected.size(), "the image holds other entries");
  for (const auto& [name, e] : expected) {
    GSQ_FUZZ_EXPECT(spec.entries.count(name) != 0 && spec.entries.at(name).kind == e.kind &&
                        spec.entries.at(name).payload == e.payload,
                    "the image does not hold what was written");
  }
  check_entries(r, expected);

  // One flipped byte anywhere: rejected (CRC-32 catches every single-byte error), with the
  // reason the format gives for it (magic, version or checksum).
  const std::size_t at = (expected.size() * 7919 + image.size()) % image.size();
  image[at] ^= static_cast<std::uint8_t>(1 + expected.size() % 255);
  const Spec flipped = read_spec(image);
  GSQ_FUZZ_EXPECT(!flipped.error.empty(), "the format accepts an image with a flipped byte");
  expect_error([&] { (void)gsq::CheckpointReader::parse(image.data(), image.size()); },
               flipped.error, "a checkpoint with a flipped byte was accepted, or not said why");
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
