// llama2_test.cpp: the llama2.c checkpoint reader on generated images and, when present, the
// real stories260K.bin.
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/models/llama/weights.hpp"
#include "models.hpp"

namespace {

std::vector<unsigned char> image(std::vector<std::int32_t> header, std::size_t floats) {
  std::vector<unsigned char> b(28 + 4 * floats);
  std::memcpy(b.data(), header.data(), 28);
  for (std::size_t k = 0; k < floats; ++k) {
    const float v = static_cast<float>(k);
    std::memcpy(b.data() + 28 + 4 * k, &v, 4);
  }
  return b;
}

std::string error_of(const std::vector<unsigned char>& b) {
  try {
    (void)gsq::Llama2Weights::parse(b.data(), b.size());
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no exception";
}

// dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10, seq_len 4: head 4, kv_dim 4.
constexpr std::size_t kFloats =
    10 * 8 + 2 * 8 + 2 * 64 + 2 * 2 * 8 * 4 + 2 * 64 + 2 * 8 + 3 * 2 * 12 * 8 + 8 + 4 * 4;

}  // namespace

TEST_CASE("llama2 checkpoints: layout of a generated image", "[llama2]") {
  const auto b = image({8, 12, 2, 2, 1, 10, 4}, kFloats);
  const auto w = gsq::Llama2Weights::parse(b.data(), b.size());
  REQUIRE(w.config().kv_dim() == 4);
  REQUIRE(w.token_embedding().data[0] == 0.0f);
  REQUIRE(w.rms_att(0)[0] == 80.0f);
  REQUIRE(w.wq(0).data[0] == 96.0f);
  REQUIRE(w.wq(1).data[0] == 160.0f);
  REQUIRE(w.wk(0).rows == 4);
  REQUIRE(w.classifier().data == w.token_embedding().data);
  REQUIRE(w.rms_final()[0] == static_cast<float>(kFloats - 8 - 16));
  // An unshared classifier follows freq_cis.
  const auto u = image({8, 12, 2, 2, 1, -10, 4}, kFloats + 80);
  const auto wu = gsq::Llama2Weights::parse(u.data(), u.size());
  REQUIRE(wu.classifier().data[0] == static_cast<float>(kFloats));
}

TEST_CASE("llama2 checkpoints: truncated, padded and hostile images are rejected",
          "[llama2][errors]") {
  auto b = image({8, 12, 2, 2, 1, 10, 4}, kFloats);
  REQUIRE(error_of(std::vector<unsigned char>(b.begin(), b.begin() + 20)) ==
          "llama2: file holds 20 bytes, less than the 28-byte header (7 int32)");
  b.pop_back();
  REQUIRE(error_of(b).find("(truncated)") != std::string::npos);
  b.resize(b.size() + 5);
  REQUIRE(error_of(b).find("(trailing data)") != std::string::npos);
  REQUIRE(error_of(image({8, 12, 2, 3, 1, 10, 4}, kFloats)) ==
          "llama2: dim 8 is not a multiple of n_heads 3");
  REQUIRE(error_of(image({8, 12, 2, 2, 3, 10, 4}, kFloats)) ==
          "llama2: n_kv_heads 3 does not divide n_heads 2");
  REQUIRE(error_of(image({8, 12, 0, 2, 1, 10, 4}, kFloats)) ==
          "llama2: header field n_layers = 0 is outside [1, 2^20]");
  REQUIRE(error_of(image({1 << 20, 1 << 20, 1 << 20, 1, 1, 1 << 20, 4}, 0)).find("needs") !=
          std::string::npos);  // sizes near 2^80 bytes: checked, never allocated
  REQUIRE(error_of(image({8, 12, 2, 8, 8, 10, 4}, kFloats)) ==
          "llama2: head size 1 is odd (RoPE pairs)");
}

TEST_CASE("llama2 checkpoints: the real stories260K", "[llama2][model]") {
  const std::string path = gsq::test::model_path("stories260K.bin");
  if (path.empty()) GSQ_SKIP("stories260K.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(path);
  REQUIRE(w.config().dim == 64);
  REQUIRE(w.config().n_layers == 5);
  REQUIRE(w.config().vocab_size == 512);
  REQUIRE(w.config().shared_classifier);
}
