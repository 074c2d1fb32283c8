// eigen.cpp: README "Quick start", Eigen interop: quantize Eigen matrices, blocks and maps in
// place, whatever their storage order, and read the values back as an Eigen matrix.
// [readme]
#include <gsq/eigen.hpp>  // the only gsq header that includes Eigen
#include <gsq/gsq.hpp>
// [/readme]

#include <vector>

#include "snippet.hpp"

namespace {

/// True when a and b hold the same codes, group exponents and offset.
template <int Bits>
bool same(const gsq::GseTensor<Bits>& a, const gsq::GseTensor<Bits>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.axis() != b.axis() ||
      a.offset() != b.offset())
    return false;
  for (gsq::Index i = 0; i < a.rows(); ++i) {
    for (gsq::Index j = 0; j < a.cols(); ++j) {
      if (a.code(i, j) != b.code(i, j) || a.value(i, j) != b.value(i, j)) return false;
    }
  }
  return true;
}

}  // namespace

int main() {
  snippet::Checks check("eigen");
  const std::vector<float> data = snippet::normal(128 * 96, 41);
  const Eigen::MatrixXf m = Eigen::Map<const Eigen::MatrixXf>(data.data(), 128, 96);
  const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;

  // clang-format off
  // [readme]
  // m: an Eigen::MatrixXf (column-major), r: the same values in a row-major Eigen matrix
  auto q = gsq::quantize<8>(m, gsq::Axis::kRows);                // read in place, no copy
  auto top = gsq::quantize<8>(m.topRows(64), gsq::Axis::kCols);  // a Block: in place too
  auto qr = gsq::quantize<8>(r, gsq::Axis::kRows);               // any storage order: same codes
  Eigen::MatrixXf back = gsq::to_eigen(q);                       // the values, exactly
  // [/readme]
  // clang-format on

  const std::vector<float> col_major(m.data(), m.data() + m.size());
  const auto want = gsq::quantize<8>(
      gsq::MatrixRef<const float>::col_major(col_major.data(), 128, 96), gsq::Axis::kRows);
  check(same(q, want), "quantize(m) equals quantizing the same column-major data");
  const Eigen::MatrixXf top_copy = m.topRows(64);
  check(same(top, gsq::quantize<8>(top_copy, gsq::Axis::kCols)),
        "quantize(m.topRows(64)) equals quantizing a copy of the block");
  check(same(qr, q), "a row-major matrix gives the same tensor as the column-major one");
  bool exact = back.rows() == q.rows() && back.cols() == q.cols();
  for (gsq::Index i = 0; exact && i < q.rows(); ++i) {
    for (gsq::Index j = 0; j < q.cols(); ++j) exact = exact && back(i, j) == q.value(i, j);
  }
  check(exact, "to_eigen(q) holds q's values");
  return check.exit_code();
}
