// llama2_train_test.cpp: the LoRA llama2 model's gradients against finite differences, and a
// few fine-tuning steps in GSE mode.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "catch.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/runner.hpp"
#include "gsq/optim.hpp"

namespace {

gsq::Llama2Config tiny() {
  gsq::Llama2Config c;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.seq_len = 16;
  return c;
}

std::vector<int> sequence(int n, unsigned seed, int vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<int> s(static_cast<std::size_t>(n));
  for (auto& t : s) t = tok(rng);
  return s;
}

/// Nonzero B (N(0, 0.3^2) from `seed`) in every adapter, so that every adapter gets a gradient.
template <typename Model>
void randomise_b(Model& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (auto* l : model.loras()) {
    for (float& v : l->b()) v = normal(rng);
  }
}

}  // namespace

TEST_CASE("llama2 LoRA model: float-mode gradients match central finite differences",
          "[llama2][train]") {
  auto w = gsq::Llama2Weights::random(tiny(), 3);
  gsq::LoraOptions opt;
  opt.rank = 4;
  opt.alpha = 8.0f;
  opt.mode = gsq::LoraMode::kFloat;
  using Model = gsq::Llama2LoraModel<gsq::LoraLinear<8, 8, 8, 8, 32>>;
  Model model(w, opt);
  randomise_b(model, 5);
  const auto tokens = sequence(13, 7, tiny().vocab_size);
  model.zero_grad();
  const double loss = model.loss(tokens, true);
  REQUIRE(std::isfinite(loss));
  const auto params = model.parameters();
  // loss is smooth in the adapters; central differences have O(eps^2) truncation error and
  // float rounding of about 1e-7 * loss / eps.
  const float eps = 2e-3f;
  int checked = 0;
  for (std::size_t p = 0; p < params.size(); p += 3) {
    for (std::size_t i = 0; i < params[p].size; i += params[p].size / 3 + 1) {
      float& v = params[p].value[i];
      const float keep = v;
      v = keep + eps;
      const double up = model.loss(tokens, false);
      v = keep - eps;
      const double down = model.loss(tokens, false);
      v = keep;
      const double fd = (up - down) / (2.0 * eps);
      const double g = params[p].grad[i];
      INFO("parameter " << p << "[" << i << "]: analytic " << g << ", finite difference " << fd);
      REQUIRE(std::abs(g - fd) <= 2e-3 + 2e-2 * std::abs(fd));
      ++checked;
    }
  }
  REQUIRE(checked > 20);
}

TEST_CASE("llama2 LoRA model: GSE fine-tuning lowers the loss", "[llama2][train]") {
  auto w = gsq::Llama2Weights::random(tiny(), 4);
  // The tied classifier is frozen: give it the scale of a trained one (sigma 0.5 instead of the
  // 0.02 init), so that adapters can move the logits far enough to memorise.
  const auto emb = w.token_embedding();
  float* e = w.mutable_data(emb);
  for (gsq::Index k = 0; k < emb.rows * emb.cols; ++k) e[k] *= 25.0f;
  gsq::LoraOptions opt;
  opt.rank = 8;
  opt.alpha = 16.0f;
  gsq::Llama2LoraModel<> model(w, opt);  // W4, 8-bit activations, gradients and adapters
  gsq::AdamW adam(model.parameters());
  const auto tokens = sequence(17, 9, tiny().vocab_size);
  const double first = model.loss(tokens, false);
  double last = first;
  for (int step = 0; step < 100; ++step) {
    model.zero_grad();
    last = model.loss(tokens, true);
    adam.step(1e-2f);
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5 * first);  // memorising one sequence
}

namespace {

/// Mean next-token cross-entropy of llama2.c's own forward (token by token, key/value cache).
double runner_loss(const gsq::Llama2Weights& w, const std::vector<int>& tokens) {
  gsq::Llama2Runner runner(w);
  return runner.loss_sum(tokens) / static_cast<double>(tokens.size() - 1);
}

}  // namespace

TEST_CASE("llama2 LoRA model: a micro-batch is the mean of its windows", "[llama2][train]") {
  auto w = gsq::Llama2Weights::random(tiny(), 6);
  gsq::LoraOptions opt;
  opt.rank = 4;
  opt.mode = gsq::LoraMode::kFloat;
  gsq::Llama2LoraModel<gsq::LoraLinear<4, 8, 8, 8, 32>> model(w, opt);
  randomise_b(model, 8);
  const std::vector<std::vector<int>> windows = {sequence(11, 1, tiny().vocab_size),
                                                 sequence(11, 2, tiny().vocab_size),
                                                 sequence(11, 3, tiny().vocab_size)};
  const auto params = model.parameters();
  // One window at a time: the mean loss and the mean of the gradients.
  model.zero_grad();
  double mean = 0;
  for (const auto& win : windows) mean += model.loss(win, true) / 3.0;
  std::vector<std::vector<float>> separate;
  for (const auto& p : params) separate.emplace_back(p.grad, p.grad + p.size);
  model.zero_grad();
  const double batched = model.loss_batch(windows, true);
  REQUIRE(batched == Approx(mean).epsilon(1e-5));
  double err = 0, norm = 0;
  for (std::size_t p = 0; p < params.size(); ++p) {
    for (std::size_t i = 0; i < params[p].size; ++i) {
      const double want = separate[p][i] / 3.0;
      err = std::max(err, std::abs(params[p].grad[i] - want));
      norm = std::max(norm, std::abs(want));
    }
  }
  INFO("largest gradient difference " << err << " of largest gradient " << norm);
  REQUIRE(norm > 0);
  REQUIRE(err <= 1e-5 * norm);
  // Windows of different lengths are an error that names them.
  REQUIRE_THROWS_WITH(model.loss_batch({sequence(11, 1, 40), sequence(9, 2, 40)}, false),
                      Catch::Contains("window 1 has 9 tokens"));
}

TEST_CASE("llama2 LoRA model: the merged float32 export runs as the fine-tuned model",
          "[llama2][train]") {
  auto w = gsq::Llama2Weights::random(tiny(), 7);
  gsq::LoraOptions opt;
  opt.rank = 4;
  opt.mode = gsq::LoraMode::kFloat;
  gsq::Llama2LoraModel<gsq::LoraLinear<4, 8, 8, 8, 32>> model(w, opt);
  randomise_b(model, 9);
  const std::vector<unsigned char> image = model.merged_weights().serialize();
  const gsq::Llama2Weights exported = gsq::Llama2Weights::parse(image.data(), image.size());
  const auto tokens = sequence(15, 4, tiny().vocab_size);
  const double trained = model.loss(tokens, false);
  const double ran = runner_loss(exported, tokens);
  INFO("LoRA model " << trained << ", exported model run by llama2.c's forward " << ran
                     << ", original fp32 model " << runner_loss(w, tokens));
  REQUIRE(ran == Approx(trained).epsilon(1e-5));
  // The adapters matter: the export is not the original model.
  REQUIRE(std::abs(runner_loss(w, tokens) - trained) > 1e-3);
}
