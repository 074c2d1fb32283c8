// main.cpp: a program that uses gsq from another project (an installed gsq through
// find_package, or gsq's sources through add_subdirectory): quantize, pack, unpack and dequantize
// one matrix, and check the result against the format's error bound and the header's version
// against the one CMake reported; and run one token through a tiny random llama (gsq::llama).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <gsq/gsq.hpp>
#include <gsq/models/llama/runner.hpp>
#include <vector>

int main() {
  if (std::strcmp(gsq::kVersion, GSQ_CONSUMER_EXPECTED_VERSION) != 0) {
    std::printf("consumer: the header says gsq %s, CMake said %s\n", gsq::kVersion,
                GSQ_CONSUMER_EXPECTED_VERSION);
    return 1;
  }
  std::vector<float> x(8 * 40);
  for (std::size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.37f * static_cast<float>(k));
  const auto t =
      gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(x.data(), 8, 40), gsq::Axis::kCols);
  const auto y = gsq::dequantize(gsq::PackedGseTensor<8>::pack(t).unpack());
  for (std::size_t k = 0; k < x.size(); ++k) {
    // |x| <= 1: the step is at most 2^-6, so nearest rounding errs by at most 2^-7.
    if (std::fabs(x[k] - y[k]) > std::ldexp(1.0f, -7)) {
      std::printf("consumer: element %zu: %g became %g\n", k, x[k], y[k]);
      return 1;
    }
  }
  gsq::Llama2Config c;
  c.dim = 16;
  c.hidden_dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.vocab_size = 8;
  c.seq_len = 4;
  const gsq::Llama2Weights w = gsq::Llama2Weights::random(c, 1);
  gsq::Llama2Runner runner(w);
  for (float logit : runner.forward(1, 0)) {
    if (!std::isfinite(logit)) {
      std::printf("consumer: a non-finite logit\n");
      return 1;
    }
  }
  std::printf("consumer: gsq %s, conversion ISA %s, round trip within bound\n", gsq::kVersion,
              gsq::to_string(gsq::conversion_isa()));
  return 0;
}
