// convert_bench.cpp: float -> GSE-INT conversion throughput per ISA, beside this machine's
// memory bandwidth (a streaming read and a memcpy of the same bytes), and the regrouping of a
// frozen 4-bit weight into the backward product's W^T panels, which a training step repeats for
// every base weight (its ISA is this machine's best; GSQ_ISA=avx2 or scalar caps it).
//
//   convert_bench --benchmark_counters_tabular=true
//   convert_bench --benchmark_filter=PackTransposed
// Counters: values/s, and bytes/s of float input read (GB/s in the "bytes_per_second" column).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/gsq.hpp"

namespace {

using gsq::Axis;
using gsq::Isa;
using gsq::Rounding;

const std::vector<float>& input(std::int64_t n) {
  static std::vector<float> x;
  if (static_cast<std::int64_t>(x.size()) != n) {
    x.resize(static_cast<std::size_t>(n));
    gsq::detail::Rng rng(1);
    for (auto& v : x) v = rng.normal();
  }
  return x;
}

// Args: rows, cols, isa, rounding, axis.
void BM_Quantize8(benchmark::State& state) {
  const auto rows = state.range(0), cols = state.range(1);
  const auto isa = static_cast<Isa>(state.range(2));
  if (!gsq::cpu_supports(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  const auto& x = input(rows * cols);
  gsq::QuantizeOptions opt;
  opt.isa = isa;
  opt.rounding = static_cast<Rounding>(state.range(3));
  const auto axis = static_cast<Axis>(state.range(4));
  gsq::GseTensor<8, 32> t;
  for (auto _ : state) {
    gsq::quantize_into(gsq::MatrixRef<const float>::row_major(x.data(), rows, cols), axis, t, opt);
    benchmark::DoNotOptimize(t.mutable_codes());
    ++opt.seed;
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
  state.SetBytesProcessed(state.iterations() * rows * cols *
                          static_cast<std::int64_t>(sizeof(float)));
  state.SetLabel(std::string(gsq::to_string(isa)) + " " + gsq::to_string(opt.rounding) +
                 " groups along " + gsq::to_string(axis));
}

void BM_Dequantize8(benchmark::State& state) {
  const auto rows = state.range(0), cols = state.range(1);
  const auto isa = static_cast<Isa>(state.range(2));
  if (!gsq::cpu_supports(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  const auto& x = input(rows * cols);
  const auto t =
      gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(x.data(), rows, cols), Axis::kCols);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    gsq::dequantize_into(t.view(), gsq::MatrixRef<float>::row_major(y.data(), rows, cols), isa);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
  state.SetBytesProcessed(state.iterations() * rows * cols *
                          static_cast<std::int64_t>(sizeof(float)));
  state.SetLabel(gsq::to_string(isa));
}

// W (in x out, 4-bit, grouped along in) regrouped along out to GSE-INT8 and packed into the
// matmul kernel's panels, as FrozenBase::backward_input does on every call (one thread).
void BM_PackTransposedW4(benchmark::State& state) {
  const auto in = state.range(0), out = state.range(1);
  const auto& x = input(in * out);
  const auto w = gsq::PackedGseTensor<4, 32>::pack(
      gsq::quantize<4>(gsq::MatrixRef<const float>::row_major(x.data(), in, out), Axis::kRows)
          .view());
  const int offset = gsq::TransposedRegroupedRhs<4, 32>::offset_of(w);
  gsq::MatmulOptions opt;
  opt.threads = 1;
  gsq::PackedMatmulRhs<32> packed;
  for (auto _ : state) {
    packed.assign(gsq::TransposedRegroupedRhs<4, 32>(w, offset), opt);
    benchmark::DoNotOptimize(packed.panel(0));
  }
  state.SetItemsProcessed(state.iterations() * in * out);
  state.SetLabel(std::string("matmul kernel ") + gsq::to_string(packed.isa()));
}

// The machine's limits for the same bytes: a streaming read (integer sum, vectorised by the
// compiler) and a memcpy.
void BM_ReadBandwidth(benchmark::State& state) {
  const auto n = state.range(0) * state.range(1);
  const auto& x = input(n);
  std::vector<std::uint32_t> u(x.size());
  std::memcpy(u.data(), x.data(), x.size() * sizeof(float));
  for (auto _ : state) {
    std::uint32_t sum = 0;
    for (const std::uint32_t v : u) sum += v;
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(sizeof(float)));
  state.SetLabel("memory: streaming read");
}

void BM_Memcpy(benchmark::State& state) {
  const auto n = state.range(0) * state.range(1);
  const auto& x = input(n);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    std::memcpy(y.data(), x.data(), x.size() * sizeof(float));
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(sizeof(float)));
  state.SetLabel("memory: memcpy (bytes read)");
}

constexpr auto kNearest = static_cast<std::int64_t>(Rounding::kNearestEven);
constexpr auto kStochastic = static_cast<std::int64_t>(Rounding::kStochastic);
constexpr auto kCols = static_cast<std::int64_t>(Axis::kCols);
constexpr auto kRows = static_cast<std::int64_t>(Axis::kRows);

void shapes(benchmark::internal::Benchmark* b, bool quantize) {
  for (const auto& [rows, cols] :
       {std::pair<std::int64_t, std::int64_t>{256, 1024}, {4096, 4096}}) {
    for (const Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
      const auto i = static_cast<std::int64_t>(isa);
      if (!quantize) {
        b->Args({rows, cols, i});
        continue;
      }
      b->Args({rows, cols, i, kNearest, kCols});
      b->Args({rows, cols, i, kStochastic, kCols});
      b->Args({rows, cols, i, kNearest, kRows});
    }
  }
}

BENCHMARK(BM_Quantize8)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(BM_Dequantize8)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(BM_PackTransposedW4)->Args({576, 1536})->Args({2048, 5632});
BENCHMARK(BM_ReadBandwidth)->Args({256, 1024})->Args({4096, 4096});
BENCHMARK(BM_Memcpy)->Args({256, 1024})->Args({4096, 4096});

}  // namespace

BENCHMARK_MAIN();
