// lota_bench.cpp: inference cost of a LoTA-QAF layer before and after its exact merge, against
// the 4-bit base alone and against a GSQ LoRA layer with its adapters beside the base.  4096 ->
// 4096, rank 16, 128 tokens, 1 thread, all in the same run; prints each median of 5 repetitions
// as a ratio to the base after the benchmarks.
//
//   build/release/bench/lota_bench
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/nn/lota.hpp"

namespace {

constexpr gsq::Index kIn = 4096, kOut = 4096, kTokens = 128;
constexpr int kRank = 16;

using bench::normal;

const std::vector<float>& weight() {
  static const std::vector<float> w = normal(static_cast<std::size_t>(kIn * kOut), 1, 0.02f);
  return w;
}
const std::vector<float>& input() {
  static const std::vector<float> x = normal(static_cast<std::size_t>(kTokens * kIn), 2, 1.0f);
  return x;
}
gsq::MatrixRef<const float> w_ref() {
  return gsq::MatrixRef<const float>::row_major(weight().data(), kIn, kOut);
}
gsq::MatrixRef<const float> x_ref() {
  return gsq::MatrixRef<const float>::row_major(input().data(), kTokens, kIn);
}

gsq::LoraOptions options() {
  gsq::LoraOptions o;
  o.rank = kRank;
  o.matmul.threads = 1;
  return o;
}

using Lota = gsq::LotaLinear<4, 8, 8, 32>;

/// A LoTA layer whose B is a random ternary matrix, so that about a tenth of the codes move.
Lota trained_lota() {
  Lota layer(w_ref(), options());
  layer.set_omega(4);
  gsq::detail::Rng rng(3);
  for (gsq::Index o = 0; o < kOut; ++o) {
    for (gsq::Index k = 0; k < kRank; ++k) layer.b().set(o, k, static_cast<int>(rng.below(3)) - 1);
  }
  return layer;
}

template <typename Forward>
void run(benchmark::State& state, Forward&& forward) {
  std::vector<float> y(static_cast<std::size_t>(kTokens * kOut));
  const auto yr = gsq::MatrixRef<float>::row_major(y.data(), kTokens, kOut);
  forward(yr);  // first touch
  for (auto _ : state) {
    forward(yr);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kTokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_base(benchmark::State& state) {
  const auto base =
      gsq::PackedGseTensor<4, 32>::pack(gsq::quantize<4, 32>(w_ref(), gsq::Axis::kRows).view());
  gsq::MatmulOptions mo;
  mo.threads = 1;
  run(state, [&](gsq::MatrixRef<float> y) {
    const auto xq = gsq::quantize<8, 32>(x_ref(), gsq::Axis::kCols);
    gsq::matmul(xq.view(), gsq::PackedStorageRhs<4, 32>(base), y, 1.0f, 0.0f, mo);
  });
}
void BM_lota_merged(benchmark::State& state) {
  Lota layer = trained_lota();
  layer.merge();
  run(state, [&](gsq::MatrixRef<float> y) { layer.forward(x_ref(), y); });
}
void BM_lota_unmerged(benchmark::State& state) {
  Lota layer = trained_lota();
  run(state, [&](gsq::MatrixRef<float> y) { layer.forward(x_ref(), y); });
}
void BM_lora_unmerged(benchmark::State& state) {
  gsq::LoraLinear<4, 8, 8, 8, 32> layer(w_ref(), options());
  for (float& v : layer.b()) v = 0.01f;  // a trained adapter: the path runs in full either way
  run(state, [&](gsq::MatrixRef<float> y) { layer.forward(x_ref(), y); });
}
BENCHMARK(BM_base)
    ->Name("infer/w4_base")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_lota_merged)
    ->Name("infer/lota_merged")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_lota_unmerged)
    ->Name("infer/lota_unmerged")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_lora_unmerged)
    ->Name("infer/gsq_lora_unmerged")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);

}  // namespace

int main(int argc, char** argv) {
  // Repetitions interleaved in random order by default (a later flag overrides): the four
  // forwards differ by less than this shared machine's drift between consecutive runs.
  std::vector<char*> args(argv, argv + argc);
  char interleave[] = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + 1, interleave);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  bench::TimeRecorder reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("\nForward of a %ld -> %ld layer, %ld tokens, rank %d, 1 thread, matmul ISA %s\n",
              static_cast<long>(kIn), static_cast<long>(kOut), static_cast<long>(kTokens), kRank,
              gsq::to_string(gsq::matmul_isa()));
  const double base = reporter.seconds("infer/w4_base");
  for (const auto& [name, seconds] : reporter.all()) {
    if (base > 0)
      std::printf("  %-26s %8.2f ms  %.2fx the W4 base\n", name.c_str(), 1e3 * seconds,
                  seconds / base);
  }
  return 0;
}
