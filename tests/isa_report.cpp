// isa_report.cpp: which kernels this build dispatches to on this CPU, with proof that they ran.
//
//   isa_report [expected-matmul-isa expected-conversion-isa]
//
// Prints one line, e.g. "matmul: neon-dotprod, conversion: neon (both ran; bit-identical to the
// scalar reference)", after running the chosen conversion and matmul kernels on a small problem
// with partial groups and edge tiles and comparing them bit for bit with the scalar reference.
// Exits non-zero when a kernel differs from the reference or an ISA differs from the expected one.
// With GSQ_ISA_REPORT_FILE set and not empty, it also writes that line to the named file.
// ctest runs it natively, under GSQ_ISA caps and under qemu-aarch64 (tests/CMakeLists.txt).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <gsq/detail/rng.hpp>
#include <gsq/gsq.hpp>
#include <string>
#include <vector>

namespace {

template <int Bits>
bool same_tensor(const gsq::GseTensor<Bits, 32>& x, const gsq::GseTensor<Bits, 32>& y) {
  const auto vx = x.view();
  const auto vy = y.view();
  if (x.offset() != y.offset() || vx.lines() != vy.lines()) return false;
  const auto codes = static_cast<std::size_t>(vx.lines() * vx.padded_length());
  const auto exps = static_cast<std::size_t>(vx.lines() * vx.groups_per_line());
  return std::memcmp(vx.line_codes(0), vy.line_codes(0), codes) == 0 &&
         std::memcmp(vx.line_exponents(0), vy.line_exponents(0), exps) == 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 1 && argc != 3) {
    std::fprintf(stderr, "usage: %s [expected-matmul-isa expected-conversion-isa]\n", argv[0]);
    return 2;
  }
  const gsq::Isa matmul_isa = gsq::matmul_isa();
  const gsq::Isa conversion_isa = gsq::conversion_isa();

  // Shapes that leave partial groups (K = 100) and partial register tiles (M = 13, N = 21).
  constexpr gsq::Index kM = 13, kK = 100, kN = 21;
  gsq::detail::Rng rng(7);
  std::vector<float> a(kM * kK), b(kK * kN);
  for (float& v : a) v = rng.normal();
  for (float& v : b) v = rng.normal();
  const auto a_ref = gsq::MatrixRef<const float>::row_major(a.data(), kM, kK);
  const auto b_ref = gsq::MatrixRef<const float>::row_major(b.data(), kK, kN);

  // Conversion: the dispatched kernel against the scalar one, along both axes.
  gsq::QuantizeOptions best;
  best.isa = conversion_isa;
  gsq::QuantizeOptions scalar;
  scalar.isa = gsq::Isa::kScalar;
  const auto qa = gsq::quantize<8>(a_ref, gsq::Axis::kCols, best);
  const auto qb = gsq::quantize<4>(b_ref, gsq::Axis::kRows, best);
  const bool conversion_ok = same_tensor(qa, gsq::quantize<8>(a_ref, gsq::Axis::kCols, scalar)) &&
                             same_tensor(qb, gsq::quantize<4>(b_ref, gsq::Axis::kRows, scalar));

  // Matmul: the dispatched kernel against the scalar one.
  std::vector<float> c_best(kM * kN), c_scalar(kM * kN);
  gsq::MatmulOptions mm;
  mm.isa = matmul_isa;
  mm.threads = 1;
  gsq::matmul(qa.view(), qb.view(), gsq::MatrixRef<float>::row_major(c_best.data(), kM, kN), 1.0f,
              0.0f, mm);
  mm.isa = gsq::Isa::kScalar;
  gsq::matmul(qa.view(), qb.view(), gsq::MatrixRef<float>::row_major(c_scalar.data(), kM, kN), 1.0f,
              0.0f, mm);
  const bool matmul_ok = std::memcmp(c_best.data(), c_scalar.data(), c_best.size() * 4) == 0;

  const bool ok = conversion_ok && matmul_ok;
  const std::string line = std::string("matmul: ") + gsq::to_string(matmul_isa) +
                           ", conversion: " + gsq::to_string(conversion_isa) + " (" +
                           (ok ? "both ran; bit-identical to the scalar reference"
                               : "ran; DIFFERS from the scalar reference") +
                           ")\n";
  std::fputs(line.c_str(), stdout);
  // The same line into GSQ_ISA_REPORT_FILE when set, for ./run.sh test's summary.
  const char* report_file = std::getenv("GSQ_ISA_REPORT_FILE");
  if (report_file != nullptr && *report_file != '\0') {
    std::ofstream out(report_file);
    out << line;
    out.close();
    if (!out) {
      std::printf("error: cannot write GSQ_ISA_REPORT_FILE %s\n", report_file);
      return 1;
    }
  }
  std::printf("cpu_supports:");
  for (gsq::Isa isa : {gsq::Isa::kScalar, gsq::Isa::kAvx2, gsq::Isa::kAvx512, gsq::Isa::kAvx512Vnni,
                       gsq::Isa::kNeon, gsq::Isa::kNeonDot}) {
    if (gsq::cpu_supports(isa)) std::printf(" %s", gsq::to_string(isa));
  }
  std::printf("\n");
  if (!conversion_ok)
    std::printf("error: the %s conversion kernel differs\n", gsq::to_string(conversion_isa));
  if (!matmul_ok) std::printf("error: the %s matmul kernel differs\n", gsq::to_string(matmul_isa));

  bool expected = true;
  if (argc == 3) {
    if (std::string(argv[1]) != gsq::to_string(matmul_isa)) {
      std::printf("error: expected matmul ISA %s, got %s\n", argv[1], gsq::to_string(matmul_isa));
      expected = false;
    }
    if (std::string(argv[2]) != gsq::to_string(conversion_isa)) {
      std::printf("error: expected conversion ISA %s, got %s\n", argv[2],
                  gsq::to_string(conversion_isa));
      expected = false;
    }
  }
  return ok && expected ? 0 : 1;
}
