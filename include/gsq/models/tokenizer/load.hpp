// load.hpp: load_tokenizer, which opens any tokenizer file gsq reads (GGUF vocabulary, Hugging
// Face tokenizer.json or tokenizer.model, llama2.c tokenizer.bin) as a TextTokenizer.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "gsq/detail/check.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/tokenizer/llama2c.hpp"
#include "gsq/models/tokenizer/spm.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"
#include "gsq/models/tokenizer/vocab.hpp"
#if GSQ_HAVE_PCRE2
#include "gsq/models/tokenizer/bpe.hpp"
#endif
#if GSQ_HAVE_JSON && GSQ_HAVE_PCRE2
#include "gsq/models/tokenizer/hf_tokenizer.hpp"
#endif
#if GSQ_HAVE_SENTENCEPIECE
#include "gsq/models/tokenizer/sentencepiece.hpp"
#endif

namespace gsq {

/// The tokenizer of a GGUF file's vocabulary: SpmTokenizer for tokenizer.ggml.model "llama",
/// BpeTokenizer for "gpt2" (which needs PCRE2: without it, an error says so).
inline std::unique_ptr<TextTokenizer> load_tokenizer(const gguf::GgufFile& file) {
  TextVocab vocab = vocab_from_gguf(file);
  if (vocab.model == "llama") return std::make_unique<SpmTokenizer>(std::move(vocab));
#if GSQ_HAVE_PCRE2
  return std::make_unique<BpeTokenizer>(vocab);
#else
  GSQ_CHECK(false,
            "tokenizer: the vocabulary is byte-level BPE ('gpt2'), but this build of gsq "
            "has no PCRE2 (gsq::pcre2) for its pre-tokenizer");
  return nullptr;
#endif
}

/// The tokenizer in the file at `path`, by its content: a GGUF file (magic "GGUF"), a
/// tokenizer.json (JSON object; needs nlohmann/json and PCRE2), a SentencePiece tokenizer.model
/// (a name ending in ".model"; needs libsentencepiece), else a llama2.c tokenizer.bin, whose
/// token count the file does not hold: pass the model's vocab size as `llama2c_vocab_size`.
/// A kind this build lacks the library for is an error naming the library.
inline std::unique_ptr<TextTokenizer> load_tokenizer(const std::string& path,
                                                     int llama2c_vocab_size = 0) {
  unsigned char head[8] = {0};
  std::size_t got = 0;
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    GSQ_CHECK(f != nullptr, "tokenizer: cannot open '", path, "'");
    got = std::fread(head, 1, sizeof head, f);
    std::fclose(f);
  }
  if (got >= 4 && head[0] == 'G' && head[1] == 'G' && head[2] == 'U' && head[3] == 'F')
    return load_tokenizer(gguf::GgufFile::open(path));
  std::size_t first = 0;
  while (first < got &&
         (head[first] == ' ' || head[first] == '\n' || head[first] == '\r' || head[first] == '\t'))
    ++first;
  if (first < got && head[first] == '{') {
#if GSQ_HAVE_JSON && GSQ_HAVE_PCRE2
    return load_hf_tokenizer_json(path);
#else
    GSQ_CHECK(false, "tokenizer: '", path,
              "' is a Hugging Face tokenizer.json, but this build "
              "of gsq lacks nlohmann/json (gsq::json) or PCRE2 (gsq::pcre2)");
#endif
  }
  const std::string kModel = ".model";
  if (path.size() >= kModel.size() &&
      path.compare(path.size() - kModel.size(), kModel.size(), kModel) == 0) {
#if GSQ_HAVE_SENTENCEPIECE
    return std::make_unique<SentencePieceTokenizer>(path);
#else
    GSQ_CHECK(false, "tokenizer: '", path,
              "' is a SentencePiece model, but this build of gsq "
              "has no libsentencepiece (gsq::sentencepiece)");
#endif
  }
  GSQ_CHECK(llama2c_vocab_size > 0, "tokenizer: '", path,
            "' is neither GGUF, tokenizer.json nor tokenizer.model; as a llama2.c tokenizer.bin "
            "it needs its model's vocab size");
  return std::make_unique<Llama2cTokenizer>(Llama2cTokenizer::load(path, llama2c_vocab_size));
}

}  // namespace gsq
