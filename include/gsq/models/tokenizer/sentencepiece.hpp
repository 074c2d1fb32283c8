// sentencepiece.hpp: SentencePieceTokenizer, a Hugging Face / Meta tokenizer.model file through
// libsentencepiece behind the TextTokenizer interface.
// gsq-requires: sentencepiece
#pragma once

#if !GSQ_HAVE_SENTENCEPIECE
#error "gsq/models/tokenizer/sentencepiece.hpp needs libsentencepiece (gsq::sentencepiece)"
#endif
#include <sentencepiece_processor.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"
#include "gsq/models/tokenizer/vocab.hpp"

namespace gsq {

/// libsentencepiece's own encoding (its normalizer, dummy prefix and merges).  For the LLaMA
/// tokenizer.model it gives the ids of SpmTokenizer on the same vocabulary, and so llama.cpp's,
/// for all 46 of llama.cpp's test texts: it adds the dummy prefix "▁" once at the start as
/// llama.cpp does, and keeps runs of spaces, leading and trailing ones too (that model's
/// normalizer has remove_extra_whitespaces off; a model with it on would collapse them, which
/// SpmTokenizer never does).  Control pieces written in the text ("<s>") are split off first
/// when parse_special is true; libsentencepiece itself never recognises them.
class SentencePieceTokenizer final : public TextTokenizer {
 public:
  /// Loads a serialized ModelProto file.  Throws std::invalid_argument naming the file and
  /// libsentencepiece's reason when it cannot.
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    GSQ_CHECK(status.ok(), "tokenizer: cannot load SentencePiece model '", path,
              "': ", status.ToString());
    const int n = sp_.GetPieceSize();
    GSQ_CHECK(n >= 1, "tokenizer: SentencePiece model '", path, "' has no pieces");
    // A TextVocab of the pieces and their kinds, for the special-token split.
    vocab_.model = "llama";
    vocab_.tokens.resize(static_cast<std::size_t>(n));
    vocab_.token_types.resize(static_cast<std::size_t>(n));
    for (int id = 0; id < n; ++id) {
      vocab_.tokens[static_cast<std::size_t>(id)] = sp_.IdToPiece(id);
      vocab_.token_types[static_cast<std::size_t>(id)] = sp_.IsControl(id)   ? TokenType::kControl
                                                         : sp_.IsUnknown(id) ? TokenType::kUnknown
                                                         : sp_.IsByte(id)    ? TokenType::kByte
                                                         : sp_.IsUnused(id)  ? TokenType::kUnused
                                                                             : TokenType::kNormal;
    }
    const auto id_or_none = [n](int id) { return id >= 0 && id < n ? id : -1; };
    vocab_.bos = id_or_none(sp_.bos_id());
    vocab_.eos = id_or_none(sp_.eos_id());
    vocab_.unk = id_or_none(sp_.unk_id());
    vocab_.add_bos = vocab_.bos >= 0;
    vocab_.add_space_prefix = true;
    special_ = tokenizer_detail::SpecialTokens(vocab_);
  }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  int vocab_size() const noexcept override { return vocab_.size(); }
  int bos() const noexcept override { return vocab_.bos; }
  int eos() const noexcept override { return vocab_.eos; }
  bool wants_bos() const noexcept override { return vocab_.add_bos; }
  std::string kind() const override { return "sentencepiece"; }

  std::vector<int> encode(const std::string& text, bool add_bos,
                          bool parse_special) const override {
    std::vector<int> out;
    if (add_bos) {
      GSQ_CHECK(vocab_.bos >= 0, "tokenizer: add_bos asked, but the model has no BOS");
      out.push_back(vocab_.bos);
    }
    if (!parse_special) {
      encode_raw(text, out);
      return out;
    }
    for (const tokenizer_detail::Fragment& f : special_.split(text, true)) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        encode_raw(text.substr(f.offset, f.length), out);
      }
    }
    return out;
  }

  std::string decode(const std::vector<int>& ids) const override {
    for (const int id : ids) check_id(id);
    std::string text;
    const auto status = sp_.Decode(ids, &text);
    GSQ_CHECK(status.ok(), "tokenizer: SentencePiece cannot decode: ", status.ToString());
    return text;
  }

  std::string piece(int id) const override {
    check_id(id);
    return vocab_.tokens[static_cast<std::size_t>(id)];
  }

  std::string token_to_text(int prev, int id) const override {
    check_id(id);
    return tokenizer_detail::spm_piece_text(vocab_.tokens[static_cast<std::size_t>(id)],
                                            vocab_.type(id), prev < 0 || prev == vocab_.bos);
  }

  bool is_control(int id) const override {
    check_id(id);
    return vocab_.type(id) == TokenType::kControl;
  }

 private:
  void check_id(int id) const {
    GSQ_CHECK(id >= 0 && id < vocab_.size(), "tokenizer: token id ", id, " is outside [0, ",
              vocab_.size(), ")");
  }

  void encode_raw(const std::string& text, std::vector<int>& out) const {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    GSQ_CHECK(status.ok(), "tokenizer: SentencePiece cannot encode: ", status.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }

  sentencepiece::SentencePieceProcessor sp_;
  TextVocab vocab_;
  tokenizer_detail::SpecialTokens special_;
};

}  // namespace gsq
