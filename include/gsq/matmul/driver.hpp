// matmul/driver.hpp: the tiled driver that runs a kernel over C, packing B block by block into
// the caller's workspace.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/detail/aligned.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/kernels/dispatch.hpp"
#include "gsq/matmul/options.hpp"
#include "gsq/matmul/rhs_source.hpp"
#include "gsq/matmul/workspace.hpp"
#include "gsq/tensor.hpp"

namespace gsq::detail {

/// -128 * (sum of each group's codes) for every line of A: the compensation of kBiasedRhs
/// kernels (kernels/matmul_scalar.hpp).
template <int Bits, int GroupSize>
void lhs_compensation(const GseView<Bits, GroupSize>& a, int threads,
                      std::vector<std::int32_t>& out) {
  const Index groups = a.groups_per_line();
  out.resize(static_cast<std::size_t>(a.lines() * groups));
  // Blocks of 64 lines per item: a line is a few dozen additions, far less than an item costs.
  parallel_for_blocks(a.lines(), 64, threads, [&](Index first, Index count, int) {
    for (Index line = first; line < first + count; ++line) {
      const std::int8_t* codes = a.line_codes(line);
      for (Index g = 0; g < groups; ++g) {
        std::int32_t sum = 0;
        for (int k = 0; k < GroupSize; ++k) sum += codes[g * GroupSize + k];
        out[static_cast<std::size_t>(line * groups + g)] = -128 * sum;
      }
    }
  });
}

/// L2-sized budget for the block of B panels a thread sweeps while one A panel stays in L1.
inline constexpr Index kRhsBlockBytes = 512 * 1024;
/// Blocks of kMr rows of A per work item.
inline constexpr Index kLhsBlocksPerItem = 8;

/// Runs the tiles of C with kernel I: work items are (block of B panels) x (chunk of row
/// blocks of A), jb-major so that consecutive items of one thread share their B block, which
/// stays in L2 while each block of A rows is reused from L1 across it.  Every output is one
/// kernel call over all of K, so the split never changes a bit.
template <Isa I, int Bits, int GroupSize>
void run_tiles(const GseView<Bits, GroupSize>& a, const std::int32_t* comp,
               const RhsSource<GroupSize>& b, double scale, float beta, MatrixRef<float> c,
               int threads, Index block_bytes, MatmulWorkspace& workspace) {
  using Kernel = kernels::MatmulKernel<I>;
  constexpr int kMr = Kernel::kMr;
  constexpr int kNr = Kernel::kNr;
  const Index m = a.rows();
  const Index n = b.cols();
  const Index lda = a.padded_length();
  const Index lde = a.groups_per_line();
  const Index a_blocks = (m + kMr - 1) / kMr;
  const Index b_panels = (n + kNr - 1) / kNr;
  const Index panel_bytes = b.panel_bytes(kNr);
  const Index per_block = std::max<Index>(1, block_bytes / std::max<Index>(1, panel_bytes));
  const Index b_blocks = (b_panels + per_block - 1) / per_block;
  const Index a_chunks = (a_blocks + kLhsBlocksPerItem - 1) / kLhsBlocksPerItem;
  const bool direct = c.col_stride == 1;
  const auto scale_f = static_cast<float>(scale);
  const bool float_scale = static_cast<double>(scale_f) == scale && std::isnormal(scale_f);

  // The last block of A rows, when partial, copied with zero rows below it so that the kernel
  // always reads kMr rows.
  WorkspaceAccess ws{workspace};
  const Index tail_rows = m % kMr;
  std::vector<std::int8_t>& tail_codes = ws.tail_codes();
  std::vector<std::uint8_t>& tail_exps = ws.tail_exps();
  std::vector<std::int32_t>& tail_comp = ws.tail_comp();
  if (tail_rows != 0 && lde != 0) {  // lde == 0: K == 0, nothing to read
    tail_codes.assign(static_cast<std::size_t>(kMr * lda), 0);
    tail_exps.assign(static_cast<std::size_t>(kMr * lde), 0);
    tail_comp.assign(static_cast<std::size_t>(kMr * lde), 0);
    const Index first = m - tail_rows;
    std::memcpy(tail_codes.data(), a.line_codes(first), static_cast<std::size_t>(tail_rows * lda));
    std::memcpy(tail_exps.data(), a.line_exponents(first),
                static_cast<std::size_t>(tail_rows * lde));
    if (comp != nullptr) {
      std::memcpy(tail_comp.data(), comp + first * lde,
                  static_cast<std::size_t>(tail_rows * lde) * sizeof(std::int32_t));
    }
  }

  // Where B's panels come from.  Prepacked: in place.  Few blocks (a skinny B): packed whole,
  // once, shared by all threads.  Otherwise each thread packs one block at a time into its own
  // L2-sized buffer and runs every row of A against it, so B never exists as a whole copy.
  const PanelShape shape = panel_shape_of<I>();
  const bool prepacked = b.prepacked(0) != nullptr;
  const bool stream = !prepacked && b_blocks >= 2 * std::max(threads, 1);
  AlignedVector<std::uint8_t>& whole = ws.whole();
  if (!prepacked && !stream) {
    // Never shrunk: a vector grown back after a shrink zero-fills what it had (a memset per call).
    const auto bytes = static_cast<std::size_t>(b_panels * panel_bytes);
    if (whole.size() < bytes) whole.resize(bytes);
    std::uint8_t* out = whole.data();
    parallel_for(b_panels, threads, [&](Index p) { b.pack(p, 1, shape, out + p * panel_bytes); });
  }

  // Runs A's row blocks [ip_begin, ip_end) against B's panels [jp_begin, jp_end), whose panel
  // jp is at panel(jp).
  auto run = [&](Index ip_begin, Index ip_end, Index jp_begin, Index jp_end, auto&& panel) {
    float scratch[kMr * kNr];
    kernels::MatmulTile t;
    t.lda = lda;
    t.lde = lde;
    t.groups = b.groups();
    t.scale = scale;
    t.scale_f = scale_f;
    t.float_scale = float_scale;
    t.beta = beta;
    for (Index ip = ip_begin; ip < ip_end; ++ip) {
      const Index row0 = ip * kMr;
      t.rows = static_cast<int>(std::min<Index>(kMr, m - row0));
      if (t.rows == kMr) {
        t.a = a.line_codes(row0);
        t.ea = a.line_exponents(row0);
        t.comp = comp != nullptr ? comp + row0 * lde : nullptr;
      } else {
        t.a = tail_codes.data();
        t.ea = tail_exps.data();
        t.comp = tail_comp.data();
      }
      for (Index jp = jp_begin; jp < jp_end; ++jp) {
        const Index col0 = jp * kNr;
        t.b = panel(jp);
        t.cols = static_cast<int>(std::min<Index>(kNr, n - col0));
        if (direct) {
          t.c = &c(row0, col0);
          t.ldc = c.row_stride;
          Kernel::template run<GroupSize>(t);
          continue;
        }
        // Strided C: run into a row-major scratch tile and scatter it.
        t.c = scratch;
        t.ldc = kNr;
        for (int r = 0; r < t.rows; ++r) {
          for (int j = 0; j < t.cols; ++j)
            scratch[r * kNr + j] = beta == 0.0f ? 0.0f : c(row0 + r, col0 + j);
        }
        Kernel::template run<GroupSize>(t);
        for (int r = 0; r < t.rows; ++r) {
          for (int j = 0; j < t.cols; ++j) c(row0 + r, col0 + j) = scratch[r * kNr + j];
        }
      }
    }
  };

  if (stream) {
    // One block buffer per thread slot, sized before the parallel region.
    std::vector<AlignedVector<std::uint8_t>>& blocks = ws.blocks();
    if (blocks.size() < static_cast<std::size_t>(threads))
      blocks.resize(static_cast<std::size_t>(threads));
    parallel_for_slots(b_blocks, threads, [&](Index jb, int slot) {
      AlignedVector<std::uint8_t>& block = blocks[static_cast<std::size_t>(slot)];
      const Index jp_begin = jb * per_block;
      const Index jp_end = std::min(b_panels, jp_begin + per_block);
      const auto bytes = static_cast<std::size_t>((jp_end - jp_begin) * panel_bytes);
      if (block.size() < bytes) block.resize(bytes);  // never shrunk, as `whole`
      b.pack(jp_begin, jp_end - jp_begin, shape, block.data());
      run(0, a_blocks, jp_begin, jp_end,
          [&](Index jp) { return block.data() + (jp - jp_begin) * panel_bytes; });
    });
    ws.note_peak();
    return;
  }
  const std::uint8_t* whole_data = whole.data();
  auto panel = [&](Index jp) {
    return prepacked ? b.prepacked(jp) : whole_data + jp * panel_bytes;
  };
  parallel_for(b_blocks * a_chunks, threads, [&](Index item) {
    const Index jb = item / a_chunks;
    const Index ib = item % a_chunks;
    run(ib * kLhsBlocksPerItem, std::min(a_blocks, (ib + 1) * kLhsBlocksPerItem), jb * per_block,
        std::min(b_panels, (jb + 1) * per_block), panel);
  });
  ws.note_peak();
}

template <int Bits, int GroupSize>
using RunTilesFn = void (*)(const GseView<Bits, GroupSize>&, const std::int32_t*,
                            const RhsSource<GroupSize>&, double, float, MatrixRef<float>, int,
                            Index, MatmulWorkspace&);

template <int Bits, int GroupSize>
RunTilesFn<Bits, GroupSize> tile_runner(Isa isa) noexcept {
  return dispatch_matmul(isa, [](auto tag) -> RunTilesFn<Bits, GroupSize> {
    return &run_tiles<decltype(tag)::value, Bits, GroupSize>;
  });
}

inline std::string describe(Index rows, Index cols, Axis axis) {
  return cat(rows, "x", cols, " grouped along ", to_string(axis));
}

}  // namespace gsq::detail
