// eigen_test.cpp: Eigen Matrix / Map / Ref / Block in, Eigen matrices out.
#include "catch.hpp"

#if GSQ_HAVE_EIGEN
#include "gsq/eigen.hpp"

using gsq::Axis;

TEST_CASE("Eigen inputs of any storage order quantize like the raw data", "[eigen]") {
  const Eigen::MatrixXf m = Eigen::MatrixXf::Random(37, 70);  // column-major
  const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;
  for (Axis axis : {Axis::kCols, Axis::kRows}) {
    const auto a = gsq::quantize<8>(m, axis);
    const auto b = gsq::quantize<8>(r, axis);
    const Eigen::Ref<const Eigen::MatrixXf> ref = m;
    const auto c = gsq::quantize<8>(ref, axis);
    const Eigen::Map<const Eigen::MatrixXf> map(m.data(), m.rows(), m.cols());
    const auto d = gsq::quantize<8>(map, axis);
    const auto e = gsq::quantize<8>((2.0f * m).transpose().transpose(), axis);  // an expression
    const auto raw =
        gsq::quantize<8>(gsq::MatrixRef<const float>::col_major(m.data(), 37, 70), axis);
    REQUIRE(e.offset() == raw.offset() + 1);
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      for (Eigen::Index j = 0; j < m.cols(); ++j) {
        REQUIRE(a.code(i, j) == raw.code(i, j));
        REQUIRE(b.code(i, j) == raw.code(i, j));
        REQUIRE(c.code(i, j) == raw.code(i, j));
        REQUIRE(d.code(i, j) == raw.code(i, j));
        REQUIRE(e.code(i, j) == raw.code(i, j));
      }
    }
    const Eigen::MatrixXf back = gsq::to_eigen(a);
    const auto back_rm = gsq::to_eigen<Eigen::RowMajor>(a);
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      for (Eigen::Index j = 0; j < m.cols(); ++j) {
        REQUIRE(back(i, j) == a.value(i, j));
        REQUIRE(back_rm(i, j) == a.value(i, j));
      }
    }
    // |m| < 1, so s <= -7: half a step bounds the error, or one step where x > 127.5 * 2^-7
    // rounds up and saturates.
    const Eigen::MatrixXf err = (back - m).cwiseAbs();
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      for (Eigen::Index j = 0; j < m.cols(); ++j) {
        const bool saturated = std::fabs(m(i, j)) > 127.5f / 128;
        REQUIRE(err(i, j) <= std::ldexp(1.0f, saturated ? -7 : -8));
      }
    }
  }
}

TEST_CASE("a block of a larger matrix is read in place with its strides", "[eigen]") {
  const Eigen::MatrixXf big = Eigen::MatrixXf::Random(100, 90);
  const auto block = big.block(3, 5, 40, 33);
  const auto t = gsq::quantize<6, 16>(block, Axis::kRows);
  const Eigen::MatrixXf copy = block;
  const auto u = gsq::quantize<6, 16>(copy, Axis::kRows);
  for (Eigen::Index i = 0; i < copy.rows(); ++i) {
    for (Eigen::Index j = 0; j < copy.cols(); ++j) REQUIRE(t.code(i, j) == u.code(i, j));
  }
}
#else
TEST_CASE("Eigen interop", "[eigen]") { GSQ_SKIP("Eigen was not found at configure time"); }
#endif
