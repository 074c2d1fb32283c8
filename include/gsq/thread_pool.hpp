// thread_pool.hpp: worker threads that the caller owns, for gsq's parallel loops, that never wait
// for a thread that is not running.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/format.hpp"

namespace gsq {

// Why a pool beside OpenMP
// ---------------------------------------------------------------------------------------------
// gsq's loops (detail::parallel_for_slots) use OpenMP by default: each loop splits its items
// statically and ends at a barrier that waits for every thread.  A training step runs about 1300
// such loops.  When another process holds one of two cores, the thread that shares that core is
// off it for milliseconds at a time and every loop waits for it: a stories15M step on 2 threads
// took 128-370 ms against 107 ms on 1 thread (bench/model_bench, a busy loop on one core).  No
// OpenMP setting fixes that from inside a library: its wait policy is read from the environment
// when the program starts.
//
// Here each loop's items are claimed from a shared counter by the calling thread and by whichever
// workers are running, in runs of consecutive items that shrink as the loop drains (1 / (4 x
// threads) of what is left, like OpenMP's guided schedule): early runs are long and keep
// neighbouring items on one thread, the last ones single.  The caller waits only for runs a
// worker has already claimed, never for a worker to wake up or to be scheduled, so a loop with
// a worker off its core runs at about the caller's own speed (the same step: 93-118 ms).  The
// split never changes a result: every gsq loop writes each item's outputs alone (see
// detail/parallel.hpp).
//
// gsq starts no thread of its own: the caller constructs the pool and names it for a scope,
//   gsq::ThreadPool pool(2);              // the calling thread and one worker
//   gsq::ThreadPoolScope use(pool);       // gsq's loops on this thread now run on the pool
// and destroys it when done.  One loop at a time: a loop started inside an item, or on another
// thread while the pool is busy, runs on its calling thread alone.
class ThreadPool {
 public:
  /// A pool of `threads` threads in all: the one that calls run() and threads - 1 workers;
  /// threads <= 0: one per hardware thread (std::thread::hardware_concurrency(), at least 1).
  /// Throws what std::thread throws when a worker cannot start (the ones started are joined).
  explicit ThreadPool(int threads = 0) {
    if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
    const int workers = std::max(threads, 1) - 1;
    workers_.reserve(static_cast<std::size_t>(workers));
#if GSQ_HAS_EXCEPTIONS
    try {
      for (int w = 1; w <= workers; ++w) workers_.emplace_back([this, w] { work(w); });
    } catch (...) {
      stop();
      throw;
    }
#else
    for (int w = 1; w <= workers; ++w) workers_.emplace_back([this, w] { work(w); });
#endif
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop(); }

  /// Threads in all, the caller's included.
  int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  /// body(i, slot) for every i in [0, n), each exactly once, on at most `threads` threads, where
  /// slot in [0, min(threads, size())) names the thread (0: the caller).  Returns when every
  /// item has run.  The first exception an item throws stops the claiming of further items (and
  /// the rest of its own run) and is rethrown here, once the runs already claimed have finished.
  template <typename Body>
  void run(Index n, int threads, Body& body) {
    const int used = std::min(threads, size());
    if (n <= 0) return;
    if (used <= 1 || n == 1 || running_item_ || busy_.exchange(true)) {
      for (Index i = 0; i < n; ++i) body(i, 0);
      return;
    }
    // The counter holds 31-bit item numbers: loops of more items run in blocks of kMaxItems.
    void* b = const_cast<void*>(static_cast<const void*>(&body));
    std::exception_ptr error;
    for (Index base = 0; base < n && !error; base += kMaxItems)
      error = run_block(&call<Body>, b, base, std::min(kMaxItems, n - base), used);
    busy_.store(false, std::memory_order_release);
#if GSQ_HAS_EXCEPTIONS
    if (error) std::rethrow_exception(error);
#endif
  }

  /// Whether this thread is running an item of some pool's loop (a loop it starts then runs
  /// on it alone).
  static bool running_item() noexcept { return running_item_; }

  /// The pool named by the innermost ThreadPoolScope on this thread, or null.
  static ThreadPool*& current() noexcept {
    thread_local ThreadPool* pool = nullptr;
    return pool;
  }

 private:
  using ItemFn = void (*)(ThreadPool& pool, void* body, Index base, Index first, Index count,
                          int slot, std::uint64_t epoch);

  static inline thread_local bool running_item_ = false;  // see running_item()
  static constexpr std::uint64_t kIndexMask = 0xFFFFFFFFu;
  static constexpr Index kMaxItems = 0x7FFFFFFF;  // an item index fits the counter's low half
  static constexpr Index kShare = 4;  // a claim takes 1 / (kShare x threads) of what is left
  // A caller waiting for a worker's last items spins kCallerSpin, then yields its core.  An idle
  // worker spins kIdleSpin for the next loop, then yields its core until kIdleYield (so that a
  // process sharing the core runs, while this worker stays awake: the loops of a step come tens
  // of microseconds apart), then sleeps until the next loop.
  static constexpr std::chrono::microseconds kCallerSpin{20};
  static constexpr std::chrono::microseconds kIdleSpin{20};
  static constexpr std::chrono::microseconds kIdleYield{2000};
  using Clock = std::chrono::steady_clock;

  /// Whether `spin` (counting from 0) has passed `limit` since `start`; reads the clock every
  /// 64 spins.
  static bool spun(unsigned spin, Clock::time_point start,
                   std::chrono::microseconds limit) noexcept {
    return (spin & 63) == 63 && Clock::now() - start > limit;
  }

  /// Items base + [first, first + count) of the loop `epoch` on `slot`.  The handler is here, in a
  /// function of each loop's own type, rather than in take_items: translation units built with
  /// and without exceptions then never share one definition that differs between them.
  template <typename Body>
  static void call(ThreadPool& pool, void* body, Index base, Index first, Index count, int slot,
                   std::uint64_t epoch) {
    Body& b = *static_cast<Body*>(body);
#if GSQ_HAS_EXCEPTIONS
    try {
      for (Index i = first; i < first + count; ++i) b(base + i, slot);
    } catch (...) {
      pool.fail(epoch);
    }
#else
    (void)pool, (void)epoch;
    for (Index i = first; i < first + count; ++i) b(base + i, slot);
#endif
  }

  /// Items base + [0, n) of a loop on `used` threads: publishes the loop, takes runs of it on
  /// this thread, waits for the runs workers took; returns the first exception an item threw.
  std::exception_ptr run_block(ItemFn fn, void* body, Index base, Index n, int used) {
    fn_.store(fn, std::memory_order_relaxed);
    body_.store(body, std::memory_order_relaxed);
    base_.store(base, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    threads_.store(used, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    epoch_ = (epoch_ + 1) & kIndexMask;  // 32 bits: the counter's high half
    const std::uint64_t epoch = epoch_;
    claim_.store((epoch << 32) | static_cast<std::uint64_t>(n));  // publishes the fields above
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    take_items(epoch, 0);
    // Only items a worker claimed are left: wait for them, spinning, then yielding the core.
    bool yielding = false;
    const Clock::time_point start = Clock::now();
    for (unsigned spin = 0; done_.load(std::memory_order_acquire) != n; ++spin) {
      yielding = yielding || spun(spin, start, kCallerSpin);
      if (yielding) {
        std::this_thread::yield();
      } else {
        relax();
      }
    }
    return error_;
  }

  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
  }

  // The claim counter holds the loop's epoch in its high half and the number of its items not
  // yet claimed in its low half, so a claim succeeds only while its loop is current and not
  // exhausted, judged from the counter alone.  The caller writes the next loop's fields only
  // after every item of this one is claimed and done, so a worker whose claim succeeds read
  // this loop's fields.  (The low half must not be the next item's index: a worker that reads
  // the fields while the caller is writing the next loop's, but claims against this loop's
  // exhausted counter, would compare that index with the next loop's larger count and claim.)
  // Epochs are 32 bits: a worker stopped between reading the fields and claiming for exactly a
  // multiple of 2^32 loops, hours of them, would claim with stale fields.  A debugger can do
  // that; nothing else stops a thread for so long.
  void take_items(std::uint64_t epoch, int slot) {
    const ItemFn fn = fn_.load(std::memory_order_relaxed);
    void* body = body_.load(std::memory_order_relaxed);
    const Index base = base_.load(std::memory_order_relaxed);
    const Index n = n_.load(std::memory_order_relaxed);
    const Index share = kShare * threads_.load(std::memory_order_relaxed);
    for (;;) {
      std::uint64_t v = claim_.load(std::memory_order_acquire);
      Index left = 0, count = 0;
      do {
        left = static_cast<Index>(v & kIndexMask);
        if ((v >> 32) != epoch || left == 0) return;
        count = std::max<Index>(1, left / share);
      } while (!claim_.compare_exchange_weak(v, v - static_cast<std::uint64_t>(count),
                                             std::memory_order_acq_rel,
                                             std::memory_order_acquire));
      running_item_ = true;
      fn(*this, body, base, n - left, count, slot, epoch);
      running_item_ = false;
      done_.fetch_add(count, std::memory_order_acq_rel);
    }
  }

  // Keeps the first error and marks every unclaimed item done, so that no one claims it.
  void fail(std::uint64_t epoch) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    std::uint64_t v = claim_.load(std::memory_order_acquire);
    while ((v >> 32) == epoch && (v & kIndexMask) != 0) {
      if (claim_.compare_exchange_weak(v, epoch << 32, std::memory_order_acq_rel)) {
        done_.fetch_add(static_cast<Index>(v & kIndexMask), std::memory_order_acq_rel);
        break;
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true);
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  void work(int slot) {
    std::uint64_t seen = 0;  // the last epoch this worker looked at
    for (;;) {
      std::uint64_t epoch = claim_.load() >> 32;
      Clock::time_point start = Clock::now();
      for (unsigned spin = 0; epoch == seen && !stop_.load(std::memory_order_relaxed); ++spin) {
        if (!spun(spin, start, kIdleSpin)) {
          relax();
        } else if (!spun(spin, start, kIdleYield)) {
          std::this_thread::yield();
        } else {
          // sleepers_ and claim_ are sequentially consistent on both sides: either run() sees
          // this sleeper and notifies under the lock, or this check sees the new epoch.
          std::unique_lock<std::mutex> lock(mutex_);
          ++sleepers_;
          wake_.wait(lock, [&] { return (claim_.load() >> 32) != seen || stop_.load(); });
          --sleepers_;
          start = Clock::now();
        }
        epoch = claim_.load() >> 32;
      }
      if (stop_.load()) return;
      seen = epoch;
      if (slot < threads_.load(std::memory_order_relaxed)) take_items(epoch, slot);
    }
  }

  std::vector<std::thread> workers_;
  std::atomic<std::uint64_t> claim_{0};  // epoch << 32 | items not yet claimed
  std::uint64_t epoch_ = 0;              // the caller's copy of the current epoch
  std::atomic<ItemFn> fn_{nullptr};
  std::atomic<void*> body_{nullptr};
  std::atomic<Index> base_{0};
  std::atomic<Index> n_{0};
  std::atomic<int> threads_{0};
  std::atomic<Index> done_{0};
  std::atomic<bool> busy_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;  // guards error_, and the sleep of idle workers
  std::condition_variable wake_;
  std::exception_ptr error_;
};

/// Names `pool` for gsq's parallel loops on this thread until the scope ends (scopes nest).
class ThreadPoolScope {
 public:
  explicit ThreadPoolScope(ThreadPool& pool) noexcept : previous_(ThreadPool::current()) {
    ThreadPool::current() = &pool;
  }
  ThreadPoolScope(const ThreadPoolScope&) = delete;
  ThreadPoolScope& operator=(const ThreadPoolScope&) = delete;
  ~ThreadPoolScope() { ThreadPool::current() = previous_; }

 private:
  ThreadPool* previous_;
};

}  // namespace gsq
