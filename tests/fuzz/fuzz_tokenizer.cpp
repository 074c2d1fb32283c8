// fuzz_tokenizer.cpp: the text tokenizers (models/tokenizer) on vocabularies and texts built from
// untrusted bytes.
//
// Input: [mode] [bytes...]
//   mode % 4 == 0  SentencePiece-style vocabulary: <unk> <s> </s>, the 256 <0xNN> pieces, then
//                  up to 31 normal pieces from the bytes ([n] then [length][score][text] each)
//                  and "▁"; the rest is the text
//   mode % 4 == 1  byte-level BPE vocabulary: the 256 GPT-2 byte pieces, up to 63 merges of two
//                  existing tokens chosen by the bytes ([n] then [left][right] each, as indices
//                  modulo the tokens so far; a merge that makes an existing token is skipped), a
//                  user-defined and a control token, a pre-tokenizer by [pre]; the rest is the text
//   mode % 4 == 2  the bytes are a tokenizer.json, the text a fixed one
//   mode % 4 == 3  the bytes are a GGUF image whose vocabulary is loaded, the text a fixed one
// Building a vocabulary either succeeds or throws std::invalid_argument saying "tokenizer: ",
// "tokenizer.json: " or "gguf: ", and nothing else.  An accepted tokenizer must encode any bytes
// without throwing, give ids in [0, vocab_size), and (modes 0 and 1, where every byte has a
// piece) decode them back to the text: exactly for BPE, and for SentencePiece when the text
// holds no "▁" (U+2581, which decodes as a space) and no merge spelled a control piece.
#include <cstdint>
#include <cstdio>
#include <gsq/models/gguf/file.hpp>
#include <gsq/models/tokenizer/load.hpp>
#include <gsq/models/tokenizer/spm.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

#if GSQ_HAVE_PCRE2
#include <gsq/models/tokenizer/bpe.hpp>
#endif
#if GSQ_HAVE_PCRE2 && GSQ_HAVE_JSON
#include <gsq/models/tokenizer/hf_tokenizer.hpp>
#endif

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

void expect_rejection(const std::invalid_argument& e) {
  const std::string m = e.what();
  GSQ_FUZZ_EXPECT(starts_with(m, "tokenizer: ") || starts_with(m, "tokenizer.json: ") ||
                      starts_with(m, "gguf: "),
                  "a rejection does not say it is the tokenizer's, tokenizer.json's or gguf's");
}

/// Encodes `text` both ways, checks the ids, and returns them (parse_special = false).
std::vector<int> encode_checked(const gsq::TextTokenizer& t, const std::string& text) {
  const std::vector<int> ids = t.encode(text, false, false);
  const std::vector<int> special = t.encode(text, false, true);
  for (const std::vector<int>* v : {&ids, &special}) {
    for (const int id : *v)
      GSQ_FUZZ_EXPECT(id >= 0 && id < t.vocab_size(), "encode gave an id outside the vocabulary");
  }
  if (t.bos() >= 0) {
    const std::vector<int> with_bos = t.encode(text, true, false);
    GSQ_FUZZ_EXPECT(!with_bos.empty() && with_bos[0] == t.bos() &&
                        std::vector<int>(with_bos.begin() + 1, with_bos.end()) == ids,
                    "add_bos does not just put BOS first");
  }
  std::string streamed;
  int prev = -1;
  for (const int id : special) {
    streamed += t.token_to_text(prev, id);
    (void)t.piece(id);
    (void)t.is_control(id);
    prev = id;
  }
  (void)t.decode(special);
  return ids;
}

void spm_case(gsq::fuzz::Bytes& in) {
  gsq::TextVocab v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {gsq::TokenType::kUnknown, gsq::TokenType::kControl, gsq::TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    v.tokens.push_back(name);
    v.token_types.push_back(gsq::TokenType::kByte);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  const int extra = in.u8() % 32;
  for (int i = 0; i < extra; ++i) {
    const int len = in.u8() % 8;
    const float score = static_cast<float>(static_cast<std::int8_t>(in.u8())) / 4.0f;
    std::string piece;
    for (int k = 0; k < len; ++k) piece += static_cast<char>(in.u8());
    v.tokens.push_back(piece);
    v.token_types.push_back(gsq::TokenType::kNormal);
    v.scores.push_back(score);
  }
  // Every real SentencePiece vocabulary has "▁"; without it a space would fall back to the
  // bytes of "▁" (as in llama.cpp) and decode as "▁".
  bool has_space = false;
  for (const std::string& t : v.tokens) has_space = has_space || t == "\xE2\x96\x81";
  if (!has_space) {
    v.tokens.push_back("\xE2\x96\x81");
    v.token_types.push_back(gsq::TokenType::kNormal);
    v.scores.push_back(-100.0f);
  }
  v.bos = 1, v.eos = 2, v.unk = 0, v.add_bos = true, v.add_space_prefix = true;
  const std::string text(reinterpret_cast<const char*>(in.rest()), in.remaining());
  std::unique_ptr<gsq::SpmTokenizer> t;
  try {
    t = std::make_unique<gsq::SpmTokenizer>(std::move(v));
  } catch (const std::invalid_argument& e) {
    expect_rejection(e);  // two pieces alike
    return;
  }
  const std::vector<int> ids = encode_checked(*t, text);
  // As in llama.cpp, a merge may spell a control or unknown piece ("<s" + ">"), which
  // decodes as nothing.
  bool has_control = false;
  for (const int id : ids) has_control = has_control || id <= 2;
  if (text.find("\xE2\x96\x81") == std::string::npos && !has_control)
    GSQ_FUZZ_EXPECT(t->decode(ids) == text, "SPM decode(encode(text)) != text");
}

#if GSQ_HAVE_PCRE2
void bpe_case(gsq::fuzz::Bytes& in) {
  static const char* const kPres[] = {"gpt-2",     "starcoder", "falcon", "deepseek-coder",
                                      "llama-bpe", "qwen2",     "mpt",    "refact"};
  gsq::TextVocab v;
  v.model = "gpt2";
  v.pre = kPres[in.u8() % 8];
  for (int b = 0; b < 256; ++b) {
    std::string piece;
    gsq::tokenizer_detail::append_utf8(
        piece, gsq::tokenizer_detail::byte_to_unicode(static_cast<unsigned char>(b)));
    v.tokens.push_back(piece);
  }
  const int merges = in.u8() % 64;
  for (int i = 0; i < merges; ++i) {
    const std::string& a = v.tokens[in.u8() % v.tokens.size()];
    const std::string& b = v.tokens[in.u8() % v.tokens.size()];
    std::string ab = a + b;
    bool exists = false;
    for (const std::string& t : v.tokens) exists = exists || t == ab;
    if (exists) continue;
    v.merges.emplace_back(a, b);
    v.tokens.push_back(std::move(ab));
  }
  v.token_types.assign(v.tokens.size(), gsq::TokenType::kNormal);
  bool eot_made = false;  // merges could spell it
  for (const std::string& t : v.tokens) eot_made = eot_made || t == "<|endoftext|>";
  if (!eot_made) {
    v.tokens.push_back("<|endoftext|>");
    v.token_types.push_back(gsq::TokenType::kControl);
    v.eos = v.size() - 1;
  }
  v.tokens.push_back(std::string(1 + in.u8() % 3, ' '));  // as MPT's space tokens
  v.token_types.push_back(gsq::TokenType::kUserDefined);
  const std::string text(reinterpret_cast<const char*>(in.rest()), in.remaining());
  const gsq::BpeTokenizer t(v);  // valid by construction: must not throw
  const std::vector<int> ids = encode_checked(t, text);
  GSQ_FUZZ_EXPECT(t.decode(ids) == text, "BPE decode(encode(text)) != text");
}
#else
void bpe_case(gsq::fuzz::Bytes&) {}   // no PCRE2 in this build
#endif

const std::string kText =
    "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3 1314151 \t\n  x\xFF";

#if GSQ_HAVE_PCRE2 && GSQ_HAVE_JSON
void json_case(gsq::fuzz::Bytes& in) {
  const std::string json(reinterpret_cast<const char*>(in.rest()), in.remaining());
  std::unique_ptr<gsq::BpeTokenizer> t;
  try {
    gsq::HfBpeTokenizerSpec spec = gsq::hf_bpe_from_json(json);
    t = std::make_unique<gsq::BpeTokenizer>(std::move(spec.vocab), std::move(spec.pre));
  } catch (const std::invalid_argument& e) {
    expect_rejection(e);
    return;
  }
  try {
    encode_checked(*t, kText);
  } catch (const std::invalid_argument& e) {
    // The one error encoding may give: a regex from the file that exhausts PCRE2's limits.
    GSQ_FUZZ_EXPECT(starts_with(e.what(), "tokenizer: pre-tokenizer regex failed"),
                    "encoding with an accepted tokenizer.json threw");
  }
}
#else
void json_case(gsq::fuzz::Bytes&) {}  // no nlohmann/json or PCRE2 in this build
#endif

void gguf_case(gsq::fuzz::Bytes& in) {
  std::unique_ptr<gsq::TextTokenizer> t;
  try {
    t = gsq::load_tokenizer(gsq::gguf::GgufFile::parse(in.rest(), in.remaining()));
  } catch (const std::invalid_argument& e) {
    expect_rejection(e);
    return;
  }
  encode_checked(*t, kText);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (1 << 16)) return 0;  // texts longer than this add time, not coverage
  gsq::fuzz::Bytes in(data, size);
  switch (in.u8() % 4) {
    case 0:
      spm_case(in);
      break;
    case 1:
      bpe_case(in);
      break;
    case 2:
      json_case(in);
      break;
    default:
      gguf_case(in);
      break;
  }
  return 0;
}
