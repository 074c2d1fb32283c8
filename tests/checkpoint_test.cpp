// checkpoint_test.cpp: the checkpoint container: round trip, and rejection of every truncation
// and every corrupted byte.
#include "gsq/io/checkpoint.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/io/checkpoint_file.hpp"
#include "testing.hpp"

namespace {

gsq::CheckpointWriter sample() {
  gsq::CheckpointWriter w;
  const std::vector<float> a = {1.5f, -0.0f, 3e-38f, 1e30f, -7.25f};
  w.add_floats("layer0.a", a.data(), a.size());
  w.add_bytes("optimizer", {1, 2, 3, 255});
  w.add_int64("step", -1234567890123LL);
  return w;
}

}  // namespace

TEST_CASE("checkpoint: entries round-trip bit for bit", "[checkpoint]") {
  const auto image = sample().serialize();
  const auto r = gsq::CheckpointReader::parse(image.data(), image.size());
  std::vector<float> a(5);
  r.read_floats("layer0.a", a.data(), a.size());
  REQUIRE(a[0] == 1.5f);
  REQUIRE(std::signbit(a[1]));
  REQUIRE(a[2] == 3e-38f);
  REQUIRE(a[4] == -7.25f);
  REQUIRE(r.bytes("optimizer") == std::vector<std::uint8_t>{1, 2, 3, 255});
  REQUIRE(r.int64("step") == -1234567890123LL);
  REQUIRE(r.has("step"));
  REQUIRE_FALSE(r.has("nope"));
  // The CRC is zlib's: crc32("123456789") = 0xCBF43926.
  const char* check = "123456789";
  REQUIRE(gsq::detail::crc32(reinterpret_cast<const std::uint8_t*>(check), 9) == 0xCBF43926u);
}

TEST_CASE("checkpoint: every truncation and every corrupted byte is rejected", "[checkpoint]") {
  const auto image = sample().serialize();
  for (std::size_t n = 0; n < image.size(); ++n) {
    const std::string msg =
        gsq::test::error_message([&] { (void)gsq::CheckpointReader::parse(image.data(), n); });
    INFO("truncated to " << n << " bytes: " << msg);
    REQUIRE(gsq::test::contains(msg, "checkpoint: "));
  }
  for (std::size_t k = 0; k < image.size(); ++k) {
    for (std::uint8_t flip : {0x01, 0x80}) {
      auto bad = image;
      bad[k] ^= flip;
      const std::string msg = gsq::test::error_message(
          [&] { (void)gsq::CheckpointReader::parse(bad.data(), bad.size()); });
      INFO("byte " << k << " flipped: " << msg);
      REQUIRE(gsq::test::contains(msg, "checkpoint: "));
    }
  }
}

TEST_CASE("checkpoint: wrong sizes, kinds and names are named", "[checkpoint]") {
  const auto image = sample().serialize();
  const auto r = gsq::CheckpointReader::parse(image.data(), image.size());
  std::vector<float> a(4);
  using gsq::test::contains;
  using gsq::test::error_message;
  REQUIRE(contains(error_message([&] { r.read_floats("layer0.a", a.data(), 4); }),
                   "holds 5 floats, expected 4"));
  REQUIRE(contains(error_message([&] { (void)r.int64("optimizer"); }), "'optimizer' has kind 2"));
  REQUIRE(contains(error_message([&] { (void)r.bytes("missing"); }), "no entry 'missing'"));
  gsq::CheckpointWriter w;
  w.add_int64("x", 1);
  REQUIRE(contains(error_message([&] { w.add_int64("x", 2); }), "duplicate entry 'x'"));
}

TEST_CASE("checkpoint: files are written atomically and read back", "[checkpoint]") {
  const std::string path = "gsq_checkpoint_test.bin";
  gsq::save_checkpoint(sample(), path);
  const auto r = gsq::load_checkpoint(path);
  REQUIRE(r.int64("step") == -1234567890123LL);
  std::FILE* tmp = std::fopen((path + ".tmp").c_str(), "rb");
  REQUIRE(tmp == nullptr);  // renamed away
  // A failed save (no such directory) throws and leaves the old file as it was.
  REQUIRE(gsq::test::contains(
      gsq::test::error_message([&] { gsq::save_checkpoint(sample(), "no/such/dir/ckpt.bin"); }),
      "cannot create"));
  REQUIRE(gsq::load_checkpoint(path).int64("step") == -1234567890123LL);
  std::remove(path.c_str());
  REQUIRE(gsq::test::contains(gsq::test::error_message([&] { (void)gsq::load_checkpoint(path); }),
                              "cannot open"));
}

// The file members of 0.1, deprecated in 0.2 (removed in 0.3), still work through the old
// header (which forwards to io/checkpoint_file.hpp).
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
TEST_CASE("checkpoint: the deprecated save and load members still work", "[checkpoint]") {
  const std::string path = "gsq_checkpoint_deprecated_test.bin";
  sample().save(path);
  REQUIRE(gsq::CheckpointReader::load(path).int64("step") == -1234567890123LL);
  std::remove(path.c_str());
}
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
