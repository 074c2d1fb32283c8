// dataset.hpp: a user's training text (plain text or JSONL, optionally chat-templated) as masked
// windows of tokens for LlamaLoraModel::loss_batch.
// gsq-requires: json
#pragma once

#if !GSQ_HAVE_JSON
#error "gsq/models/llama/dataset.hpp needs nlohmann/json (gsq::json)"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/sha256.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/tokenizer/tokenizer.hpp"

namespace gsq {

// The data
// ---------------------------------------------------------------------------------------------
// A file is JSONL when its name ends in ".jsonl" or its first non-space byte is '{'; otherwise
// it is plain text (UTF-8, any bytes accepted).
//   Plain text: the whole file is tokenized once, with BOS (when the vocabulary has one), no
//     EOS, and cut into consecutive non-overlapping windows of seq + 1 tokens; every
//     prediction counts.  A last window shorter than seq + 1 (but of at least 2 tokens) is
//     padded (see Padding).
//   JSONL: one JSON object per line (blank lines are skipped), either {"text": "..."} or
//     {"prompt": "...", "completion": "..."}; other keys are ignored.  A bad line is an error
//     naming its line number ("dataset: 'f.jsonl' line 7: ...").
//       text: BOS + text + EOS, every prediction counts.
//       prompt/completion: the prompt is tokenized with BOS and the completion without, each
//       separately; EOS is appended (unless the completion already ends with it, as a chat
//       template's end-of-turn marker can).  Only the completion's tokens and the EOS count:
//       mask[t] = 1 exactly when windows[t + 1] is one of them.
//     Examples are packed greedily in file order: an example goes into the current window if it
//     fits in what is left of it, else it starts a new one (the rest of the old one is padding).
//     An example longer than a window is split into consecutive windows of seq + 1 tokens, as
//     plain text is; the first token of each continuation window is predicted by nothing.
//     Packed examples share a window: a later example's tokens attend to the earlier ones' (no
//     block-diagonal attention), as in common packed fine-tuning; no prediction crosses an
//     example's boundary (the first token of an example never counts).  pack = false puts each
//     example in windows of its own instead.
//   Padding: positions after the data of a window hold the EOS id (0 without one) and never
//     count; causal attention keeps them out of every counted prediction.  A window in which
//     nothing counts is dropped.
//   Split: with an eval file, every window of the data file trains and every window of the eval
//     file evaluates.  Without one, the last n / 10 windows of the file (in file order; at least
//     one when n >= 2, none when n == 1) are held out: a deterministic split of contiguous text,
//     so no held-out window overlaps a training one.  Nothing here is random: the same file and
//     tokenizer give the same windows; the trainer shuffles them with its seed.
//
// Chat templates (DatasetOptions::chat_template), applied to prompt/completion lines only; the
// template's markers are parsed as control tokens (parse_special), as llama.cpp tokenizes a
// formatted chat, so they must be in the vocabulary.  P is the prompt, C the completion, EOS the
// vocabulary's EOS piece:
//   chatml:  prompt "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n", completion
//            "C<|im_end|>"
//   llama2:  prompt "[INST] P [/INST]", completion " C"              (BOS and EOS as ids)
//   llama3:  prompt "<|start_header_id|>user<|end_header_id|>\n\nP<|eot_id|>"
//            "<|start_header_id|>assistant<|end_header_id|>\n\n", completion "C<|eot_id|>"
//            (P and C trimmed of surrounding white space, as the Llama 3 template does)
//   zephyr:  prompt "<|user|>\nP" EOS "\n<|assistant|>\n", completion "C" EOS
// A GGUF's tokenizer.chat_template (Jinja text) may be given instead of a name: it is recognised
// by its marker strings, as llama.cpp's llm_chat_detect_template does ("<|im_start|>" chatml,
// "[INST]" llama2, "<|start_header_id|>" with "<|end_header_id|>" llama3, "<|user|>" with
// "<|assistant|>" and an EOS llama3 lacks zephyr); anything else is the error "dataset: unknown
// chat template".

/// How a data file becomes windows.
struct DatasetOptions {
  int seq = 128;  ///< predictions per window: windows hold seq + 1 tokens
  /// Held-out data; empty holds out the last tenth of the data file's windows (see above).
  std::string eval_path;
  /// "" (none), "chatml", "llama2", "llama3", "zephyr", or a Jinja chat template to recognise.
  std::string chat_template;
  bool pack = true;  ///< greedy packing of JSONL examples; false: one example per window
  std::uint64_t max_file_bytes = std::uint64_t{1} << 32;  ///< a larger file is an error
};

/// Windows of seq + 1 tokens with their masks (seq entries: mask[t] counts windows[t + 1]).
struct TextWindows {
  std::vector<std::vector<int>> tokens;
  std::vector<std::vector<std::uint8_t>> masks;

  std::size_t size() const noexcept { return tokens.size(); }
  bool empty() const noexcept { return tokens.empty(); }
  /// The number of counted predictions.
  std::int64_t counted() const noexcept {
    std::int64_t n = 0;
    for (const auto& m : masks) {
      for (std::uint8_t v : m) n += v != 0;
    }
    return n;
  }
};

/// A data set ready for training.
struct TextDataset {
  int seq = 0;
  TextWindows train;
  TextWindows eval;
  std::string format;         ///< "text" or "jsonl" (of the data file)
  std::string chat_template;  ///< the template's name, "" for none
  std::string sha256;         ///< of the data file's bytes, lowercase hex
  std::string eval_sha256;    ///< of the eval file's bytes; "" without one
  std::int64_t examples = 0;  ///< lines of a JSONL file, 1 for plain text (data file only)
};

namespace dataset_detail {

/// One example: its tokens and, per token, whether predicting it counts (never the first).
struct Example {
  std::vector<int> tokens;
  std::vector<std::uint8_t> counts;
};

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline bool contains(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

inline std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const std::size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

/// Cuts examples into windows of w = seq + 1 tokens (see "The data").
class Packer {
 public:
  Packer(int seq, int pad, bool pack, TextWindows& out)
      : w_(static_cast<std::size_t>(seq) + 1), pad_(pad), pack_(pack), out_(out) {}

  void add(const Example& e) {
    const std::size_t n = e.tokens.size();
    if (n == 0) return;
    if (!pack_ || cur_.size() + n > w_) flush();
    for (std::size_t off = 0; off < n; off += w_) {
      const std::size_t len = std::min(w_, n - off);
      if (!cur_.empty() && cur_.size() + len > w_) flush();
      cur_.insert(cur_.end(), e.tokens.begin() + static_cast<std::ptrdiff_t>(off),
                  e.tokens.begin() + static_cast<std::ptrdiff_t>(off + len));
      counts_.push_back(0);  // the first token of an example or continuation: never predicted
      counts_.insert(counts_.end(), e.counts.begin() + static_cast<std::ptrdiff_t>(off + 1),
                     e.counts.begin() + static_cast<std::ptrdiff_t>(off + len));
      if (cur_.size() == w_) flush();
    }
    if (!pack_) flush();
  }

  /// Pads and emits the current window (dropped when nothing in it counts).
  void flush() {
    if (cur_.empty()) return;
    cur_.resize(w_, pad_);
    counts_.resize(w_, 0);
    std::vector<std::uint8_t> mask(counts_.begin() + 1, counts_.end());
    bool any = false;
    for (std::uint8_t m : mask) any = any || m != 0;
    if (any) {
      out_.tokens.push_back(std::move(cur_));
      out_.masks.push_back(std::move(mask));
    }
    cur_.clear();
    counts_.clear();
  }

 private:
  std::size_t w_;
  int pad_;
  bool pack_;
  TextWindows& out_;
  std::vector<int> cur_;
  std::vector<std::uint8_t> counts_;
};

/// The text a prompt/completion line becomes under a template ("" = none).
struct Rendered {
  std::string prompt, completion;
};

inline Rendered render_chat(const std::string& tmpl, const std::string& p, const std::string& c,
                            const std::string& eos) {
  if (tmpl.empty()) return {p, c};
  if (tmpl == "chatml")
    return {"<|im_start|>user\n" + p + "<|im_end|>\n<|im_start|>assistant\n", c + "<|im_end|>"};
  if (tmpl == "llama2") return {"[INST] " + p + " [/INST]", " " + c};
  if (tmpl == "llama3")
    return {"<|start_header_id|>user<|end_header_id|>\n\n" + trim(p) +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            trim(c) + "<|eot_id|>"};
  GSQ_DASSERT(tmpl == "zephyr");
  return {"<|user|>\n" + p + eos + "\n<|assistant|>\n", c + eos};
}

}  // namespace dataset_detail

/// The template name for `name_or_jinja`: a name ("chatml", "llama2", "llama3", "zephyr") is
/// returned as is, "" stays "", and a Jinja template is recognised by its markers (see "Chat
/// templates").  Throws "dataset: unknown chat template ..." for anything else.
inline std::string resolve_chat_template(const std::string& name_or_jinja) {
  using dataset_detail::contains;
  const std::string& t = name_or_jinja;
  if (t.empty() || t == "chatml" || t == "llama2" || t == "llama3" || t == "zephyr") return t;
  if (contains(t, "<|im_start|>")) return "chatml";
  if (contains(t, "[INST]")) return "llama2";
  if (contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>")) return "llama3";
  if (contains(t, "<|user|>") && contains(t, "<|assistant|>") && !contains(t, "<|end|>") &&
      (contains(t, "eos_token") || contains(t, "</s>") || contains(t, "<|endoftext|>")))
    return "zephyr";
  GSQ_CHECK(false, "dataset: unknown chat template '", t.size() > 60 ? t.substr(0, 60) + "..." : t,
            "' (gsq knows chatml, llama2, llama3 and zephyr, by name or by their markers)");
  return "";
}

/// The token ids a prompt/completion pair becomes under `chat_template` (a name from
/// resolve_chat_template, or ""), and which of them count: the example's tokens are
/// prompt_ids + completion_ids, EOS appended to the completion unless it ends with it.
inline dataset_detail::Example chat_example(const TextTokenizer& tok, const std::string& prompt,
                                            const std::string& completion,
                                            const std::string& chat_template) {
  GSQ_CHECK(tok.eos() >= 0, "dataset: prompt/completion data needs a vocabulary with EOS");
  const std::string eos_text = tok.piece(tok.eos());
  const dataset_detail::Rendered r =
      dataset_detail::render_chat(chat_template, prompt, completion, eos_text);
  const bool special = !chat_template.empty();
  dataset_detail::Example e;
  e.tokens = tok.encode(r.prompt, tok.bos() >= 0, special);
  e.counts.assign(e.tokens.size(), 0);
  std::vector<int> c = tok.encode(r.completion, false, special);
  if (c.empty() || c.back() != tok.eos()) c.push_back(tok.eos());
  e.tokens.insert(e.tokens.end(), c.begin(), c.end());
  e.counts.resize(e.tokens.size(), 1);
  if (!e.counts.empty()) e.counts[0] = 0;
  return e;
}

namespace dataset_detail {

/// Windows of one file's bytes (`name` for messages and JSONL detection).
inline void windows_of(const std::string& content, const std::string& name,
                       const TextTokenizer& tok, const DatasetOptions& o,
                       const std::string& chat_template, TextWindows& out, std::string& format,
                       std::int64_t& examples) {
  const std::size_t first = content.find_first_not_of(" \t\r\n");
  const bool jsonl =
      ends_with(name, ".jsonl") || (first != std::string::npos && content[first] == '{');
  format = jsonl ? "jsonl" : "text";
  const int pad = tok.eos() >= 0 ? tok.eos() : 0;
  Packer packer(o.seq, pad, jsonl && o.pack, out);
  examples = 0;
  if (!jsonl) {
    Example e;
    e.tokens = tok.encode(content, tok.bos() >= 0, false);
    GSQ_CHECK(e.tokens.size() >= 2, "dataset: '", name, "' gives ", e.tokens.size(),
              " tokens, too few to train on");
    e.counts.assign(e.tokens.size(), 1);
    packer.add(e);
    packer.flush();
    examples = 1;
    return;
  }
  std::size_t pos = 0;
  std::int64_t line_no = 0;
  while (pos < content.size()) {
    std::size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    const std::string line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    GSQ_CHECK(!j.is_discarded(), "dataset: '", name, "' line ", line_no, ": not valid JSON");
    GSQ_CHECK(j.is_object(), "dataset: '", name, "' line ", line_no, ": not a JSON object");
    const bool has_text = j.contains("text");
    const bool has_prompt = j.contains("prompt") || j.contains("completion");
    GSQ_CHECK(has_text != has_prompt, "dataset: '", name, "' line ", line_no,
              has_text ? ": has both \"text\" and \"prompt\"/\"completion\""
                       : ": needs \"text\" or \"prompt\" and \"completion\"");
    auto str = [&](const char* key) {
      GSQ_CHECK(j.contains(key), "dataset: '", name, "' line ", line_no, ": \"", key,
                "\" is missing");
      const nlohmann::json& v = j.at(key);
      GSQ_CHECK(v.is_string(), "dataset: '", name, "' line ", line_no, ": \"", key,
                "\" is not a string");
      return v.get<std::string>();
    };
    Example e;
    if (has_text) {
      e.tokens = tok.encode(str("text"), tok.bos() >= 0, false);
      if (tok.eos() >= 0) e.tokens.push_back(tok.eos());
      e.counts.assign(e.tokens.size(), 1);
      if (!e.counts.empty()) e.counts[0] = 0;
    } else {
      const std::string p = str("prompt"), c = str("completion");
      e = chat_example(tok, p, c, chat_template);
    }
    packer.add(e);
    ++examples;
  }
  packer.flush();
  GSQ_CHECK(examples > 0, "dataset: '", name, "' holds no example");
}

}  // namespace dataset_detail

/// The windows of `content` (a file's bytes; `name` decides JSONL by its extension and names the
/// data in messages), held out as "The data" says (options.eval_path is ignored here: pass
/// `eval_content` and `eval_name` instead, or empty for the tenth).  Throws
/// std::invalid_argument "dataset: ..." naming the problem and, for JSONL, the line.
inline TextDataset dataset_from_text(const std::string& content, const std::string& name,
                                     const TextTokenizer& tokenizer, const DatasetOptions& options,
                                     const std::string& eval_content = "",
                                     const std::string& eval_name = "") {
  GSQ_CHECK(options.seq >= 1 && options.seq <= (1 << 20), "dataset: seq ", options.seq,
            " is outside [1, 2^20]");
  TextDataset d;
  d.seq = options.seq;
  d.chat_template = resolve_chat_template(options.chat_template);
  d.sha256 = detail::sha256_hex(content.data(), content.size());
  TextWindows all;
  dataset_detail::windows_of(content, name, tokenizer, options, d.chat_template, all, d.format,
                             d.examples);
  GSQ_CHECK(!all.empty(), "dataset: '", name, "' gives no window with a prediction to train on");
  if (!eval_name.empty()) {
    d.eval_sha256 = detail::sha256_hex(eval_content.data(), eval_content.size());
    std::string eval_format;
    std::int64_t eval_examples = 0;
    dataset_detail::windows_of(eval_content, eval_name, tokenizer, options, d.chat_template, d.eval,
                               eval_format, eval_examples);
    d.train = std::move(all);
    return d;
  }
  const std::size_t n = all.size();
  const std::size_t held = n >= 2 ? std::max<std::size_t>(1, n / 10) : 0;
  const auto cut = static_cast<std::ptrdiff_t>(n - held);
  d.train.tokens.assign(all.tokens.begin(), all.tokens.begin() + cut);
  d.train.masks.assign(all.masks.begin(), all.masks.begin() + cut);
  d.eval.tokens.assign(all.tokens.begin() + cut, all.tokens.end());
  d.eval.masks.assign(all.masks.begin() + cut, all.masks.end());
  return d;
}

/// The data set of the file at `path` (and options.eval_path when given); see "The data".
/// Throws std::invalid_argument "dataset: ..." ("cannot open", a JSONL line's problem, too few
/// tokens, an unknown chat template).
inline TextDataset load_text_dataset(const std::string& path, const TextTokenizer& tokenizer,
                                     const DatasetOptions& options) {
  auto read = [&](const std::string& p) {
    const std::vector<std::uint8_t> bytes = read_file(p, "dataset", options.max_file_bytes);
    return std::string(bytes.begin(), bytes.end());
  };
  const std::string content = read(path);
  const std::string eval = options.eval_path.empty() ? std::string() : read(options.eval_path);
  return dataset_from_text(content, path, tokenizer, options, eval, options.eval_path);
}

}  // namespace gsq
