// attention.hpp: causal multi-head attention in float for the trainer (LlamaLoraModel): the
// forward, and the backward with the probabilities recomputed from the forward's row statistics.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gsq/detail/parallel.hpp"
#include "gsq/detail/vmath.hpp"
#include "gsq/kernels/float_rows.hpp"

namespace gsq {

/// The shape attention works on: windows of `len` tokens whose rows follow each other in q
/// (rows x n_heads * head_size), k and v (rows x n_kv_heads * head_size).
struct AttentionShape {
  Index len = 0;
  Index head_size = 0;
  Index n_heads = 0;
  Index n_kv_heads = 0;
  Index q_dim() const noexcept { return n_heads * head_size; }
  Index kv_dim() const noexcept { return n_kv_heads * head_size; }
};

// How it runs
//   One work item is a (window, head) pair in forward and a (window, kv head) pair in backward
//   (that head's dK and dV sum over the query heads sharing it).  An item copies its heads'
//   rows into zero-padded scratch (head size to a multiple of 16, rows to a multiple of 16),
//   and every product is a sequence of kernels::float_rows calls on 4 rows:
//     forward    S  = Q K^T / sqrt(hs)   4 query rows against the keys they see (to 16)
//                P  = softmax(S)         per row over its own keys, zeros to its right
//                O  = P V                over the keys of the 4 rows' last one
//     backward   P again (the forward's row max and 1 / sum), dP = dO V^T,
//                dS = P (dP - sum(P dP)) / sqrt(hs),  dQ = dS K,
//                then per block of 64 query rows  dK += dS^T Q,  dV += P^T dO  (key tiles of 4,
//                from the first query that sees them)
//   Each output element is one running sum in ascending order of its reduction index: over the
//   head's dimensions for S and dP, over keys for O and dQ, over heads and then query rows for
//   dK and dV.  The terms the triangle adds beyond a row's own keys are products with P or dS
//   entries that are exactly zero, which leave a sum (never -0, as it starts at +0) unchanged.
//   So the blocking changes no bit (for finite q, k, v), and every ISA gives the same result.
class FloatAttention {
 public:
  /// In place over the n scores a query row sees: exp(s - max) * (1 / sum), the row's max and
  /// 1 / sum computed and stored when `compute`, else the forward's read (backward's recompute).
  static void softmax_row(float* s, Index n, float& max, float& inv, bool compute) noexcept {
    if (compute) {
      detail::softmax_f32(s, n, max, inv);
    } else {
      detail::softmax_again_f32(s, n, max, inv);
    }
  }

  /// out (windows * len x q_dim) = attention over q, k, v; each row's softmax max and 1 / sum
  /// into max_of and inv_of (n_heads x windows * len, head-major).
  void forward(const AttentionShape& shape, Index windows, const float* q, const float* k,
               const float* v, float* out, float* max_of, float* inv_of, int threads) {
    set_shape(shape);
    const Index items = windows * shape.n_heads;
    const int used = threads_for(items, 2, threads);
    size_slots(used, 4 * ld_ * hsp_ + kRows * ld_);
    const Index T = windows * len_, qd = shape.q_dim(), kvd = shape.kv_dim();
    const Index kv_mul = shape.n_heads / shape.n_kv_heads;
    detail::parallel_for_slots(items, used, [&](Index item, int slot) {
      const Index b = item / shape.n_heads, h = item % shape.n_heads, g = h / kv_mul;
      const Index row0 = b * len_;
      float* kt = slots_[static_cast<std::size_t>(slot)].data();
      float* vh = kt + ld_ * hsp_;
      float* qh = vh + ld_ * hsp_;
      float* oh = qh + ld_ * hsp_;
      float* p = oh + ld_ * hsp_;
      transpose_head(k + row0 * kvd + g * hs_, kvd, kt);
      copy_head(v + row0 * kvd + g * hs_, kvd, vh);
      copy_head(q + row0 * qd + h * hs_, qd, qh);
      float* mx = max_of + h * T + row0;
      float* iv = inv_of + h * T + row0;
      for (Index t0 = 0; t0 < len_; t0 += kRows) {
        scores(qh + t0 * hsp_, kt, t0, p);
        const Index rows = std::min(kRows, len_ - t0);
        for (Index r = 0; r < rows; ++r) {
          float* pr = p + r * ld_;
          softmax_row(pr, t0 + r + 1, mx[t0 + r], iv[t0 + r], true);
          std::fill(pr + t0 + r + 1, pr + t0 + kRows, 0.0f);
        }
        kernel_({oh + t0 * hsp_, hsp_, p, ld_, 1, vh, hsp_, hsp_, t0 + kRows, false, 1.0f});
      }
      store_head(oh, out + row0 * qd + h * hs_, qd);
    });
  }

  /// From dout (windows * len x q_dim): dq (like q), dk and dv (like k and v), with the row
  /// statistics forward stored.
  void backward(const AttentionShape& shape, Index windows, const float* q, const float* k,
                const float* v, const float* max_of, const float* inv_of, const float* dout,
                float* dq, float* dk, float* dv, int threads) {
    set_shape(shape);
    const Index items = windows * shape.n_kv_heads;
    const Index kv_mul = shape.n_heads / shape.n_kv_heads;
    const int used = threads_for(items, 5 * kv_mul, threads);
    size_slots(used, 2 * hs_ * ld_ + 6 * ld_ * hsp_ + 2 * kBlock * ld_);
    const Index T = windows * len_, qd = shape.q_dim(), kvd = shape.kv_dim();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs_));
    detail::parallel_for_slots(items, used, [&](Index item, int slot) {
      const Index b = item / shape.n_kv_heads, g = item % shape.n_kv_heads, row0 = b * len_;
      float* kt = slots_[static_cast<std::size_t>(slot)].data();
      float* vt = kt + hs_ * ld_;
      float* kh = vt + hs_ * ld_;
      float* qh = kh + ld_ * hsp_;
      float* doh = qh + ld_ * hsp_;
      float* dqh = doh + ld_ * hsp_;
      float* dkh = dqh + ld_ * hsp_;
      float* dvh = dkh + ld_ * hsp_;
      float* p = dvh + ld_ * hsp_;
      float* ds = p + kBlock * ld_;
      transpose_head(k + row0 * kvd + g * hs_, kvd, kt);
      transpose_head(v + row0 * kvd + g * hs_, kvd, vt);
      copy_head(k + row0 * kvd + g * hs_, kvd, kh);
      std::fill(dkh, dkh + 2 * ld_ * hsp_, 0.0f);  // dkh and dvh
      for (Index h = g * kv_mul; h < (g + 1) * kv_mul; ++h) {
        copy_head(q + row0 * qd + h * hs_, qd, qh);
        copy_head(dout + row0 * qd + h * hs_, qd, doh);
        const float* mx = max_of + h * T + row0;
        const float* iv = inv_of + h * T + row0;
        for (Index q0 = 0; q0 < len_; q0 += kBlock) {
          const Index q_end = std::min(q0 + kBlock, len_);
          for (Index t0 = q0; t0 < q_end; t0 += kRows) {
            float* pb = p + (t0 - q0) * ld_;
            float* db = ds + (t0 - q0) * ld_;
            scores(qh + t0 * hsp_, kt, t0, pb);
            kernel_({db, ld_, doh + t0 * hsp_, hsp_, 1, vt, ld_, padded(t0 + kRows), hs_, false,
                     1.0f});  // dP
            const Index rows = std::min(kRows, len_ - t0);
            for (Index r = 0; r < rows; ++r) {
              const Index n = t0 + r + 1;
              float* pr = pb + r * ld_;
              float* dr = db + r * ld_;
              float m = mx[t0 + r], i = iv[t0 + r];
              softmax_row(pr, n, m, i, false);
              const float rowdot = detail::dot_f32(pr, dr, n);
              for (Index j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - rowdot) * scale;
              std::fill(pr + n, pr + ld_, 0.0f);
              std::fill(dr + n, dr + ld_, 0.0f);
            }
            kernel_({dqh + t0 * hsp_, hsp_, db, ld_, 1, kh, hsp_, hsp_, t0 + kRows, false,
                     1.0f});  // dQ
          }
          // dK and dV of keys [0, q_end) over this block's queries, each key tile from the
          // first query that sees it.
          for (Index j0 = 0; j0 < q_end; j0 += kRows) {
            const Index first = std::max(q0, j0), depth = q_end - first;
            kernel_({dkh + j0 * hsp_, hsp_, ds + (first - q0) * ld_ + j0, 1, ld_,
                     qh + first * hsp_, hsp_, hsp_, depth, true, 1.0f});
            kernel_({dvh + j0 * hsp_, hsp_, p + (first - q0) * ld_ + j0, 1, ld_,
                     doh + first * hsp_, hsp_, hsp_, depth, true, 1.0f});
          }
        }
        store_head(dqh, dq + row0 * qd + h * hs_, qd);
      }
      store_head(dkh, dk + row0 * kvd + g * hs_, kvd);
      store_head(dvh, dv + row0 * kvd + g * hs_, kvd);
    });
  }

  /// Runs the kernels of `isa` (a conversion level, cpu.hpp; the best the CPU allows by
  /// default): every ISA gives the same bits.
  void set_isa(Isa isa) { kernel_ = kernels::float_rows_kernel(isa); }

  /// The scratch attention holds (bytes), for memory accounts.
  std::size_t scratch_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& s : slots_) n += s.capacity() * sizeof(float);
    return n;
  }

 private:
  static constexpr Index kRows = kernels::kFloatRows;
  static constexpr Index kBlock = 64;  // query rows per dK / dV pass (a multiple of kRows)
  static Index padded(Index n) noexcept {
    return (n + kernels::kFloatLanes - 1) / kernels::kFloatLanes * kernels::kFloatLanes;
  }

  void set_shape(const AttentionShape& shape) {
    len_ = shape.len;
    hs_ = shape.head_size;
    hsp_ = padded(hs_);
    ld_ = padded(len_);
  }

  /// Threads for `items` items of `products` causal len x len x hs products each.
  int threads_for(Index items, Index products, int threads) const {
    const double len = static_cast<double>(len_);
    return detail::threads_for(
        static_cast<double>(items * products) * len * len * static_cast<double>(hs_), threads);
  }

  void size_slots(int threads, Index floats) {
    slots_.resize(static_cast<std::size_t>(std::max(threads, 1)));
    for (auto& s : slots_) s.resize(static_cast<std::size_t>(floats));
  }

  /// p (kRows x ld) = Q rows t0.. (qh, hsp wide) against keys [0, padded(t0 + kRows)) of kt (hs
  /// x ld), divided by sqrt(hs).
  void scores(const float* qh, const float* kt, Index t0, float* p) const {
    kernel_({p, ld_, qh, hsp_, 1, kt, ld_, padded(t0 + kRows), hs_, false,
             1.0f / std::sqrt(static_cast<float>(hs_))});
  }

  /// dst (ld x hsp) = the window's head rows (src[s * width + i], s < len, i < hs), zero
  /// elsewhere.
  void copy_head(const float* src, Index width, float* dst) const {
    for (Index s = 0; s < len_; ++s) {
      std::copy(src + s * width, src + s * width + hs_, dst + s * hsp_);
      std::fill(dst + s * hsp_ + hs_, dst + (s + 1) * hsp_, 0.0f);
    }
    std::fill(dst + len_ * hsp_, dst + ld_ * hsp_, 0.0f);
  }

  /// dst (hs x ld) = the window's head rows transposed, zero past len.
  void transpose_head(const float* src, Index width, float* dst) const {
    for (Index i = 0; i < hs_; ++i) std::fill(dst + i * ld_ + len_, dst + (i + 1) * ld_, 0.0f);
    for (Index s = 0; s < len_; ++s) {
      const float* row = src + s * width;
      for (Index i = 0; i < hs_; ++i) dst[i * ld_ + s] = row[i];
    }
  }

  /// The first len rows and hs columns of src (ld x hsp) into the head's rows of dst.
  void store_head(const float* src, float* dst, Index width) const {
    for (Index s = 0; s < len_; ++s)
      std::copy(src + s * hsp_, src + s * hsp_ + hs_, dst + s * width);
  }

  Index len_ = 0, hs_ = 0, hsp_ = 0, ld_ = 0;
  std::vector<std::vector<float>> slots_;
  kernels::FloatRowsKernel kernel_ = kernels::float_rows_kernel(conversion_isa());
};

}  // namespace gsq
