// llama_inference_test.cpp: LlamaRunner (float and GSE) against llama2.c's run.c numerics
// (Llama2Runner), its bit-identity across ISAs and threads, and the sampler.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/runner.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/tokenizer.hpp"
#include "gsq/models/tokenizer/llama2c.hpp"
#include "models.hpp"

namespace {

/// max |a - b| / max |b| over the vocabulary.
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double{a[i]} - double{b[i]}));
    scale = std::max(scale, std::fabs(double{b[i]}));
  }
  return diff / scale;
}

/// Samples n tokens from BOS with the runner and sampler.
std::vector<int> run(gsq::LlamaRunner& r, const gsq::SamplerOptions& s, int n) {
  gsq::Sampler sampler(s);
  std::vector<int> out;
  int token = 1;
  for (int pos = 0; pos < n; ++pos) {
    token = sampler.sample(r.forward(token, pos));
    out.push_back(token);
  }
  return out;
}

gsq::LlamaConfig small_config() {
  gsq::LlamaConfig c = gsq::LlamaConfig::stories260k();
  c.n_layers = 2;
  c.seq_len = 48;
  c.tied_classifier = false;
  return c;
}

}  // namespace

TEST_CASE("LlamaRunner: stories260K in float agrees with run.c's numerics", "[inference][model]") {
  const std::string path = gsq::test::model_path("stories260K.bin");
  if (path.empty()) GSQ_SKIP("stories260K.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(path);
  gsq::Llama2Runner reference(w);
  const gsq::Llama2WeightSource source(w);
  gsq::LlamaRunner runner(source);
  // Greedy from BOS, 256 steps: the same tokens; the logits on the way agree to 1e-5 relative.
  std::vector<int> ref_tokens = reference.generate_greedy(256);
  gsq::Llama2Runner reference2(w);
  int token = 1;
  double worst = 0;
  std::vector<int> tokens;
  for (int pos = 0; pos < 256; ++pos) {
    const std::vector<float>& a = runner.forward(token, pos);
    worst = std::max(worst, relative_error(a, reference2.forward(token, pos)));
    token = gsq::Sampler::argmax(a.data(), static_cast<gsq::Index>(a.size()));
    if (token == 1) break;
    tokens.push_back(token);
  }
  INFO("largest relative logit difference " << worst);
  REQUIRE(tokens == ref_tokens);
  REQUIRE(worst < 1e-5);
}

TEST_CASE("generate(): stdout as llama2.c's run prints it, prompt and all", "[inference][model]") {
  const std::string path = gsq::test::model_path("stories260K.bin");
  const std::string tok_path = gsq::test::model_path("tok512.bin");
  if (path.empty() || tok_path.empty())
    GSQ_SKIP("stories260K.bin or tok512.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(path);
  const gsq::Tokenizer tok = gsq::Tokenizer::load(tok_path, w.config().vocab_size);
  const gsq::Llama2cTokenizer text_tok(tok);
  for (const std::string prompt : {"", "One day, Tim saw a"}) {
    // run.c's generate(): the prompt forced, then greedy; stop at BOS; each piece through
    // decode(prev, next) and safe_printf (a lone byte neither printable nor space is dropped).
    gsq::Llama2Runner reference(w);
    const std::vector<int> tokens = tok.encode(prompt, true);
    std::string want;
    int token = tokens[0];
    for (int pos = 0; pos < 200;) {
      const std::vector<float>& logits = reference.forward(token, pos);
      const int next = pos + 1 < static_cast<int>(tokens.size())
                           ? tokens[static_cast<std::size_t>(pos) + 1]
                           : gsq::Sampler::argmax(logits.data(), w.config().vocab_size);
      ++pos;
      if (next == 1) break;
      const std::string piece = tok.decode(token, next);
      const bool stray = piece.size() == 1 && !(std::isprint(static_cast<unsigned char>(piece[0])) ||
                                                std::isspace(static_cast<unsigned char>(piece[0])));
      if (!stray) want += piece;
      token = next;
    }
    const gsq::Llama2WeightSource source(w);
    gsq::LlamaRunner runner(source);
    gsq::SamplerOptions greedy;
    greedy.temperature = 0.0f;
    gsq::Sampler sampler(greedy);
    std::string got;
    gsq::generate(runner, text_tok, text_tok.encode(prompt, true, false), 200, sampler,
                  [&got](const std::string& piece) { got += piece; });
    INFO("prompt '" << prompt << "'");
    REQUIRE(got.size() > 300);
    REQUIRE(got == want);
  }
}

TEST_CASE("LlamaRunner: the integer engine tracks float on stories260K", "[inference][model]") {
  const std::string path = gsq::test::model_path("stories260K.bin");
  if (path.empty()) GSQ_SKIP("stories260K.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(path);
  const gsq::Llama2WeightSource source(w);
  gsq::LlamaRunner f(source);
  gsq::LlamaInferenceOptions o;
  o.compute = gsq::LlamaCompute::kGse;
  o.weight_bits = 8;
  gsq::LlamaRunner g8(source, o);
  o.weight_bits = 4;
  gsq::LlamaRunner g4(source, o);
  REQUIRE(g4.weight_bytes() * 5 < f.weight_bytes());
  // Teacher-forced on the float model's greedy story: relative logit error of each width.
  int token = 1;
  double e8 = 0, e4 = 0;
  int agree4 = 0, steps = 0;
  for (int pos = 0; pos < 128; ++pos, ++steps) {
    const std::vector<float> a = f.forward(token, pos);
    const std::vector<float>& b8 = g8.forward(token, pos);
    e8 = std::max(e8, relative_error(b8, a));
    const std::vector<float>& b4 = g4.forward(token, pos);
    e4 = std::max(e4, relative_error(b4, a));
    const int next = gsq::Sampler::argmax(a.data(), static_cast<gsq::Index>(a.size()));
    agree4 += gsq::Sampler::argmax(b4.data(), static_cast<gsq::Index>(b4.size())) == next;
    token = next;
  }
  INFO("W8A8 " << e8 << ", W4A8 " << e4 << ", W4A8 top-1 agreement " << agree4 << "/" << steps);
  CHECK(e8 < e4);
  // Measured (largest over the 128 positions of max |error| / max |logit|): W8A8 0.040, W4A8
  // 0.459, W4A8 top-1 agreement 108/128.  Bounds: 1.5x the errors, and 100/128.
  CHECK(e8 < 0.06);
  CHECK(e4 < 0.69);
  CHECK(agree4 >= 100);
}

TEST_CASE("LlamaRunner: seeded sampling is the same on every ISA and thread count",
          "[inference]") {
  const gsq::RandomLlamaWeights source(small_config(), 7);
  gsq::SamplerOptions s;
  s.temperature = 0.9f;
  s.top_p = 0.95f;
  s.seed = 1234;
  gsq::LlamaRunner f1(source);
  const std::vector<int> want_float = run(f1, s, 40);
  gsq::LlamaInferenceOptions o;
  o.threads = 3;
  gsq::LlamaRunner f3(source, o);
  REQUIRE(run(f3, s, 40) == want_float);

  o.compute = gsq::LlamaCompute::kGse;
  o.threads = 1;
  o.isa = gsq::Isa::kScalar;
  gsq::LlamaRunner scalar(source, o);
  const std::vector<int> want = run(scalar, s, 40);
  // A random model's flat softmax makes every token a different draw: the sequences differ.
  REQUIRE(want != want_float);
  for (gsq::Isa isa : {gsq::Isa::kAvx2, gsq::Isa::kAvx512Vnni, gsq::Isa::kNeonDot}) {
    if (!gsq::cpu_supports(isa)) continue;
    for (int threads : {1, 3}) {
      o.isa = isa;
      o.threads = threads;
      gsq::LlamaRunner r(source, o);
      INFO(gsq::to_string(isa) << ", " << threads << " threads");
      REQUIRE(run(r, s, 40) == want);
    }
  }
}

TEST_CASE("Sampler: greedy, temperature and top-p", "[inference]") {
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f, -30.0f};
  gsq::SamplerOptions s;
  s.temperature = 0.0f;
  REQUIRE(gsq::Sampler(s).sample(logits) == 1);  // the first of the largest
  // Frequencies follow softmax(logits / T): 20000 draws, each within 5 standard deviations.
  s.temperature = 1.5f;
  s.seed = 99;
  gsq::Sampler sampler(s);
  std::vector<int> count(logits.size());
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[static_cast<std::size_t>(sampler.sample(logits))];
  double z = 0;
  for (float l : logits) z += std::exp(double{l} / 1.5);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp(double{logits[i]} / 1.5) / z;
    const double sd = std::sqrt(n * p * (1 - p)) + 1e-9;
    INFO("token " << i << ": " << count[i] << " draws, expected " << n * p);
    CHECK(std::fabs(count[i] - n * p) <= 5 * sd + 1);
  }
  // top-p 0.5: only the two tokens of logit 2 (mass 0.63 at T 1) can be drawn.
  s.temperature = 1.0f;
  s.top_p = 0.5f;
  gsq::Sampler nucleus(s);
  int first = 0;
  for (int i = 0; i < 2000; ++i) {
    const int t = nucleus.sample(logits);
    REQUIRE((t == 1 || t == 3));
    first += t == 1;
  }
  CHECK(first > 800);
  CHECK(first < 1200);
}

TEST_CASE("LlamaRunner and Sampler: bad arguments are named", "[inference][errors]") {
  const gsq::RandomLlamaWeights source(small_config(), 7);
  gsq::LlamaRunner r(source);
  REQUIRE_THROWS_WITH(r.forward(512, 0),
                      Catch::Matchers::Contains("token 512 is outside [0, 512)"));
  REQUIRE_THROWS_WITH(r.forward(3, 48),
                      Catch::Matchers::Contains("position 48 is outside the context [0, 48)"));
  gsq::LlamaInferenceOptions o;
  o.compute = gsq::LlamaCompute::kGse;
  o.weight_bits = 3;
  REQUIRE_THROWS_WITH(gsq::LlamaRunner(source, o),
                      Catch::Matchers::Contains("weight bits must be 4, 5, 6 or 8, not 3"));
  gsq::SamplerOptions s;
  s.top_p = 0.0f;
  REQUIRE_THROWS_WITH(gsq::Sampler(s), Catch::Matchers::Contains("top_p 0 must be in (0, 1]"));
  s.top_p = 1.0f;
  s.temperature = -1.0f;
  REQUIRE_THROWS_WITH(gsq::Sampler(s), Catch::Matchers::Contains("temperature -1"));
}
