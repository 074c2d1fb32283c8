// matmul/workspace.hpp: the matmul driver's scratch memory, owned by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gsq/detail/aligned.hpp"

namespace gsq {

namespace detail {
struct WorkspaceAccess;
}

/// The scratch memory matmul() uses: B's kernel panels when B is not packed ahead (one block
/// per thread, or the whole of a skinny B), the -128 * group sums of A for biased kernels, and
/// a zero-padded copy of A's partial last block of rows.  Pass one through
/// MatmulOptions::workspace to reuse it across calls (fresh pages cost more than packing
/// them); it grows to the largest call and keeps its memory until release() or destruction.
/// gsq keeps no hidden buffers: without a workspace, each call allocates and frees its own.
/// One workspace serves one call at a time (not thread-safe).
class MatmulWorkspace {
 public:
  /// Bytes held now.
  std::size_t bytes() const noexcept {
    std::size_t b = whole_.capacity() + tail_codes_.capacity() + tail_exps_.capacity() +
                    (comp_.capacity() + tail_comp_.capacity()) * sizeof(std::int32_t);
    for (const auto& block : blocks_) b += block.capacity();
    return b;
  }
  /// The most bytes held at the end of any call since construction or reset_peak().
  std::size_t peak_bytes() const noexcept { return peak_; }
  void reset_peak() noexcept { peak_ = bytes(); }
  /// Frees every buffer.
  void release() noexcept {
    whole_ = {};
    blocks_ = {};
    comp_ = {};
    tail_codes_ = {};
    tail_exps_ = {};
    tail_comp_ = {};
  }

 private:
  friend struct detail::WorkspaceAccess;
  detail::AlignedVector<std::uint8_t> whole_;                // all of B's panels
  std::vector<detail::AlignedVector<std::uint8_t>> blocks_;  // one block of panels per thread
  std::vector<std::int32_t> comp_;                           // -128 * group sums of A
  std::vector<std::int8_t> tail_codes_;                      // A's partial last row block
  std::vector<std::uint8_t> tail_exps_;
  std::vector<std::int32_t> tail_comp_;
  std::size_t peak_ = 0;
};

namespace detail {

/// The driver's view of a workspace's buffers.
struct WorkspaceAccess {
  MatmulWorkspace& ws;
  AlignedVector<std::uint8_t>& whole() { return ws.whole_; }
  std::vector<AlignedVector<std::uint8_t>>& blocks() { return ws.blocks_; }
  std::vector<std::int32_t>& comp() { return ws.comp_; }
  std::vector<std::int8_t>& tail_codes() { return ws.tail_codes_; }
  std::vector<std::uint8_t>& tail_exps() { return ws.tail_exps_; }
  std::vector<std::int32_t>& tail_comp() { return ws.tail_comp_; }
  void note_peak() {
    const std::size_t now = ws.bytes();
    if (now > ws.peak_) ws.peak_ = now;
  }
};

}  // namespace detail
}  // namespace gsq
