// ternary.hpp: ternary matrices at 2 bits per value, the products of their rows by popcounts,
// and the markers of LoTA-QAF (nn/lota.hpp), which add those products to GSE codes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gsq/detail/check.hpp"
#include "gsq/tensor.hpp"

namespace gsq {

namespace detail {

inline int popcount64(std::uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  int n = 0;
  for (; v != 0; v &= v - 1) ++n;
  return n;
#endif
}

}  // namespace detail

/// A matrix of values in {-1, 0, +1} at 2 bits per value: two bit planes (plus, minus) over
/// the row-major values.
class TernaryMatrix {
 public:
  TernaryMatrix() = default;
  TernaryMatrix(Index rows, Index cols) : rows_(rows), cols_(cols) {
    GSQ_CHECK(rows >= 0 && cols >= 0, "TernaryMatrix: shape ", rows, "x", cols);
    // One word beyond the last value: chunk() may read the word after the one it starts in.
    const auto words = static_cast<std::size_t>((rows * cols + 63) / 64) + 1;
    plus_.assign(words, 0);
    minus_.assign(words, 0);
  }

  Index rows() const noexcept { return rows_; }
  Index cols() const noexcept { return cols_; }
  int get(Index r, Index c) const noexcept {
    const std::size_t k = pos(r, c);
    return static_cast<int>((plus_[k >> 6] >> (k & 63)) & 1u) -
           static_cast<int>((minus_[k >> 6] >> (k & 63)) & 1u);
  }
  void set(Index r, Index c, int v) {
    GSQ_CHECK(v >= -1 && v <= 1, "TernaryMatrix: value ", v, " is not in {-1, 0, 1}");
    const std::size_t k = pos(r, c);
    const std::uint64_t bit = std::uint64_t{1} << (k & 63);
    plus_[k >> 6] = v > 0 ? plus_[k >> 6] | bit : plus_[k >> 6] & ~bit;
    minus_[k >> 6] = v < 0 ? minus_[k >> 6] | bit : minus_[k >> 6] & ~bit;
  }
  /// Values [first, first + count) of row r, count <= 64, as masks: value first + j is bit j of
  /// `plus` if it is +1, of `minus` if it is -1.
  void chunk(Index r, Index first, int count, std::uint64_t& plus,
             std::uint64_t& minus) const noexcept {
    const std::size_t k = pos(r, first);
    plus = bits(plus_, k, count);
    minus = bits(minus_, k, count);
  }
  /// The values as int8, row-major.
  std::vector<std::int8_t> to_int8() const {
    std::vector<std::int8_t> out(static_cast<std::size_t>(rows_ * cols_));
    for (Index r = 0; r < rows_; ++r) {
      for (Index c = 0; c < cols_; ++c)
        out[static_cast<std::size_t>(r * cols_ + c)] = static_cast<std::int8_t>(get(r, c));
    }
    return out;
  }
  bool all_zero() const noexcept {
    for (std::size_t w = 0; w < plus_.size(); ++w) {
      if ((plus_[w] | minus_[w]) != 0) return false;
    }
    return true;
  }
  void clear() noexcept {
    std::fill(plus_.begin(), plus_.end(), std::uint64_t{0});
    std::fill(minus_.begin(), minus_.end(), std::uint64_t{0});
  }
  /// Storage held by the planes: 2 bits per value plus at most 16 bytes.
  std::size_t bytes() const noexcept {
    return (plus_.size() + minus_.size()) * sizeof(std::uint64_t);
  }

 private:
  std::size_t pos(Index r, Index c) const noexcept {
    return static_cast<std::size_t>(r * cols_ + c);
  }
  static std::uint64_t bits(const std::vector<std::uint64_t>& plane, std::size_t k,
                            int count) noexcept {
    const std::size_t w = k >> 6;
    const unsigned off = k & 63;
    std::uint64_t v = plane[w] >> off;
    if (off != 0) v |= plane[w + 1] << (64 - off);
    return count >= 64 ? v : v & ((std::uint64_t{1} << count) - 1);
  }

  Index rows_ = 0, cols_ = 0;
  std::vector<std::uint64_t> plus_, minus_;
};

/// A ternary tensor and its gradient (row-major over the tensor): what a ternary layer hands to
/// its optimizer (TSignSgd, optim/tsign_sgd.hpp).
template <typename T>
struct TernaryParameter {
  TernaryMatrix* value;
  const T* grad;
};

/// The rows of a TernaryMatrix as chunks of 64 values, plus and minus masks (row r, chunk c at
/// r * chunks() + c), so that the dot product of two rows costs popcounts: 2 bits per value
/// make the product of ternary matrices an integer computation on words.
class TernaryRows {
 public:
  explicit TernaryRows(const TernaryMatrix& m) : chunks_((m.cols() + 63) / 64) {
    plus_.resize(static_cast<std::size_t>(m.rows() * chunks_));
    minus_.resize(plus_.size());
    for (Index r = 0; r < m.rows(); ++r) {
      for (Index c = 0; c < chunks_; ++c) {
        const auto k = static_cast<std::size_t>(r * chunks_ + c);
        m.chunk(r, c * 64, static_cast<int>(std::min<Index>(64, m.cols() - c * 64)), plus_[k],
                minus_[k]);
      }
    }
  }

  Index chunks() const noexcept { return chunks_; }

  /// Whether row r is all zeros.
  bool zero(Index r) const noexcept {
    for (Index c = 0; c < chunks_; ++c) {
      if ((plus_[at(r, c)] | minus_[at(r, c)]) != 0) return false;
    }
    return true;
  }

  /// sum_k this(r, k) * other(s, k), for matrices of the same width: the count of equal signs
  /// minus the count of opposite signs.
  int dot(Index r, const TernaryRows& other, Index s) const noexcept {
    int sum = 0;
    for (Index c = 0; c < chunks_; ++c) {
      const std::uint64_t xp = plus_[at(r, c)], xm = minus_[at(r, c)];
      const std::uint64_t yp = other.plus_[other.at(s, c)], ym = other.minus_[other.at(s, c)];
      sum += detail::popcount64((xp & yp) | (xm & ym)) - detail::popcount64((xp & ym) | (xm & yp));
    }
    return sum;
  }

 private:
  std::size_t at(Index r, Index c) const noexcept {
    return static_cast<std::size_t>(r * chunks_ + c);
  }

  Index chunks_;
  std::vector<std::uint64_t> plus_, minus_;
};

/// The LoTA-QAF marker of one weight: +1 where dw > omega and the code can grow (code < qmax),
/// -1 where dw < -omega and it can shrink (code > -qmax), else 0, so that code + marker stays in
/// the symmetric range [-qmax, qmax].
constexpr int ternary_marker(int dw, int omega, int code, int qmax) noexcept {
  return static_cast<int>(dw > omega && code < qmax) -
         static_cast<int>(dw < -omega && code > -qmax);
}

}  // namespace gsq
