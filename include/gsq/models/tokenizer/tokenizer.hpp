// tokenizer.hpp: TextTokenizer, the one interface of every text tokenizer (GGUF SentencePiece and
// byte-level BPE vocabularies, Hugging Face files, llama2.c's tokenizer.bin), and UTF-8 helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gsq {

/// Text <-> token ids.  Implementations are immutable after construction, so one object may
/// encode and decode from several threads at once.
class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  /// Number of token ids; a model's embedding must have exactly this many rows.
  virtual int vocab_size() const noexcept = 0;

  /// Token ids of `text` (UTF-8; invalid bytes are tokenized too, see each implementation).
  /// `add_bos` puts bos() first (throws if the vocabulary has none).  Control tokens written in
  /// the text (e.g. "<|endoftext|>") become their ids only when `parse_special` is true;
  /// otherwise they are tokenized as plain text.  Empty text gives no tokens (or just BOS).
  virtual std::vector<int> encode(const std::string& text, bool add_bos,
                                  bool parse_special) const = 0;

  /// The text of a sequence: the concatenation of token_to_text over it, with control and
  /// unknown-type tokens (BOS, EOS, ...) left out.  No other clean-up of spaces is done, so for
  /// byte-level vocabularies decode(encode(t)) == t.
  virtual std::string decode(const std::vector<int>& ids) const = 0;

  /// The vocabulary's own string for `id` (e.g. "▁the", "Ġthe", "<0x0A>", "<s>").
  virtual std::string piece(int id) const = 0;

  /// The bytes `id` contributes to the output when it follows `prev` (-1 at the start of the
  /// output): "▁" is a space, <0xNN> the raw byte, byte-level pieces their bytes; the dummy
  /// prefix space of SentencePiece vocabularies is dropped at the start and after BOS.  Control
  /// tokens give "".  Streamed output is the concatenation of these, possibly splitting a UTF-8
  /// character across tokens.
  virtual std::string token_to_text(int prev, int id) const = 0;

  /// BOS / EOS ids, or -1 when the vocabulary has none.
  virtual int bos() const noexcept = 0;
  virtual int eos() const noexcept = 0;

  /// True for control tokens (BOS, EOS, chat markers): not text, skipped by decode().
  virtual bool is_control(int id) const = 0;

  /// Whether the vocabulary asks for BOS at the start of a sequence (GGUF add_bos_token).
  virtual bool wants_bos() const noexcept = 0;

  /// "spm", "bpe", "sentencepiece", "hf-bpe" or "llama2c": which implementation this is.
  virtual std::string kind() const = 0;
};

namespace tokenizer_detail {

/// Length of the UTF-8 sequence that starts with byte `lead`, as llama.cpp counts it: 1 for ASCII
/// and for a stray continuation byte, 2-4 from the lead byte's high bits.  The caller clamps it
/// to the bytes that remain, so invalid UTF-8 is cut into short pieces, never read past its end.
inline std::size_t utf8_len(unsigned char lead) noexcept {
  static constexpr std::uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

/// Appends code point `cp` (< 0x110000) as UTF-8.
inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Decodes one well-formed UTF-8 character at s[at] (shortest form, no surrogates, at most
/// U+10FFFF); returns its length and sets `cp`, or returns 0 for an invalid sequence.
inline std::size_t decode_utf8(const std::string& s, std::size_t at, std::uint32_t& cp) noexcept {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[at + k]); };
  const std::size_t left = s.size() - at;
  const unsigned char c = b(0);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  std::size_t n;
  std::uint32_t min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = c & 0x1Fu;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = c & 0x0Fu;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = c & 0x07u;
  } else {
    return 0;
  }
  if (left < n) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace tokenizer_detail
}  // namespace gsq
