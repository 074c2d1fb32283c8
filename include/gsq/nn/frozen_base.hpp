// frozen_base.hpp: the frozen low-bit base weight of an adapter layer, and its two products.
#pragma once

#include <cstddef>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/matmul.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

/// W (in x out), frozen: quantized to GSE-INT<WBits> along in_features and kept only bit-packed
/// (about 4.16 bits per value at 4 bits; no float copy).  The two products an adapter layer needs
/// run from the packed codes, without unpacking W:
///   forward    Y  = Xq(in) * W(in)      streamed, one L2-sized block of kernel panels at a time
///   backward   dX = dYq(out) * W^T(out) W regrouped along out to GSE-INT8 on the fly, in
///                                       integers (exact for typical weights, see regroup.hpp)
/// The regrouping offset of W^T is computed once per weight (at construction and assign()), not
/// per product.  LoraLinear and LotaLinear hold one each.
template <int WBits, int G = 32>
class FrozenBase {
 public:
  using Packed = PackedGseTensor<WBits, G>;

  FrozenBase() = default;
  /// Quantizes w (in x out, any strides; float or gsq::Bf16) along in_features with `q`.
  template <typename T>
  FrozenBase(MatrixRef<const T> w, const QuantizeOptions& q) {
    assign(quantize<WBits, G>(w, Axis::kRows, q).view());
  }

  /// Replaces the weight with codes already grouped along in_features (a merge writes them).
  void assign(const GseView<WBits, G>& w) {
    GSQ_CHECK(w.axis() == Axis::kRows, "FrozenBase: the weight must be grouped along in_features");
    packed_ = Packed::pack(w);
    transposed_offset_ = TransposedRegroupedRhs<WBits, G>::offset_of(packed_);
    if (cached_) cache_transposed(cache_options_);
  }

  /// Keeps W^T regrouped along out (GSE-INT8) packed for the matmul kernel of options.isa, so
  /// that backward_input stops regrouping it on every call: the same bits, for about 1.125
  /// bytes per weight more (2.2x a 4-bit base's bytes).  Kept across assign().
  void cache_transposed(const MatmulOptions& options) {
    cache_options_ = options;
    cache_options_.workspace = nullptr;
    cached_ = true;
    transposed_.assign(TransposedRegroupedRhs<WBits, G>(packed_, transposed_offset_),
                       cache_options_);
  }

  Index in_features() const noexcept { return packed_.rows(); }
  Index out_features() const noexcept { return packed_.cols(); }
  /// The bit-packed codes and exponents.
  const Packed& packed() const noexcept { return packed_; }
  /// Bytes held (the packed codes and exponents, and the cached W^T if any).
  std::size_t bytes() const noexcept {
    return packed_.bytes() + (cached_ ? transposed_.bytes() : 0);
  }
  /// The dequantized weight (in x out, row-major), for references and export.
  std::vector<float> dequantized() const { return dequantize(packed_.unpack()); }

  /// Y = Xq W for Xq (T x in, grouped along in), overwriting Y (T x out).
  template <int ABits>
  void forward(const GseView<ABits, G>& xq, MatrixRef<float> y,
               const MatmulOptions& options) const {
    matmul(xq, PackedStorageRhs<WBits, G>(packed_), y, 1.0f, 0.0f, options);
  }

  /// dX = dYq W^T for dYq (T x out, grouped along out), overwriting dX (T x in).
  template <int GBits>
  void backward_input(const GseView<GBits, G>& dyq, MatrixRef<float> dx,
                      const MatmulOptions& options) const {
    if (cached_) {
      matmul(dyq, transposed_, dx, 1.0f, 0.0f, options);
    } else {
      matmul(dyq, TransposedRegroupedRhs<WBits, G>(packed_, transposed_offset_), dx, 1.0f, 0.0f,
             options);
    }
  }

 private:
  Packed packed_;
  int transposed_offset_ = 0;  // offset of W regrouped along out (TransposedRegroupedRhs)
  bool cached_ = false;
  MatmulOptions cache_options_;
  PackedMatmulRhs<G> transposed_;  // W^T regrouped and packed, when cached_
};

}  // namespace gsq
