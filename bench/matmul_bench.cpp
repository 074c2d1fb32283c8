// matmul_bench.cpp: GSE-INT8 matmul beside the float GEMMs it replaces (Eigen, OpenBLAS) and
// this CPU's peak int8 and fp32 multiply-accumulate rates, ending with a table of ratios.
//
// For each shape M x N x K (C = A * B, A is M x K, B is K x N) and thread count 1 and 2:
//   gse_prepacked   matmul() on int8 codes quantized ahead, B packed ahead (a frozen weight)
//   gse_packing     the same, packing B in every call (matmul() on two GseViews)
//   gse_from_float  quantize_matmul(): A quantized from float in the call (quantize runs on one
//                   thread; only the matmul is threaded), B packed ahead
//   eigen           c.noalias() = a * b on Eigen::MatrixXf, Eigen::setNbThreads(threads)
//   openblas        cblas_sgemm, openblas_set_num_threads(threads) (when OpenBLAS was found)
// and the peaks: loops of independent vpdpbusd zmm (AVX-512 VNNI, what gsq's kernel uses
// there), vpmaddubsw + vpmaddwd ymm (AVX2) and vfmadd231ps zmm/ymm chains, on 1 and 2 threads (an
// OpenMP parallel region), for the ISAs this CPU has.
// "threads:N" in a name is the thread count handed to the library; Google Benchmark itself runs
// one thread and times wall-clock (real) time.  Counters: GOP/s (1 MAC = 2 ops, 2 M N K per
// call), MAC/s, cpu_util (this process's CPU time over wall time: the threads actually busy)
// and, on Linux, other_cpu (the cores other processes and the hypervisor took meanwhile).
// After the runs the program prints this machine's ISA, the peaks and a table of ratios; entries
// that a filter left out print "-", and rows where a run kept fewer than 3/4 of its threads busy
// or shared the machine are starred (others on the cores spoil multi-threaded numbers).
//
//   build/release/bench/matmul_bench                                      # all, a few minutes
//   build/release/bench/matmul_bench --benchmark_filter='/512x4096x4096/'  # one shape
//   build/release/bench/matmul_bench --benchmark_filter='^(gse_prepacked|eigen)/.*threads:1'
//   build/release/bench/matmul_bench --benchmark_filter='^peak_'           # the peaks only
//   build/release/bench/matmul_bench --benchmark_out=matmul.json --benchmark_out_format=json
// The console display is this program's own (it records the runs for the table);
// --benchmark_format=json or csv runs with Google Benchmark's reporter and prints no table.
// Built with -march=native (GSQ_NATIVE, cmake/GsqNative.cmake) so that Eigen gets this
// host's best SIMD; gsq's kernels choose theirs at run time either way.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gsq/gsq.hpp"
#include "peak.hpp"

#if GSQ_X86
#include <immintrin.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define GSQ_BENCH_HAVE_ISATTY 1
#endif

using bench::kPeakChains;
using bench::kPeakSteps;
#if GSQ_X86
using bench::peak_loop_avx512_vnni;
#endif
#if GSQ_HAVE_EIGEN
// GCC 12 reports its own _mm512_undefined_ps() (`__m512 __Y = __Y;`) as maybe uninitialized
// where Eigen's AVX-512 GEMM inlines it (GCC bug 105593); -march=native enables that path.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
#if GSQ_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace {

using gsq::Index;

struct Shape {
  Index m = 0;
  Index n = 0;
  Index k = 0;

  bool operator==(const Shape& o) const noexcept { return m == o.m && n == o.n && k == o.k; }
  double macs() const noexcept {
    return static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  }
  std::string str() const {
    return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
  }
};

const Shape kShapes[] = {{512, 4096, 4096}, {512, 11008, 4096}, {2048, 4096, 4096}, {512, 4096, 64},
                         {512, 64, 4096},   {64, 4096, 512},    {256, 256, 256}};
const int kThreadCounts[] = {1, 2};

constexpr const char* kGsePrepacked = "gse_prepacked";
constexpr const char* kGsePacking = "gse_packing";
constexpr const char* kGseFromFloat = "gse_from_float";
constexpr const char* kEigen = "eigen";
constexpr const char* kOpenBlas = "openblas";

std::string gemm_name(const char* method, const Shape& s, int threads) {
  return std::string(method) + "/" + s.str() + "/threads:" + std::to_string(threads);
}

std::string peak_name(const char* loop, int threads) {
  return std::string(loop) + "/threads:" + std::to_string(threads);
}

// ---------------------------------------------------------------------------------------------
// Operands
// ---------------------------------------------------------------------------------------------

/// The operands of one shape: normal random floats, their GSE-INT8 codes and B packed for the
/// best kernel.  Eigen copies are made by the first Eigen run.  Benchmarks are registered shape
/// by shape, so one shape is kept at a time and each is built once.
struct Operands {
  Shape shape;
  std::vector<float> a;  // M x K, row-major
  std::vector<float> b;  // K x N, row-major
  std::vector<float> c;  // M x N, row-major
  gsq::GseTensor<8, 32> qa;
  gsq::GseTensor<8, 32> qb;
  gsq::PackedMatmulRhs<32> packed;
#if GSQ_HAVE_EIGEN
  std::unique_ptr<Eigen::MatrixXf> ea, eb, ec;
#endif

  gsq::MatrixRef<float> c_ref() noexcept {
    return gsq::MatrixRef<float>::row_major(c.data(), shape.m, shape.n);
  }
};

Operands& operands(const Shape& s) {
  static std::unique_ptr<Operands> current;
  if (current && current->shape == s) return *current;
  current.reset();  // free the previous shape first
  auto p = std::make_unique<Operands>();
  p->shape = s;
  gsq::detail::Rng rng(static_cast<std::uint64_t>(s.m * 31 + s.n * 17 + s.k));
  p->a.resize(static_cast<std::size_t>(s.m * s.k));
  p->b.resize(static_cast<std::size_t>(s.k * s.n));
  p->c.assign(static_cast<std::size_t>(s.m * s.n), 0.0f);
  for (float& v : p->a) v = rng.normal();
  for (float& v : p->b) v = rng.normal();
  p->qa = gsq::quantize<8, 32>(gsq::MatrixRef<const float>::row_major(p->a.data(), s.m, s.k),
                               gsq::Axis::kCols);
  p->qb = gsq::quantize<8, 32>(gsq::MatrixRef<const float>::row_major(p->b.data(), s.k, s.n),
                               gsq::Axis::kRows);
  p->packed = gsq::PackedMatmulRhs<32>::pack(p->qb.view());
  current = std::move(p);
  return *current;
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

/// Busy CPU seconds of the whole machine so far (every process, and time the hypervisor stole
/// from this VM), from /proc/stat; negative where that is not available.
double machine_busy_seconds() {
#if defined(__linux__)
  std::ifstream stat("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  if (!(stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal))
    return -1.0;
  static const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(user + nice + system + irq + softirq + steal) / ticks_per_second;
#else
  return -1.0;
#endif
}

/// Over the timed loop: this process's CPU time (every thread) and everyone else's, against
/// wall time, in cores.
class Utilisation {
 public:
  Utilisation() noexcept
      : cpu_(std::clock()),
        machine_(machine_busy_seconds()),
        wall_(std::chrono::steady_clock::now()) {}

  void set_counters(benchmark::State& state) const {
    const double cpu = static_cast<double>(std::clock() - cpu_) / CLOCKS_PER_SEC;
    const double machine = machine_busy_seconds();
    const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - wall_;
    if (wall.count() <= 0.0) return;
    state.counters["cpu_util"] = cpu / wall.count();
    if (machine_ >= 0.0 && machine >= 0.0)
      state.counters["other_cpu"] = std::max(0.0, machine - machine_ - cpu) / wall.count();
  }

 private:
  std::clock_t cpu_;
  double machine_;
  std::chrono::steady_clock::time_point wall_;
};

/// GOP/s is in units of 1e9 ops per second, so the JSON output holds it as printed.
void set_rate_counters(benchmark::State& state, double macs_per_call, const Utilisation& u) {
  using benchmark::Counter;
  state.counters["GOP/s"] = Counter(2e-9 * macs_per_call, Counter::kIsIterationInvariantRate);
  state.counters["MAC/s"] =
      Counter(macs_per_call, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  u.set_counters(state);
}

/// False (and the run marked skipped) when `threads` cannot be honoured by an OpenMP library.
bool openmp_threads_available(benchmark::State& state, int threads) {
#if defined(_OPENMP)
  (void)state;
  (void)threads;
  return true;
#else
  if (threads == 1) return true;
  state.SkipWithError("built without OpenMP: only one thread");
  return false;
#endif
}

// ---------------------------------------------------------------------------------------------
// GEMM benchmarks
// ---------------------------------------------------------------------------------------------

gsq::MatmulOptions matmul_options(int threads) {
  gsq::MatmulOptions options;
  options.threads = threads;
  return options;
}

void gse_prepacked(benchmark::State& state, Shape s, int threads) {
  if (!openmp_threads_available(state, threads)) return;
  Operands& op = operands(s);
  const auto options = matmul_options(threads);
  const auto a = op.qa.view();
  gsq::matmul(a, op.packed, op.c_ref(), 1.0f, 0.0f, options);  // warm-up
  const Utilisation u;
  for (auto _ : state) {
    gsq::matmul(a, op.packed, op.c_ref(), 1.0f, 0.0f, options);
    benchmark::DoNotOptimize(op.c.data());
    benchmark::ClobberMemory();
  }
  set_rate_counters(state, s.macs(), u);
  state.SetLabel(gsq::to_string(op.packed.isa()));
}

void gse_packing(benchmark::State& state, Shape s, int threads) {
  if (!openmp_threads_available(state, threads)) return;
  Operands& op = operands(s);
  const auto options = matmul_options(threads);
  const auto a = op.qa.view();
  const auto b = op.qb.view();
  gsq::matmul(a, b, op.c_ref(), 1.0f, 0.0f, options);  // warm-up: the packing buffer
  const Utilisation u;
  for (auto _ : state) {
    gsq::matmul(a, b, op.c_ref(), 1.0f, 0.0f, options);
    benchmark::DoNotOptimize(op.c.data());
    benchmark::ClobberMemory();
  }
  set_rate_counters(state, s.macs(), u);
  state.SetLabel(gsq::to_string(op.packed.isa()));
}

void gse_from_float(benchmark::State& state, Shape s, int threads) {
  if (!openmp_threads_available(state, threads)) return;
  Operands& op = operands(s);
  const auto options = matmul_options(threads);
  const auto a = gsq::MatrixRef<const float>::row_major(op.a.data(), s.m, s.k);
  const gsq::QuantizeOptions quantize;
  gsq::quantize_matmul<8, 32>(a, op.packed, op.c_ref(), 1.0f, 0.0f, quantize, options);
  const Utilisation u;
  for (auto _ : state) {
    gsq::quantize_matmul<8, 32>(a, op.packed, op.c_ref(), 1.0f, 0.0f, quantize, options);
    benchmark::DoNotOptimize(op.c.data());
    benchmark::ClobberMemory();
  }
  set_rate_counters(state, s.macs(), u);
  state.SetLabel(gsq::to_string(op.packed.isa()));
}

#if GSQ_HAVE_EIGEN
void eigen_gemm(benchmark::State& state, Shape s, int threads) {
  if (!openmp_threads_available(state, threads)) return;
  Operands& op = operands(s);
  if (!op.ea) {
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    op.ea = std::make_unique<Eigen::MatrixXf>(Eigen::Map<const RowMajor>(op.a.data(), s.m, s.k));
    op.eb = std::make_unique<Eigen::MatrixXf>(Eigen::Map<const RowMajor>(op.b.data(), s.k, s.n));
    op.ec = std::make_unique<Eigen::MatrixXf>(s.m, s.n);
  }
  Eigen::setNbThreads(threads);
  const Eigen::MatrixXf& a = *op.ea;
  const Eigen::MatrixXf& b = *op.eb;
  Eigen::MatrixXf& c = *op.ec;
  c.noalias() = a * b;  // warm-up
  const Utilisation u;
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_rate_counters(state, s.macs(), u);
  state.SetLabel("fp32 " + std::to_string(Eigen::nbThreads()) + " thr");
}
#endif

#if GSQ_HAVE_OPENBLAS
void openblas_sgemm(benchmark::State& state, Shape s, int threads) {
  Operands& op = operands(s);
  openblas_set_num_threads(threads);
  const auto m = static_cast<blasint>(s.m);
  const auto n = static_cast<blasint>(s.n);
  const auto k = static_cast<blasint>(s.k);
  const auto sgemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, op.a.data(), k,
                op.b.data(), n, 0.0f, op.c.data(), n);
  };
  sgemm();  // warm-up
  const Utilisation u;
  for (auto _ : state) {
    sgemm();
    benchmark::DoNotOptimize(op.c.data());
    benchmark::ClobberMemory();
  }
  set_rate_counters(state, s.macs(), u);
  state.SetLabel("fp32 " + std::to_string(openblas_get_num_threads()) + " thr");
}
#endif

// ---------------------------------------------------------------------------------------------
// Peak multiply-accumulate rates
// ---------------------------------------------------------------------------------------------
//
// Each loop keeps several independent accumulator chains in registers, more than the
// instruction's latency times its issue rate, so the loop runs at the instruction's throughput.
// The chains start from different values: identical chains would be merged by the compiler
// (common subexpressions) into one.  The loop's result depends on every chain, so none is dead.

#if GSQ_X86

constexpr int kAvx2Int8Chains = 6;

/// The AVX2 u8 x s8 sequence (what the AVX2 kernel uses): vpmaddubsw (32 MACs into int16
/// pairs), vpmaddwd by ones (widening to int32, no MACs), vpaddd.  Only the vpaddd is carried
/// from step to step, so 6 chains cover its latency.  The products would be loop-invariant, so
/// an empty asm makes `a` a new value every step; the chains use different `b`, so they cannot
/// be merged.
GSQ_TARGET_AVX2 double peak_loop_avx2_int8(std::int64_t steps, int seed) noexcept {
  constexpr int kChains = kAvx2Int8Chains;
  __m256i a = _mm256_set1_epi8(static_cast<char>(seed + 1));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i b[kChains];
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) {
    b[i] = _mm256_set1_epi8(static_cast<char>(i + 1));
    acc[i] = _mm256_setzero_si256();
  }
  for (std::int64_t s = 0; s < steps; ++s) {
    __asm__ volatile("" : "+x"(a));
    for (int i = 0; i < kChains; ++i) {
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b[i]), ones));
    }
  }
  __m256i sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_epi32(sum, acc[i]);
  alignas(32) std::int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  std::int64_t total = 0;
  for (const std::int32_t v : lanes) total += v;
  return static_cast<double>(total);
}

/// 12 vfmadd231ps zmm per step: 12 * 16 fp32 MACs.  acc = acc * a + b with a < 1 converges, so
/// no chain overflows or goes subnormal.
GSQ_TARGET_AVX512 double peak_loop_avx512_fma(std::int64_t steps, int seed) noexcept {
  const __m512 a = _mm512_set1_ps(0.999f - 1e-6f * static_cast<float>(seed));
  const __m512 b = _mm512_set1_ps(1e-3f);
  __m512 acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (std::int64_t s = 0; s < steps; ++s) {
    for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kPeakChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  double total = 0.0;
  for (const float v : lanes) total += static_cast<double>(v);
  return total;
}

/// 12 vfmadd231ps ymm per step: 12 * 8 fp32 MACs.
GSQ_TARGET_AVX2 double peak_loop_avx2_fma(std::int64_t steps, int seed) noexcept {
  const __m256 a = _mm256_set1_ps(0.999f - 1e-6f * static_cast<float>(seed));
  const __m256 b = _mm256_set1_ps(1e-3f);
  __m256 acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (std::int64_t s = 0; s < steps; ++s) {
    for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kPeakChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  double total = 0.0;
  for (const float v : lanes) total += static_cast<double>(v);
  return total;
}
#endif  // GSQ_X86

using PeakLoop = double (*)(std::int64_t steps, int seed) noexcept;

/// One peak loop: its benchmark name, the ISA it needs, the MACs of one step and a description.
struct Peak {
  const char* name;
  gsq::Isa isa;
  PeakLoop loop;
  double macs_per_step;
  const char* what;
};

std::vector<Peak> peaks() {
  std::vector<Peak> p;
#if GSQ_X86
  p.push_back({"peak_int8_avx512_vnni", gsq::Isa::kAvx512Vnni, &peak_loop_avx512_vnni,
               kPeakChains * 64.0, "int8 vpdpbusd zmm"});
  p.push_back({"peak_int8_avx2", gsq::Isa::kAvx2, &peak_loop_avx2_int8, kAvx2Int8Chains * 32.0,
               "int8 vpmaddubsw+vpmaddwd ymm"});
  p.push_back({"peak_fp32_fma_avx512", gsq::Isa::kAvx512, &peak_loop_avx512_fma, kPeakChains * 16.0,
               "fp32 vfmadd231ps zmm"});
  p.push_back({"peak_fp32_fma_avx2", gsq::Isa::kAvx2, &peak_loop_avx2_fma, kPeakChains * 8.0,
               "fp32 vfmadd231ps ymm"});
#endif
  return p;
}

/// The int8 peak that bounds gsq's matmul kernel on this CPU, and the fp32 peak that bounds the
/// float baselines; nullptr when there is no loop for this ISA.
const char* int8_peak_name() {
  switch (gsq::matmul_isa()) {
    case gsq::Isa::kAvx512Vnni:
      return "peak_int8_avx512_vnni";
    case gsq::Isa::kAvx2:
      return "peak_int8_avx2";
    default:
      return nullptr;
  }
}

const char* fp32_peak_name() {
  if (gsq::cpu_supports(gsq::Isa::kAvx512)) return "peak_fp32_fma_avx512";
  if (gsq::cpu_supports(gsq::Isa::kAvx2)) return "peak_fp32_fma_avx2";
  return nullptr;
}

void peak(benchmark::State& state, Peak p, int threads) {
  if (!openmp_threads_available(state, threads)) return;
  int seed = 1;
  benchmark::DoNotOptimize(seed);
  const auto run = [&] { benchmark::DoNotOptimize(p.loop(kPeakSteps, seed)); };
  const Utilisation u;
  for (auto _ : state) {
#if defined(_OPENMP)
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
      run();
      continue;
    }
#endif
    run();
  }
  set_rate_counters(state, p.macs_per_step * static_cast<double>(kPeakSteps * threads), u);
  state.SetLabel(p.what);
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

void register_benchmarks() {
  for (const Peak& p : peaks()) {
    if (!gsq::cpu_supports(p.isa)) continue;
    for (const int t : kThreadCounts) {
      benchmark::RegisterBenchmark(peak_name(p.name, t).c_str(), peak, p, t)
          ->UseRealTime()
          ->MinTime(0.3)
          ->Unit(benchmark::kMillisecond);
    }
  }
  using Fn = void (*)(benchmark::State&, Shape, int);
  std::vector<std::pair<const char*, Fn>> methods = {{kGsePrepacked, &gse_prepacked},
                                                     {kGsePacking, &gse_packing},
                                                     {kGseFromFloat, &gse_from_float}};
#if GSQ_HAVE_EIGEN
  methods.emplace_back(kEigen, &eigen_gemm);
#endif
#if GSQ_HAVE_OPENBLAS
  methods.emplace_back(kOpenBlas, &openblas_sgemm);
#endif
  for (const Shape& s : kShapes) {
    const bool big = 2.0 * s.macs() >= 1e9;
    for (const int t : kThreadCounts) {
      for (const auto& [method, fn] : methods) {
        benchmark::RegisterBenchmark(gemm_name(method, s, t).c_str(), fn, s, t)
            ->UseRealTime()
            ->MinTime(0.3)
            ->Unit(big ? benchmark::kMillisecond : benchmark::kMicrosecond);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The ratio table
// ---------------------------------------------------------------------------------------------

/// The console display, also recording each run's GOP/s, cpu_util and other_cpu by name for the
/// table.  With repetitions, the median replaces the single runs.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  using benchmark::ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      const auto gops = run.counters.find("GOP/s");
      if (gops == run.counters.end()) continue;
      Result& r = results_[run.run_name.function_name];
      r.gops = gops->second.value;
      const auto util = run.counters.find("cpu_util");
      r.cpu_util = util != run.counters.end() ? util->second.value : -1.0;
      const auto other = run.counters.find("other_cpu");
      r.other_cpu = other != run.counters.end() ? other->second.value : 0.0;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  /// GOP/s of a run, or a negative value when it did not run.
  double gops(const std::string& name) const {
    const auto it = results_.find(name);
    return it == results_.end() ? -1.0 : it->second.gops;
  }

  /// True when a run on `threads` threads kept fewer than 3/4 of them busy on average, or other
  /// processes (or the hypervisor) took more than a fifth of a core that the run needed.
  bool disturbed(const std::string& name, int threads) const {
    const auto it = results_.find(name);
    if (it == results_.end()) return false;
    const Result& r = it->second;
    const double cores = std::max(1u, std::thread::hardware_concurrency());
    return (r.cpu_util >= 0.0 && r.cpu_util < 0.75 * threads) ||
           r.other_cpu + threads > cores + 0.2;
  }

 private:
  struct Result {
    double gops = 0.0;
    double cpu_util = -1.0;
    double other_cpu = 0.0;
  };
  std::map<std::string, Result> results_;
};

std::string cell(double value, int width, int precision) {
  char buf[64];
  if (value < 0.0) {
    std::snprintf(buf, sizeof buf, "%*s", width, "-");
  } else {
    std::snprintf(buf, sizeof buf, "%*.*f", width, precision, value);
  }
  return buf;
}

double ratio(double num, double den) { return num < 0.0 || den <= 0.0 ? -1.0 : num / den; }

void print_machine(std::ostream& out, const TableReporter& r) {
  out << "\ngsq matmul ISA on this machine: " << gsq::to_string(gsq::matmul_isa())
      << " (GSE-INT8 x GSE-INT8, groups of 32)\n";
#if GSQ_HAVE_EIGEN
  out << "Eigen " << EIGEN_WORLD_VERSION << "." << EIGEN_MAJOR_VERSION << "." << EIGEN_MINOR_VERSION
      << ", SIMD: " << Eigen::SimdInstructionSetsInUse() << "\n";
#else
  out << "Eigen: not found at configure time\n";
#endif
#if GSQ_HAVE_OPENBLAS
  out << "OpenBLAS: " << openblas_get_config() << ", core " << openblas_get_corename() << "\n";
#else
  out << "OpenBLAS: not found at configure time\n";
#endif
  out << "Peaks in GOP/s (1 MAC = 2 ops), per thread count:\n";
  const auto list = peaks();
  if (list.empty()) out << "  (no peak loop for this ISA)\n";
  for (const Peak& p : list) {
    char label[64];
    std::snprintf(label, sizeof label, "  %-30s", p.what);
    out << label;
    if (!gsq::cpu_supports(p.isa)) {
      out << "skipped: this CPU lacks " << gsq::to_string(p.isa) << "\n";
      continue;
    }
    for (const int t : kThreadCounts) {
      const std::string name = peak_name(p.name, t);
      out << "  " << t << " thr " << cell(r.gops(name), 7, 1) << (r.disturbed(name, t) ? "*" : " ");
    }
    out << "\n";
  }
}

void print_table(std::ostream& out, const TableReporter& r) {
  const char* int8_peak = int8_peak_name();
  const char* fp32_peak = fp32_peak_name();
  out << "\nGOP/s (1 MAC = 2 ops) per shape and thread count, and their ratios.\n"
         "  prepacked, packing, from_f32: GSE-INT8 with B prepacked, B packed in the call, A "
         "quantized from float in the call\n"
         "  gse = prepacked; ff = from_f32; peak = "
      << (int8_peak != nullptr ? int8_peak : "none")
      << ", fp32pk = " << (fp32_peak != nullptr ? fp32_peak : "none")
      << ", at the same thread count\n\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-15s %3s %9s %9s %9s %9s %9s | %9s %9s %9s %9s %10s\n",
                "M x N x K", "thr", "prepacked", "packing", "from_f32", "eigen", "openblas",
                "gse/eigen", "gse/blas", "gse/peak", "ff/eigen", "eig/fp32pk");
  out << line;
  bool any_disturbed = false;
  for (const Shape& s : kShapes) {
    for (const int t : kThreadCounts) {
      const std::string pk8_name = int8_peak != nullptr ? peak_name(int8_peak, t) : "";
      const std::string pk32_name = fp32_peak != nullptr ? peak_name(fp32_peak, t) : "";
      const double pre = r.gops(gemm_name(kGsePrepacked, s, t));
      const double pack = r.gops(gemm_name(kGsePacking, s, t));
      const double ff = r.gops(gemm_name(kGseFromFloat, s, t));
      const double eig = r.gops(gemm_name(kEigen, s, t));
      const double blas = r.gops(gemm_name(kOpenBlas, s, t));
      const double pk8 = r.gops(pk8_name);
      const double pk32 = r.gops(pk32_name);
      bool disturbed = r.disturbed(pk8_name, t) || r.disturbed(pk32_name, t);
      for (const char* method : {kGsePrepacked, kGsePacking, kGseFromFloat, kEigen, kOpenBlas})
        disturbed = disturbed || r.disturbed(gemm_name(method, s, t), t);
      any_disturbed = any_disturbed || disturbed;
      std::snprintf(line, sizeof line, "%-15s %3d ", s.str().c_str(), t);
      out << line << cell(pre, 9, 1) << " " << cell(pack, 9, 1) << " " << cell(ff, 9, 1) << " "
          << cell(eig, 9, 1) << " " << cell(blas, 9, 1) << " | " << cell(ratio(pre, eig), 9, 2)
          << " " << cell(ratio(pre, blas), 9, 2) << " " << cell(ratio(pre, pk8), 9, 2) << " "
          << cell(ratio(ff, eig), 9, 2) << " " << cell(ratio(eig, pk32), 10, 2)
          << (disturbed ? " *" : "") << "\n";
    }
  }
  if (any_disturbed) {
    out << "* a run of this row (or its peak) kept fewer than 3/4 of its threads busy (cpu_util;\n"
           "  the library may have chosen fewer threads), or other processes or the hypervisor\n"
           "  took more than 0.2 of the cores it needed (other_cpu): rerun on a quiet machine, or\n"
           "  with --benchmark_repetitions=3 (the table then shows medians).\n";
  }
  out << std::flush;
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

/// The value of `--flag=value` in argv, or "" (read before benchmark::Initialize consumes it).
std::string flag_value(int argc, char** argv, const char* flag) {
  const std::string prefix = std::string("--") + flag + "=";
  std::string value;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) value = argv[i] + prefix.size();
  }
  return value;
}

bool truthy(const std::string& v) { return v == "true" || v == "yes" || v == "1" || v == "on"; }
bool falsy(const std::string& v) { return v == "false" || v == "no" || v == "0" || v == "off"; }

/// The console options Google Benchmark would pick from the same flags.
benchmark::ConsoleReporter::OutputOptions console_options(int argc, char** argv) {
  int options = benchmark::ConsoleReporter::OO_None;
  const std::string color = flag_value(argc, argv, "benchmark_color");
  bool use_color = truthy(color);
#if GSQ_BENCH_HAVE_ISATTY
  if (!truthy(color) && !falsy(color)) use_color = isatty(STDOUT_FILENO) != 0;
#endif
  if (use_color) options |= benchmark::ConsoleReporter::OO_Color;
  if (truthy(flag_value(argc, argv, "benchmark_counters_tabular")))
    options |= benchmark::ConsoleReporter::OO_Tabular;
  return static_cast<benchmark::ConsoleReporter::OutputOptions>(options);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Eigen allocates its GEMM workspace in every product (and gsq's quantize its scratch), and
  // glibc serves blocks above 128 KiB with fresh mmap()ed pages until a large free() raises that
  // threshold: Eigen's 1-thread 256^3 product then runs 25% slower, depending on what ran
  // before.  Fix the threshold where a long-running process ends up, whatever the filter.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  const std::string format = flag_value(argc, argv, "benchmark_format");
  const auto options = console_options(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_benchmarks();
  if (!format.empty() && format != "console") {
    std::cerr << "matmul_bench: --benchmark_format=" << format
              << " uses Google Benchmark's reporter; no ratio table\n";
    benchmark::RunSpecifiedBenchmarks();
  } else {
    TableReporter reporter(options);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_machine(std::cout, reporter);
    print_table(std::cout, reporter);
  }
  benchmark::Shutdown();
  return 0;
}
