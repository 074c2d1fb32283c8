// lora_bench.cpp: one LoRA training step (forward + backward + AdamW) of a 4096 -> 4096 layer,
// rank 64, 512 tokens: gsq's GSE layer (W4, 8-bit activations, gradients and adapters) against
// the same step in float with Eigen, in the same run.  Prints the time ratio and the memory
// ratio against a bf16 LoRA of the same shapes after the benchmarks.
//
//   build/release/bench/lora_bench                          # both, 1 thread
//   build/release/bench/lora_bench --benchmark_filter=gse   # one side
// GCC 12 reports the undefined pass-through operand of AVX-512 intrinsics as maybe-uninitialized
// where Eigen's AVX-512 GEMM (enabled by -march=native) inlines them: GCC bug 105593, fixed in 13.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "bench_common.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/optim.hpp"

#if defined(GSQ_HAVE_EIGEN)
#include <Eigen/Core>
#endif

namespace {

constexpr gsq::Index kIn = 4096, kOut = 4096, kTokens = 512;
constexpr int kRank = 64;

using bench::normal;

using Layer = gsq::LoraLinear<4, 8, 8, 8, 32>;

struct GseStep {
  Layer layer;
  gsq::AdamW8bit opt;
  std::vector<float> x, y, dy, dx;
  explicit GseStep(const std::vector<float>& w)
      : layer(gsq::MatrixRef<const float>::row_major(w.data(), kIn, kOut), options()),
        opt({{layer.a().data(), layer.grad_a().data(), layer.a().size()},
             {layer.b().data(), layer.grad_b().data(), layer.b().size()}}),
        x(normal(kTokens * kIn, 2, 1.0f)),
        y(kTokens * kOut),
        dy(normal(kTokens * kOut, 3, 1e-3f)),
        dx(kTokens * kIn) {}
  static gsq::LoraOptions options() {
    gsq::LoraOptions o;
    o.rank = kRank;
    o.alpha = 128.0f;
    o.matmul.threads = 1;
    return o;
  }
  void run() {
    layer.zero_grad();
    layer.forward(gsq::MatrixRef<const float>::row_major(x.data(), kTokens, kIn),
                  gsq::MatrixRef<float>::row_major(y.data(), kTokens, kOut));
    layer.backward(gsq::MatrixRef<const float>::row_major(dy.data(), kTokens, kOut),
                   gsq::MatrixRef<float>::row_major(dx.data(), kTokens, kIn));
    opt.step(1e-4f);
  }
  /// Training memory: layer (base, adapters, gradients, saved activations, largest temporary)
  /// plus optimizer state.
  std::size_t bytes() const { return layer.memory().total() + opt.state_bytes(); }
};

/// A bf16 LoRA of the same shapes, as PyTorch/PEFT would hold it: base weight in bf16, saved X
/// and X A in bf16, fp32 adapters, their fp32 gradients and fp32 AdamW state (m, v), and the
/// largest temporary of the step (the bf16 dX or Y, T x 4096).
std::size_t bf16_lora_bytes() {
  const std::size_t adapters = (kIn * kRank + kRank * kOut) * 4;
  return kIn * kOut * 2 + (kTokens * kIn + kTokens * kRank) * 2 + 4 * adapters + kTokens * kOut * 2;
}

#if defined(GSQ_HAVE_EIGEN)
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The same step in float with Eigen: Y = X W + s X A B, dX, dA, dB, then AdamW (fp32 state).
struct FloatStep {
  Mat w, a, b, ga, gb, ma, va, mb, vb, x, y, dy, dx, h, g;
  float s = 128.0f / kRank;
  int t = 0;
  explicit FloatStep(const std::vector<float>& wv)
      : w(Eigen::Map<const Mat>(wv.data(), kIn, kOut)),
        a(Mat::Random(kIn, kRank) * 0.01f),
        b(Mat::Zero(kRank, kOut)),
        ga(Mat::Zero(kIn, kRank)),
        gb(Mat::Zero(kRank, kOut)),
        ma(Mat::Zero(kIn, kRank)),
        va(Mat::Zero(kIn, kRank)),
        mb(Mat::Zero(kRank, kOut)),
        vb(Mat::Zero(kRank, kOut)) {
    const auto xv = normal(kTokens * kIn, 2, 1.0f);
    const auto dyv = normal(kTokens * kOut, 3, 1e-3f);
    x = Eigen::Map<const Mat>(xv.data(), kTokens, kIn);
    dy = Eigen::Map<const Mat>(dyv.data(), kTokens, kOut);
  }
  static void adamw(Mat& p, const Mat& grad, Mat& m, Mat& v, int t) {
    const float b1 = 0.9f, b2 = 0.999f, lr = 1e-4f, eps = 1e-8f;
    m = b1 * m + (1 - b1) * grad;
    v = b2 * v + (1 - b2) * grad.cwiseProduct(grad);
    const float c1 = 1 - std::pow(b1, static_cast<float>(t));
    const float c2 = 1 - std::pow(b2, static_cast<float>(t));
    p.array() -= lr * (m.array() / c1) / ((v.array() / c2).sqrt() + eps);
  }
  void run() {
    h.noalias() = x * a;
    y.noalias() = x * w;
    y.noalias() += s * (h * b);
    g.noalias() = dy * b.transpose();
    dx.noalias() = dy * w.transpose();
    dx.noalias() += s * (g * a.transpose());
    ga.noalias() = s * (x.transpose() * g);
    gb.noalias() = s * (h.transpose() * dy);
    ++t;
    adamw(a, ga, ma, va, t);
    adamw(b, gb, mb, vb, t);
  }
};
#endif

const std::vector<float>& weight() {
  static const std::vector<float> w = normal(static_cast<std::size_t>(kIn * kOut), 1, 0.02f);
  return w;
}

std::size_t g_gse_bytes = 0;
gsq::LoraMemory g_gse_memory;     // the layer's breakdown after the timed steps
std::size_t g_gse_opt_bytes = 0;  // the optimizer's state

void BM_lora_step_gse(benchmark::State& state) {
  GseStep step(weight());
  step.run();  // first touch of every buffer
  for (auto _ : state) step.run();
  state.counters["s/step"] = benchmark::Counter(
      1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  g_gse_bytes = step.bytes();
  g_gse_memory = step.layer.memory();
  g_gse_opt_bytes = step.opt.state_bytes();
  state.counters["MiB"] = static_cast<double>(g_gse_bytes) / (1 << 20);
}
BENCHMARK(BM_lora_step_gse)
    ->Name("lora_step/gse_w4a8g8")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

#if defined(GSQ_HAVE_EIGEN)
void BM_lora_step_float(benchmark::State& state) {
  Eigen::setNbThreads(1);
  FloatStep step(weight());
  step.run();
  for (auto _ : state) step.run();
  state.counters["s/step"] = benchmark::Counter(
      1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_lora_step_float)
    ->Name("lora_step/float_eigen")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::TimeRecorder reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  const double gse_seconds = reporter.seconds("lora_step/gse_w4a8g8");
  const double float_seconds = reporter.seconds("lora_step/float_eigen");
  std::printf("\nLoRA step, %ld -> %ld, rank %d, %ld tokens, 1 thread, matmul ISA %s\n",
              static_cast<long>(kIn), static_cast<long>(kOut), kRank, static_cast<long>(kTokens),
              gsq::to_string(gsq::matmul_isa()));
  if (gse_seconds > 0 && float_seconds > 0) {
    std::printf("time: GSE %.1f ms, float (Eigen) %.1f ms: GSE is %.2fx faster\n",
                1e3 * gse_seconds, 1e3 * float_seconds, float_seconds / gse_seconds);
  }
  if (g_gse_bytes > 0) {
    const double bf16 = static_cast<double>(bf16_lora_bytes());
    std::printf("training memory: GSE %.1f MiB (accounted), bf16 LoRA %.1f MiB: ratio %.3f\n",
                static_cast<double>(g_gse_bytes) / (1 << 20), bf16 / (1 << 20),
                static_cast<double>(g_gse_bytes) / bf16);
    const double saved_float = static_cast<double>((kTokens * kIn + kTokens * kRank) * 4);
    const gsq::LoraMemory& m = g_gse_memory;
    std::printf("saved activations: GSE %.2f MiB = %.3fx float, %.3fx bf16\n",
                static_cast<double>(m.saved_activations) / (1 << 20),
                static_cast<double>(m.saved_activations) / saved_float,
                2 * static_cast<double>(m.saved_activations) / saved_float);
    std::printf(
        "  base %.2f MiB, adapters %.2f, gradients %.2f, optimizer %.2f, largest "
        "temporary %.2f MiB\n",
        static_cast<double>(m.base) / (1 << 20), static_cast<double>(m.adapter_master) / (1 << 20),
        static_cast<double>(m.adapter_gradients) / (1 << 20),
        static_cast<double>(g_gse_opt_bytes) / (1 << 20),
        static_cast<double>(m.largest_temporary) / (1 << 20));
  }
  return 0;
}
