// state.hpp: what every optimizer shares: its parameters, its step counter, the checks of its
// hyper-parameters and the common parts of its state blob.
//
// State blobs (save_state / load_state), all integers and floats little-endian (io/byte_io.hpp):
//   u8[4]  magic "GSQO"
//   u32    tag: 1 Sgd, 2 AdamW, 3 AdamW8bit
//   u32    version (kOptimizerStateVersion)
//   i64    step counter
//   layout, by tag: Sgd: u32 1 if momentum buffers follow, else 0; AdamW: nothing;
//                   AdamW8bit: u64 block_size, u64 min_8bit_size
//   u64    parameter count, then one u64 size per parameter
//   arrays, parameter by parameter (see each optimizer)
// Hyper-parameters (momentum, betas, eps, weight decay) are not part of the state: construct the
// restored optimizer with the values you want.  load_state checks everything before it changes
// anything: on error it throws std::invalid_argument and the optimizer is left as it was.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/optim/parameter.hpp"

namespace gsq {

/// Version of the state blob layout written by save_state (see the top of this file).
inline constexpr std::uint32_t kOptimizerStateVersion = 1;

namespace detail {

enum class OptimizerTag : std::uint32_t { kSgd = 1, kAdamW = 2, kAdamW8bit = 3 };

inline const char* to_string(OptimizerTag tag) noexcept {
  switch (tag) {
    case OptimizerTag::kSgd:
      return "Sgd";
    case OptimizerTag::kAdamW:
      return "AdamW";
    case OptimizerTag::kAdamW8bit:
      return "AdamW8bit";
  }
  return "?";
}

inline constexpr std::uint8_t kStateMagic[4] = {'G', 'S', 'Q', 'O'};

/// Parameters, the step counter and the common parts of the state blob.  Not API.
class OptimizerBase {
 public:
  /// Sets every gradient element to 0.
  void zero_grad() noexcept {
    for (const Parameter& p : params_) std::fill(p.grad, p.grad + p.size, 0.0f);
  }

  /// Number of step() calls so far (restored by load_state).
  std::int64_t steps() const noexcept { return steps_; }

  const std::vector<Parameter>& parameters() const noexcept { return params_; }

 protected:
  OptimizerBase(const char* name, std::vector<Parameter> params) : params_(std::move(params)) {
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const Parameter& p = params_[k];
      GSQ_CHECK(p.size == 0 || (p.value != nullptr && p.grad != nullptr), name, ": parameter ", k,
                " has size ", p.size, " but a null ", p.value == nullptr ? "value" : "grad");
      GSQ_CHECK(p.size == 0 || p.value != p.grad, name, ": parameter ", k,
                " uses the same memory for value and grad");
    }
  }

  static void check_lr(const char* name, float lr) {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), name, "::step: lr must be finite and >= 0, got ",
              lr);
  }

  /// Magic, tag, version and step counter.
  void put_header(std::vector<std::uint8_t>& out, OptimizerTag tag) const {
    ByteWriter w(out);
    w.bytes(kStateMagic, 4);
    w.u32(static_cast<std::uint32_t>(tag));
    w.u32(kOptimizerStateVersion);
    w.u64(static_cast<std::uint64_t>(steps_));
  }

  /// Parameter count and sizes.
  void put_sizes(std::vector<std::uint8_t>& out) const {
    ByteWriter w(out);
    w.u64(params_.size());
    for (const Parameter& p : params_) w.u64(p.size);
  }

  /// Checks magic, tag and version; returns the step counter.
  static std::int64_t read_header(ByteReader& in, const char* who, OptimizerTag tag) {
    std::uint8_t magic[4];
    in.bytes(magic, 4, "the magic");
    GSQ_CHECK(std::memcmp(magic, kStateMagic, 4) == 0, who,
              ": not an optimizer state blob (the magic is not \"GSQO\")");
    const std::uint32_t got = in.u32("the optimizer tag");
    const char* got_name = to_string(static_cast<OptimizerTag>(got));
    GSQ_CHECK(got == static_cast<std::uint32_t>(tag), who, ": wrong optimizer tag ", got, " (",
              got_name, "), this optimizer is ", to_string(tag), " (tag ",
              static_cast<std::uint32_t>(tag), ")");
    const std::uint32_t version = in.u32("the version");
    GSQ_CHECK(version == kOptimizerStateVersion, who, ": unsupported state version ", version,
              " (this build reads version ", kOptimizerStateVersion, ")");
    const auto saved_steps = static_cast<std::int64_t>(in.u64("the step counter"));
    GSQ_CHECK(saved_steps >= 0, who, ": negative step counter ", saved_steps);
    return saved_steps;
  }

  /// Checks that the blob's parameter count and sizes equal this optimizer's.
  void read_sizes(ByteReader& in, const char* who) const {
    const std::uint64_t count = in.u64("the parameter count");
    GSQ_CHECK(count == params_.size(), who, ": wrong parameter count: the blob has ", count,
              ", this optimizer has ", params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const std::uint64_t size = in.u64("a parameter size");
      GSQ_CHECK(size == params_[k].size, who, ": wrong size of parameter ", k, ": the blob has ",
                size, ", this optimizer has ", params_[k].size);
    }
  }

  /// Checks that exactly `expected` bytes remain for the state arrays.
  static void check_remaining(const ByteReader& in, const char* who, std::size_t expected) {
    const std::size_t left = in.remaining();
    GSQ_CHECK(left >= expected, who, ": state blob is truncated: ", in.size(),
              " bytes, the header asks for ", expected - left, " more");
    GSQ_CHECK(left == expected, who, ": state blob has ", left - expected,
              " trailing bytes after the state arrays (", in.size(), " bytes in all)");
  }

  std::vector<Parameter> params_;
  std::int64_t steps_ = 0;
};

inline void check_unit_interval(const char* name, const char* what, float x) {
  GSQ_CHECK(x >= 0.0f && x < 1.0f, name, ": ", what, " must be in [0, 1), got ", x);
}

inline void check_non_negative(const char* name, const char* what, float x) {
  GSQ_CHECK(x >= 0.0f && std::isfinite(x), name, ": ", what, " must be finite and >= 0, got ", x);
}

}  // namespace detail

}  // namespace gsq
