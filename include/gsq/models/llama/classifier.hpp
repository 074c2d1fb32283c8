// classifier.hpp: a LLaMA model's token embedding and classifier, frozen as GSE-INT8, and the
// fused classifier + softmax + cross-entropy + logit gradient, a chunk of tokens at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/detail/gemm_f32.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/matmul.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/nn/options.hpp"
#include "gsq/regroup.hpp"

namespace gsq {

// What runs where
//   The embedding E (vocab x dim) is GSE-INT8 grouped along dim; input tokens read their rows
//   dequantized.  The classifier W (E itself when tied) is GSE-INT8 along dim, packed once for
//   the matmul kernels, and again regrouped along vocab (integers, regroup.hpp) for dX.
//   GSE mode, per chunk of rows (the chunk's size depends on the vocabulary only, never on
//   threads, so results do not either):
//     logits = Xq(dim) * W^T(dim)                 Xq: the final norm's output, GSE-INT8
//     one pass per row: max, e = exp(logit - max) (gsq's exp_f32), their sum, the loss, and
//     g = (e / sum - onehot(target)) * weight     in place of the logits
//     dX = Gq(vocab) * W(vocab)                   Gq: GSE-INT8, stochastic rounding
//   Float mode runs the same products in float on the dequantized classifier.  The tokens x
//   vocab logits are never held whole: one chunk of at most 2^21 floats (8 MiB) is.

/// The loss of a chunk run: the sum of the per-token cross-entropies (nats) over the counted
/// tokens, and their number.
struct ClassifierLoss {
  double sum = 0;
  Index count = 0;
};

class LlamaClassifier {
 public:
  LlamaClassifier() = default;
  /// Reads the embedding (and the classifier, when not tied) from `source`, one at a time.
  LlamaClassifier(const LlamaWeightSource& source, const LoraOptions& options)
      : options_(options), vocab_(source.config().vocab_size), dim_(source.config().dim) {
    std::vector<float> w;
    source.read(LlamaTensor::kTokenEmbedding, 0, w);
    quantize_into(MatrixRef<const float>::row_major(w.data(), vocab_, dim_), Axis::kCols,
                  embedding_, options.quantize());
    if (!source.config().tied_classifier) {
      source.read(LlamaTensor::kClassifier, 0, w);
      quantize_into(MatrixRef<const float>::row_major(w.data(), vocab_, dim_), Axis::kCols,
                    classifier_, options.quantize());
    }
    w.clear();
    w.shrink_to_fit();
    const GseView<8> cls = weight();
    forward_.assign(cls.transposed(), options.matmul);  // dim x vocab, grouped along dim
    const GseTensor<8> along_vocab = regroup<8>(cls, Axis::kRows, options.quantize());
    backward_.assign(along_vocab.view(), options.matmul);  // vocab x dim, grouped along vocab
    chunk_ = std::clamp<Index>((Index{1} << 21) / vocab_ / 16 * 16, 16, 256);
  }

  Index vocab() const noexcept { return vocab_; }
  Index dim() const noexcept { return dim_; }
  /// Rows of logits computed at a time.
  Index chunk_rows() const noexcept { return chunk_; }
  /// The classifier weight (vocab x dim, grouped along dim): the embedding when tied.
  GseView<8> weight() const noexcept {
    return classifier_.rows() > 0 ? classifier_.view() : embedding_.view();
  }
  const GseTensor<8>& embedding() const noexcept { return embedding_; }

  /// out[0..dim) = the dequantized embedding of `token` (in [0, vocab), checked by the caller).
  void embed(int token, float* out) const {
    dequantize_into(embedding_.view().line_block(token, 1),
                    MatrixRef<float>::row_major(out, 1, dim_));
  }

  /// Bytes held: the embedding, the separate classifier, and the two packed forms.
  std::size_t bytes() const noexcept {
    return embedding_.bytes() + classifier_.bytes() + forward_.bytes() + backward_.bytes() +
           (float_w_.size() + float_wt_.size()) * sizeof(float);
  }

  /// The cross-entropy of rows [0, rows) of xf (rows x dim, row-major) against targets[t],
  /// counting the rows where mask is null or mask[t] != 0.  With dx non-null, also writes
  /// dx = d(weight * sum of counted losses) / d xf (rows x dim), stochastic rounding of the
  /// logit gradient from `seed`.
  ClassifierLoss run(const float* xf, Index rows, const int* targets, const std::uint8_t* mask,
                     bool gse, float weight, float* dx, std::uint64_t seed) {
    ClassifierLoss total;
    const int threads = options_.matmul.threads;
    if (gse) {
      quantize_into(MatrixRef<const float>::row_major(xf, rows, dim_), Axis::kCols, xq_,
                    options_.quantize());
    } else {
      float_weights();
    }
    logits_.resize(static_cast<std::size_t>(chunk_ * vocab_));
    row_loss_.resize(static_cast<std::size_t>(chunk_));
    for (Index c0 = 0, chunk = 0; c0 < rows; c0 += chunk_, ++chunk) {
      const Index n = std::min(chunk_, rows - c0);
      const auto logits = MatrixRef<float>::row_major(logits_.data(), n, vocab_);
      if (gse) {
        matmul(xq_.view().line_block(c0, n), forward_, logits, 1.0f, 0.0f, options_.matmul);
      } else {
        detail::gemm_f32(MatrixRef<const float>::row_major(xf + c0 * dim_, n, dim_),
                         MatrixRef<const float>::row_major(float_wt_.data(), dim_, vocab_),
                         logits);
      }
      const bool backward = dx != nullptr;
      detail::parallel_for(n, detail::threads_for(static_cast<double>(n * vocab_) * 16, threads),
                           [&](Index r) {
                             const Index t = c0 + r;
                             const bool counted = mask == nullptr || mask[t] != 0;
                             row_loss_[static_cast<std::size_t>(r)] = softmax_row(
                                 logits_.data() + r * vocab_, targets[t], counted, backward,
                                 weight);
                           });
      for (Index r = 0; r < n; ++r) {
        if (mask != nullptr && mask[c0 + r] == 0) continue;
        total.sum += row_loss_[static_cast<std::size_t>(r)];
        ++total.count;
      }
      if (!backward) continue;
      const auto dxc = MatrixRef<float>::row_major(dx + c0 * dim_, n, dim_);
      if (gse) {
        QuantizeOptions q = options_.quantize(
            options_.gradient_rounding,
            detail::stream_seed(seed, chunk, 0xC1A5u));
        quantize_into(MatrixRef<const float>(logits), Axis::kCols, gq_, q);
        matmul(gq_.view(), backward_, dxc, 1.0f, 0.0f, options_.matmul);
      } else {
        detail::gemm_f32(MatrixRef<const float>(logits),
                         MatrixRef<const float>::row_major(float_w_.data(), vocab_, dim_), dxc);
      }
    }
    return total;
  }

 private:
  /// One row of logits: returns its cross-entropy against `target` (nats), and when `backward`
  /// overwrites the row with (softmax - onehot(target)) * weight, or with 0 when not counted.
  double softmax_row(float* z, int target, bool counted, bool backward, float weight) const {
    const Index v = vocab_;
    const float max = detail::max_f32(z, v);
    const float target_logit = z[target];
    detail::exp_shifted_f32(z, v, max);
    const float sum = detail::sum_f32(z, v);
    const double loss = std::log(static_cast<double>(sum)) + double{max} - double{target_logit};
    if (backward) {
      const float scale = counted ? weight / sum : 0.0f;
      for (Index i = 0; i < v; ++i) z[i] = z[i] * scale;
      if (counted) z[target] = z[target] - weight;
    }
    return loss;
  }

  void float_weights() {
    if (!float_w_.empty()) return;
    float_w_ = dequantize(weight());  // vocab x dim
    float_wt_.resize(float_w_.size());
    for (Index v = 0; v < vocab_; ++v) {
      for (Index i = 0; i < dim_; ++i)
        float_wt_[static_cast<std::size_t>(i * vocab_ + v)] =
            float_w_[static_cast<std::size_t>(v * dim_ + i)];
    }
  }

  LoraOptions options_;
  Index vocab_ = 0, dim_ = 0, chunk_ = 16;
  GseTensor<8> embedding_, classifier_;
  PackedMatmulRhs<32> forward_, backward_;
  std::vector<float> float_w_, float_wt_;  // float mode only, made on first use
  // Per-call scratch, kept so that later steps allocate nothing.
  GseTensor<8> xq_, gq_;
  std::vector<float> logits_;
  std::vector<double> row_loss_;
};

}  // namespace gsq
