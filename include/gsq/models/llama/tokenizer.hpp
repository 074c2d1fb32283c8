// tokenizer.hpp: the BPE tokenizer of llama2.c (tokenizer.bin / tok512.bin), hardened.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/file.hpp"

namespace gsq {

// File format (llama2.c's tokenizer export): int32 max_token_length, then for each of the
// model's vocab_size tokens: float32 merge score, int32 byte length n, n bytes.  The token count
// is not stored: it is the model's vocab_size.  Token 0 is <unk>, 1 is <s> (BOS), 2 is </s>, and
// tokens 3..258 are the byte-fallback pieces <0x00>..<0xFF>.
class Tokenizer {
 public:
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;

  /// Parses a tokenizer image for a model with `vocab_size` tokens.  Every length is checked
  /// before it is used; a truncated, padded or inconsistent image throws std::invalid_argument
  /// naming the token and the problem.
  static Tokenizer parse(const unsigned char* bytes, std::size_t size, int vocab_size) {
    GSQ_CHECK(vocab_size >= 3 && vocab_size <= (1 << 20), "tokenizer: vocab_size ", vocab_size,
              " is outside [3, 2^20]");
    GSQ_CHECK(bytes != nullptr || size == 0, "tokenizer: null buffer");
    GSQ_CHECK(size >= 4, "tokenizer: file holds ", size, " bytes, less than its 4-byte header");
    Tokenizer t;
    std::int32_t max_len;
    std::memcpy(&max_len, bytes, 4);
    GSQ_CHECK(max_len >= 1 && max_len <= 1024, "tokenizer: max_token_length ", max_len,
              " is outside [1, 1024]");
    std::size_t at = 4;
    t.pieces_.reserve(static_cast<std::size_t>(vocab_size));
    t.scores_.reserve(static_cast<std::size_t>(vocab_size));
    for (int id = 0; id < vocab_size; ++id) {
      GSQ_CHECK(size - at >= 8, "tokenizer: truncated at token ", id, " of ", vocab_size,
                " (its score and length need 8 bytes, ", size - at, " remain)");
      float score;
      std::int32_t len;
      std::memcpy(&score, bytes + at, 4);
      std::memcpy(&len, bytes + at + 4, 4);
      at += 8;
      GSQ_CHECK(len >= 0 && len <= max_len, "tokenizer: token ", id, " has length ", len,
                ", outside [0, max_token_length = ", max_len, "]");
      GSQ_CHECK(static_cast<std::size_t>(len) <= size - at, "tokenizer: truncated in token ", id,
                " (", len, " bytes claimed, ", size - at, " remain)");
      GSQ_CHECK(score == score, "tokenizer: token ", id, " has a NaN score");
      t.pieces_.emplace_back(reinterpret_cast<const char*>(bytes + at),
                             static_cast<std::size_t>(len));
      t.scores_.push_back(score);
      at += static_cast<std::size_t>(len);
    }
    GSQ_CHECK(at == size, "tokenizer: ", size - at, " trailing bytes after ", vocab_size,
              " tokens (is vocab_size right?)");
    for (int id = 0; id < vocab_size; ++id)
      t.index_.emplace(t.pieces_[static_cast<std::size_t>(id)], id);
    return t;
  }

  /// Reads and parses a tokenizer file (at most 2^32 bytes).
  static Tokenizer load(const std::string& path, int vocab_size) {
    const std::vector<std::uint8_t> bytes = read_file(path, "tokenizer", std::uint64_t{1} << 32);
    return parse(bytes.data(), bytes.size(), vocab_size);
  }

  int vocab_size() const noexcept { return static_cast<int>(pieces_.size()); }
  const std::string& piece(int id) const {
    GSQ_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " is outside [0, ",
              vocab_size(), ")");
    return pieces_[static_cast<std::size_t>(id)];
  }

  /// The merge score of token `id` (higher merges first).
  float score(int id) const {
    GSQ_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " is outside [0, ",
              vocab_size(), ")");
    return scores_[static_cast<std::size_t>(id)];
  }

  /// Encodes UTF-8 text as llama2.c does: optional BOS, a dummy-prefix space (for non-empty
  /// text), one token per UTF-8 code point (bytes without a token fall back to <0xNN>, id
  /// byte + 3), then repeatedly merges the adjacent pair whose merged piece has the best score.
  std::vector<int> encode(const std::string& text, bool bos, bool eos = false) const {
    std::vector<int> tokens;
    if (bos) tokens.push_back(kBos);
    if (!text.empty()) {
      const auto space = index_.find(" ");
      if (space != index_.end()) tokens.push_back(space->second);
    }
    std::size_t i = 0;
    while (i < text.size()) {
      // One UTF-8 code point: a lead byte and up to 3 continuation bytes (10xxxxxx).
      std::size_t n = 1;
      while (n < 4 && i + n < text.size() &&
             (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80)
        ++n;
      const auto it = index_.find(text.substr(i, n));
      if (it != index_.end()) {
        tokens.push_back(it->second);
      } else {
        for (std::size_t k = 0; k < n; ++k) {
          const int byte = static_cast<unsigned char>(text[i + k]);
          GSQ_CHECK(byte + 3 < vocab_size(), "tokenizer: byte ", byte,
                    " needs its fallback token at id ", byte + 3, ", but the vocabulary has ",
                    vocab_size(), " tokens");
          tokens.push_back(byte + 3);
        }
      }
      i += n;
    }
    // Greedy merges by score; ties go to the leftmost pair, as in llama2.c.
    std::string merged;
    for (;;) {
      float best = -1e10f;
      int best_id = -1;
      std::size_t best_at = 0;
      for (std::size_t k = 0; k + 1 < tokens.size(); ++k) {
        merged = pieces_[static_cast<std::size_t>(tokens[k])];
        merged += pieces_[static_cast<std::size_t>(tokens[k + 1])];
        const auto it = index_.find(merged);
        if (it != index_.end() && scores_[static_cast<std::size_t>(it->second)] > best) {
          best = scores_[static_cast<std::size_t>(it->second)];
          best_id = it->second;
          best_at = k;
        }
      }
      if (best_id < 0) break;
      tokens[best_at] = best_id;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
    }
    if (eos) tokens.push_back(kEos);
    return tokens;
  }

  /// The text of `token` following `prev`, as llama2.c prints it: a leading space is dropped
  /// after BOS, and <0xNN> pieces become the raw byte.
  std::string decode(int prev, int token) const {
    std::string p = piece(token);
    if (prev == kBos && !p.empty() && p[0] == ' ') p.erase(0, 1);
    unsigned byte = 0;
    char tail = 0;
    if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X%c", &byte, &tail) == 2 && tail == '>')
      return std::string(1, static_cast<char>(byte));
    return p;
  }

  /// Decodes a whole sequence (without its BOS).
  std::string decode(const std::vector<int>& tokens) const {
    std::string out;
    int prev = kBos;
    for (int t : tokens) {
      if (t == kBos) {
        prev = t;
        continue;
      }
      out += decode(prev, t);
      prev = t;
    }
    return out;
  }

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> index_;
};

}  // namespace gsq
