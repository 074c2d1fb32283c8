// tokenizer_test.cpp: the llama2.c tokenizer (generated images, hostile images, and tok512.bin
// when present) and exact fp32 inference of stories260K.
#include "gsq/models/llama/tokenizer.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/models/llama/runner.hpp"
#include "models.hpp"
#include "testing.hpp"

namespace {

/// A tokenizer image: <unk>, <s>, </s>, the 256 byte pieces, then `extra` (piece, score).
std::vector<unsigned char> image(const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::pair<std::string, float>> tokens = {
      {"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.emplace_back(buf, 0.0f);
  }
  tokens.insert(tokens.end(), extra.begin(), extra.end());
  std::vector<unsigned char> out(4);
  const std::int32_t max_len = 16;
  std::memcpy(out.data(), &max_len, 4);
  for (const auto& [piece, score] : tokens) {
    const auto len = static_cast<std::int32_t>(piece.size());
    const auto* s = reinterpret_cast<const unsigned char*>(&score);
    const auto* l = reinterpret_cast<const unsigned char*>(&len);
    out.insert(out.end(), s, s + 4);
    out.insert(out.end(), l, l + 4);
    out.insert(out.end(), piece.begin(), piece.end());
  }
  return out;
}

const std::vector<std::pair<std::string, float>> kExtra = {
    {" ", -1}, {"a", -2}, {"b", -3}, {"ab", -1.5f}, {" ab", -0.5f}, {"ba", -0.7f}, {"é", -4}};

}  // namespace

TEST_CASE("tokenizer: BPE merges by score, byte fallback, decode", "[tokenizer]") {
  const auto img = image(kExtra);
  const int vocab = 259 + static_cast<int>(kExtra.size());
  const auto t = gsq::Tokenizer::parse(img.data(), img.size(), vocab);
  const int space = 259, a = 260, b = 261, ab = 262, sab = 263, ba = 264, e_acute = 265;
  // " aba": the pieces " ", a, b, a; best merge " ab" needs "ab" first: ab (-1.5) vs ba (-0.7):
  // ba wins -> " ", a, ba; then no " a"... so the result follows the scores.
  REQUIRE(t.encode("ab", true) == std::vector<int>{1, sab});
  REQUIRE(t.encode("aba", false) == std::vector<int>{space, a, ba});
  REQUIRE(t.encode("", true, true) == std::vector<int>{1, 2});
  // é has a token; ü does not and falls back to its two UTF-8 bytes.
  REQUIRE(t.encode("é", false) == std::vector<int>{space, e_acute});
  REQUIRE(t.encode("ü", false) == std::vector<int>{space, 0xC3 + 3, 0xBC + 3});
  // Decoding drops the space after BOS and turns <0xNN> into the byte.
  REQUIRE(t.decode(std::vector<int>{1, sab, 0xC3 + 3, 0xBC + 3}) == "abü");
  REQUIRE(t.decode(a, b) == "b");
  (void)ab;
}

TEST_CASE("tokenizer: truncated and hostile images are rejected with a reason", "[tokenizer]") {
  const auto img = image(kExtra);
  const int vocab = 259 + static_cast<int>(kExtra.size());
  using gsq::test::contains;
  using gsq::test::error_message;
  for (std::size_t n = 0; n < img.size(); n += 7) {
    const auto msg = error_message([&] { (void)gsq::Tokenizer::parse(img.data(), n, vocab); });
    INFO("truncated to " << n << ": " << msg);
    REQUIRE(contains(msg, "tokenizer: "));
  }
  REQUIRE(contains(
      error_message([&] { (void)gsq::Tokenizer::parse(img.data(), img.size(), vocab - 1); }),
      "trailing bytes"));
  auto bad = img;
  const std::int32_t huge = 1 << 30;
  std::memcpy(bad.data() + 4 + 4, &huge, 4);  // token 0's length
  REQUIRE(
      contains(error_message([&] { (void)gsq::Tokenizer::parse(bad.data(), bad.size(), vocab); }),
               "token 0 has length 1073741824"));
  REQUIRE(contains(error_message([&] { (void)gsq::Tokenizer::parse(img.data(), img.size(), 2); }),
                   "vocab_size 2"));
}

TEST_CASE("tokenizer: a byte without its fallback token is an error, not a read past the end",
          "[tokenizer]") {
  // <unk>, <s>, </s> and "a": no <0xNN> tokens at all.
  std::vector<unsigned char> img(4);
  const std::int32_t max_len = 5;
  std::memcpy(img.data(), &max_len, 4);
  for (const std::string piece : {"<unk>", "<s>", "</s>", "a"}) {
    const float score = 0.0f;
    const auto len = static_cast<std::int32_t>(piece.size());
    const auto* s = reinterpret_cast<const unsigned char*>(&score);
    const auto* l = reinterpret_cast<const unsigned char*>(&len);
    img.insert(img.end(), s, s + 4);
    img.insert(img.end(), l, l + 4);
    img.insert(img.end(), piece.begin(), piece.end());
  }
  const auto t = gsq::Tokenizer::parse(img.data(), img.size(), 4);
  REQUIRE(t.encode("a", false) == std::vector<int>{3});
  REQUIRE(gsq::test::contains(gsq::test::error_message([&] { (void)t.encode("z", false); }),
                              "byte 122 needs its fallback token at id 125, but the vocabulary "
                              "has 4 tokens"));
}

TEST_CASE("stories260K: greedy fp32 decoding reproduces llama2.c", "[tokenizer][model]") {
  const std::string model = gsq::test::model_path("stories260K.bin");
  const std::string tok = gsq::test::model_path("tok512.bin");
  if (model.empty() || tok.empty())
    GSQ_SKIP("stories260K.bin or tok512.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(model);
  const auto t = gsq::Tokenizer::load(tok, w.config().vocab_size);
  gsq::Llama2Runner run(w);
  const std::vector<int> generated = run.generate_greedy(64);
  const std::string text = t.decode(generated);
  INFO("generated: " << text);
  // 64 positions give 64 tokens, as llama2.c's run -n 64 prints (none of them is BOS here).
  REQUIRE(generated.size() == 64);
  REQUIRE(text.rfind("Once upon a time, there was a little girl named Lily. She loved to play "
                     "outside in the park.",
                     0) == 0);
  // The tokenizer round-trips that text.
  const auto ids = t.encode(text, true);
  REQUIRE(t.decode(ids) == text);
}
