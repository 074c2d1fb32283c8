// tensor_test.cpp: GseTensor, GseView and PackedGseTensor: layout, checks, packing, bytes().
#include "gsq/tensor.hpp"

#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/convert.hpp"
#include "reference.hpp"
#include "testing.hpp"

namespace {

using gsq::test::error_message;

using gsq::Axis;
using gsq::Index;
using gsq::MatrixRef;

template <int Bits, int G>
void check_pack_roundtrip(Index rows, Index cols, Axis axis, std::uint32_t seed) {
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), seed, -40, 40);
  const auto t =
      gsq::quantize<Bits, G>(MatrixRef<const float>::row_major(x.data(), rows, cols), axis);
  const auto packed = gsq::PackedGseTensor<Bits, G>::pack(t);
  const auto u = packed.unpack();
  REQUIRE(u.offset() == t.offset());
  REQUIRE(u.axis() == t.axis());
  const auto tv = t.view(), uv = u.view();
  if (!tv.empty()) {  // memcmp may not see the null data of an empty tensor
    REQUIRE(std::memcmp(tv.line_codes(0), uv.line_codes(0),
                        static_cast<std::size_t>(tv.lines() * tv.padded_length())) == 0);
    REQUIRE(std::memcmp(tv.line_exponents(0), uv.line_exponents(0),
                        static_cast<std::size_t>(tv.lines() * tv.groups_per_line())) == 0);
  }
  // bytes(): exactly Bits per value and 5 bits per group, each stream rounded up to 64-bit words.
  const auto groups = static_cast<std::size_t>(tv.lines() * tv.groups_per_line());
  const std::size_t words =
      (static_cast<std::size_t>(rows * cols) * Bits + 63) / 64 + (groups * 5 + 63) / 64;
  REQUIRE(packed.bytes() == sizeof(packed) + 8 * words);
  REQUIRE(t.bytes() ==
          sizeof(t) + static_cast<std::size_t>(tv.lines() * tv.padded_length()) + groups);
}

}  // namespace

TEST_CASE("pack and unpack are lossless for every width", "[tensor][packed]") {
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    check_pack_roundtrip<2, 16>(13, 47, axis, 1);
    check_pack_roundtrip<3, 32>(17, 64, axis, 2);
    check_pack_roundtrip<4, 32>(31, 100, axis, 3);
    check_pack_roundtrip<5, 32>(8, 33, axis, 4);
    check_pack_roundtrip<6, 64>(3, 129, axis, 5);
    check_pack_roundtrip<7, 16>(40, 7, axis, 6);
    check_pack_roundtrip<8, 256>(5, 300, axis, 7);
    check_pack_roundtrip<4, 32>(0, 10, axis, 8);
  }
}

// codes_at decodes 32 nibbles at a time where it can: every start parity and every length
// around those blocks against code_at, one code at a time.
TEST_CASE("codes_at equals code_at for every start and length", "[tensor][packed]") {
  const Index rows = 3, cols = 131;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), 11, -6, 6);
  const auto packed = gsq::PackedGseTensor<4, 32>::pack(
      gsq::quantize<4, 32>(MatrixRef<const float>::row_major(x.data(), rows, cols), Axis::kCols));
  std::vector<std::int8_t> got(static_cast<std::size_t>(cols));
  for (Index line = 0; line < rows; ++line) {
    for (Index pos = 0; pos < cols; ++pos) {
      for (Index count : {Index{1}, Index{2}, Index{31}, Index{32}, Index{33}, Index{64},
                          Index{65}, cols - pos}) {
        if (pos + count > cols) continue;
        packed.codes_at(line, pos, count, got.data());
        for (Index i = 0; i < count; ++i) {
          INFO("line " << line << " pos " << pos << " count " << count << " i " << i);
          REQUIRE(got[static_cast<std::size_t>(i)] == packed.code_at(line, pos + i));
        }
      }
    }
  }
}

TEST_CASE("packed GSE-INT4 costs 4 + 5/32 bits per value", "[tensor][packed]") {
  const Index rows = 256, cols = 4096;
  std::vector<float> x(static_cast<std::size_t>(rows * cols), 0.5f);
  const auto t =
      gsq::quantize<4>(MatrixRef<const float>::row_major(x.data(), rows, cols), Axis::kRows);
  const auto p = gsq::PackedGseTensor<4>::pack(t);
  const double bits_per_value =
      8.0 * static_cast<double>(p.bytes()) / static_cast<double>(rows * cols);
  INFO("bits per value: " << bits_per_value);
  REQUIRE(bits_per_value >= gsq::GseFormat<4>::kPackedBitsPerValue);
  REQUIRE(bits_per_value < gsq::GseFormat<4>::kPackedBitsPerValue + 0.001);
  REQUIRE(gsq::GseFormat<4>::kPackedBitsPerValue == 4.15625);
}

TEST_CASE("corrupt packed data is rejected, not decoded", "[tensor][packed][errors]") {
  std::vector<std::uint64_t> words(2, 0);
  words[0] = 0x8;  // value 0 is the 4-bit pattern 1000 = -8, outside [-7, 7]
  REQUIRE(error_message([&] {
            (void)gsq::PackedGseTensor<4>::from_words(words, 1, 16, Axis::kCols, 0);
          }) == "PackedGseTensor: corrupt code -8 at row 0, column 0");
  words[0] = 0x80000;  // value 4 (row 4 of a column) in a 16 x 1 tensor grouped along rows
  REQUIRE(error_message([&] {
            (void)gsq::PackedGseTensor<4>::from_words(words, 16, 1, Axis::kRows, 0);
          }) == "PackedGseTensor: corrupt code -8 at row 4, column 0");
  words[0] = 0;
  REQUIRE(error_message([&] {
            (void)gsq::PackedGseTensor<4>::from_words(words, 1, 17, Axis::kCols, 0);
          }) == "PackedGseTensor: a 1x17 tensor needs 3 words, got 2");
  REQUIRE(error_message([&] {
            (void)gsq::PackedGseTensor<4>::from_words(words, 1, 16, Axis::kCols, 1000);
          }).find("exponent offset 1000 is outside") != std::string::npos);
}

TEST_CASE("raw parts are checked against the format", "[tensor][errors]") {
  using T = gsq::GseTensor<8, 16>;
  std::vector<std::int8_t> codes(32, 1);  // 2 rows x 16
  std::vector<std::uint8_t> exps(2, 3);
  const T ok = T::from_parts(codes, exps, 2, 16, Axis::kCols, -10);
  REQUIRE(ok.value(1, 15) == std::ldexp(1.0f, -7));
  exps[1] = 32;
  REQUIRE(error_message([&] { (void)T::from_parts(codes, exps, 2, 16, Axis::kCols, -10); }) ==
          "GseView: group exponent 32 of line 1, group 0 exceeds the 5-bit field (0..31)");
  exps[1] = 31;
  codes[20] = -128;
  REQUIRE(error_message([&] { (void)T::from_parts(codes, exps, 2, 16, Axis::kCols, -10); }) ==
          "GseView: code -128 at line 1, position 4 is outside the symmetric range +-127");
  codes[20] = 0;
  REQUIRE(error_message([&] { (void)T::from_parts(codes, exps, 2, 15, Axis::kCols, -10); }) ==
          "GseView: padding code 1 at line 0, position 15 must be 0");
  REQUIRE(error_message([&] { (void)T::from_parts(codes, exps, 3, 16, Axis::kCols, -10); }) ==
          "GseTensor::from_parts: a 3x16 tensor grouped along cols needs 48 codes and 3 exponents, "
          "got 32 and 2");
  REQUIRE(error_message([&] {
            (void)T::from_parts(codes, exps, 2, 16, Axis::kCols, 500);
          }).find("exponent offset 500 is outside [") != std::string::npos);
  REQUIRE(error_message([&] { T t(-1, 3, Axis::kRows); }) == "GseTensor: negative shape -1x3");
}

TEST_CASE("views: line blocks, element access and shape bookkeeping", "[tensor]") {
  const Index rows = 70, cols = 50;
  const auto x = gsq::test::mixed_data(static_cast<std::size_t>(rows * cols), 9, -4, 4);
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    const auto t =
        gsq::quantize<8, 32>(MatrixRef<const float>::row_major(x.data(), rows, cols), axis);
    const auto v = t.view();
    REQUIRE(v.lines() == (axis == Axis::kCols ? rows : cols));
    REQUIRE(v.length() == (axis == Axis::kCols ? cols : rows));
    REQUIRE(v.padded_length() % 32 == 0);
    const auto block = v.line_block(5, 10);
    REQUIRE(block.lines() == 10);
    REQUIRE(block.length() == v.length());
    for (Index l = 0; l < 10; ++l) {
      for (Index p = 0; p < v.length(); ++p) {
        const Index i = block.shape().row_of(l, p), j = block.shape().col_of(l, p);
        const Index gi = v.shape().row_of(l + 5, p), gj = v.shape().col_of(l + 5, p);
        REQUIRE(block.code(i, j) == v.code(gi, gj));
        REQUIRE(block.value(i, j) == v.value(gi, gj));
      }
    }
    REQUIRE(error_message([&] { (void)v.line_block(v.lines() - 2, 3); }).find("out of range") !=
            std::string::npos);
    // A checked view over the tensor's own storage accepts it.
    const auto c = gsq::GseView<8, 32>::checked(v.line_codes(0), v.line_exponents(0), rows, cols,
                                                axis, v.offset());
    REQUIRE(c.value(3, 4) == v.value(3, 4));
  }
}
