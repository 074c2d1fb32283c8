// options.hpp: what the adapter layers share: their mode, options and memory report, and the
// seeding of their stochastic-rounding streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "gsq/convert.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/matmul.hpp"

namespace gsq {

enum class LoraMode : std::uint8_t { kFloat, kGse, kFp8 };

constexpr const char* to_string(LoraMode mode) noexcept {
  switch (mode) {
    case LoraMode::kFloat:
      return "float";
    case LoraMode::kGse:
      return "gse";
    case LoraMode::kFp8:
      return "fp8";
  }
  return "?";
}

/// What every adapter layer (LoraLinear, LotaLinear) is built with.  Fields a layer does not
/// use are ignored (LotaLinear: alpha and mode).
struct LoraOptions {
  int rank = 8;
  float alpha = 16.0f;
  LoraMode mode = LoraMode::kGse;
  /// Rounding of gradients (dY and dL/dH) in kGse mode.
  Rounding gradient_rounding = Rounding::kStochastic;
  /// Seeds the adapter initialisation and the stochastic-rounding streams.
  std::uint64_t seed = 0;
  /// Options of every matmul the layer runs (ISA, threads).
  MatmulOptions matmul;
  /// Keep the frozen base's W^T regrouped along out_features (GSE-INT8) packed for the kernel
  /// instead of regrouping it in every backward: faster, the same bits, about 1.125 more bytes
  /// per weight (the 4-bit base itself holds 0.52).  Off by default, the paper's memory.
  bool cache_transposed_base = false;
  /// Kernel ISA of every quantization the layer runs; empty picks the best (conversion_isa()).
  /// Like MatmulOptions::isa, it changes no bit of any result (tested).
  std::optional<Isa> conversion_isa;

  /// QuantizeOptions with this layer's conversion ISA.
  QuantizeOptions quantize(Rounding rounding = Rounding::kNearestEven,
                           std::uint64_t rounding_seed = 0) const {
    QuantizeOptions q;
    q.rounding = rounding;
    q.seed = rounding_seed;
    q.isa = conversion_isa;
    q.threads = matmul.threads;
    return q;
  }
};

/// A layer's input X (T x in) quantized both ways a LoRA layer needs it, each from the float X
/// with nearest-even rounding: along in_features for the forward products (X W, X A), and along
/// tokens for the adapter gradient dA = X^T G, which reduces over tokens.  Layers that read the
/// same input (q, k and v; w1 and w3) share one (LoraLinear::Activation).
template <int Bits, int G = 32>
struct LayerInput {
  GseTensor<Bits, G> along_features;  ///< T x in, grouped along in_features
  GseTensor<Bits, G> along_tokens;    ///< T x in, grouped along tokens

  /// Quantizes x both ways with `options`' conversion ISA, reusing this object's storage.
  void assign(MatrixRef<const float> x, const LoraOptions& options) {
    quantize_into(x, Axis::kCols, along_features, options.quantize());
    quantize_into(x, Axis::kRows, along_tokens, options.quantize());
  }
  Index rows() const noexcept { return along_features.rows(); }
  Index cols() const noexcept { return along_features.cols(); }
  std::size_t bytes() const noexcept { return along_features.bytes() + along_tokens.bytes(); }
};

/// Bytes a layer holds, by role (LoraLinear::memory(), LotaLinear::memory()).
struct LoraMemory {
  std::size_t base = 0;               ///< the frozen weight, bit-packed
  std::size_t adapter_master = 0;     ///< float A and B
  std::size_t adapter_gradients = 0;  ///< float dA and dB
  std::size_t saved_activations = 0;  ///< what forward keeps for backward
  std::size_t largest_temporary = 0;  ///< the largest buffer live during forward or backward
  std::size_t total() const noexcept {
    return base + adapter_master + adapter_gradients + saved_activations + largest_temporary;
  }
};

namespace detail {

/// The seed of the rounding stream of `operand` at training step `step` of a layer seeded with
/// `seed`: distinct streams per step and operand, reproducible from the seed alone.
inline std::uint64_t stream_seed(std::uint64_t seed, std::int64_t step, std::uint32_t operand) {
  return (std::uint64_t{line_key(seed, static_cast<std::uint64_t>(step))} << 32) |
         line_key(seed ^ 0x5EEDu, operand);
}

}  // namespace detail

}  // namespace gsq
