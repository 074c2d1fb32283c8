// bench_common.hpp: helpers shared by the benchmark programs.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "gsq/detail/rng.hpp"

namespace bench {

/// n draws of N(0, sigma^2) from gsq's portable generator (the same with every standard library).
inline std::vector<float> normal(std::size_t n, unsigned seed, float sigma) {
  gsq::detail::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.normal(sigma);
  return v;
}

/// The console reporter, also recording each benchmark's real time per iteration in seconds,
/// by function name (the median when repetitions report aggregates), for ratio lines printed
/// after the run.
class TimeRecorder : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (!r.aggregate_name.empty() && r.aggregate_name != "median") continue;
      seconds_[r.run_name.function_name] =
          r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  /// Seconds per iteration of `name`, or 0 when it did not run.
  double seconds(const std::string& name) const {
    const auto it = seconds_.find(name);
    return it == seconds_.end() ? 0.0 : it->second;
  }
  const std::map<std::string, double>& all() const noexcept { return seconds_; }

 private:
  std::map<std::string, double> seconds_;
};

}  // namespace bench
