// Tests of gsq::ThreadPool (thread_pool.hpp) and of detail::parallel_for_slots on it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
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
  std::vector<long> sums(3000);
  for (std::size_t loop = 0; loop < sums.size(); ++loop) {
    std::vector<long> part(17, 0);
    auto body = [&](gsq::Index i, int) { part[static_cast<std::size_t>(i)] = i * (i + 1); };
    pool.run(static_cast<gsq::Index>(part.size()), 3, body);
    for (long x : part) sums[loop] += x;
  }
  long expected = 0;
  for (long i = 0; i < 17; ++i) expected += i * (i + 1);
  // (Whether workers took part in these is up to the scheduler; the tests below make sure.)
  int wrong = 0;
  for (long s : sums) wrong += s != expected;
  CHECK(wrong == 0);
}

TEST_CASE("ThreadPool rethrows an item's exception after the claimed items finish",
          "[thread_pool]") {
  gsq::ThreadPool pool(2);
  // On the caller's slot: the caller claims the first run of items itself.
  auto on_caller = [&](gsq::Index i, int) {
    if (i == 5) throw std::runtime_error("item 5 failed");
  };
  CHECK_THROWS_WITH(pool.run(1000, 2, on_caller), "item 5 failed");
  check_every_item_once(pool, 500, 2);  // usable afterwards
  // On the worker's slot: repeated until the worker took part in a loop (it may be off its
  // core for a whole loop on a busy machine), slow items so that it does.
  int thrown = 0;
  for (int round = 0; round < 200 && thrown == 0; ++round) {
    auto on_worker = [&](gsq::Index, int slot) {
      volatile double x = 1.0;
      for (int k = 0; k < 2000; ++k) x = x * 1.0000001;
      if (slot != 0) throw std::runtime_error("a worker's item failed");
    };
    try {
      pool.run(400, 2, on_worker);
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "a worker's item failed");
      ++thrown;
    }
  }
  CHECK(thrown == 1);
  check_every_item_once(pool, 500, 2);
}

TEST_CASE("ThreadPool: threads <= 1 runs on the caller; pools of one and of the default size",
          "[thread_pool]") {
  gsq::ThreadPool pool(3);
  for (int threads : {-1, 0, 1}) {
    std::vector<int> slots;
    auto body = [&](gsq::Index, int slot) { slots.push_back(slot); };  // no race: one thread
    pool.run(50, threads, body);
    CHECK(slots == std::vector<int>(50, 0));
  }
  gsq::ThreadPool one(1);
  CHECK(one.size() == 1);
  check_every_item_once(one, 100, 4);
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  gsq::ThreadPool automatic;  // threads <= 0: one per hardware thread
  CHECK(automatic.size() == hardware);
  CHECK(gsq::ThreadPool(-3).size() == hardware);
  check_every_item_once(automatic, 100, hardware);
}

TEST_CASE("ThreadPool: sleeping workers wake for the next loop, and a pool of sleepers ends",
          "[thread_pool]") {
  gsq::ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> worker_items{0};
  auto body = [&](gsq::Index, int) {
    volatile double x = 1.0;
    for (int k = 0; k < 2000; ++k) x = x * 1.0000001;
    if (std::this_thread::get_id() != caller) worker_items.fetch_add(1);
  };
  // Each loop after 5 ms idle, past the workers' spinning and yielding (2 ms): they sleep, and
  // run() must wake them; repeated until a woken worker has taken part.
  for (int round = 0; round < 100 && worker_items.load() == 0; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    pool.run(400, 2, body);
  }
  CHECK(worker_items.load() > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // destroyed while asleep
}

TEST_CASE("ThreadPool: a short loop, then a long one, many times: no item of one runs in the other",
          "[thread_pool]") {
  // A regression test: the claim counter once held the next item's index, and a worker that
  // read the next loop's item count while the caller was publishing it could claim against the
  // exhausted counter of the loop before (found by the two-caller test below under ASan).
  gsq::ThreadPool pool(3);
  int wrong = 0;
  for (int loop = 0; loop < 3000; ++loop) {
    const gsq::Index n = loop % 2 == 0 ? 3 : 90;
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
    std::atomic<int> out_of_range{0};
    auto body = [&](gsq::Index i, int) {
      if (i < 0 || i >= n) {
        out_of_range.fetch_add(1);
        return;
      }
      runs[static_cast<std::size_t>(i)].fetch_add(1);
    };
    pool.run(n, 3, body);
    for (const auto& r : runs) wrong += r.load() != 1;
    wrong += out_of_range.load();
  }
  CHECK(wrong == 0);
}

TEST_CASE("ThreadPool: loops from two threads at once each run every item once",
          "[thread_pool]") {
  gsq::ThreadPool pool(3);
  auto loops = [&pool](int seed, int& wrong) {
    for (int loop = 0; loop < 500; ++loop) {
      const gsq::Index n = 1 + (loop * 7 + seed) % 97;
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
      auto body = [&](gsq::Index i, int) { runs[static_cast<std::size_t>(i)].fetch_add(1); };
      pool.run(n, 3, body);  // the second caller runs alone while the pool is busy
      for (const auto& r : runs) wrong += r.load() != 1;
    }
  };
  int wrong_a = 0, wrong_b = 0;
  std::thread other(loops, 1, std::ref(wrong_b));
  loops(2, wrong_a);
  other.join();
  CHECK(wrong_a == 0);
  CHECK(wrong_b == 0);
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
