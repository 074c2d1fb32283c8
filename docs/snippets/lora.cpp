// lora.cpp: README "The LoRA layer": a W4A8G8 LoRA layer trained with 8-bit AdamW on a small
// regression; checks that the loss falls and that forward computes X W + s X A B.
// [readme]
#include <gsq/gsq.hpp>
// [/readme]

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "snippet.hpp"

int main() {
  snippet::Checks check("lora");
  const gsq::Index tokens = 64, in = 96, out = 64, r = 4;
  // The target is X (W + U V), U V of rank 4: the adapters must learn U V and what the 4-bit
  // base lost.
  const std::vector<float> w_data = snippet::normal(in * out, 21, 0.1f);
  const std::vector<float> x_data = snippet::normal(tokens * in, 22);
  const std::vector<float> u = snippet::normal(in * r, 23, 0.1f);
  const std::vector<float> v = snippet::normal(r * out, 24, 0.1f);
  std::vector<float> target(tokens * out);
  for (gsq::Index t = 0; t < tokens; ++t) {
    for (gsq::Index o = 0; o < out; ++o) {
      double sum = 0;
      for (gsq::Index i = 0; i < in; ++i) {
        double wv = w_data[static_cast<std::size_t>(i * out + o)];
        for (gsq::Index k = 0; k < r; ++k)
          wv += double{u[static_cast<std::size_t>(i * r + k)]} *
                v[static_cast<std::size_t>(k * out + o)];
        sum += x_data[static_cast<std::size_t>(t * in + i)] * wv;
      }
      target[static_cast<std::size_t>(t * out + o)] = static_cast<float>(sum);
    }
  }
  std::vector<float> y_data(tokens * out), dy_data(tokens * out), dx_data(tokens * in);
  const auto w = gsq::MatrixRef<const float>::row_major(w_data.data(), in, out);
  const auto x = gsq::MatrixRef<const float>::row_major(x_data.data(), tokens, in);
  const auto y = gsq::MatrixRef<float>::row_major(y_data.data(), tokens, out);
  const auto dy = gsq::MatrixRef<float>::row_major(dy_data.data(), tokens, out);
  const auto dx = gsq::MatrixRef<float>::row_major(dx_data.data(), tokens, in);
  std::vector<double> losses;
  // Mean squared error against the target; writes dL/dY into dy.
  auto your_loss = [&](gsq::MatrixRef<float> pred, gsq::MatrixRef<float> grad) {
    double loss = 0;
    const double n = static_cast<double>(pred.rows * pred.cols);
    for (gsq::Index t = 0; t < pred.rows; ++t) {
      for (gsq::Index o = 0; o < pred.cols; ++o) {
        const double d = double{pred(t, o)} - target[static_cast<std::size_t>(t * out + o)];
        loss += d * d / n;
        grad(t, o) = static_cast<float>(2 * d / n);
      }
    }
    losses.push_back(loss);
  };

  // clang-format off
  // [readme]
  // w: in x out frozen weight; x: tokens x in; y, dy: tokens x out; dx: tokens x in (MatrixRef)
  gsq::LoraOptions opt;                          // rank 8, alpha 16, LoraMode::kGse
  gsq::LoraLinear<4, 8, 8, 8> layer(w, opt);     // W4, activations 8, gradients 8, adapters 8
  gsq::AdamW8bit adam({{layer.a().data(), layer.grad_a().data(), layer.a().size()},
                       {layer.b().data(), layer.grad_b().data(), layer.b().size()}});
  gsq::CosineSchedule lr{1e-2f, 10, 100};        // peak, warmup steps, total steps
  for (std::int64_t step = 0; step < 100; ++step) {
    layer.forward(x, y);                         // Y = X W + (alpha/r) (X A) B
    your_loss(y, dy);                            // writes dL/dY into dy
    layer.backward(dy, dx);                      // dX, and accumulates dA, dB
    adam.step(lr(step));
    layer.zero_grad();                           // backward accumulates: clear for the next step
  }
  // [/readme]
  // clang-format on

  layer.forward(x, y);
  your_loss(y, dy);
  std::printf("lora: loss %.4g -> %.4g\n", losses.front(), losses.back());
  // Measured 0.0568 -> 0.0093 (0.16 of the start).
  check(losses.back() < 0.5 * losses.front(), "100 steps at least halve the loss");

  // Forward is X W4 + (alpha / r) X A B on the layer's own 4-bit base and float adapters, up to
  // the rounding of 8-bit operands: relative error below 2^(3 - 8) (tests/lora_test.cpp derives
  // it; Gaussian data).
  const std::vector<float> base = layer.base_float();
  double err = 0, ref_power = 0;
  for (gsq::Index t = 0; t < tokens; ++t) {
    for (gsq::Index o = 0; o < out; ++o) {
      double ref = 0;
      for (gsq::Index i = 0; i < in; ++i) {
        double wv = base[static_cast<std::size_t>(i * out + o)];
        for (gsq::Index k = 0; k < layer.rank(); ++k)
          wv += double{layer.scale()} * layer.a()[static_cast<std::size_t>(i * layer.rank() + k)] *
                layer.b()[static_cast<std::size_t>(k * out + o)];
        ref += x_data[static_cast<std::size_t>(t * in + i)] * wv;
      }
      err += (y(t, o) - ref) * (y(t, o) - ref);
      ref_power += ref * ref;
    }
  }
  std::printf("lora: forward relative error %.3g\n", std::sqrt(err / ref_power));
  check(layer.scale() == 2.0f, "alpha / r = 16 / 8");
  check(std::sqrt(err / ref_power) < std::ldexp(1.0, 3 - 8),
        "forward is X W4 + (alpha/r) X A B within 2^(3-8)");
  return check.exit_code();
}
