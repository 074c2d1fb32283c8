// spm.hpp: SpmTokenizer, SentencePiece-style BPE over a GGUF "llama" vocabulary, token for
// token the ids of llama.cpp's SPM tokenizer (best-score bigram merges, <0xNN> byte fallback).
#pragma once

#include <cstdint>
#include <cstdio>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"
#include "gsq/models/tokenizer/vocab.hpp"

namespace gsq {

/// Encoding, as llama.cpp does it: the text is split around special tokens (vocab.hpp); each raw
/// fragment that starts the text or follows a special token gets the dummy prefix " " (if the
/// vocabulary's add_space_prefix), spaces become "▁" (U+2581), the fragment is cut into UTF-8
/// characters, and the adjacent pair whose concatenation is a token of highest score (ties: the
/// leftmost) is merged until no pair is a token.  Each final piece is its token, or else its
/// bytes as <0xNN> tokens (or the one-byte token, or UNK, in that order of preference; a byte
/// with none of them is dropped, where llama.cpp would throw).
/// Invalid UTF-8 is cut into single bytes (llama.cpp cuts it by the length its lead byte claims;
/// the ids differ only there), so it goes through the byte fallback unchanged and decode() gives
/// the same bytes back.  (A vocabulary without a "▁" piece, unlike every real one, would send
/// spaces to the byte fallback as the bytes of "▁", and they would decode as "▁", as in
/// llama.cpp.)  Cost: O(n log n) in the length of a fragment.
class SpmTokenizer final : public TextTokenizer {
 public:
  explicit SpmTokenizer(TextVocab vocab) : vocab_(std::move(vocab)) {
    vocab_.validate();
    GSQ_CHECK(vocab_.model == "llama", "tokenizer: SpmTokenizer needs a 'llama' vocabulary, not '",
              vocab_.model, "'");
    index_ = tokenizer_detail::index_tokens(vocab_);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned>(b));
      auto it = index_.find(name);
      if (it == index_.end()) it = index_.find(std::string(1, static_cast<char>(b)));
      byte_token_[b] = it != index_.end() ? it->second : vocab_.unk;
    }
    special_ = tokenizer_detail::SpecialTokens(vocab_);
  }
  SpmTokenizer(const SpmTokenizer&) = delete;  // special_ points into vocab_
  SpmTokenizer& operator=(const SpmTokenizer&) = delete;

  const TextVocab& vocab() const noexcept { return vocab_; }
  int vocab_size() const noexcept override { return vocab_.size(); }
  int bos() const noexcept override { return vocab_.bos; }
  int eos() const noexcept override { return vocab_.eos; }
  bool wants_bos() const noexcept override { return vocab_.add_bos; }
  std::string kind() const override { return "spm"; }

  std::vector<int> encode(const std::string& text, bool add_bos,
                          bool parse_special) const override {
    std::vector<int> out;
    if (add_bos) {
      GSQ_CHECK(vocab_.bos >= 0, "tokenizer: add_bos asked, but the vocabulary has no BOS");
      out.push_back(vocab_.bos);
    }
    bool after_special = true;
    std::string escaped;
    for (const tokenizer_detail::Fragment& f : special_.split(text, parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        after_special = true;
        continue;
      }
      escaped.clear();
      if (vocab_.add_space_prefix && after_special) escaped = kSpace;
      for (std::size_t i = f.offset; i < f.offset + f.length; ++i) {
        if (text[i] == ' ') {
          escaped += kSpace;
        } else {
          escaped += text[i];
        }
      }
      encode_fragment(escaped, out);
      after_special = false;
    }
    return out;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out;
    int prev = -1;
    for (const int id : ids) {
      out += token_to_text(prev, id);
      prev = id;
    }
    return out;
  }

  std::string piece(int id) const override {
    check_id(id);
    return vocab_.tokens[static_cast<std::size_t>(id)];
  }

  std::string token_to_text(int prev, int id) const override {
    check_id(id);
    return tokenizer_detail::spm_piece_text(
        vocab_.tokens[static_cast<std::size_t>(id)], vocab_.type(id),
        vocab_.add_space_prefix && (prev < 0 || prev == vocab_.bos));
  }

  bool is_control(int id) const override {
    check_id(id);
    return vocab_.type(id) == TokenType::kControl;
  }

 private:
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

  struct Symbol {
    int prev;
    int next;
    std::size_t start;
    std::size_t length;  // 0: merged into its left neighbour
  };
  struct Bigram {
    float score;
    int left;
    std::size_t length;  // of the merged text, to recognise stale entries
    bool operator<(const Bigram& o) const noexcept {  // best score first, then leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };

  void check_id(int id) const {
    GSQ_CHECK(id >= 0 && id < vocab_.size(), "tokenizer: token id ", id, " is outside [0, ",
              vocab_.size(), ")");
  }

  int find(std::string_view s) const {
    const auto it = index_.find(std::string(s));
    return it == index_.end() ? -1 : it->second;
  }

  void encode_fragment(const std::string& text, std::vector<int>& out) const {
    std::vector<Symbol> sym;
    for (std::size_t at = 0; at < text.size();) {
      // A UTF-8 character, or one byte of an invalid sequence (llama.cpp would take the
      // length its lead byte claims and could swallow the "▁" of a following space).
      std::uint32_t cp = 0;
      const std::size_t valid = tokenizer_detail::decode_utf8(text, at, cp);
      const std::size_t n = valid > 0 ? valid : 1;
      const int i = static_cast<int>(sym.size());
      sym.push_back({i - 1, at + n == text.size() ? -1 : i + 1, at, n});
      at += n;
    }
    std::priority_queue<Bigram> queue;
    const auto try_pair = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const std::size_t len =
          sym[static_cast<std::size_t>(left)].length + sym[static_cast<std::size_t>(right)].length;
      const int id =
          find(std::string_view(text).substr(sym[static_cast<std::size_t>(left)].start, len));
      if (id >= 0) queue.push({vocab_.score(id), left, len});
    };
    for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_pair(i - 1, i);
    while (!queue.empty()) {
      const Bigram b = queue.top();
      queue.pop();
      Symbol& left = sym[static_cast<std::size_t>(b.left)];
      if (left.length == 0 || left.next < 0) continue;
      Symbol& right = sym[static_cast<std::size_t>(left.next)];
      if (right.length == 0 || left.length + right.length != b.length) continue;
      left.length += right.length;
      right.length = 0;
      left.next = right.next;
      if (left.next >= 0) sym[static_cast<std::size_t>(left.next)].prev = b.left;
      try_pair(left.prev, b.left);
      try_pair(b.left, left.next);
    }
    for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
      const Symbol& s = sym[static_cast<std::size_t>(i)];
      const int id = find(std::string_view(text).substr(s.start, s.length));
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (std::size_t k = s.start; k < s.start + s.length; ++k) {
        const int b = byte_token_[static_cast<unsigned char>(text[k])];
        if (b >= 0) out.push_back(b);  // no byte piece and no UNK: dropped, as by BpeTokenizer
      }
    }
  }

  TextVocab vocab_;
  std::unordered_map<std::string, int> index_;
  int byte_token_[256];
  tokenizer_detail::SpecialTokens special_;
};

}  // namespace gsq
