// thread_pool.cpp: README "Choosing the instruction set", threads: gsq's loops on a ThreadPool
// that the caller owns and names for a scope, with the same bits as on one thread.
#include <gsq/gsq.hpp>

#include <vector>

#include "snippet.hpp"

namespace {

constexpr gsq::Index kM = 256, kK = 512, kN = 384;

/// C = A * B through gsq's GSE-INT8 quantization and integer matmul, on `threads` threads.
std::vector<float> product(const std::vector<float>& a, const std::vector<float>& b, int threads) {
  const auto aq =
      gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(a.data(), kM, kK), gsq::Axis::kCols);
  const auto bq =
      gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(b.data(), kK, kN), gsq::Axis::kRows);
  std::vector<float> c(static_cast<std::size_t>(kM * kN));
  gsq::MatmulOptions options;
  options.threads = threads;
  gsq::matmul(aq.view(), bq.view(), gsq::MatrixRef<float>::row_major(c.data(), kM, kN), 1.0f,
              0.0f, options);
  return c;
}

}  // namespace

int main() {
  snippet::Checks check("thread_pool");
  const std::vector<float> a = snippet::normal(kM * kK, 51), b = snippet::normal(kK * kN, 52);
  const std::vector<float> alone = product(a, b, 1);
  {
    // clang-format off
    // [readme]
    gsq::ThreadPool pool(2);           // this thread and one worker, owned by you
    gsq::ThreadPoolScope use(pool);    // gsq's loops on this thread now run on the pool
    // [/readme]
    // clang-format on
    check(gsq::ThreadPool::current() == &pool, "the pool is in scope");
    check(product(a, b, 2) == alone, "a matmul on the pool gives the bits of one thread");
  }
  check(gsq::ThreadPool::current() == nullptr, "the scope has ended");
  return check.exit_code();
}
