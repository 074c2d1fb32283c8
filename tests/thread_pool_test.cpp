// Tests of gsq::ThreadPool (thread_pool.hpp) and of detail::parallel_for_slots on it.
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/parallel.hpp"
#include "gsq/thread_pool.hpp"

namespace {

/// Runs n items on `pool` with `threads`, and checks that each ran exactly once on a slot below
/// min(threads, pool size).
void check_every_item_once(gsq::ThreadPool& pool, gsq::Index n, int threads) {
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
  std::atomic<int> bad_slot{0};
  const int slots = std::min(threads, pool.size());
  auto body = [&](gsq::Index i, int slot) {
    runs[static_cast<std::size_t>(i)].fetch_add(1);
    if (slot < 0 || slot >= slots) bad_slot.fetch_add(1);
  };
  pool.run(n, threads, body);
  int wrong = 0;
  for (const auto& r : runs) wrong += r.load() != 1;
  CHECK(wrong == 0);
  CHECK(bad_slot.load() == 0);
}

}  // namespace

TEST_CASE("ThreadPool runs every item exactly once, on slots below the thread count",
          "[thread_pool]") {
  for (int size : {1, 2, 3, 4}) {
    gsq::ThreadPool pool(size);
    CHECK(pool.size() == size);
    for (gsq::Index n : {0, 1, 2, 7, 64, 1000, 100000}) {
      for (int threads : {1, 2, 3, 8}) {
        INFO("pool of " << size << ", " << n << " items, " << threads << " threads");
        check_every_item_once(pool, n, threads);
      }
    }
  }
}

TEST_CASE("ThreadPool: many short loops in a row, as a training step runs them",
          "[thread_pool]") {
  gsq::ThreadPool pool(3);
  std::vector<long> sums(20000);
  for (std::size_t loop = 0; loop < sums.size(); ++loop) {
    std::vector<long> part(17, 0);
    auto body = [&](gsq::Index i, int) { part[static_cast<std::size_t>(i)] = i * (i + 1); };
    pool.run(static_cast<gsq::Index>(part.size()), 3, body);
    for (long x : part) sums[loop] += x;
  }
  long expected = 0;
  for (long i = 0; i < 17; ++i) expected += i * (i + 1);
  int wrong = 0;
  for (long s : sums) wrong += s != expected;
  CHECK(wrong == 0);
}

TEST_CASE("ThreadPool rethrows an item's exception after the claimed items finish",
          "[thread_pool]") {
  gsq::ThreadPool pool(2);
  std::atomic<int> ran{0};
  auto body = [&](gsq::Index i, int) {
    ran.fetch_add(1);
    if (i == 5) throw std::runtime_error("item 5 failed");
  };
  CHECK_THROWS_WITH(pool.run(1000, 2, body), "item 5 failed");
  CHECK(ran.load() >= 6 - 1);  // at least item 5 itself and some before it (order is free)
  CHECK(ran.load() <= 1000);
  // The pool is usable afterwards.
  check_every_item_once(pool, 500, 2);
}

TEST_CASE("ThreadPool: a loop inside an item runs on that item's thread", "[thread_pool]") {
  gsq::ThreadPool pool(2);
  std::vector<std::atomic<int>> inner(64 * 8);
  std::atomic<int> pooled{0};  // nested items that ran on another slot than 0 (Catch's macros
                               // are not thread-safe: checked once the loop is over)
  auto outer = [&](gsq::Index i, int) {
    auto body = [&](gsq::Index j, int slot) {
      if (slot != 0) pooled.fetch_add(1);  // inline: the nested loop does not use the pool
      inner[static_cast<std::size_t>(i * 8 + j)].fetch_add(1);
    };
    pool.run(8, 2, body);
  };
  pool.run(64, 2, outer);
  int wrong = 0;
  for (const auto& r : inner) wrong += r.load() != 1;
  CHECK(wrong == 0);
  CHECK(pooled.load() == 0);
}

TEST_CASE("parallel_for_slots uses the pool in scope on this thread, and only there",
          "[thread_pool]") {
  gsq::ThreadPool pool(2);
  std::atomic<int> worker_items{0}, bad_slot{0};
  const std::thread::id caller = std::this_thread::get_id();
  auto count = [&](gsq::Index, int slot) {
    if (std::this_thread::get_id() != caller) worker_items.fetch_add(1);
    if (slot < 0 || slot >= 2) bad_slot.fetch_add(1);
  };
  {
    gsq::ThreadPoolScope use(pool);
    CHECK(gsq::detail::resolve_threads(0) == 2);
    CHECK(gsq::ThreadPool::current() == &pool);
    // Items long enough that the worker (spinning, yielding or woken) claims some; on a loaded
    // machine it may miss a loop, so the loop repeats until it has taken part, at most 200 times.
    std::vector<double> sink(4000, 0.0);
    for (int round = 0; round < 200 && worker_items.load() == 0; ++round) {
      gsq::detail::parallel_for_slots(4000, 2, [&](gsq::Index i, int slot) {
        count(i, slot);
        double x = 1.0;
        for (int k = 0; k < 2000; ++k) x = x * 1.0000001 + 1e-9;
        sink[static_cast<std::size_t>(i)] = x;
      });
    }
  }
  CHECK(gsq::ThreadPool::current() == nullptr);
  CHECK(worker_items.load() > 0);
  CHECK(bad_slot.load() == 0);
}
