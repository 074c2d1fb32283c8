// llama2_train_test.cpp: the LoRA llama2 model against a double-precision reference of its loss
// (value and central differences), micro-batching, the merged export, and GSE fine-tuning.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/runner.hpp"
#include "gsq/optim.hpp"
#include "reference.hpp"

namespace {

using gsq::Index;

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
  gsq::detail::Rng rng(seed);
  std::vector<int> s(static_cast<std::size_t>(n));
  for (auto& t : s) t = static_cast<int>(rng.below(static_cast<std::uint32_t>(vocab)));
  return s;
}

/// Adapters from gsq's portable generator, the same with every standard library (thresholds
/// below were measured with them): A uniform in +-1 / sqrt(in), the layer's Kaiming-uniform
/// bound, and B from N(0, b_sigma^2), nonzero by default so that every adapter gets a gradient.
template <typename Model>
void randomise_adapters(Model& model, unsigned seed, float b_sigma = 0.3f) {
  gsq::detail::Rng rng(seed);
  for (auto* l : model.loras()) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(l->in_features()));
    for (float& v : l->a()) v = rng.uniform(-bound, bound);
    for (float& v : l->b()) v = rng.normal(b_sigma);
  }
}

using Matrix = std::vector<double>;  // row-major

/// x (rows x in) times w (in x out).
Matrix times(const Matrix& x, const Matrix& w, Index rows, Index in, Index out) {
  Matrix y(static_cast<std::size_t>(rows * out), 0.0);
  for (Index t = 0; t < rows; ++t) {
    for (Index i = 0; i < in; ++i) {
      const double v = x[static_cast<std::size_t>(t * in + i)];
      for (Index o = 0; o < out; ++o)
        y[static_cast<std::size_t>(t * out + o)] += v * w[static_cast<std::size_t>(i * out + o)];
    }
  }
  return y;
}

/// g * x / rms(x) per row of x (rows x d), as llama2.c's rmsnorm (epsilon 1e-5).
Matrix rmsnorm(const Matrix& x, const float* g, Index rows, Index d) {
  Matrix y(x.size());
  for (Index t = 0; t < rows; ++t) {
    double ss = 0;
    for (Index i = 0; i < d; ++i)
      ss += x[static_cast<std::size_t>(t * d + i)] * x[static_cast<std::size_t>(t * d + i)];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(d) + 1e-5);
    for (Index i = 0; i < d; ++i)
      y[static_cast<std::size_t>(t * d + i)] = g[i] * inv * x[static_cast<std::size_t>(t * d + i)];
  }
  return y;
}

/// The LoRA llama2 model's mean next-token cross-entropy, evaluated in double from its
/// definition, independently of Llama2LoraModel: each linear computes x (W_base + s A B) with
/// W_base the nearest-even GSE-INT<WBits> encoding of W along in_features from reference.hpp
/// (not the library's converter) and s = alpha / rank; RMSNorm, RoPE, grouped-query causal
/// attention, SwiGLU and the tied classifier as llama2.c's run.c computes them.
class ReferenceLoss {
 public:
  ReferenceLoss(const gsq::Llama2Weights& w, int wbits, int group, double scale)
      : w_(w), c_(w.config()), scale_(scale) {
    // The embedding, which is also the classifier: GSE-INT8 along dim, nearest-even.
    const auto e = w.token_embedding();
    const std::vector<float> ef(e.data, e.data + e.rows * e.cols);
    const auto eq = gsq::test::ref_quantize(ef, e.rows, e.cols, gsq::Axis::kCols, 8, group,
                                            gsq::Rounding::kNearestEven);
    embedding_.resize(ef.size());
    for (std::size_t k = 0; k < ef.size(); ++k)
      embedding_[k] = std::ldexp(eq.codes[k], eq.quantum[k]);
    for (int l = 0; l < c_.n_layers; ++l) {
      for (const gsq::MatrixRef<const float> m :
           {w.wq(l), w.wk(l), w.wv(l), w.wo(l), w.w1(l), w.w2(l), w.w3(l)}) {
        // llama2.c stores out x in; the layer's weight is its transpose, in x out.
        std::vector<float> wt(static_cast<std::size_t>(m.rows * m.cols));
        for (Index o = 0; o < m.rows; ++o) {
          for (Index i = 0; i < m.cols; ++i) wt[static_cast<std::size_t>(i * m.rows + o)] = m(o, i);
        }
        const auto q = gsq::test::ref_quantize(wt, m.cols, m.rows, gsq::Axis::kRows, wbits, group,
                                               gsq::Rounding::kNearestEven);
        Matrix base(wt.size());
        for (std::size_t k = 0; k < wt.size(); ++k) base[k] = std::ldexp(q.codes[k], q.quantum[k]);
        base_.push_back(std::move(base));
        shape_.push_back({m.cols, m.rows});
      }
    }
  }

  /// The loss with adapters a[k] (in x r) and b[k] (r x out) on linear k (layer by layer: q, k,
  /// v, o, w1, w2, w3, as Llama2LoraModel::loras()).
  double operator()(const std::vector<Matrix>& a, const std::vector<Matrix>& b,
                    const std::vector<int>& tokens) const {
    const Index T = static_cast<Index>(tokens.size()) - 1;
    const Index d = c_.dim, kv = c_.kv_dim(), hs = c_.head_size();
    const Index kv_mul = c_.n_heads / c_.n_kv_heads;
    Matrix x(static_cast<std::size_t>(T * d));
    for (Index t = 0; t < T; ++t) {
      for (Index i = 0; i < d; ++i)
        x[static_cast<std::size_t>(t * d + i)] =
            embedding_[static_cast<std::size_t>(tokens[static_cast<std::size_t>(t)] * d + i)];
    }
    auto linear = [&](std::size_t k, const Matrix& in) {
      const auto [n_in, n_out] = shape_[k];
      const Index r = static_cast<Index>(a[k].size()) / n_in;
      Matrix weight = base_[k];
      for (Index i = 0; i < n_in; ++i) {
        for (Index j = 0; j < r; ++j) {
          const double v = scale_ * a[k][static_cast<std::size_t>(i * r + j)];
          for (Index o = 0; o < n_out; ++o)
            weight[static_cast<std::size_t>(i * n_out + o)] +=
                v * b[k][static_cast<std::size_t>(j * n_out + o)];
        }
      }
      return times(in, weight, T, n_in, n_out);
    };
    auto rope = [&](Matrix& m, Index width) {
      for (Index t = 0; t < T; ++t) {
        for (Index i = 0; i < width; i += 2) {
          const double angle =
              static_cast<double>(t) *
              std::pow(10000.0, -static_cast<double>(i % hs) / static_cast<double>(hs));
          double* p = &m[static_cast<std::size_t>(t * width + i)];
          const double v0 = p[0], v1 = p[1];
          p[0] = v0 * std::cos(angle) - v1 * std::sin(angle);
          p[1] = v0 * std::sin(angle) + v1 * std::cos(angle);
        }
      }
    };
    for (int l = 0; l < c_.n_layers; ++l) {
      const std::size_t k0 = static_cast<std::size_t>(l) * 7;
      const Matrix xn = rmsnorm(x, w_.rms_att(l), T, d);
      Matrix q = linear(k0, xn), k = linear(k0 + 1, xn);
      const Matrix v = linear(k0 + 2, xn);
      rope(q, d);
      rope(k, kv);
      Matrix attn(static_cast<std::size_t>(T * d), 0.0);
      for (Index h = 0; h < c_.n_heads; ++h) {
        const Index kh = (h / kv_mul) * hs;
        for (Index t = 0; t < T; ++t) {
          std::vector<double> p(static_cast<std::size_t>(t + 1));
          double mx = -INFINITY;
          for (Index s = 0; s <= t; ++s) {
            double dot = 0;
            for (Index i = 0; i < hs; ++i)
              dot += q[static_cast<std::size_t>(t * d + h * hs + i)] *
                     k[static_cast<std::size_t>(s * kv + kh + i)];
            p[static_cast<std::size_t>(s)] = dot / std::sqrt(static_cast<double>(hs));
            mx = std::max(mx, p[static_cast<std::size_t>(s)]);
          }
          double sum = 0;
          for (double& e : p) sum += (e = std::exp(e - mx));
          for (Index s = 0; s <= t; ++s) {
            for (Index i = 0; i < hs; ++i)
              attn[static_cast<std::size_t>(t * d + h * hs + i)] +=
                  p[static_cast<std::size_t>(s)] / sum *
                  v[static_cast<std::size_t>(s * kv + kh + i)];
          }
        }
      }
      const Matrix y = linear(k0 + 3, attn);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
      const Matrix xn2 = rmsnorm(x, w_.rms_ffn(l), T, d);
      const Matrix h1 = linear(k0 + 4, xn2), h3 = linear(k0 + 6, xn2);
      Matrix gated(h1.size());  // silu(h1) * h3
      for (std::size_t i = 0; i < h1.size(); ++i)
        gated[i] = h1[i] / (1.0 + std::exp(-h1[i])) * h3[i];
      const Matrix y2 = linear(k0 + 5, gated);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += y2[i];
    }
    const Matrix xf = rmsnorm(x, w_.rms_final(), T, d);
    double total = 0;
    std::vector<double> logits(static_cast<std::size_t>(c_.vocab_size));
    for (Index t = 0; t < T; ++t) {
      double mx = -INFINITY;
      for (Index v = 0; v < c_.vocab_size; ++v) {
        double s = 0;
        for (Index i = 0; i < d; ++i)
          s += embedding_[static_cast<std::size_t>(v * d + i)] *
               xf[static_cast<std::size_t>(t * d + i)];
        logits[static_cast<std::size_t>(v)] = s;
        mx = std::max(mx, s);
      }
      double sum = 0;
      for (double z : logits) sum += std::exp(z - mx);
      total += std::log(sum) + mx -
               logits[static_cast<std::size_t>(tokens[static_cast<std::size_t>(t + 1)])];
    }
    return total / static_cast<double>(T);
  }

 private:
  const gsq::Llama2Weights& w_;
  gsq::Llama2Config c_;
  double scale_;
  Matrix embedding_;                            // vocab x dim, as the model quantizes it
  std::vector<Matrix> base_;                    // per linear, in x out
  std::vector<std::pair<Index, Index>> shape_;  // per linear, (in, out)
};

}  // namespace

TEST_CASE("llama2 LoRA model: float-mode gradients match central differences of a double loss",
          "[llama2][train]") {
  auto w = gsq::Llama2Weights::random(tiny(), 3);
  gsq::LoraOptions opt;
  opt.rank = 4;
  opt.alpha = 8.0f;
  opt.mode = gsq::LoraMode::kFloat;
  using Model = gsq::Llama2LoraModel<gsq::LoraLinear<8, 8, 8, 8, 32>>;
  Model model(w, opt);
  randomise_adapters(model, 5);
  const auto tokens = sequence(13, 7, tiny().vocab_size);
  model.zero_grad();
  const double loss = model.loss(tokens, true);
  REQUIRE(std::isfinite(loss));
  const ReferenceLoss reference(w, 8, 32, double{opt.alpha} / opt.rank);
  std::vector<Matrix> a, b;
  for (auto* l : model.loras()) {
    a.emplace_back(l->a().begin(), l->a().end());
    b.emplace_back(l->b().begin(), l->b().end());
  }
  // The same function, which pins s = alpha / r and the base's rounding (an alpha / sqrt(r)
  // scale moves the loss by 1e-2).  Measured |relative difference| of the float32 forward:
  // 1.9e-9 (x86-64 gcc, clang, ASan), 7.9e-10 (x86-64 with FMA contraction), 2.0e-9 and, after
  // the SiLU change, 4.1e-9 (aarch64).  These are cancellation-lucky fractions of float32's
  // unit roundoff (6e-8), which moves with each compiler's contractions, so the bound is 16 u
  // (1e-6): far below what a wrong scale or rounding does (1e-2).
  const double ref = reference(a, b, tokens);
  INFO("model loss " << loss << ", double-precision reference " << ref);
  REQUIRE(std::abs(loss - ref) <= 1e-6 * ref);
  // Central differences of the double loss, eps = 1e-4: truncation error ~eps^2 (|fd(1e-3) -
  // fd(1e-4)| <= 1.1e-5, so ~1e-7 here) and rounding ~1e-16 / eps.  The noise floor is the float32
  // gradient's own rounding, measured as max |analytic - fd| over the components checked:
  // 1.2e-7 (x86-64 gcc, clang, FMA-contracted), 6.0e-8 (aarch64); kFloor is 1.5x the largest.
  // All 224 components checked have |fd| > 50 kFloor, where the 2 % term is what binds (the
  // smallest |fd| is 1.5e-5, the largest relative error 1.5e-4).  So a sign flip of any gradient
  // above kFloor / 2 fails, where the old bound of 2e-3 + 2 % let every one below 1e-3 flip.
  const double eps = 1e-4, kFloor = 1.75e-7;
  int checked = 0, above = 0;
  const auto loras = model.loras();
  for (std::size_t k = 0; k < loras.size(); ++k) {
    for (int which = 0; which < 2; ++which) {  // A, then B
      std::vector<Matrix>& m = which == 0 ? a : b;
      const std::vector<float>& grad = which == 0 ? loras[k]->grad_a() : loras[k]->grad_b();
      for (std::size_t i = 0; i < m[k].size(); i += m[k].size() / 8 + 1) {
        const double keep = m[k][i];
        m[k][i] = keep + eps;
        const double up = reference(a, b, tokens);
        m[k][i] = keep - eps;
        const double down = reference(a, b, tokens);
        m[k][i] = keep;
        const double fd = (up - down) / (2 * eps);
        const double g = grad[i];
        INFO("linear " << k << (which == 0 ? " A[" : " B[") << i << "]: analytic " << g
                       << ", finite difference " << fd);
        REQUIRE(std::abs(g - fd) <= kFloor + 0.02 * std::abs(fd));
        ++checked;
        above += std::abs(fd) > 50 * kFloor;
      }
    }
  }
  REQUIRE(checked == 224);
  REQUIRE(above >= checked * 9 / 10);
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
  randomise_adapters(model, 10, 0.0f);   // B = 0: the model starts as the base
  gsq::AdamW adam(model.parameters());
  const auto tokens = sequence(17, 9, tiny().vocab_size);
  const double first = model.loss(tokens, false);
  double last = first, best = first;
  for (int step = 0; step < 100; ++step) {
    model.zero_grad();
    last = model.loss(tokens, true);
    best = std::min(best, last);
    adam.step(1e-2f);
  }
  INFO("loss " << first << " -> " << last << ", best " << best);
  // Memorising one sequence.  AdamW at lr 1e-2 spikes now and then (here from 0.71 at step 90
  // to 3.1 at step 100), and where the spikes fall moves with the last bit of the float parts
  // (FMA contraction, the SiLU form), so the best loss of the run is held to the bound and the
  // last only to a loose one.  Measured best / first: 0.045; last / first: 0.025 to 0.065 on
  // x86-64 and aarch64 builds before the spike moved, 0.199 after.
  CHECK(best < 0.1 * first);
  CHECK(last < 0.3 * first);
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
  randomise_adapters(model, 8);
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
  // Every row is computed as it is alone; only the double averaging differs (measured 1.2e-16
  // to 3.6e-16 relative: a few ulps).
  REQUIRE(batched == Approx(mean).epsilon(1e-15));
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
  // dA and dB sum over the tokens in another order.  Measured: 3.9e-7 (x86-64 gcc, clang),
  // 4.7e-7 (FMA-contracted), 5.0e-7 (aarch64): float32 rounding that moves with the compiler's
  // contractions, so the bound is 32 u (2e-6) rather than a fit to one build; a missing window
  // or a wrong mean moves the gradients by far more.
  REQUIRE(err <= 2e-6 * norm);
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
  randomise_adapters(model, 9);
  const std::vector<unsigned char> image = model.merged_weights(w).serialize();
  const gsq::Llama2Weights exported = gsq::Llama2Weights::parse(image.data(), image.size());
  const auto tokens = sequence(15, 4, tiny().vocab_size);
  const double trained = model.loss(tokens, false);
  const double ran = runner_loss(exported, tokens);
  INFO("LoRA model " << trained << ", exported model run by llama2.c's forward " << ran
                     << ", original fp32 model " << runner_loss(w, tokens));
  // Float32 rounding of two forwards (batched, and token by token): measured 5.0e-9 (x86-64),
  // 1.5e-9 (FMA-contracted), 3.4e-9 and, after the SiLU change, 7.5e-9 (aarch64) relative: a
  // fraction of float32's unit roundoff that moves with the compiler's contractions, so the
  // bound is 16 u (1e-6), far below the adapters' effect (0.048, next check).
  REQUIRE(ran == Approx(trained).epsilon(1e-6));
  // The adapters matter: the export is not the original model (measured 0.048; bound 1.5x
  // below).
  REQUIRE(std::abs(runner_loss(w, tokens) - trained) > 0.032);
}
