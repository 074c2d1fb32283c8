// tokenizer_vocab_test.cpp: the text tokenizers of models/tokenizer against llama.cpp's tokenizer
// tests (ggml-vocab-*.gguf .inp/.out), reference pre-tokenizer splits, libsentencepiece,
// generated tokenizer.json files, and hostile vocabularies and texts.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <gsq/models/gguf/file.hpp>
#include <gsq/models/tokenizer/llama2c.hpp>
#include <gsq/models/tokenizer/load.hpp>
#include <gsq/models/tokenizer/spm.hpp>
#include <gsq/models/tokenizer/vocab.hpp>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "models.hpp"

#if GSQ_HAVE_PCRE2
#include <gsq/models/tokenizer/bpe.hpp>
#endif
#if GSQ_HAVE_JSON && GSQ_HAVE_PCRE2
#include <gsq/models/tokenizer/hf_tokenizer.hpp>
#include <nlohmann/json.hpp>
#endif
#if GSQ_HAVE_SENTENCEPIECE
#include <gsq/models/tokenizer/sentencepiece.hpp>
#endif

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// llama.cpp's test texts and expected ids: .inp holds texts separated by
/// "\n__ggml_vocab_test__\n" (the file ends with one), .out one line of ids per text.
struct VocabCase {
  std::string text;
  std::vector<int> ids;
};

std::vector<VocabCase> read_cases(const std::string& gguf_path) {
  const std::string inp = slurp(gguf_path + ".inp");
  const std::string out = slurp(gguf_path + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (std::size_t at = 0; at < inp.size();) {
    const std::size_t m = inp.find(sep, at);
    REQUIRE(m != std::string::npos);  // every text, the last too, ends with the separator
    texts.push_back(inp.substr(at, m - at));
    at = m + sep.size();
  }
  std::vector<VocabCase> cases;
  std::istringstream lines(out);
  std::string line;
  for (const std::string& t : texts) {
    REQUIRE(std::getline(lines, line));
    VocabCase c{t, {}};
    std::istringstream ids(line);
    for (int id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  REQUIRE_FALSE(std::getline(lines, line));  // as many lines as texts
  return cases;
}

/// Every text of the vocabulary's .inp gives exactly its .out ids, decodes back to itself (SPM:
/// with its dummy prefix space dropped), and BOS goes first when asked.  Returns the text count.
std::size_t check_vocab(const gsq::TextTokenizer& tok, const std::string& path) {
  const std::vector<VocabCase> cases = read_cases(path);
  for (const VocabCase& c : cases) {
    INFO("text: '" << c.text << "'");
    const std::vector<int> ids = tok.encode(c.text, false, false);
    CHECK(ids == c.ids);
    CHECK(tok.decode(ids) == c.text);
    if (tok.bos() >= 0) {
      const std::vector<int> with_bos = tok.encode(c.text, true, false);
      REQUIRE(!with_bos.empty());
      CHECK(with_bos[0] == tok.bos());
      CHECK(std::vector<int>(with_bos.begin() + 1, with_bos.end()) == c.ids);
      CHECK(tok.decode(with_bos) == c.text);
    }
    // Streaming gives the same bytes as decode().
    std::string streamed;
    int prev = -1;
    for (const int id : ids) {
      streamed += tok.token_to_text(prev, id);
      prev = id;
    }
    CHECK(streamed == c.text);
  }
  return cases.size();
}

constexpr std::size_t kTextsPerVocab = 46;  // llama.cpp's test texts, the same in every .inp

void check_gguf_vocab(const std::string& name, const char* kind) {
  const std::string path = gsq::test::model_path("vocab/ggml-vocab-" + name + ".gguf");
  const std::unique_ptr<gsq::TextTokenizer> tok =
      gsq::load_tokenizer(gsq::gguf::GgufFile::open(path));
  REQUIRE(tok->kind() == kind);
  CHECK(check_vocab(*tok, path) == kTextsPerVocab);
}

bool have_vocab(const std::string& name) {
  const std::string base = "vocab/ggml-vocab-" + name + ".gguf";
  return !gsq::test::model_path(base).empty() && !gsq::test::model_path(base + ".inp").empty() &&
         !gsq::test::model_path(base + ".out").empty();
}

// A GGUF (version 3) image holding only metadata, for hostile vocabularies.
class GgufWriter {
 public:
  void str(const std::string& key, const std::string& value) {
    header(key, 8);
    string(value);
  }
  void u32(const std::string& key, std::uint32_t value) {
    header(key, 4);
    raw(&value, 4);
  }
  void boolean(const std::string& key, bool value) {
    header(key, 7);
    const std::uint8_t b = value ? 1 : 0;
    raw(&b, 1);
  }
  void strings(const std::string& key, const std::vector<std::string>& values) {
    array(key, 8, values.size());
    for (const std::string& v : values) string(v);
  }
  void floats(const std::string& key, const std::vector<float>& values) {
    array(key, 6, values.size());
    for (const float v : values) raw(&v, 4);
  }
  void ints(const std::string& key, const std::vector<std::int32_t>& values) {
    array(key, 5, values.size());
    for (const std::int32_t v : values) raw(&v, 4);
  }
  gsq::gguf::GgufFile parse() const {
    std::vector<std::uint8_t> image = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    const std::uint64_t counts[2] = {0, count_};
    image.insert(image.end(), reinterpret_cast<const std::uint8_t*>(counts),
                 reinterpret_cast<const std::uint8_t*>(counts) + 16);
    image.insert(image.end(), body_.begin(), body_.end());
    return gsq::gguf::GgufFile::parse(image.data(), image.size());
  }

 private:
  void raw(const void* p, std::size_t n) {
    body_.insert(body_.end(), static_cast<const std::uint8_t*>(p),
                 static_cast<const std::uint8_t*>(p) + n);
  }
  void string(const std::string& s) {
    const std::uint64_t n = s.size();
    raw(&n, 8);
    raw(s.data(), s.size());
  }
  void header(const std::string& key, std::uint32_t type) {
    ++count_;
    string(key);
    raw(&type, 4);
  }
  void array(const std::string& key, std::uint32_t type, std::uint64_t n) {
    header(key, 9);
    raw(&type, 4);
    raw(&n, 8);
  }
  std::vector<std::uint8_t> body_;
  std::uint64_t count_ = 0;
};

/// A small SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte pieces, then `extra`.
GgufWriter small_spm(const std::vector<std::string>& extra) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<std::int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    tokens.push_back(name);
    types.push_back(6);
  }
  for (const std::string& e : extra) {
    tokens.push_back(e);
    types.push_back(1);
  }
  std::vector<float> scores(tokens.size());
  for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  GgufWriter w;
  w.str("tokenizer.ggml.model", "llama");
  w.strings("tokenizer.ggml.tokens", tokens);
  w.floats("tokenizer.ggml.scores", scores);
  w.ints("tokenizer.ggml.token_type", types);
  return w;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("llama-spm GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("llama-spm")) GSQ_SKIP("vocab/ggml-vocab-llama-spm.gguf(.inp/.out) absent");
  check_gguf_vocab("llama-spm", "spm");
}

TEST_CASE("phi-3 GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("phi-3")) GSQ_SKIP("vocab/ggml-vocab-phi-3.gguf(.inp/.out) absent");
  check_gguf_vocab("phi-3", "spm");
}

#if GSQ_HAVE_PCRE2
TEST_CASE("gpt-2 GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("gpt-2")) GSQ_SKIP("vocab/ggml-vocab-gpt-2.gguf(.inp/.out) absent");
  check_gguf_vocab("gpt-2", "bpe");
}

TEST_CASE("starcoder GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("starcoder")) GSQ_SKIP("vocab/ggml-vocab-starcoder.gguf(.inp/.out) absent");
  check_gguf_vocab("starcoder", "bpe");
}

TEST_CASE("falcon GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("falcon")) GSQ_SKIP("vocab/ggml-vocab-falcon.gguf(.inp/.out) absent");
  check_gguf_vocab("falcon", "bpe");
}

TEST_CASE("deepseek-coder GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("deepseek-coder"))
    GSQ_SKIP("vocab/ggml-vocab-deepseek-coder.gguf(.inp/.out) absent");
  check_gguf_vocab("deepseek-coder", "bpe");
}

TEST_CASE("mpt GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("mpt")) GSQ_SKIP("vocab/ggml-vocab-mpt.gguf(.inp/.out) absent");
  check_gguf_vocab("mpt", "bpe");
}

TEST_CASE("refact GGUF vocabulary gives llama.cpp's ids", "[tokenizer]") {
  if (!have_vocab("refact")) GSQ_SKIP("vocab/ggml-vocab-refact.gguf(.inp/.out) absent");
  check_gguf_vocab("refact", "bpe");
}

TEST_CASE("smollm splits as starcoder; unknown pre-tokenizers are named", "[tokenizer]") {
  CHECK(gsq::bpe_pre_tokenizer("smollm").patterns == gsq::bpe_pre_tokenizer("starcoder").patterns);
  CHECK(gsq::bpe_pre_tokenizer("refact").patterns == gsq::bpe_pre_tokenizer("starcoder").patterns);
  CHECK(error_of([] {
          gsq::bpe_pre_tokenizer("jais-nonsense");
        }).find("pre-tokenizer 'jais-nonsense' is not supported") != std::string::npos);
}
#else
TEST_CASE("byte-level BPE GGUF vocabularies give llama.cpp's ids", "[tokenizer]") {
  GSQ_SKIP("this build has no PCRE2 (gsq::pcre2)");
}
#endif

#if GSQ_HAVE_JSON && GSQ_HAVE_PCRE2
namespace {

/// Each text of the reference file splits into exactly its reference pieces.
void check_pretok(const std::string& file, const char* pre) {
  const nlohmann::json ref = nlohmann::json::parse(slurp(gsq::test::model_path(file)));
  const gsq::BpePreTokenizer p = gsq::bpe_pre_tokenizer(pre);
  REQUIRE(p.patterns.size() == 1);
  CHECK(p.patterns[0] == ref.at("pattern").get<std::string>());
  const gsq::BpeSplitter splitter(p.patterns);
  const auto& texts = ref.at("texts");
  const auto& splits = ref.at("splits");
  REQUIRE(texts.size() == splits.size());
  CHECK(texts.size() == kTextsPerVocab + 1);  // its list also has the empty text at the end
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    INFO("text: '" << text << "'");
    CHECK(splitter.split(text) == splits[i].get<std::vector<std::string>>());
  }
}

/// A tokenizer.json for the BPE vocabulary `v`: merges as strings or as pairs, control tokens as
/// special added tokens, the given pre_tokenizer.
std::string make_tokenizer_json(const gsq::TextVocab& v, bool merges_as_pairs,
                                const nlohmann::json& pre_tokenizer) {
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  for (int id = 0; id < v.size(); ++id) {
    const std::string& t = v.tokens[static_cast<std::size_t>(id)];
    const gsq::TokenType type = v.type(id);
    if (type == gsq::TokenType::kControl || type == gsq::TokenType::kUserDefined) {
      added.push_back({{"id", id},
                       {"content", t},
                       {"special", type == gsq::TokenType::kControl},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false}});
    } else {
      vocab[t] = id;
    }
  }
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [a, b] : v.merges) {
    if (merges_as_pairs) {
      merges.push_back({a, b});
    } else {
      merges.push_back(a + " " + b);
    }
  }
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", added},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", pre_tokenizer},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

}  // namespace

TEST_CASE("llama-bpe and qwen2 pre-tokenizers reproduce the reference splits", "[tokenizer]") {
  if (gsq::test::model_path("vocab/pretok-llama-bpe.json").empty() ||
      gsq::test::model_path("vocab/pretok-qwen2.json").empty())
    GSQ_SKIP("vocab/pretok-llama-bpe.json or pretok-qwen2.json absent");
  check_pretok("vocab/pretok-llama-bpe.json", "llama-bpe");
  check_pretok("vocab/pretok-qwen2.json", "qwen2");
}

TEST_CASE("tokenizer.json generated from gpt-2's vocabulary gives the GGUF ids", "[tokenizer]") {
  if (!have_vocab("gpt-2")) GSQ_SKIP("vocab/ggml-vocab-gpt-2.gguf(.inp/.out) absent");
  const std::string path = gsq::test::model_path("vocab/ggml-vocab-gpt-2.gguf");
  const gsq::TextVocab v = gsq::vocab_from_gguf(gsq::gguf::GgufFile::open(path));
  const gsq::BpeTokenizer gguf(v);
  const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"trim_offsets", true},
                                     {"use_regex", true}};
  // The same split written as a Split regex before a ByteLevel step without its own regex.
  const nlohmann::json split = {{"type", "Sequence"},
                                {"pretokenizers",
                                 {{{"type", "Split"},
                                   {"pattern", {{"Regex", gsq::bpe_patterns::kGpt2}}},
                                   {"behavior", "Isolated"},
                                   {"invert", false}},
                                  {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  const std::vector<VocabCase> cases = read_cases(path);
  for (const bool pairs : {false, true}) {
    for (const nlohmann::json* pre : {&byte_level, &split}) {
      gsq::HfBpeTokenizerSpec spec = gsq::hf_bpe_from_json(make_tokenizer_json(v, pairs, *pre));
      CHECK(spec.vocab.tokens == v.tokens);
      CHECK(spec.vocab.merges == v.merges);
      CHECK(spec.vocab.eos == v.eos);
      const gsq::BpeTokenizer hf(std::move(spec.vocab), std::move(spec.pre));
      for (const VocabCase& c : cases) {
        INFO("merges as pairs " << pairs << ", text '" << c.text << "'");
        CHECK(hf.encode(c.text, false, false) == c.ids);
      }
      CHECK(hf.encode("a<|endoftext|>b", false, true) ==
            gguf.encode("a<|endoftext|>b", false, true));
    }
  }
  // Errors name the problem.
  CHECK(error_of([] {
          gsq::hf_bpe_from_json("{\"model\": ", "x.json");
        }).find("'x.json' is not valid JSON") != std::string::npos);
  CHECK(error_of([] {
          gsq::hf_bpe_from_json(R"({"model": {"type": "Unigram"}})");
        }).find("model type 'Unigram' is not supported") != std::string::npos);
  CHECK(error_of([] {
          gsq::hf_bpe_from_json(
              R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []},
                  "pre_tokenizer": {"type": "ByteLevel"}})");
        }).find("id 1 has no token") != std::string::npos);
  CHECK(error_of([] {
          gsq::hf_bpe_from_json(
              R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [3]},
                  "pre_tokenizer": {"type": "ByteLevel"}})");
        }).find("merge 0 is neither") != std::string::npos);
  CHECK(error_of([] {
          gsq::hf_bpe_from_json(
              R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                  "pre_tokenizer": {"type": "Whitespace"}})");
        }).find("pre_tokenizer type 'Whitespace' is not supported") != std::string::npos);
}
#else
TEST_CASE("llama-bpe and qwen2 pre-tokenizers reproduce the reference splits", "[tokenizer]") {
  GSQ_SKIP("this build lacks nlohmann/json (gsq::json) or PCRE2 (gsq::pcre2)");
}
#endif

#if GSQ_HAVE_SENTENCEPIECE
TEST_CASE("libsentencepiece agrees with SpmTokenizer on the LLaMA vocabulary", "[tokenizer]") {
  const std::string model = gsq::test::model_path("vocab/tokenizer.model");
  if (model.empty() || !have_vocab("llama-spm"))
    GSQ_SKIP("vocab/tokenizer.model or ggml-vocab-llama-spm.gguf absent");
  const std::string gguf_path = gsq::test::model_path("vocab/ggml-vocab-llama-spm.gguf");
  const gsq::SpmTokenizer spm(gsq::vocab_from_gguf(gsq::gguf::GgufFile::open(gguf_path)));
  const std::unique_ptr<gsq::TextTokenizer> sp = gsq::load_tokenizer(model);
  REQUIRE(sp->kind() == "sentencepiece");
  REQUIRE(sp->vocab_size() == spm.vocab_size());
  for (int id = 0; id < spm.vocab_size(); ++id) REQUIRE(sp->piece(id) == spm.piece(id));
  CHECK(sp->bos() == spm.bos());
  CHECK(sp->eos() == spm.eos());
  std::size_t n = 0;
  for (const VocabCase& c : read_cases(gguf_path)) {
    INFO("text: '" << c.text << "'");
    CHECK(sp->encode(c.text, false, false) == c.ids);
    CHECK(sp->encode(c.text, true, false) == spm.encode(c.text, true, false));
    CHECK(sp->decode(c.ids) == spm.decode(c.ids));
    ++n;
  }
  CHECK(n == kTextsPerVocab);
  CHECK(sp->encode("a<s>b", false, true) == spm.encode("a<s>b", false, true));
  CHECK(error_of([] {
          gsq::SentencePieceTokenizer t("/nonexistent/tokenizer.model");
        }).find("'/nonexistent/tokenizer.model'") != std::string::npos);
}
#else
TEST_CASE("libsentencepiece agrees with SpmTokenizer on the LLaMA vocabulary", "[tokenizer]") {
  GSQ_SKIP("this build has no libsentencepiece (gsq::sentencepiece)");
}
#endif

TEST_CASE("special tokens in text are recognised only when asked", "[tokenizer]") {
  const gsq::SpmTokenizer t(gsq::vocab_from_gguf(small_spm({"\xE2\x96\x81", "a", "b"}).parse()));
  const int space = 259, a = 260, b = 261;
  CHECK(t.encode("a</s>b", false, true) == std::vector<int>{space, a, 2, space, b});
  // As plain text: "<", "/", "s", ">" have no pieces here, so they fall back to bytes.
  const std::vector<int> plain = t.encode("a</s>b", false, false);
  CHECK(plain.size() == 7);
  CHECK(t.decode(plain) == "a</s>b");
  CHECK(t.encode("", false, false).empty());
  CHECK(t.encode("", true, false) == std::vector<int>{1});
  CHECK(t.decode({1, space, a, 2}) == "a");
  CHECK(t.is_control(1));
  CHECK_FALSE(t.is_control(a));
}

TEST_CASE("hostile vocabularies are rejected with the problem named", "[tokenizer]") {
  CHECK(error_of([] {
          GgufWriter w = small_spm({});
          w.u32("tokenizer.ggml.bos_token_id", 259);
          gsq::vocab_from_gguf(w.parse());
        }).find("bos_token_id = 259 is outside the vocabulary of 259 tokens") != std::string::npos);
  CHECK(error_of([] {
          GgufWriter w;
          w.str("tokenizer.ggml.model", "llama");
          w.strings("tokenizer.ggml.tokens", {"a", "b", "c"});
          w.floats("tokenizer.ggml.scores", {0.0f, 1.0f});
          gsq::vocab_from_gguf(w.parse());
        }).find("tokenizer.ggml.scores has 2 entries for 3 tokens") != std::string::npos);
  CHECK(error_of([] {
          GgufWriter w;
          w.str("tokenizer.ggml.model", "llama");
          w.strings("tokenizer.ggml.tokens", {"a", "b", "a"});
          gsq::SpmTokenizer t(gsq::vocab_from_gguf(w.parse()));
        }).find("tokens 0 and 2 are both 'a'") != std::string::npos);
  CHECK(error_of([] {
          GgufWriter w;
          w.str("tokenizer.ggml.model", "bert");
          w.strings("tokenizer.ggml.tokens", {"a"});
          gsq::vocab_from_gguf(w.parse());
        }).find("tokenizer.ggml.model 'bert' is not supported") != std::string::npos);
  CHECK(error_of([] {
          GgufWriter w;
          w.str("tokenizer.ggml.model", "gpt2");
          w.strings("tokenizer.ggml.tokens", {"a", "b"});
          w.strings("tokenizer.ggml.merges", {"ab"});
          gsq::vocab_from_gguf(w.parse());
        }).find("merge 0 'ab' is not two pieces") != std::string::npos);
  CHECK(error_of([] {
          gsq::TextVocab v;
          v.model = "llama";
          v.tokens = {"a", "b"};
          v.scores = {0.0f, std::nanf("")};
          v.validate();
        }).find("token 1 has score nan") != std::string::npos);
  CHECK(error_of([] {
          GgufWriter w;
          w.str("tokenizer.ggml.model", "llama");
          gsq::vocab_from_gguf(w.parse());
        }).find("tokenizer.ggml.tokens") != std::string::npos);
#if GSQ_HAVE_PCRE2
  const auto bpe = [](std::vector<std::string> merges, const std::string& pre) {
    GgufWriter w;
    w.str("tokenizer.ggml.model", "gpt2");
    w.str("tokenizer.ggml.pre", pre);
    w.strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
    w.strings("tokenizer.ggml.merges", merges);
    gsq::BpeTokenizer t(gsq::vocab_from_gguf(w.parse()));
  };
  CHECK(error_of([&] {
          bpe({"a c"}, "gpt-2");
        }).find("merge 0 'a c' names 'c', which is not a token") != std::string::npos);
  CHECK(error_of([&] { bpe({"b a"}, "gpt-2"); }).find("makes 'ba', which is not a token") !=
        std::string::npos);
  CHECK(error_of([&] { bpe({"a b"}, "tekken"); }).find("pre-tokenizer 'tekken' is not supported") !=
        std::string::npos);
  CHECK(error_of([&] { bpe({"a b"}, "gpt-2"); }) == "(no exception)");
#endif
}

TEST_CASE("invalid UTF-8, empty and 100 KB texts", "[tokenizer]") {
  // Texts: invalid bytes in every position, truncated sequences, surrogates, overlong forms.
  const std::vector<std::string> texts = {std::string("\xff"),
                                          std::string("a\x80z"),
                                          std::string("\xe2\x96"),
                                          std::string("x\xed\xa0\x80y"),
                                          std::string("\xc0\xaf \xf4\x90\x80\x80!"),
                                          std::string("ok \xf0\x9f\xa6 then", 12),
                                          std::string("\0mid\0", 5)};
  std::string big;
  for (int i = 0; big.size() < 100 * 1024; ++i)
    big += "Word" + std::to_string(i) + (i % 7 == 0 ? ",\n\t  " : " ") +
           (i % 13 == 0 ? "\xe6\x97\xa5\xe6\x9c\xac " : "");
  const std::string long_word(100 * 1024, 'a');
  std::vector<std::pair<std::string, std::unique_ptr<gsq::TextTokenizer>>> toks;
  for (const char* name : {
         "llama-spm",
#if GSQ_HAVE_PCRE2
             "gpt-2", "deepseek-coder", "falcon",
#endif
       }) {
    const std::string path =
        gsq::test::model_path(std::string("vocab/ggml-vocab-") + name + ".gguf");
    if (!path.empty())
      toks.emplace_back(name, gsq::load_tokenizer(gsq::gguf::GgufFile::open(path)));
  }
  if (toks.empty()) GSQ_SKIP("no vocab/ggml-vocab-*.gguf present");
  // Bytes that never occur in UTF-8 (C0, C1, F5-FF): Falcon's vocabulary has no pieces for some
  // of them (they are dropped, as llama.cpp drops them), DeepSeek-Coder's has them only as
  // user-defined tokens (which decode as their text).  Only these two cannot round-trip them.
  const auto never_utf8 = [](const std::string& s) {
    for (const char c : s) {
      const auto b = static_cast<unsigned char>(c);
      if (b == 0xC0 || b == 0xC1 || b >= 0xF5) return true;
    }
    return false;
  };
  for (const auto& entry : toks) {
    const std::string& name = entry.first;
    const gsq::TextTokenizer* t = entry.second.get();
    INFO(name);
    for (const std::string& text : texts) {
      INFO("text bytes " << text.size());
      const std::vector<int> ids = t->encode(text, false, false);
      if (!never_utf8(text) || name == "llama-spm" || name == "gpt-2") {
        CHECK(t->decode(ids) == text);
      }
    }
    CHECK(t->encode("", false, false).empty());
    const std::vector<int> ids = t->encode(big, false, false);
    CHECK(ids.size() > 10000);
    CHECK(t->decode(ids) == big);
    CHECK(t->decode(t->encode(long_word, false, false)) == long_word);
    for (const int bad : {-1, t->vocab_size()}) {
      CHECK(error_of([&] { t->decode({bad}); }).find("outside [0, ") != std::string::npos);
    }
  }
}

TEST_CASE("llama2.c tokenizer through TextTokenizer is gsq::Tokenizer", "[tokenizer]") {
  const std::string path = gsq::test::model_path("tok512.bin");
  if (path.empty()) GSQ_SKIP("tok512.bin absent");
  const gsq::Tokenizer plain = gsq::Tokenizer::load(path, 512);
  const std::unique_ptr<gsq::TextTokenizer> t = gsq::load_tokenizer(path, 512);
  REQUIRE(t->kind() == "llama2c");
  CHECK(t->vocab_size() == 512);
  for (const std::string text : {"Once upon a time, there was a little girl named Lily.", "",
                                 " two  spaces", "caf\xc3\xa9 \xff"}) {
    CHECK(t->encode(text, true, false) == plain.encode(text, true));
    CHECK(t->encode(text, false, false) == plain.encode(text, false));
    std::vector<int> ids = plain.encode(text, true, true);
    CHECK(t->decode(ids) == plain.decode(std::vector<int>(ids.begin(), ids.end() - 1)));
  }
  CHECK(error_of([&] { gsq::load_tokenizer(path); }).find("needs its model's vocab size") !=
        std::string::npos);
}
