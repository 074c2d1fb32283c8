// hf_tokenizer.hpp: Hugging Face tokenizer.json files of byte-level BPE models (GPT-2, Llama 3,
// Qwen2, SmolLM, ...) read into a TextVocab and pre-tokenizer for BpeTokenizer.
// gsq-requires: json, pcre2
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/tokenizer/hf_tokenizer.hpp needs nlohmann/json (gsq::json)"
#endif
#include <algorithm>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/tokenizer/bpe.hpp"
#include "gsq/models/tokenizer/vocab.hpp"

namespace gsq {

/// A tokenizer.json read for BpeTokenizer.
struct HfBpeTokenizerSpec {
  TextVocab vocab;
  BpePreTokenizer pre;
};

namespace tokenizer_detail {

inline const nlohmann::json& member(const nlohmann::json& j, const char* key, const char* where) {
  GSQ_CHECK(j.is_object() && j.contains(key), "tokenizer.json: ", where, " has no '", key, "'");
  return j.at(key);
}

/// The pre-tokenizer regexes of one tokenizer.json pre_tokenizer node; sets `byte_level` when a
/// ByteLevel node is met.
inline void hf_pre_tokenizer(const nlohmann::json& node, std::vector<std::string>& patterns,
                             bool& byte_level, int depth = 0) {
  GSQ_CHECK(depth < 8, "tokenizer.json: pre_tokenizer nests too deeply");
  const std::string type = member(node, "type", "a pre_tokenizer").get<std::string>();
  if (type == "Sequence") {
    const nlohmann::json& list = member(node, "pretokenizers", "a Sequence pre_tokenizer");
    GSQ_CHECK(list.is_array(), "tokenizer.json: pretokenizers is not an array");
    for (const nlohmann::json& child : list)
      hf_pre_tokenizer(child, patterns, byte_level, depth + 1);
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (!node.contains("use_regex") || node.at("use_regex").get<bool>())
      patterns.emplace_back(bpe_patterns::kGpt2);
  } else if (type == "Split") {
    const nlohmann::json& pattern = member(node, "pattern", "a Split pre_tokenizer");
    const std::string behavior =
        member(node, "behavior", "a Split pre_tokenizer").get<std::string>();
    GSQ_CHECK(behavior == "Isolated", "tokenizer.json: Split behavior '", behavior,
              "' is not supported (gsq reads 'Isolated')");
    GSQ_CHECK(!node.contains("invert") || !node.at("invert").get<bool>(),
              "tokenizer.json: an inverted Split is not supported");
    if (pattern.contains("Regex")) {
      patterns.push_back(pattern.at("Regex").get<std::string>());
    } else {
      // A literal string: quote it for PCRE2.
      patterns.push_back("\\Q" + member(pattern, "String", "a Split pattern").get<std::string>() +
                         "\\E");
    }
  } else if (type == "Digits") {
    const bool single =
        node.contains("individual_digits") && node.at("individual_digits").get<bool>();
    patterns.emplace_back(single ? R"(\p{N})" : R"(\p{N}+)");
  } else {
    GSQ_CHECK(false, "tokenizer.json: pre_tokenizer type '", type, "' is not supported");
  }
}

inline int hf_id(const nlohmann::json& j, const char* what) {
  GSQ_CHECK(j.is_number_integer(), "tokenizer.json: ", what, " is not an integer id");
  const auto id = j.get<long long>();
  GSQ_CHECK(id >= 0 && id < (1LL << 24), "tokenizer.json: ", what, " ", id,
            " is outside [0, 2^24)");
  return static_cast<int>(id);
}

}  // namespace tokenizer_detail

/// Reads the text of a tokenizer.json: model.type "BPE" with model.vocab, model.merges (either
/// "a b" strings or ["a", "b"] pairs) and model.ignore_merges; added_tokens (special: true ->
/// control tokens, recognised in text only when parse_special; false -> user-defined, always
/// recognised; lstrip/rstrip kept); a pre_tokenizer of ByteLevel, Split (Isolated, the regex
/// from the file), Digits and Sequence nodes, which must include ByteLevel.  BOS is the first
/// special token of a TemplateProcessing post_processor (then add_bos is set); EOS the token
/// "<|endoftext|>", "<|end_of_text|>" or "</s>" if there is one.  The normalizer (Qwen2's NFC)
/// is not applied.  Every id in [0, size) must have exactly one token.  Throws
/// std::invalid_argument ("tokenizer.json: ...", with `name` for a JSON syntax error).
inline HfBpeTokenizerSpec hf_bpe_from_json(const std::string& text,
                                           const std::string& name = "tokenizer.json") {
  namespace td = tokenizer_detail;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    GSQ_CHECK(false, "tokenizer.json: '", name, "' is not valid JSON: ", e.what());
  }
  try {
    HfBpeTokenizerSpec spec;
    TextVocab& v = spec.vocab;
    v.model = "gpt2";
    const nlohmann::json& model = td::member(j, "model", "the file");
    if (model.contains("type")) {
      const std::string type = model.at("type").get<std::string>();
      GSQ_CHECK(type == "BPE", "tokenizer.json: model type '", type,
                "' is not supported (gsq reads byte-level BPE)");
    }
    std::vector<std::pair<int, std::string>> entries;
    const nlohmann::json& vocab = td::member(model, "vocab", "model");
    GSQ_CHECK(vocab.is_object(), "tokenizer.json: model.vocab is not an object");
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
      entries.emplace_back(td::hf_id(it.value(), "a vocab id"), it.key());
    std::vector<std::pair<int, nlohmann::json>> added;
    if (j.contains("added_tokens") && !j.at("added_tokens").is_null()) {
      for (const nlohmann::json& t : j.at("added_tokens")) {
        const int id = td::hf_id(td::member(t, "id", "an added token"), "an added token id");
        added.emplace_back(id, t);
        entries.emplace_back(id, td::member(t, "content", "an added token").get<std::string>());
      }
    }
    int size = 0;
    for (const auto& [id, s] : entries) size = std::max(size, id + 1);
    GSQ_CHECK(size >= 1, "tokenizer.json: the vocabulary is empty");
    v.tokens.assign(static_cast<std::size_t>(size), std::string());
    std::vector<char> seen(static_cast<std::size_t>(size), 0);
    for (const auto& [id, s] : entries) {
      // An added token may repeat its vocab entry (same id, same text).
      GSQ_CHECK(!seen[static_cast<std::size_t>(id)] || v.tokens[static_cast<std::size_t>(id)] == s,
                "tokenizer.json: id ", id, " is both '", v.tokens[static_cast<std::size_t>(id)],
                "' and '", s, "'");
      seen[static_cast<std::size_t>(id)] = 1;
      v.tokens[static_cast<std::size_t>(id)] = s;
    }
    for (int id = 0; id < size; ++id)
      GSQ_CHECK(seen[static_cast<std::size_t>(id)], "tokenizer.json: id ", id,
                " has no token (ids must run from 0 to ", size - 1, ")");
    v.token_types.assign(static_cast<std::size_t>(size), TokenType::kNormal);
    for (const auto& [id, t] : added) {
      const bool special = t.contains("special") && t.at("special").get<bool>();
      v.token_types[static_cast<std::size_t>(id)] =
          special ? TokenType::kControl : TokenType::kUserDefined;
      const bool lstrip = t.contains("lstrip") && t.at("lstrip").get<bool>();
      const bool rstrip = t.contains("rstrip") && t.at("rstrip").get<bool>();
      if (lstrip || rstrip) {
        if (v.strip_flags.empty()) v.strip_flags.assign(static_cast<std::size_t>(size), 0);
        v.strip_flags[static_cast<std::size_t>(id)] = static_cast<std::uint8_t>(
            (lstrip ? TextVocab::kLstrip : 0) | (rstrip ? TextVocab::kRstrip : 0));
      }
    }
    const nlohmann::json& merges = td::member(model, "merges", "model");
    GSQ_CHECK(merges.is_array(), "tokenizer.json: model.merges is not an array");
    v.merges.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      const nlohmann::json& m = merges[i];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const std::size_t space = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
        GSQ_CHECK(space != std::string::npos, "tokenizer.json: merge ", i, " '", s,
                  "' is not two pieces separated by a space");
        v.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else {
        GSQ_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                  "tokenizer.json: merge ", i, " is neither \"a b\" nor [\"a\", \"b\"]");
        v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }
    spec.pre.ignore_merges = model.contains("ignore_merges") &&
                             !model.at("ignore_merges").is_null() &&
                             model.at("ignore_merges").get<bool>();
    bool byte_level = false;
    const nlohmann::json& pre = td::member(j, "pre_tokenizer", "the file");
    GSQ_CHECK(!pre.is_null(),
              "tokenizer.json: there is no pre_tokenizer (gsq reads byte-level BPE)");
    td::hf_pre_tokenizer(pre, spec.pre.patterns, byte_level);
    GSQ_CHECK(byte_level,
              "tokenizer.json: the pre_tokenizer has no ByteLevel step (gsq reads "
              "byte-level BPE)");

    if (j.contains("post_processor") && j.at("post_processor").is_object()) {
      const nlohmann::json& post = j.at("post_processor");
      if (post.value("type", std::string()) == "TemplateProcessing" && post.contains("single") &&
          post.at("single").is_array() && !post.at("single").empty() &&
          post.at("single")[0].contains("SpecialToken")) {
        const std::string bos =
            td::member(post.at("single")[0].at("SpecialToken"), "id", "a SpecialToken")
                .get<std::string>();
        for (int id = 0; id < size; ++id)
          if (v.tokens[static_cast<std::size_t>(id)] == bos) v.bos = id, v.add_bos = true;
      }
    }
    for (const char* eos : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
      for (int id = 0; id < size && v.eos < 0; ++id)
        if (v.tokens[static_cast<std::size_t>(id)] == eos) v.eos = id;
    }
    v.validate();
    return spec;
  } catch (const nlohmann::json::exception& e) {
    GSQ_CHECK(false, "tokenizer.json: '", name, "' has a field of the wrong type: ", e.what());
  }
  return {};
}

/// Reads a tokenizer.json file (at most 1 GiB) and builds its BpeTokenizer.
inline std::unique_ptr<BpeTokenizer> load_hf_tokenizer_json(const std::string& path) {
  const std::vector<std::uint8_t> bytes = read_file(path, "tokenizer.json", std::uint64_t{1} << 30);
  HfBpeTokenizerSpec spec = hf_bpe_from_json(std::string(bytes.begin(), bytes.end()), path);
  return std::make_unique<BpeTokenizer>(std::move(spec.vocab), std::move(spec.pre));
}

}  // namespace gsq
