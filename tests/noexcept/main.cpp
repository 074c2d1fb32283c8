// main.cpp: gsq in a program built with -fno-exceptions. Valid calls work; a failed public
// precondition (here a matmul shape mismatch) prints "gsq: <message> (file:line)" to stderr and
// aborts (include/gsq/detail/check.hpp). cmake/RunAbortTest.cmake checks both.
#include <cstdio>
#include <gsq/gsq.hpp>
#include <vector>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "tests/noexcept must be compiled with exceptions disabled (-fno-exceptions)"
#endif

int main() {
  std::vector<float> a(4 * 64, 0.5f), b(64 * 8, -0.25f), c(4 * 8, 0.0f);
  const auto qa =
      gsq::quantize<8>(gsq::MatrixRef<const float>::row_major(a.data(), 4, 64), gsq::Axis::kCols);
  const auto qb =
      gsq::quantize<4>(gsq::MatrixRef<const float>::row_major(b.data(), 64, 8), gsq::Axis::kRows);
  gsq::matmul(qa.view(), qb.view(), gsq::MatrixRef<float>::row_major(c.data(), 4, 8));
  // 64 values of 0.5 * -0.25, exactly representable at every step.
  if (c[0] != -8.0f) {
    std::printf("wrong product %g, expected -8\n", static_cast<double>(c[0]));
    return 3;
  }
  std::printf("valid calls: ok\n");
  std::fflush(stdout);

  // A is 4 x 64 but B^T's view is 8 x 64: the inner dimensions differ, so GSQ_CHECK aborts.
  gsq::matmul(qa.view(), qb.view().transposed(), gsq::MatrixRef<float>::row_major(c.data(), 4, 64));
  std::printf("error: the mismatched matmul returned\n");
  return 0;
}
