// vocab.hpp: TextVocab, a text vocabulary as GGUF stores it (tokens, scores, types, merges,
// special ids), read from a GGUF file's tokenizer.ggml.* metadata, and the split of a text
// around the special tokens written in it.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/models/gguf/file.hpp"

namespace gsq {

/// GGUF's tokenizer.ggml.token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*).
enum class TokenType : std::uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,      // <unk>: never produced from text unless parse_special
  kControl = 3,      // <s>, </s>, <|endoftext|>: recognised in text only when parse_special
  kUserDefined = 4,  // added tokens: always recognised in text, before pre-tokenization
  kUnused = 5,
  kByte = 6,  // <0xNN> byte-fallback pieces of SentencePiece vocabularies
};

/// A text vocabulary.  `model` is "llama" (SentencePiece-style: scores, "▁" for spaces, <0xNN>
/// byte fallback) or "gpt2" (byte-level BPE: merges, GPT-2 byte-to-unicode pieces, the
/// pre-tokenizer named by `pre`).  Ids index `tokens`; -1 means "none".
struct TextVocab {
  static constexpr std::uint8_t kLstrip = 1;  // strip_flags: eat spaces left of the token
  static constexpr std::uint8_t kRstrip = 2;  // ... and right of it, when found in text

  std::string model;
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;                                // empty (all 0) or one per token
  std::vector<TokenType> token_types;                       // empty (all normal) or one per token
  std::vector<std::pair<std::string, std::string>> merges;  // BPE, highest priority first
  std::vector<std::uint8_t> strip_flags;                    // empty or one per token
  int bos = -1;
  int eos = -1;
  int unk = -1;
  int pad = -1;
  bool add_bos = false;  // the model expects BOS first
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece's dummy prefix: " " before the text

  int size() const noexcept { return static_cast<int>(tokens.size()); }
  TokenType type(int id) const noexcept {
    return token_types.empty() ? TokenType::kNormal : token_types[static_cast<std::size_t>(id)];
  }
  float score(int id) const noexcept {
    return scores.empty() ? 0.0f : scores[static_cast<std::size_t>(id)];
  }
  std::uint8_t strip(int id) const noexcept {
    return strip_flags.empty() ? 0 : strip_flags[static_cast<std::size_t>(id)];
  }

  /// Throws std::invalid_argument ("tokenizer: ...") unless the arrays agree with `tokens` in
  /// length, scores are finite, and every special id is -1 or a token.
  void validate() const {
    const std::size_t n = tokens.size();
    GSQ_CHECK(n >= 1 && n <= (std::size_t{1} << 24), "tokenizer: the vocabulary has ", n,
              " tokens, outside [1, 2^24]");
    GSQ_CHECK(scores.empty() || scores.size() == n, "tokenizer: ", scores.size(), " scores for ", n,
              " tokens");
    GSQ_CHECK(token_types.empty() || token_types.size() == n, "tokenizer: ", token_types.size(),
              " token types for ", n, " tokens");
    GSQ_CHECK(strip_flags.empty() || strip_flags.size() == n, "tokenizer: ", strip_flags.size(),
              " strip flags for ", n, " tokens");
    for (std::size_t i = 0; i < scores.size(); ++i)
      GSQ_CHECK(std::isfinite(scores[i]), "tokenizer: token ", i, " has score ", scores[i]);
    const std::pair<const char*, int> ids[] = {
        {"bos", bos}, {"eos", eos}, {"unk", unk}, {"pad", pad}};
    for (const auto& [name, id] : ids)
      GSQ_CHECK(id >= -1 && id < size(), "tokenizer: ", name, " id ", id,
                " is outside the vocabulary of ", n, " tokens");
    GSQ_CHECK(!add_bos || bos >= 0, "tokenizer: add_bos is set but there is no BOS token");
    GSQ_CHECK(!add_eos || eos >= 0, "tokenizer: add_eos is set but there is no EOS token");
  }
};

namespace tokenizer_detail {

/// Token text -> id.  Empty texts are not indexed (they can never match); a text that occurs
/// twice is an error, as in llama.cpp, which asserts on it.
inline std::unordered_map<std::string, int> index_tokens(const TextVocab& v) {
  std::unordered_map<std::string, int> index;
  index.reserve(v.tokens.size());
  for (int id = 0; id < v.size(); ++id) {
    const std::string& t = v.tokens[static_cast<std::size_t>(id)];
    if (t.empty()) continue;
    const auto [it, fresh] = index.emplace(t, id);
    GSQ_CHECK(fresh, "tokenizer: tokens ", it->second, " and ", id, " are both '", t, "'");
  }
  return index;
}

/// A piece of the input: raw text [offset, offset + length), or one special token.
struct Fragment {
  int token;  // -1 for raw text
  std::size_t offset;
  std::size_t length;
};

/// The special tokens of a vocabulary (control, user-defined and unknown types, longest first),
/// and llama.cpp's split of a text around them: for each special token in that order, every
/// occurrence inside a still-raw fragment (leftmost first, not overlapping) becomes that token.
/// Control and unknown tokens take part only when `parse_special`; user-defined ones always.
class SpecialTokens {
 public:
  SpecialTokens() = default;
  explicit SpecialTokens(const TextVocab& v) : vocab_(&v) {
    for (int id = 0; id < v.size(); ++id) {
      const TokenType t = v.type(id);
      if ((t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) &&
          !v.tokens[static_cast<std::size_t>(id)].empty())
        ids_.push_back(id);
    }
    std::stable_sort(ids_.begin(), ids_.end(), [&](int a, int b) {
      return v.tokens[static_cast<std::size_t>(a)].size() >
             v.tokens[static_cast<std::size_t>(b)].size();
    });
  }

  /// Cost: one substring search of the whole text per special token, plus the splitting work
  /// for the tokens that occur.
  std::vector<Fragment> split(std::string_view text, bool parse_special) const {
    std::vector<Fragment> out;
    if (text.empty()) return out;
    out.push_back({-1, 0, text.size()});
    if (vocab_ == nullptr) return out;
    std::vector<Fragment> next;
    for (const int id : ids_) {
      const TokenType type = vocab_->type(id);
      if (!parse_special && type != TokenType::kUserDefined) continue;
      const std::string& s = vocab_->tokens[static_cast<std::size_t>(id)];
      if (text.find(s) == std::string_view::npos) continue;
      const std::uint8_t strip = vocab_->strip(id);
      next.clear();
      for (const Fragment& f : out) {
        if (f.token >= 0) {
          next.push_back(f);
          continue;
        }
        std::size_t at = f.offset;
        const std::size_t end = f.offset + f.length;
        for (;;) {
          const std::size_t m = text.find(s, at);
          if (m == std::string_view::npos || m + s.size() > end) {
            if (at < end) next.push_back({-1, at, end - at});
            break;
          }
          std::size_t left_end = m;
          if (strip & TextVocab::kLstrip)
            while (left_end > at && is_space(text[left_end - 1])) --left_end;
          if (left_end > at) next.push_back({-1, at, left_end - at});
          next.push_back({id, m, s.size()});
          at = m + s.size();
          if (strip & TextVocab::kRstrip)
            while (at < end && is_space(text[at])) ++at;
        }
      }
      out.swap(next);
    }
    return out;
  }

 private:
  static bool is_space(char c) noexcept { return std::isspace(static_cast<unsigned char>(c)) != 0; }

  const TextVocab* vocab_ = nullptr;
  std::vector<int> ids_;
};

/// The id stored under `key`, or `fallback` when absent; must index the vocabulary.  The
/// value 0xFFFFFFFF (-1 as int32, which llama.cpp's converters write for "no such token", e.g.
/// stories260K.gguf's padding_token_id) means none.
inline int special_id(const gguf::GgufFile& f, const char* key, int fallback, int n) {
  const gguf::Value* v = f.find(key);
  if (v == nullptr) return fallback < n ? fallback : -1;
  if (v->type() == gguf::ValueType::kInt32 && v->as_int() == -1) return -1;
  if (v->type() == gguf::ValueType::kUint32 && v->as_uint() == 0xFFFFFFFFu) return -1;
  const std::uint64_t id = v->as_uint();
  GSQ_CHECK(id < static_cast<std::uint64_t>(n), "tokenizer: ", key, " = ", id,
            " is outside the vocabulary of ", n, " tokens");
  return static_cast<int>(id);
}

inline bool flag(const gguf::GgufFile& f, const char* key, bool fallback) {
  const gguf::Value* v = f.find(key);
  return v == nullptr ? fallback : v->as_bool();
}

/// The text a SentencePiece piece `s` of type t stands for: nothing for control and unknown
/// tokens, the raw byte of a <0xNN> byte token, a user-defined token verbatim, else the piece
/// with each "▁" (U+2581) a space, the leading one dropped when `strip_prefix` (the dummy
/// prefix at the start of the text or after BOS).
inline std::string spm_piece_text(const std::string& s, TokenType t, bool strip_prefix) {
  if (t == TokenType::kControl || t == TokenType::kUnknown) return std::string();
  if (t == TokenType::kUserDefined) return s;
  if (t == TokenType::kByte) {
    unsigned byte = 0;
    char tail = 0;
    if (s.size() == 6 && std::sscanf(s.c_str(), "<0x%02X%c", &byte, &tail) == 2 && tail == '>')
      return std::string(1, static_cast<char>(byte));
    return s;
  }
  static constexpr std::string_view kSpace = "\xE2\x96\x81";
  std::string text;
  std::size_t i = 0;
  if (strip_prefix && s.compare(0, kSpace.size(), kSpace) == 0) i = kSpace.size();
  for (; i < s.size(); ++i) {
    if (s.compare(i, kSpace.size(), kSpace) == 0) {
      text += ' ';
      i += kSpace.size() - 1;
    } else {
      text += s[i];
    }
  }
  return text;
}

}  // namespace tokenizer_detail

/// The vocabulary in a GGUF file's metadata: tokenizer.ggml.model ("llama" or "gpt2"), .pre,
/// .tokens, .scores, .token_type, .merges ("left right" strings), the special ids
/// (bos_token_id, eos_token_id, unknown_token_id, padding_token_id) and the add_bos_token,
/// add_eos_token and add_space_prefix flags, with llama.cpp's defaults where a key is absent
/// (SentencePiece: BOS 1, EOS 2, UNK 0, add BOS, add the space prefix; BPE: none of them, and
/// add BOS for the llama-bpe pre-tokenizer).  As llama.cpp does, tokens named like end-of-turn
/// and fill-in-the-middle markers ("<|endoftext|>", "<|im_end|>", "<|fim_prefix|>", ...) are
/// made control tokens, and Phi-3's special tokens eat the spaces after them.  Throws
/// std::invalid_argument ("tokenizer: ..." or "gguf: ...") for a missing or ill-typed key, arrays
/// of different lengths, a special id outside the vocabulary, or a merge without a space.
inline TextVocab vocab_from_gguf(const gguf::GgufFile& f) {
  using tokenizer_detail::flag;
  using tokenizer_detail::special_id;
  TextVocab v;
  v.model = f.at("tokenizer.ggml.model").as_string();
  GSQ_CHECK(v.model == "llama" || v.model == "gpt2", "tokenizer: tokenizer.ggml.model '", v.model,
            "' is not supported (gsq reads 'llama' and 'gpt2' vocabularies)");
  if (const gguf::Value* pre = f.find("tokenizer.ggml.pre")) v.pre = pre->as_string();
  const gguf::Value& tokens = f.at("tokenizer.ggml.tokens");
  v.tokens = tokens.strings();
  const std::size_t n = v.tokens.size();
  GSQ_CHECK(n >= 1 && n <= (std::size_t{1} << 24), "tokenizer: tokenizer.ggml.tokens has ", n,
            " tokens, outside [1, 2^24]");
  if (const gguf::Value* s = f.find("tokenizer.ggml.scores")) {
    GSQ_CHECK(s->is_array() && s->array_size() == n, "tokenizer: tokenizer.ggml.scores has ",
              s->is_array() ? s->array_size() : 1, " entries for ", n, " tokens");
    v.scores = s->floats();
  }
  if (const gguf::Value* t = f.find("tokenizer.ggml.token_type")) {
    GSQ_CHECK(t->is_array() && t->array_size() == n, "tokenizer: tokenizer.ggml.token_type has ",
              t->is_array() ? t->array_size() : 1, " entries for ", n, " tokens");
    const std::vector<std::int64_t> types = t->ints();
    v.token_types.resize(n);
    for (std::size_t i = 0; i < n; ++i)  // unknown values are "undefined", as in llama.cpp
      v.token_types[i] =
          types[i] >= 0 && types[i] <= 6 ? static_cast<TokenType>(types[i]) : TokenType::kUndefined;
  }
  const int size = static_cast<int>(n);
  if (v.model == "llama") {
    v.bos = special_id(f, "tokenizer.ggml.bos_token_id", 1, size);
    v.eos = special_id(f, "tokenizer.ggml.eos_token_id", 2, size);
    v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", 0, size);
    v.add_bos = v.bos >= 0;
    v.add_space_prefix = true;
  } else {
    const gguf::Value& merges = f.at("tokenizer.ggml.merges");
    const std::vector<std::string>& m = merges.strings();
    v.merges.reserve(m.size());
    for (std::size_t i = 0; i < m.size(); ++i) {
      // The separator is the first space after the first byte, so " x" cannot start a merge.
      const std::size_t space = m[i].size() > 1 ? m[i].find(' ', 1) : std::string::npos;
      GSQ_CHECK(space != std::string::npos, "tokenizer: merge ", i, " '", m[i],
                "' is not two pieces separated by a space");
      v.merges.emplace_back(m[i].substr(0, space), m[i].substr(space + 1));
    }
    v.bos = special_id(f, "tokenizer.ggml.bos_token_id", -1, size);
    v.eos = special_id(f, "tokenizer.ggml.eos_token_id", -1, size);
    v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", -1, size);
    v.add_bos = (v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3") && v.bos >= 0;
  }
  v.pad = special_id(f, "tokenizer.ggml.padding_token_id", -1, size);
  v.add_bos = flag(f, "tokenizer.ggml.add_bos_token", v.add_bos);
  v.add_eos = flag(f, "tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = flag(f, "tokenizer.ggml.add_space_prefix", v.add_space_prefix);

  // llama.cpp forces these markers to control tokens whatever the file says.
  static const char* const kControlNames[] = {
      "<|eot_id|>",     "<|im_end|>",   "<|end|>",         "<end_of_turn>",
      "<|endoftext|>",  "<|eom_id|>",   "<EOT>",           "<｜end▁of▁sentence｜>",
      "<|fim_prefix|>", "<fim-prefix>", "<｜fim▁begin｜>", "<PRE>",
      "<|fim_suffix|>", "<fim-suffix>", "<｜fim▁hole｜>",  "<SUF>",
      "<|fim_middle|>", "<fim-middle>", "<｜fim▁end｜>",   "<MID>",
      "<|fim_pad|>",    "<fim-pad>",    "<PAD>",           "<|fim_repo|>",
      "<|repo_name|>",  "<fim-repo>",   "<REPO>",          "<|file_sep|>"};
  const std::unordered_map<std::string, int> index = tokenizer_detail::index_tokens(v);
  for (const char* name : kControlNames) {
    const auto it = index.find(name);
    if (it == index.end()) continue;
    if (v.token_types.empty()) v.token_types.assign(n, TokenType::kNormal);
    v.token_types[static_cast<std::size_t>(it->second)] = TokenType::kControl;
  }
  // Phi-3: special tokens eat the whitespace after them, except <unk>, <s>, <|endoftext|>.
  if (const gguf::Value* name = f.find("general.name")) {
    std::string lower = name->as_string();
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("phi-3") != std::string::npos || lower.find("phi3") != std::string::npos) {
      v.strip_flags.assign(n, 0);
      for (int id = 0; id < size; ++id) {
        const TokenType t = v.type(id);
        if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown)
          v.strip_flags[static_cast<std::size_t>(id)] = TextVocab::kRstrip;
      }
      for (const char* keep : {"<unk>", "<s>", "<|endoftext|>"}) {
        const auto it = index.find(keep);
        if (it != index.end()) v.strip_flags[static_cast<std::size_t>(it->second)] = 0;
      }
      const auto eos = index.find("</s>");
      if (eos != index.end())
        v.strip_flags[static_cast<std::size_t>(eos->second)] = TextVocab::kRstrip;
    }
  }
  v.validate();
  return v;
}

}  // namespace gsq
