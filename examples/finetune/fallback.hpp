// finetune/fallback.hpp: when stories260K is not on disk, examples/finetune.cpp pretrains a
// small LLaMA-architecture model on a generated corpus instead: a seeded template grammar of
// short stories, a word-level tokenizer built from it, and a pretraining loop that trains
// full-rank adapters and folds them into the fp32 weights.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim.hpp"
#include "train.hpp"

namespace finetune {

/// Short stories from a template grammar: a named child, a coloured thing, a place and an
/// animal, chosen at random and referred to again later (pronouns agree with the name), so
/// that predicting the next word needs the context.
inline std::vector<std::string> generate_stories(int count, std::uint64_t seed) {
  const std::vector<std::string> girls = {"lily", "sue", "mia", "anna"};
  const std::vector<std::string> boys = {"tom", "ben", "max", "sam"};
  const std::vector<std::string> colours = {"red", "blue", "green", "yellow", "pink", "big"};
  const std::vector<std::string> things = {"ball", "kite", "box", "hat", "cake", "boat"};
  const std::vector<std::string> animals = {"cat", "dog", "bird", "frog", "duck"};
  const std::vector<std::string> places = {"park", "garden", "house", "river", "shop"};
  const std::vector<std::string> feelings = {"happy", "sad", "tired", "scared"};
  std::mt19937_64 rng(seed);
  auto pick = [&rng](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  std::vector<std::string> stories;
  for (int n = 0; n < count; ++n) {
    const bool girl = rng() % 2 == 0;
    const std::string name = pick(girl ? girls : boys), he = girl ? "she" : "he",
                      his = girl ? "her" : "his", colour = pick(colours), thing = pick(things),
                      place = pick(places), animal = pick(animals);
    std::vector<std::string> middle = {
        "one day " + he + " went to the " + place + " with " + his + " " + thing + " .",
        "at the " + place + " " + he + " saw a " + animal + " .",
        "the " + animal + " wanted the " + colour + " " + thing + " .",
        name + " was " + pick(feelings) + " .",
        he + " gave the " + thing + " to the " + animal + " .",
        he + " played with the " + animal + " all day ."};
    std::string story = "once there was a little " + std::string(girl ? "girl" : "boy") +
                        " named " + name + " . " + name + " had a " + colour + " " + thing + " .";
    const std::size_t keep = 2 + rng() % 3;  // 2 to 4 of the middle sentences, in order
    while (middle.size() > keep)
      middle.erase(middle.begin() + static_cast<std::ptrdiff_t>(rng() % middle.size()));
    for (const std::string& s : middle) story += " " + s;
    stories.push_back(story + " the end .");
  }
  return stories;
}

/// A word-level tokenizer: 0 <unk>, 1 BOS, 2 EOS (as llama2.c's), then every word of the corpus
/// in sorted order.  Words are separated by single spaces.
class WordTokenizer {
 public:
  static constexpr int kBos = 1;

  explicit WordTokenizer(const std::vector<std::string>& corpus) {
    words_ = {"<unk>", "<s>", "</s>"};
    std::map<std::string, int> seen;
    for (const std::string& text : corpus) {
      std::istringstream in(text);
      for (std::string w; in >> w;) seen.emplace(w, 0);
    }
    for (const auto& kv : seen) words_.push_back(kv.first);
    for (std::size_t id = 0; id < words_.size(); ++id) ids_[words_[id]] = static_cast<int>(id);
  }

  int vocab_size() const noexcept { return static_cast<int>(words_.size()); }

  /// BOS, then one token per word (<unk> for words outside the vocabulary).
  std::vector<int> encode(const std::string& text) const {
    std::vector<int> out = {kBos};
    std::istringstream in(text);
    for (std::string w; in >> w;) {
      const auto it = ids_.find(w);
      out.push_back(it == ids_.end() ? 0 : it->second);
    }
    return out;
  }

  /// The words of `tokens`, a BOS starting a new line.
  std::string decode(const std::vector<int>& tokens) const {
    std::string out;
    for (int t : tokens) {
      if (t == kBos) {
        if (!out.empty()) out += "\n";
        continue;
      }
      if (!out.empty() && out.back() != '\n') out += " ";
      out += words_[static_cast<std::size_t>(t)];
    }
    return out;
  }

 private:
  std::vector<std::string> words_;
  std::map<std::string, int> ids_;
};

/// A small llama2.c model with random weights for `vocab_size` tokens.  Llama2Weights::random
/// draws every matrix with sigma 0.02, a scale meant for wide models; here the linear layers get
/// sigma 0.08 (0.64 / sqrt(dim)) and the token embedding sigma 0.64.  The embedding is also
/// the classifier and stays frozen during pretraining: logits are its dot products with a
/// hidden state of norm sqrt(dim) = 8, so its norm bounds how sharp a prediction can be.
inline gsq::Llama2Weights random_small_llama(int vocab_size, int seq_len, std::uint64_t seed) {
  gsq::Llama2Config c;
  c.dim = 64;
  c.hidden_dim = 172;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.vocab_size = vocab_size;
  c.seq_len = seq_len;
  gsq::Llama2Weights w = gsq::Llama2Weights::random(c, seed);
  auto scale = [&w](gsq::MatrixRef<const float> m, float factor) {
    float* p = w.mutable_data(m);
    for (gsq::Index i = 0; i < m.rows * m.cols; ++i) p[i] *= factor;
  };
  scale(w.token_embedding(), 32.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    for (const gsq::MatrixRef<const float> m :
         {w.wq(l), w.wk(l), w.wv(l), w.wo(l), w.w1(l), w.w2(l), w.w3(l)})
      scale(m, 4.0f);
  }
  return w;
}

/// Pretrains the linear layers of `w` in place.  Llama2LoraModel trains adapters on a frozen
/// base, so each round trains full-rank adapters (rank = dim) on an 8-bit base, in GSE mode
/// (integer matmuls; about twice as fast as float mode here), and then takes the model's merged
/// weights (the 8-bit base plus s A B, in float32) as the next round's starting point, with
/// fresh adapters.  Embedding and RMSNorm gains stay as they are.
inline void pretrain(gsq::Llama2Weights& w, const std::vector<std::vector<int>>& windows,
                     int rounds, const TrainSettings& s) {
  using Lora = gsq::LoraLinear<8, 8, 8, 8, 32>;
  for (int round = 0; round < rounds; ++round) {
    gsq::LoraOptions options;
    options.rank = w.config().dim;
    options.alpha = static_cast<float>(options.rank);  // scale 1
    options.mode = gsq::LoraMode::kGse;                // 8-bit activations, gradients and adapters
    options.seed = s.seed + static_cast<std::uint64_t>(round);
    gsq::Llama2LoraModel<Lora> model(w, options);
    const std::vector<gsq::Parameter> params = model.parameters();
    gsq::AdamW adam(params);
    TrainSettings round_settings = s;
    round_settings.seed = options.seed;
    const gsq::CosineSchedule schedule{s.lr, s.warmup, s.steps};
    train(model, windows, round_settings,
          "pretraining round " + std::to_string(round + 1) + "/" + std::to_string(rounds),
          [&](int step) {
            gsq::clip_grad_norm(params, s.clip);
            adam.step(schedule(step));
          });
    // The next round's base: the 8-bit base with this round's adapters folded in, in float32.
    // Embedding and RMSNorm gains are copied unchanged.
    w = model.merged_weights(w);
  }
}

}  // namespace finetune
