// parallel.hpp: OpenMP when the consumer compiles with it, a plain loop otherwise.
#pragma once

#include <algorithm>

#include "gsq/format.hpp"
#include "gsq/thread_pool.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace gsq::detail {

/// Threads a call may use: `requested` when positive, else the size of the ThreadPool in scope,
/// else OpenMP's default (1 without OpenMP).
inline int resolve_threads(int requested) noexcept {
  if (requested > 0) return requested;
  if (const ThreadPool* pool = ThreadPool::current()) return pool->size();
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Threads worth using for `work` elementary operations when the caller left the choice to gsq
/// (requested == 0): parallel regions cost microseconds to start and join (far more when the
/// machine is oversubscribed and OpenMP threads spin), so small products run on the calling
/// thread.  An explicit request is honoured as given.  Never changes results.
inline int threads_for(double work, int requested) noexcept {
  constexpr double kWorkPerThread = 1 << 22;  // about a millisecond of int8 multiply-adds
  if (requested > 0) return requested;
  const int threads = resolve_threads(requested);
  if (threads <= 1 || work < 2 * kWorkPerThread) return 1;
  return work < threads * kWorkPerThread ? static_cast<int>(work / kWorkPerThread) : threads;
}

/// Runs body(i, thread) for i in [0, n) on up to `threads` threads, where thread in [0, threads)
/// names the thread that runs i, so that each thread can use its own slot of a caller-owned
/// buffer.  On the ThreadPool in scope on this thread when there is one (thread_pool.hpp: runs
/// of items claimed as threads come free), else split statically over OpenMP threads (thread:
/// the OpenMP thread number), else (no OpenMP) as a loop with thread 0.  gsq starts no threads
/// of its own.  Results never depend on the split, so translation units built with and without
/// OpenMP, and runs with and without a pool, compute the same values.
template <typename Body>
void parallel_for_slots(Index n, int threads, Body&& body) {
  if (ThreadPool* pool = ThreadPool::current(); pool != nullptr && threads > 1 && n > 1) {
    pool->run(n, threads, body);
    return;
  }
  if (ThreadPool::running_item()) threads = 1;  // inside a pool's item: no OpenMP team
#if defined(_OPENMP)
  if (threads > 1 && n > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (Index i = 0; i < n; ++i) body(i, omp_get_thread_num());
    return;
  }
#else
  (void)threads;
#endif
  for (Index i = 0; i < n; ++i) body(i, 0);
}

/// body(first, count, slot) over [0, n) in blocks of `block` items (the last one may be
/// shorter): the blocks are the items of parallel_for_slots, with its slots.
template <typename Body>
void parallel_for_blocks(Index n, Index block, int threads, Body&& body) {
  parallel_for_slots((n + block - 1) / block, threads, [&](Index b, int slot) {
    const Index first = b * block;
    body(first, std::min(block, n - first), slot);
  });
}

/// The same as body(i).
template <typename Body>
void parallel_for(Index n, int threads, Body&& body) {
  parallel_for_slots(n, threads, [&body](Index i, int) { body(i); });
}

}  // namespace gsq::detail
