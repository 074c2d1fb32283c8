// lota.cpp: README "LoTA-QAF": ternary adapters trained with t-SignSGD toward a teacher whose
// codes moved, then merged; checks that the loss falls and that the merge changes no output bit.
// [readme]
#include <gsq/gsq.hpp>
// [/readme]

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "snippet.hpp"

int main() {
  snippet::Checks check("lota");
  const gsq::Index tokens = 64, in = 64, out = 32;
  const std::vector<float> w_data = snippet::normal(in * out, 31, 0.1f);
  const std::vector<float> x_data = snippet::normal(tokens * in, 32);
  std::vector<float> y_data(tokens * out), dy_data(tokens * out), dx_data(tokens * in);
  std::vector<float> target(tokens * out);
  const auto w = gsq::MatrixRef<const float>::row_major(w_data.data(), in, out);
  const auto x = gsq::MatrixRef<const float>::row_major(x_data.data(), tokens, in);
  const auto y = gsq::MatrixRef<float>::row_major(y_data.data(), tokens, out);
  const auto dy = gsq::MatrixRef<float>::row_major(dy_data.data(), tokens, out);
  const auto dx = gsq::MatrixRef<float>::row_major(dx_data.data(), tokens, in);

  // The teacher: the same base and A (same seed), and a ternary B, so that the target is the
  // base with some codes moved by one step, which LoTA can represent exactly.
  gsq::LoraOptions teacher_opt;
  teacher_opt.rank = 8;
  gsq::LotaLinear<4, 8, 8> teacher(w, teacher_opt, 2.0);
  const std::vector<float> draw = snippet::normal(out * 8, 33);
  for (gsq::Index o = 0; o < out; ++o) {
    for (gsq::Index k = 0; k < 8; ++k) {
      const float d = draw[static_cast<std::size_t>(o * 8 + k)];
      teacher.b().set(o, k, d > 0.7f ? 1 : d < -0.7f ? -1 : 0);
    }
  }
  teacher.forward(x, gsq::MatrixRef<float>::row_major(target.data(), tokens, out));
  std::vector<double> losses;
  // Mean squared error against the teacher; writes dL/dY into dy.
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
  gsq::LoraOptions opt;                          // LoTA reads only rank and seed
  opt.rank = 8;                                  // ternary A (in x r), B (out x r), 2 bits each
  gsq::LotaLinear<4, 8, 8> layer(w, opt, /*omega=*/2.0);  // W4 base; a marker needs |dW| > 2
  gsq::TSignSchedule schedule;                   // q: 0.95, to 0.999 at 80 %, to 0.9999
  schedule.total_steps = 150;
  gsq::TSignSgd<> tsign(layer.parameters(), schedule);    // t-SignSGD: no learning rate, no moments
  for (std::int64_t step = 0; step < schedule.total_steps; ++step) {
    layer.forward(x, y);                         // Y = X s(c + M): base codes moved by markers
    your_loss(y, dy);                            // writes dL/dY into dy
    layer.backward(dy, dx);                      // dX, and integer straight-through dA, dB
    tsign.step();                                // entries with |g| above the q-quantile move
  }
  // [/readme]
  // clang-format on

  layer.forward(x, y);
  your_loss(y, dy);
  std::printf("lota: loss %.4g -> %.4g\n", losses.front(), losses.back());
  // Measured 0.0115 -> 0.0061: LoTA moves a code by one step where |dW| > omega, and 150 steps
  // find part of the teacher's markers.
  check(losses.back() < 0.75 * losses.front(), "150 t-SignSGD steps lower the loss by a quarter");
  const std::vector<float> before = y_data;
  const std::vector<std::int8_t> markers = layer.markers();
  gsq::Index moved = 0;
  for (std::int8_t m : markers) moved += m != 0;
  check(moved > 0, "training set markers (moved base codes)");

  // clang-format off
  // [readme]
  layer.merge();                                 // writes c + M into the 4-bit codes: bit-identical
  // [/readme]
  // clang-format on

  layer.forward(x, y);
  check(std::memcmp(before.data(), y_data.data(), before.size() * sizeof(float)) == 0,
        "the merged layer computes the same bits");
  bool cleared = true;
  for (std::int8_t m : layer.markers()) cleared = cleared && m == 0;
  check(cleared, "after merge() no marker is left");
  return check.exit_code();
}
