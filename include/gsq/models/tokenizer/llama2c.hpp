// llama2c.hpp: Llama2cTokenizer, llama2.c's tokenizer.bin (gsq::Tokenizer, unchanged) behind the
// TextTokenizer interface.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/llama/tokenizer.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"

namespace gsq {

/// gsq::Tokenizer's encoding and decoding, exactly (llama2.c's greedy merges, its dummy
/// prefix, BOS 1 and EOS 2).  The format has no special tokens in text: parse_special is
/// ignored.  decode() leaves out BOS and EOS, which llama2.c's pieces spell "\n<s>\n".
class Llama2cTokenizer final : public TextTokenizer {
 public:
  explicit Llama2cTokenizer(Tokenizer tokenizer) : tok_(std::move(tokenizer)) {}

  /// Reads a tokenizer.bin for a model of `vocab_size` tokens (the file does not store it).
  static Llama2cTokenizer load(const std::string& path, int vocab_size) {
    return Llama2cTokenizer(Tokenizer::load(path, vocab_size));
  }

  const Tokenizer& tokenizer() const noexcept { return tok_; }
  int vocab_size() const noexcept override { return tok_.vocab_size(); }
  int bos() const noexcept override { return Tokenizer::kBos; }
  int eos() const noexcept override { return Tokenizer::kEos; }
  bool wants_bos() const noexcept override { return true; }
  std::string kind() const override { return "llama2c"; }

  std::vector<int> encode(const std::string& text, bool add_bos,
                          bool /*parse_special*/) const override {
    return tok_.encode(text, add_bos);
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::vector<int> kept;
    kept.reserve(ids.size());
    for (const int id : ids) {
      (void)tok_.piece(id);  // range check
      if (id != Tokenizer::kEos) kept.push_back(id);
    }
    return tok_.decode(kept);
  }

  std::string piece(int id) const override { return tok_.piece(id); }

  std::string token_to_text(int prev, int id) const override {
    if (is_control(id)) return std::string();
    return tok_.decode(prev < 0 ? Tokenizer::kBos : prev, id);
  }

  bool is_control(int id) const override {
    (void)tok_.piece(id);  // range check
    return id == Tokenizer::kBos || id == Tokenizer::kEos;
  }

 private:
  Tokenizer tok_;
};

}  // namespace gsq
