// lora_model.hpp: forward and backward of a llama2.c model over a token sequence, with every
// linear layer (wq, wk, wv, wo, w1, w2, w3) a gsq LoRA layer on a frozen low-bit base.
#pragma once

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/detail/gemm_f32.hpp"
#include "gsq/models/llama/ops.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim/parameter.hpp"

namespace gsq {

// What runs where
//   Linear layers: LoraLinear (GSE, float or FP8 mode, see nn/lora.hpp): every matmul of their
//   forward and backward is integer in GSE mode.  The non-linear parts stay float32: RMSNorm,
//   RoPE, causal grouped-query attention (scores, softmax, weighted values), SwiGLU, the tied
//   classifier (the frozen token embedding, as llama2.c shares it) and cross-entropy, all from
//   ops.hpp, which the fp32 runner (runner.hpp) shares.  They are O(T^2 d + T d) against the
//   linears' O(T d^2) and carry no trainable state.

/// A llama2.c model for fine-tuning: frozen base, adapters on all seven linears per layer.
/// Lora: the layer type of every linear, a model of Linear (nn/linear.hpp): LoraLinear or
/// LotaLinear.
template <typename Lora = LoraLinear<4, 8, 8, 8, 32>>
class Llama2LoraModel {
  static_assert(check_linear<Lora>(), "Llama2LoraModel: its layer type must model Linear");

 public:
  /// The layers share one matmul workspace (they run one at a time), the model's own unless
  /// options.matmul.workspace names one.
  Llama2LoraModel(const Llama2Weights& w, const LoraOptions& options)
      : w_(w), c_(w.config()), workspace_(std::make_unique<MatmulWorkspace>()) {
    for (int l = 0; l < c_.n_layers; ++l) {
      Layer layer;
      LoraOptions o = options;
      if (o.matmul.workspace == nullptr) o.matmul.workspace = workspace_.get();
      auto make = [&](MatrixRef<const float> m, std::uint64_t salt) {
        o.seed = options.seed * 1000003u + static_cast<std::uint64_t>(l) * 16u + salt;
        return std::make_unique<Lora>(detail::transposed(m), o);  // llama2.c stores out x in
      };
      layer.q = make(w.wq(l), 0);
      layer.k = make(w.wk(l), 1);
      layer.v = make(w.wv(l), 2);
      layer.o = make(w.wo(l), 3);
      layer.w1 = make(w.w1(l), 4);
      layer.w2 = make(w.w2(l), 5);
      layer.w3 = make(w.w3(l), 6);
      layers_.push_back(std::move(layer));
    }
  }

  const Llama2Config& config() const noexcept { return c_; }

  /// Every LoRA layer, in a fixed order (layer by layer: q, k, v, o, w1, w2, w3).
  std::vector<Lora*> loras() {
    std::vector<Lora*> out;
    for (Layer& l : layers_) {
      for (Lora* p :
           {l.q.get(), l.k.get(), l.v.get(), l.o.get(), l.w1.get(), l.w2.get(), l.w3.get()})
        out.push_back(p);
    }
    return out;
  }

  /// The adapters as optimizer parameters.
  std::vector<Parameter> parameters() {
    std::vector<Parameter> out;
    for (Lora* p : loras()) {
      out.push_back({p->a().data(), p->grad_a().data(), p->a().size()});
      out.push_back({p->b().data(), p->grad_b().data(), p->b().size()});
    }
    return out;
  }

  void set_mode(LoraMode mode) {
    for (Lora* p : loras()) p->set_mode(mode);
  }
  void zero_grad() {
    for (Lora* p : loras()) p->zero_grad();
  }

  /// Mean cross-entropy of predicting tokens[t + 1] from tokens[0..t], t < T = size - 1.  With
  /// `backward`, also accumulates the adapters' gradients of that mean.
  double loss(const std::vector<int>& tokens, bool backward) {
    const std::vector<int>* one = &tokens;
    return run(&one, 1, backward);
  }

  /// The same over a micro-batch of windows of one length, processed together: every linear
  /// layer sees all windows' tokens as one matrix (as training frameworks batch them), attention
  /// and RoPE stay within each window.  Returns the mean over all predictions, and with
  /// `backward` accumulates the gradients of that mean.
  double loss_batch(const std::vector<std::vector<int>>& windows, bool backward) {
    std::vector<const std::vector<int>*> seqs;
    for (const std::vector<int>& w : windows) seqs.push_back(&w);
    GSQ_CHECK(!seqs.empty(), "llama2: an empty micro-batch");
    return run(seqs.data(), seqs.size(), backward);
  }

  /// The model with every adapter folded into float32 weights: W = dequantized base + s A B per
  /// linear (the base is the WBits grid, so this is what the trained model computes, with the
  /// adapters' product exact in float), everything else copied.  Serialize it to run it with
  /// llama2.c or anything else that reads that format.
  Llama2Weights merged_weights() const {
    Llama2Weights out = w_;
    for (int l = 0; l < c_.n_layers; ++l) {
      const Layer& L = layers_[static_cast<std::size_t>(l)];
      const std::pair<const Lora*, MatrixRef<const float>> linears[] = {
          {L.q.get(), out.wq(l)}, {L.k.get(), out.wk(l)},  {L.v.get(), out.wv(l)},
          {L.o.get(), out.wo(l)}, {L.w1.get(), out.w1(l)}, {L.w2.get(), out.w2(l)},
          {L.w3.get(), out.w3(l)}};
      for (const auto& [lora, m] : linears) {
        // m is out x in in llama2.c's layout; the layer's effective weight is in x out.
        const std::vector<float> eff = lora->effective_weight();
        float* dst = out.mutable_data(m);
        const Index in = lora->in_features(), outf = lora->out_features();
        for (Index o = 0; o < outf; ++o) {
          for (Index i = 0; i < in; ++i)
            dst[o * in + i] = eff[static_cast<std::size_t>(i * outf + o)];
        }
      }
    }
    return out;
  }

 private:
  struct Layer {
    std::unique_ptr<Lora> q, k, v, o, w1, w2, w3;
    std::vector<float> xn1, r1, q_out, k_out, v_out, probs, attn, x2, xn2, r2, h1, h3;
  };

  /// Forward (and backward) over n windows of one length: rows b * len + t of every activation.
  double run(const std::vector<int>* const* seqs, std::size_t n, bool backward) {
    const Index len = static_cast<Index>(seqs[0]->size()) - 1;
    GSQ_CHECK(len >= 1 && len <= c_.seq_len,
              "llama2: a training sequence needs 2 to seq_len + 1 = ", c_.seq_len + 1,
              " tokens, got ", seqs[0]->size());
    for (std::size_t b = 0; b < n; ++b) {
      GSQ_CHECK(static_cast<Index>(seqs[b]->size()) == len + 1, "llama2: window ", b, " has ",
                seqs[b]->size(), " tokens, window 0 has ", len + 1);
      for (int tok : *seqs[b])
        GSQ_CHECK(tok >= 0 && tok < c_.vocab_size, "llama2: token ", tok, " is outside [0, ",
                  c_.vocab_size, ")");
    }
    len_ = len;
    const Index t_len = static_cast<Index>(n) * len;  // rows of every activation
    auto token = [&](Index row, Index ahead) {
      return (
          *seqs[static_cast<std::size_t>(row / len)])[static_cast<std::size_t>(row % len + ahead)];
    };
    const Index d = c_.dim, kv = c_.kv_dim(), hid = c_.hidden_dim, vocab = c_.vocab_size;
    // Forward, keeping what backward needs.
    x_.assign(static_cast<std::size_t>(c_.n_layers + 1), {});
    std::vector<float>& x0 = x_[0];
    x0.resize(static_cast<std::size_t>(t_len * d));
    for (Index t = 0; t < t_len; ++t) {
      const float* e = &w_.token_embedding()(token(t, 0), 0);
      std::copy(e, e + d, x0.begin() + t * d);
    }
    for (int l = 0; l < c_.n_layers; ++l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      const std::vector<float>& x = x_[static_cast<std::size_t>(l)];
      rmsnorm(x, w_.rms_att(l), t_len, d, L.xn1, L.r1);
      L.q_out.resize(static_cast<std::size_t>(t_len * d));
      L.k_out.resize(static_cast<std::size_t>(t_len * kv));
      L.v_out.resize(static_cast<std::size_t>(t_len * kv));
      L.q->forward(rm(L.xn1, t_len, d), rmw(L.q_out, t_len, d));
      L.k->forward(rm(L.xn1, t_len, d), rmw(L.k_out, t_len, kv));
      L.v->forward(rm(L.xn1, t_len, d), rmw(L.v_out, t_len, kv));
      rope(L.q_out, t_len, d, false);
      rope(L.k_out, t_len, kv, false);
      attention_forward(L, t_len);
      std::vector<float> y(static_cast<std::size_t>(t_len * d));
      L.o->forward(rm(L.attn, t_len, d), rmw(y, t_len, d));
      L.x2 = x;
      for (std::size_t i = 0; i < y.size(); ++i) L.x2[i] += y[i];
      rmsnorm(L.x2, w_.rms_ffn(l), t_len, d, L.xn2, L.r2);
      L.h1.resize(static_cast<std::size_t>(t_len * hid));
      L.h3.resize(L.h1.size());
      L.w1->forward(rm(L.xn2, t_len, d), rmw(L.h1, t_len, hid));
      L.w3->forward(rm(L.xn2, t_len, d), rmw(L.h3, t_len, hid));
      std::vector<float> hs(L.h1.size());
      for (std::size_t i = 0; i < hs.size(); ++i) hs[i] = llama::silu(L.h1[i]) * L.h3[i];
      L.w2->forward(rm(hs, t_len, hid), rmw(y, t_len, d));
      std::vector<float>& next = x_[static_cast<std::size_t>(l + 1)];
      next = L.x2;
      for (std::size_t i = 0; i < y.size(); ++i) next[i] += y[i];
    }
    std::vector<float> xf, rf;
    rmsnorm(x_.back(), w_.rms_final(), t_len, d, xf, rf);
    // Logits through the tied classifier, softmax and cross-entropy, row by row.
    const MatrixRef<const float> cls = w_.classifier();
    std::vector<float> dxf(backward ? static_cast<std::size_t>(t_len * d) : 0, 0.0f);
    std::vector<float> logits(static_cast<std::size_t>(vocab));
    double total = 0;
    for (Index t = 0; t < t_len; ++t) {
      llama::matvec(logits.data(), xf.data() + t * d, cls);
      const llama::SoftmaxSum z = llama::softmax_sum(logits.data(), vocab);
      const int target = token(t, 1);
      total += z.cross_entropy(logits[static_cast<std::size_t>(target)]);
      if (!backward) continue;
      float* g = dxf.data() + t * d;
      for (Index v = 0; v < vocab; ++v) {
        double p = z.probability(logits[static_cast<std::size_t>(v)]);
        if (v == target) p -= 1.0;
        const auto dl = static_cast<float>(p / static_cast<double>(t_len));
        for (Index i = 0; i < d; ++i) g[i] += dl * cls(v, i);
      }
    }
    if (backward) backward_pass(dxf, rf, t_len);
    return total / static_cast<double>(t_len);
  }

  static MatrixRef<const float> rm(const std::vector<float>& v, Index rows, Index cols) {
    return MatrixRef<const float>::row_major(v.data(), rows, cols);
  }
  static MatrixRef<float> rmw(std::vector<float>& v, Index rows, Index cols) {
    return MatrixRef<float>::row_major(v.data(), rows, cols);
  }
  /// y = g * x / rms(x) per row (ops.hpp); r holds 1 / rms per row.
  static void rmsnorm(const std::vector<float>& x, const float* g, Index rows, Index d,
                      std::vector<float>& y, std::vector<float>& r) {
    y.resize(x.size());
    r.resize(static_cast<std::size_t>(rows));
    for (Index t = 0; t < rows; ++t)
      r[static_cast<std::size_t>(t)] = llama::rmsnorm(y.data() + t * d, x.data() + t * d, g, d);
  }
  /// dx += d(rmsnorm)/dx^T dy, row by row.
  static void rmsnorm_backward(const std::vector<float>& x, const float* g,
                               const std::vector<float>& r, const std::vector<float>& dy,
                               Index rows, Index d, std::vector<float>& dx) {
    for (Index t = 0; t < rows; ++t) {
      llama::rmsnorm_backward(dx.data() + t * d, x.data() + t * d, g,
                              r[static_cast<std::size_t>(t)], dy.data() + t * d, d);
    }
  }
  /// RoPE of every row at its position in its window, row % len_ (the inverse rotation when
  /// `inverse`, which is the backward pass of the rotation).
  void rope(std::vector<float>& m, Index rows, Index width, bool inverse) const {
    for (Index t = 0; t < rows; ++t)
      llama::rope(m.data() + t * width, width, c_.head_size(), t % len_, inverse);
  }

  void attention_forward(Layer& L, Index T) {
    const int hs = c_.head_size(), H = c_.n_heads, kv_mul = c_.n_heads / c_.n_kv_heads;
    const Index d = c_.dim, kv = c_.kv_dim();
    L.probs.assign(static_cast<std::size_t>(H * T * len_), 0.0f);
    L.attn.assign(static_cast<std::size_t>(T * d), 0.0f);
    for (int h = 0; h < H; ++h) {
      const Index kh = (h / kv_mul) * hs;
      for (Index t = 0; t < T; ++t) {
        const Index first = t - t % len_;  // the window's first row; p[s] is for row first + s
        float* p = L.probs.data() + (h * T + t) * len_ - first;
        const float* q = L.q_out.data() + t * d + h * hs;
        for (Index s = first; s <= t; ++s) {
          const float* k = L.k_out.data() + s * kv + kh;
          float dot = 0.0f;
          for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
          p[s] = llama::attention_score(dot, hs);
        }
        llama::softmax(p + first, t - first + 1);
        float* o = L.attn.data() + t * d + h * hs;
        for (Index s = first; s <= t; ++s) {
          const float* v = L.v_out.data() + s * kv + kh;
          for (int i = 0; i < hs; ++i) o[i] += p[s] * v[i];
        }
      }
    }
  }

  /// From dO (T x d): dQ (T x d), dK and dV (T x kv), all before RoPE undoing for Q and K.
  void attention_backward(const Layer& L, Index T, const std::vector<float>& d_attn,
                          std::vector<float>& dq, std::vector<float>& dk,
                          std::vector<float>& dv) const {
    const int hs = c_.head_size(), H = c_.n_heads, kv_mul = c_.n_heads / c_.n_kv_heads;
    const Index d = c_.dim, kv = c_.kv_dim();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    dq.assign(static_cast<std::size_t>(T * d), 0.0f);
    dk.assign(static_cast<std::size_t>(T * kv), 0.0f);
    dv.assign(static_cast<std::size_t>(T * kv), 0.0f);
    std::vector<float> dp(static_cast<std::size_t>(T));
    for (int h = 0; h < H; ++h) {
      const Index kh = (h / kv_mul) * hs;
      for (Index t = 0; t < T; ++t) {
        const Index first = t - t % len_;
        const float* p = L.probs.data() + (h * T + t) * len_ - first;
        const float* go = d_attn.data() + t * d + h * hs;
        float dot = 0.0f;
        for (Index s = first; s <= t; ++s) {
          const float* v = L.v_out.data() + s * kv + kh;
          float g = 0.0f;
          for (int i = 0; i < hs; ++i) g += go[i] * v[i];
          dp[static_cast<std::size_t>(s)] = g;
          dot += g * p[s];
          float* gv = dv.data() + s * kv + kh;
          for (int i = 0; i < hs; ++i) gv[i] += p[s] * go[i];
        }
        const float* q = L.q_out.data() + t * d + h * hs;
        float* gq = dq.data() + t * d + h * hs;
        for (Index s = first; s <= t; ++s) {
          const float ds = p[s] * (dp[static_cast<std::size_t>(s)] - dot) * scale;
          const float* k = L.k_out.data() + s * kv + kh;
          float* gk = dk.data() + s * kv + kh;
          for (int i = 0; i < hs; ++i) {
            gq[i] += ds * k[i];
            gk[i] += ds * q[i];
          }
        }
      }
    }
  }

  void backward_pass(const std::vector<float>& dxf, const std::vector<float>& rf, Index T) {
    const Index d = c_.dim, kv = c_.kv_dim(), hid = c_.hidden_dim;
    std::vector<float> dx(static_cast<std::size_t>(T * d), 0.0f);
    rmsnorm_backward(x_.back(), w_.rms_final(), rf, dxf, T, d, dx);
    std::vector<float> tmp_d(static_cast<std::size_t>(T * d)), dxn(static_cast<std::size_t>(T * d));
    for (int l = c_.n_layers - 1; l >= 0; --l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      // FFN: x3 = x2 + w2(silu(w1 xn2) * w3 xn2).
      std::vector<float> dhs(static_cast<std::size_t>(T * hid));
      L.w2->backward(rm(dx, T, d), rmw(dhs, T, hid));
      std::vector<float> dh1(dhs.size()), dh3(dhs.size());
      for (std::size_t i = 0; i < dhs.size(); ++i)
        llama::swiglu_backward(L.h1[i], L.h3[i], dhs[i], dh1[i], dh3[i]);
      L.w1->backward(rm(dh1, T, hid), rmw(dxn, T, d));
      L.w3->backward(rm(dh3, T, hid), rmw(tmp_d, T, d));
      for (std::size_t i = 0; i < dxn.size(); ++i) dxn[i] += tmp_d[i];
      rmsnorm_backward(L.x2, w_.rms_ffn(l), L.r2, dxn, T, d, dx);  // dx is now d/dx2
      // Attention: x2 = x + wo(attn(rope(wq xn1), rope(wk xn1), wv xn1)).
      std::vector<float> d_attn(static_cast<std::size_t>(T * d));
      L.o->backward(rm(dx, T, d), rmw(d_attn, T, d));
      std::vector<float> dq, dk, dv;
      attention_backward(L, T, d_attn, dq, dk, dv);
      rope(dq, T, d, true);
      rope(dk, T, kv, true);
      L.q->backward(rm(dq, T, d), rmw(dxn, T, d));
      L.k->backward(rm(dk, T, kv), rmw(tmp_d, T, d));
      for (std::size_t i = 0; i < dxn.size(); ++i) dxn[i] += tmp_d[i];
      L.v->backward(rm(dv, T, kv), rmw(tmp_d, T, d));
      for (std::size_t i = 0; i < dxn.size(); ++i) dxn[i] += tmp_d[i];
      rmsnorm_backward(x_[static_cast<std::size_t>(l)], w_.rms_att(l), L.r1, dxn, T, d, dx);
    }
  }

  const Llama2Weights& w_;
  Llama2Config c_;
  std::unique_ptr<MatmulWorkspace> workspace_;  // shared by the layers; a stable address
  std::vector<Layer> layers_;
  std::vector<std::vector<float>> x_;  // the residual stream entering each layer, and the last
  Index len_ = 1;                      // the window length of the current micro-batch
};

}  // namespace gsq
