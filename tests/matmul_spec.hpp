// matmul_spec.hpp: the matmul specification of kernels/matmul_scalar.hpp written directly on
// the views, and the helpers the matmul tests share.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gsq/convert.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/tensor.hpp"
#include "reference.hpp"

namespace gsq::test {

/// Random M x K (or K x N) data with per-row magnitudes spread over a few binades, quantized
/// with groups along K.
template <int Bits, int G>
GseTensor<Bits, G> random_operand(Index rows, Index cols, Axis axis, std::uint32_t seed,
                                  int lo = -3, int hi = 3) {
  const auto x = mixed_data(static_cast<std::size_t>(rows * cols), seed, lo, hi);
  return quantize<Bits, G>(MatrixRef<const float>::row_major(x.data(), rows, cols), axis);
}

/// The specification of kernels/matmul_scalar.hpp, written directly on the views.
template <int BA, int BB, int G>
std::vector<float> spec_matmul(const GseView<BA, G>& a, const GseView<BB, G>& b,
                               std::vector<float> c, float alpha, float beta) {
  const Index m = a.rows(), n = b.cols();
  const double scale = std::ldexp(static_cast<double>(alpha), a.offset() + b.offset());
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (Index g = 0; g < a.groups_per_line(); ++g) {
        std::int32_t d = 0;
        for (Index k = 0; k < G; ++k) d += a.line_codes(i)[g * G + k] * b.line_codes(j)[g * G + k];
        const int e = a.line_exponents(i)[g] + b.line_exponents(j)[g];
        acc += static_cast<float>(d) * std::ldexp(1.0f, e);
      }
      const auto r = static_cast<float>(static_cast<double>(acc) * scale);
      float& out = c[static_cast<std::size_t>(i * n + j)];
      out = beta == 0.0f ? r : std::fma(beta, out, r);
    }
  }
  return c;
}

inline std::vector<Isa> matmul_isas() {
  std::vector<Isa> isas;
  for (Isa isa :
       {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kNeon, Isa::kNeonDot}) {
    if (cpu_supports(isa)) isas.push_back(isa);
  }
  return isas;
}

inline bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace gsq::test
