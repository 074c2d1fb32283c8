// bpe.hpp: BpeTokenizer, byte-level BPE (GGUF "gpt2" vocabularies, Hugging Face tokenizer.json):
// the pre-tokenizer regexes of each tokenizer.ggml.pre through PCRE2, GPT-2's byte-to-unicode
// pieces and merges by rank, token for token the ids of llama.cpp's BPE tokenizer.
// gsq-requires: pcre2
#pragma once

#if !GSQ_HAVE_PCRE2
#error "gsq/models/tokenizer/bpe.hpp needs PCRE2 (gsq::pcre2, GSQ_HAVE_PCRE2=1)"
#endif
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <cstdint>
#include <memory>
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

/// How a BPE vocabulary cuts text into words before merging: regexes applied in sequence (each
/// one cuts every piece the previous ones left into its matches and the gaps between them) and
/// whether a word that is already a token skips the merges (Llama 3's ignore_merges).
struct BpePreTokenizer {
  std::vector<std::string> patterns;
  bool ignore_merges = false;
};

namespace bpe_patterns {
// GPT-2's split; llama.cpp's hand-written matcher for it also ends with "\s+".
inline constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}  // namespace bpe_patterns

/// The pre-tokenizer llama.cpp uses for tokenizer.ggml.pre = `pre`: "gpt-2", "mpt",
/// "starcoder", "refact", "smollm", "falcon", "deepseek-coder", "llama-bpe" (also "llama3",
/// "llama-v3") and "qwen2".  Any other name throws std::invalid_argument naming it.
inline BpePreTokenizer bpe_pre_tokenizer(const std::string& pre) {
  using namespace bpe_patterns;
  if (pre == "gpt-2" || pre == "mpt") return {{kGpt2}, false};
  if (pre == "starcoder" || pre == "refact" || pre == "smollm") return {{R"(\p{N})", kGpt2}, false};
  if (pre == "falcon") return {{R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}, false};
  if (pre == "deepseek-coder")
    return {{R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)",
             "[\xE4\xB8\x80-\xE9\xBE\xA5\xE0\xA0\x80-\xE4\xB8\x80\xEA\xB0\x80-\xED\x9F\xBF]+",
             R"(\p{N})"},
            false};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return {{kLlama3}, true};
  if (pre == "qwen2") return {{kQwen2}, false};
  GSQ_CHECK(false, "tokenizer: BPE pre-tokenizer '", pre,
            "' is not supported (gsq knows gpt-2, mpt, starcoder, refact, smollm, falcon, "
            "deepseek-coder, llama-bpe, qwen2)");
  return {};
}

namespace tokenizer_detail {

/// One compiled PCRE2 pattern (UTF, Unicode properties for \s \d \w, invalid UTF-8 in the
/// subject allowed and never matched), JIT-compiled where the library can.
class Pcre2Regex {
 public:
  explicit Pcre2Regex(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      GSQ_CHECK(false, "tokenizer: pre-tokenizer regex '", pattern, "' does not compile at offset ",
                offset, ": ", reinterpret_cast<const char*>(message));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Pcre2Regex() { pcre2_code_free(code_); }
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  /// Whether PCRE2 compiled the pattern to machine code.
  bool jit() const noexcept { return jit_; }

  /// Appends to `out` the pieces of subject[0, size): matches and the gaps between them, as
  /// (offset, length) relative to `base`.  Empty matches are skipped.
  void split(const char* subject, std::size_t size, std::size_t base,
             std::vector<std::pair<std::size_t, std::size_t>>& out) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    GSQ_CHECK(md != nullptr, "tokenizer: out of memory for a regex match");
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject);
    std::size_t last = 0;
    std::size_t at = 0;
    while (at < size) {
      int rc = pcre2_match(code_, s, size, at, 0, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(code_, s, size, at, PCRE2_NO_JIT, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof message);
        GSQ_CHECK(false, "tokenizer: pre-tokenizer regex failed on a text of ", size,
                  " bytes: ", reinterpret_cast<const char*>(message));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const std::size_t begin = ov[0];
      const std::size_t end = ov[1];
      if (end <= begin) {  // an empty match: move on by one character
        at = begin + 1;
        while (at < size && (static_cast<unsigned char>(subject[at]) & 0xC0) == 0x80) ++at;
        continue;
      }
      if (begin > last) out.emplace_back(base + last, begin - last);
      out.emplace_back(base + begin, end - begin);
      last = at = end;
    }
    if (last < size) out.emplace_back(base + last, size - last);
  }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

/// GPT-2's map from bytes to printable code points: the printable Latin-1 bytes stay, the others
/// (0-32, 127-160, 173) become U+0100 onwards in byte order.
inline std::uint32_t byte_to_unicode(unsigned char b) {
  static const std::vector<std::uint32_t> table = [] {
    std::vector<std::uint32_t> t(256);
    std::uint32_t next = 256;
    for (int c = 0; c < 256; ++c) {
      const bool keep = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174);
      t[static_cast<std::size_t>(c)] = keep ? static_cast<std::uint32_t>(c) : next++;
    }
    return t;
  }();
  return table[b];
}

}  // namespace tokenizer_detail

/// A compiled pre-tokenizer: cuts text into words.
class BpeSplitter {
 public:
  explicit BpeSplitter(const std::vector<std::string>& patterns) {
    for (const std::string& p : patterns)
      regexes_.push_back(std::make_shared<const tokenizer_detail::Pcre2Regex>(p));
  }

  /// The words of text[offset, offset + length), as (offset, length) pairs in order; together
  /// they cover the range exactly.
  std::vector<std::pair<std::size_t, std::size_t>> split(std::string_view text, std::size_t offset,
                                                         std::size_t length) const {
    std::vector<std::pair<std::size_t, std::size_t>> pieces{{offset, length}};
    if (length == 0) pieces.clear();
    std::vector<std::pair<std::size_t, std::size_t>> next;
    for (const auto& re : regexes_) {
      next.clear();
      for (const auto& [at, n] : pieces) re->split(text.data() + at, n, at, next);
      pieces.swap(next);
    }
    return pieces;
  }

  /// The words of `text` as strings.
  std::vector<std::string> split(std::string_view text) const {
    std::vector<std::string> words;
    for (const auto& [at, n] : split(text, 0, text.size())) words.emplace_back(text.substr(at, n));
    return words;
  }

 private:
  std::vector<std::shared_ptr<const tokenizer_detail::Pcre2Regex>> regexes_;
};

/// Encoding, as llama.cpp does it: the text is split around special tokens (vocab.hpp), each raw
/// fragment is cut into words by the pre-tokenizer, and each word's bytes, one GPT-2 piece per
/// byte, are merged pairwise by merge rank (lowest first; ties: the leftmost pair) until no
/// adjacent pair has a merge.  Invalid UTF-8 never matches a regex, so it becomes words of its
/// own whose bytes are encoded like any other: decode() gives the same bytes back.  A byte whose
/// piece is not in the vocabulary becomes UNK, or is dropped when there is no UNK (as llama.cpp
/// drops it).  Cost: O(n log n) in the length of a word.
class BpeTokenizer final : public TextTokenizer {
 public:
  /// The pre-tokenizer named by vocab.pre.
  explicit BpeTokenizer(const TextVocab& vocab)
      : BpeTokenizer(vocab, bpe_pre_tokenizer_of(vocab)) {}

  /// Any pre-tokenizer (tokenizer.json's Split regexes).  Throws std::invalid_argument for an
  /// invalid vocabulary or a merge whose pieces, or whose result, are not tokens.
  BpeTokenizer(TextVocab vocab, BpePreTokenizer pre)
      : vocab_(std::move(vocab)), splitter_(pre.patterns), ignore_merges_(pre.ignore_merges) {
    vocab_.validate();
    index_ = tokenizer_detail::index_tokens(vocab_);
    for (int b = 0; b < 256; ++b) {
      std::string piece;
      tokenizer_detail::append_utf8(
          piece, tokenizer_detail::byte_to_unicode(static_cast<unsigned char>(b)));
      const auto it = index_.find(piece);
      byte_token_[b] = it != index_.end() ? it->second : -1;
      unicode_to_byte_.emplace(tokenizer_detail::byte_to_unicode(static_cast<unsigned char>(b)),
                               static_cast<unsigned char>(b));
    }
    merges_.reserve(vocab_.merges.size());
    for (std::size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
      const auto& [a, b] = vocab_.merges[rank];
      const int ia = find(a);
      const int ib = find(b);
      const int ic = find(a + b);
      GSQ_CHECK(ia >= 0 && ib >= 0, "tokenizer: merge ", rank, " '", a, " ", b, "' names '",
                ia < 0 ? a : b, "', which is not a token");
      GSQ_CHECK(ic >= 0, "tokenizer: merge ", rank, " '", a, " ", b, "' makes '", a + b,
                "', which is not a token");
      merges_.emplace(key(ia, ib), Merge{static_cast<int>(rank), ic});  // the first one counts
    }
    special_ = tokenizer_detail::SpecialTokens(vocab_);
  }
  BpeTokenizer(const BpeTokenizer&) = delete;  // special_ points into vocab_
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  const TextVocab& vocab() const noexcept { return vocab_; }
  const BpeSplitter& splitter() const noexcept { return splitter_; }
  int vocab_size() const noexcept override { return vocab_.size(); }
  int bos() const noexcept override { return vocab_.bos; }
  int eos() const noexcept override { return vocab_.eos; }
  bool wants_bos() const noexcept override { return vocab_.add_bos; }
  std::string kind() const override { return "bpe"; }

  std::vector<int> encode(const std::string& text, bool add_bos,
                          bool parse_special) const override {
    std::vector<int> out;
    if (add_bos) {
      GSQ_CHECK(vocab_.bos >= 0, "tokenizer: add_bos asked, but the vocabulary has no BOS");
      out.push_back(vocab_.bos);
    }
    Work work;
    for (const tokenizer_detail::Fragment& f : special_.split(text, parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        continue;
      }
      for (const auto& [at, n] : splitter_.split(text, f.offset, f.length))
        encode_word(std::string_view(text).substr(at, n), work, out);
    }
    return out;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out;
    for (const int id : ids) out += token_to_text(-1, id);
    return out;
  }

  std::string piece(int id) const override {
    check_id(id);
    return vocab_.tokens[static_cast<std::size_t>(id)];
  }

  /// Normal tokens map each code point back to its byte; a code point outside GPT-2's map (a
  /// vocabulary that is not byte-level) is copied as UTF-8, an invalid byte as itself.
  std::string token_to_text(int /*prev*/, int id) const override {
    check_id(id);
    const TokenType t = vocab_.type(id);
    const std::string& s = vocab_.tokens[static_cast<std::size_t>(id)];
    if (t == TokenType::kControl || t == TokenType::kUnknown) return std::string();
    if (t == TokenType::kUserDefined) return s;
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
      std::uint32_t cp = 0;
      const std::size_t n = tokenizer_detail::decode_utf8(s, i, cp);
      if (n == 0) {
        out += s[i++];
        continue;
      }
      const auto it = unicode_to_byte_.find(cp);
      if (it != unicode_to_byte_.end()) {
        out += static_cast<char>(it->second);
      } else {
        out.append(s, i, n);
      }
      i += n;
    }
    return out;
  }

  bool is_control(int id) const override {
    check_id(id);
    return vocab_.type(id) == TokenType::kControl;
  }

 private:
  struct Merge {
    int rank;
    int id;
  };
  struct Symbol {
    int id;  // -1: a byte whose piece is not a token
    int prev;
    int next;
    std::uint32_t length;  // bytes; 0 once merged into the left neighbour
  };
  struct Pair {
    int rank;
    int left;
    int right;
    std::uint32_t left_length;
    std::uint32_t right_length;
    int id;
    bool operator<(const Pair& o) const noexcept {  // lowest rank first, then leftmost
      return rank > o.rank || (rank == o.rank && left > o.left);
    }
  };
  struct Work {  // reused across the words of one encode() call
    std::vector<Symbol> symbols;
    std::vector<Pair> heap;
    std::string encoded;
  };

  static BpePreTokenizer bpe_pre_tokenizer_of(const TextVocab& v) {
    GSQ_CHECK(v.model == "gpt2", "tokenizer: BpeTokenizer needs a 'gpt2' vocabulary, not '",
              v.model, "'");
    return bpe_pre_tokenizer(v.pre);
  }

  static std::uint64_t key(int a, int b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  void check_id(int id) const {
    GSQ_CHECK(id >= 0 && id < vocab_.size(), "tokenizer: token id ", id, " is outside [0, ",
              vocab_.size(), ")");
  }

  int find(const std::string& s) const {
    const auto it = index_.find(s);
    return it == index_.end() ? -1 : it->second;
  }

  void try_pair(Work& w, int left, int right) const {
    if (left < 0 || right < 0) return;
    const Symbol& l = w.symbols[static_cast<std::size_t>(left)];
    const Symbol& r = w.symbols[static_cast<std::size_t>(right)];
    if (l.id < 0 || r.id < 0) return;
    const auto it = merges_.find(key(l.id, r.id));
    if (it == merges_.end()) return;
    w.heap.push_back({it->second.rank, left, right, l.length, r.length, it->second.id});
    std::push_heap(w.heap.begin(), w.heap.end());
  }

  void encode_word(std::string_view word, Work& w, std::vector<int>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      w.encoded.clear();
      for (const char c : word)
        tokenizer_detail::append_utf8(
            w.encoded, tokenizer_detail::byte_to_unicode(static_cast<unsigned char>(c)));
      const int id = find(w.encoded);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    w.symbols.clear();
    w.heap.clear();
    const int n = static_cast<int>(word.size());
    for (int i = 0; i < n; ++i)
      w.symbols.push_back(
          {byte_token_[static_cast<unsigned char>(word[static_cast<std::size_t>(i)])], i - 1,
           i + 1 < n ? i + 1 : -1, 1});
    for (int i = 1; i < n; ++i) try_pair(w, i - 1, i);
    while (!w.heap.empty()) {
      std::pop_heap(w.heap.begin(), w.heap.end());
      const Pair p = w.heap.back();
      w.heap.pop_back();
      Symbol& l = w.symbols[static_cast<std::size_t>(p.left)];
      Symbol& r = w.symbols[static_cast<std::size_t>(p.right)];
      if (l.length != p.left_length || r.length != p.right_length || l.length == 0 ||
          r.length == 0 || l.next != p.right)
        continue;  // stale: one side has changed since the pair was queued
      l.id = p.id;
      l.length += r.length;
      r.length = 0;
      l.next = r.next;
      if (l.next >= 0) w.symbols[static_cast<std::size_t>(l.next)].prev = p.left;
      try_pair(w, l.prev, p.left);
      try_pair(w, p.left, l.next);
    }
    for (int i = 0; i >= 0; i = w.symbols[static_cast<std::size_t>(i)].next) {
      const int id = w.symbols[static_cast<std::size_t>(i)].id;
      if (id >= 0) {
        out.push_back(id);
      } else if (vocab_.unk >= 0) {
        out.push_back(vocab_.unk);
      }
    }
  }

  TextVocab vocab_;
  BpeSplitter splitter_;
  bool ignore_merges_;
  std::unordered_map<std::string, int> index_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::unordered_map<std::uint32_t, unsigned char> unicode_to_byte_;
  int byte_token_[256];
  tokenizer_detail::SpecialTokens special_;
};

}  // namespace gsq
