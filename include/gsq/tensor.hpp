// tensor.hpp: GseTensor (owning, int8 codes for compute), GseView (non-owning) and
// PackedGseTensor (Bits per value, for storage); MatrixRef for plain strided matrices.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gsq/detail/aligned.hpp"
#include "gsq/detail/check.hpp"
#include "gsq/format.hpp"
#include "gsq/kernels/quantize_scalar.hpp"

namespace gsq {

/// A non-owning strided matrix: element (i, j) is data[i * row_stride + j * col_stride].
template <typename T>
struct MatrixRef {
  T* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  Index row_stride = 0;
  Index col_stride = 1;

  /// Row-major storage with leading dimension ld (default: cols).
  static MatrixRef row_major(T* data, Index rows, Index cols, Index ld = -1) noexcept {
    return {data, rows, cols, ld < 0 ? cols : ld, 1};
  }
  /// Column-major storage with leading dimension ld (default: rows).
  static MatrixRef col_major(T* data, Index rows, Index cols, Index ld = -1) noexcept {
    return {data, rows, cols, 1, ld < 0 ? rows : ld};
  }

  T& operator()(Index i, Index j) const noexcept { return data[i * row_stride + j * col_stride]; }
  operator MatrixRef<const T>() const noexcept {  // NOLINT: mutable to const, like a pointer
    return {data, rows, cols, row_stride, col_stride};
  }
};

/// Shape of a GSE tensor's lines: how many, how long, and how they are padded into groups.
struct GseShape {
  Index rows = 0;
  Index cols = 0;
  Axis axis = Axis::kCols;

  /// Number of lines (rows for Axis::kCols, columns for Axis::kRows).
  Index lines() const noexcept { return axis == Axis::kCols ? rows : cols; }
  /// Logical values per line.
  Index length() const noexcept { return axis == Axis::kCols ? cols : rows; }
  /// Line of element (i, j) and its position within the line.
  Index line_of(Index i, Index j) const noexcept { return axis == Axis::kCols ? i : j; }
  Index pos_of(Index i, Index j) const noexcept { return axis == Axis::kCols ? j : i; }
  /// Row and column of position `pos` of line `line`.
  Index row_of(Index line, Index pos) const noexcept { return axis == Axis::kCols ? line : pos; }
  Index col_of(Index line, Index pos) const noexcept { return axis == Axis::kCols ? pos : line; }
};

template <int Bits, int GroupSize>
class GseTensor;

/// A read-only view of a GSE tensor's compute form: line-major int8 codes, each line padded with
/// zero codes to groups_per_line() * GroupSize, and one exponent byte per group.
template <int Bits, int GroupSize = 32>
class GseView {
 public:
  using Format = GseFormat<Bits, GroupSize>;

  GseView() = default;

  /// Wraps caller-owned parts laid out as GseTensor lays them out, after checking every field
  /// against the format: |code| <= kQMax, padding codes zero, E <= 31, offset in
  /// [kMinOffset, kMaxOffset].  Throws std::invalid_argument naming the first bad field.
  /// Cost: one read of the codes and exponents.
  static GseView checked(const std::int8_t* codes, const std::uint8_t* exponents, Index rows,
                         Index cols, Axis axis, int offset) {
    GSQ_CHECK(rows >= 0 && cols >= 0, "GseView: negative shape ", rows, "x", cols);
    GSQ_CHECK(offset >= Format::kMinOffset && offset <= Format::kMaxOffset,
              "GseView: exponent offset ", offset, " is outside [", Format::kMinOffset, ", ",
              Format::kMaxOffset, "]");
    GseView view(codes, exponents, GseShape{rows, cols, axis}, offset);
    GSQ_CHECK(view.lines() == 0 || view.length() == 0 || (codes != nullptr && exponents != nullptr),
              "GseView: null data for a ", rows, "x", cols, " tensor");
    for (Index line = 0; line < view.lines(); ++line) {
      const std::int8_t* c = view.line_codes(line);
      const std::uint8_t* e = view.line_exponents(line);
      for (Index g = 0; g < view.groups_per_line(); ++g) {
        GSQ_CHECK(e[g] <= kMaxGroupExponent, "GseView: group exponent ", int{e[g]}, " of line ",
                  line, ", group ", g, " exceeds the 5-bit field (0..31)");
      }
      for (Index p = 0; p < view.length(); ++p) {
        GSQ_CHECK(c[p] >= -Format::kQMax && c[p] <= Format::kQMax, "GseView: code ", int{c[p]},
                  " at line ", line, ", position ", p, " is outside the symmetric range +-",
                  Format::kQMax);
      }
      for (Index p = view.length(); p < view.padded_length(); ++p) {
        GSQ_CHECK(c[p] == 0, "GseView: padding code ", int{c[p]}, " at line ", line, ", position ",
                  p, " must be 0");
      }
    }
    return view;
  }

  Index rows() const noexcept { return shape_.rows; }
  Index cols() const noexcept { return shape_.cols; }
  Axis axis() const noexcept { return shape_.axis; }
  const GseShape& shape() const noexcept { return shape_; }
  Index lines() const noexcept { return shape_.lines(); }
  Index length() const noexcept { return shape_.length(); }
  Index groups_per_line() const noexcept { return (length() + GroupSize - 1) / GroupSize; }
  Index padded_length() const noexcept { return groups_per_line() * GroupSize; }
  Index size() const noexcept { return rows() * cols(); }
  bool empty() const noexcept { return size() == 0; }
  /// The tensor's exponent offset T.
  int offset() const noexcept { return offset_; }

  const std::int8_t* line_codes(Index line) const noexcept {
    return codes_ + line * padded_length();
  }
  const std::uint8_t* line_exponents(Index line) const noexcept {
    return exponents_ + line * groups_per_line();
  }
  /// The quantum s = T + E of the group holding position `pos` of line `line`.
  int quantum(Index line, Index pos) const noexcept {
    return offset_ + line_exponents(line)[pos / GroupSize];
  }
  std::int8_t code(Index i, Index j) const noexcept {
    return line_codes(shape_.line_of(i, j))[shape_.pos_of(i, j)];
  }
  /// The value of element (i, j), c * 2^(T + E), rounded once to float.
  float value(Index i, Index j) const noexcept {
    float v;
    const std::int8_t c = code(i, j);
    kernels::LineKernels<Isa::kScalar>::dequantize(
        &c, 1, quantum(shape_.line_of(i, j), shape_.pos_of(i, j)), &v);
    return v;
  }

  /// Lines [first, first + count) as a tensor of their own (a block of rows for Axis::kCols, of
  /// columns for Axis::kRows).
  GseView line_block(Index first, Index count) const {
    GSQ_CHECK(first >= 0 && count >= 0 && first + count <= lines(), "GseView::line_block: lines [",
              first, ", ", first + count, ") out of range for ", lines(), " lines");
    GseShape shape = shape_;
    (shape.axis == Axis::kCols ? shape.rows : shape.cols) = count;
    return GseView(line_codes(first), line_exponents(first), shape, offset_);
  }

  /// The transpose, free: the same lines, read as columns instead of rows or the other way
  /// round.  A T x in activation grouped along rows (tokens) is, transposed, an in x T matrix
  /// grouped along its columns: the left operand of dW = X^T * dY.
  GseView transposed() const noexcept {
    return GseView(
        codes_, exponents_,
        GseShape{shape_.cols, shape_.rows, shape_.axis == Axis::kCols ? Axis::kRows : Axis::kCols},
        offset_);
  }

 private:
  template <int, int>
  friend class GseTensor;
  GseView(const std::int8_t* codes, const std::uint8_t* exponents, GseShape shape,
          int offset) noexcept
      : codes_(codes), exponents_(exponents), shape_(shape), offset_(offset) {}

  const std::int8_t* codes_ = nullptr;
  const std::uint8_t* exponents_ = nullptr;
  GseShape shape_;
  int offset_ = 0;
};

/// An owning GSE tensor in compute form (see GseView for the layout).  A default or freshly
/// shaped tensor is all zeros.  quantize() (convert.hpp) fills one from float data.
template <int Bits, int GroupSize = 32>
class GseTensor {
 public:
  using Format = GseFormat<Bits, GroupSize>;
  using View = GseView<Bits, GroupSize>;

  GseTensor() = default;
  GseTensor(Index rows, Index cols, Axis axis) { reshape(rows, cols, axis); }

  /// Takes ownership of parts laid out as in GseView, checking them as GseView::checked does.
  static GseTensor from_parts(std::vector<std::int8_t> codes, std::vector<std::uint8_t> exponents,
                              Index rows, Index cols, Axis axis, int offset) {
    GseTensor t(rows, cols, axis);
    GSQ_CHECK(codes.size() == t.codes_.size() && exponents.size() == t.exponents_.size(),
              "GseTensor::from_parts: a ", rows, "x", cols, " tensor grouped along ",
              to_string(axis), " needs ", t.codes_.size(), " codes and ", t.exponents_.size(),
              " exponents, got ", codes.size(), " and ", exponents.size());
    View::checked(codes.data(), exponents.data(), rows, cols, axis, offset);
    std::copy(codes.begin(), codes.end(), t.codes_.begin());
    std::copy(exponents.begin(), exponents.end(), t.exponents_.begin());
    t.offset_ = offset;
    return t;
  }

  /// Sets the shape and zeroes the tensor, reusing storage when it is large enough.
  void reshape(Index rows, Index cols, Axis axis) {
    GSQ_CHECK(rows >= 0 && cols >= 0, "GseTensor: negative shape ", rows, "x", cols);
    shape_ = GseShape{rows, cols, axis};
    const View v = view();
    codes_.assign(static_cast<std::size_t>(v.lines() * v.padded_length()), 0);
    exponents_.assign(static_cast<std::size_t>(v.lines() * v.groups_per_line()), 0);
    offset_ = 0;
  }

  View view() const noexcept { return View(codes_.data(), exponents_.data(), shape_, offset_); }
  operator View() const noexcept { return view(); }  // NOLINT: a tensor is usable as its view

  Index rows() const noexcept { return shape_.rows; }
  Index cols() const noexcept { return shape_.cols; }
  Axis axis() const noexcept { return shape_.axis; }
  const GseShape& shape() const noexcept { return shape_; }
  int offset() const noexcept { return offset_; }
  std::int8_t code(Index i, Index j) const noexcept { return view().code(i, j); }
  float value(Index i, Index j) const noexcept { return view().value(i, j); }

  /// Storage actually held: the padded int8 codes, one byte per group exponent, and the object.
  std::size_t bytes() const noexcept {
    return sizeof(*this) + codes_.size() * sizeof(std::int8_t) + exponents_.size();
  }

  /// Low-level write access for conversion and matmul kernels.  Writers must keep the format's
  /// invariants (codes in range, padding zero, E <= 31, offset in range).
  std::int8_t* mutable_codes() noexcept { return codes_.data(); }
  std::uint8_t* mutable_exponents() noexcept { return exponents_.data(); }
  void set_offset(int offset) noexcept { offset_ = offset; }

 private:
  detail::AlignedVector<std::int8_t> codes_;
  std::vector<std::uint8_t> exponents_;
  GseShape shape_;
  int offset_ = 0;
};

/// The storage form: Bits per value and 5 bits per group exponent, bit-packed LSB-first into
/// 64-bit words.  Value k = line * length + pos (padding is not stored) occupies stream bits
/// [k * Bits, (k + 1) * Bits) as Bits-bit two's complement; the exponent stream starts at the next
/// word boundary, group k at bits [5k, 5k + 5).  pack() and unpack() are lossless inverses.
template <int Bits, int GroupSize = 32>
class PackedGseTensor {
 public:
  using Format = GseFormat<Bits, GroupSize>;

  PackedGseTensor() = default;

  static PackedGseTensor pack(const GseView<Bits, GroupSize>& src) {
    PackedGseTensor p;
    p.assign(src);
    return p;
  }

  /// Packs src into this tensor, reusing its storage when it is large enough (a layer's saved
  /// activations then cost no allocation from step to step).
  void assign(const GseView<Bits, GroupSize>& src) {
    PackedGseTensor& p = *this;
    p.shape_ = src.shape();
    p.offset_ = src.offset();
    p.words_.assign(p.code_words() + p.exponent_words(), 0);
    std::uint64_t* codes = p.words_.data();
    std::uint64_t* exps = codes + p.code_words();
    std::size_t k = 0;
    for (Index line = 0; line < src.lines(); ++line) {
      const std::int8_t* c = src.line_codes(line);
      Index pos = 0;
      if constexpr (Bits == 4 || Bits == 8) {
        if (little_endian() && (Bits == 8 || k % 2 == 0)) {  // whole bytes, as in unpack_into
          auto* bytes = reinterpret_cast<std::uint8_t*>(codes) + k * Bits / 8;
          if constexpr (Bits == 8) {
            for (; pos < src.length(); ++pos) bytes[pos] = static_cast<std::uint8_t>(c[pos]);
          } else {
            for (; pos + 1 < src.length(); pos += 2) {
              bytes[pos / 2] =
                  static_cast<std::uint8_t>((c[pos] & 0x0F) | ((c[pos + 1] & 0x0F) << 4));
            }
          }
          k += static_cast<std::size_t>(pos);
        }
      }
      for (; pos < src.length(); ++pos, ++k) {
        put(codes, k * Bits, Bits, static_cast<std::uint8_t>(c[pos]));
      }
    }
    k = 0;
    for (Index line = 0; line < src.lines(); ++line) {
      const std::uint8_t* e = src.line_exponents(line);
      for (Index g = 0; g < src.groups_per_line(); ++g, ++k)
        put(exps, k * kExponentBits, kExponentBits, e[g]);
    }
  }

  /// Rebuilds a packed tensor from its words (e.g. read from a file).  Checks the word count,
  /// the offset and every code, so a PackedGseTensor never holds the unused code -2^(Bits-1)
  /// and streaming readers (code_at, matmul's PackedStorageRhs) need not check.
  static PackedGseTensor from_words(std::vector<std::uint64_t> words, Index rows, Index cols,
                                    Axis axis, int offset) {
    GSQ_CHECK(rows >= 0 && cols >= 0, "PackedGseTensor: negative shape ", rows, "x", cols);
    GSQ_CHECK(offset >= Format::kMinOffset && offset <= Format::kMaxOffset,
              "PackedGseTensor: exponent offset ", offset, " is outside [", Format::kMinOffset,
              ", ", Format::kMaxOffset, "]");
    PackedGseTensor p;
    p.shape_ = GseShape{rows, cols, axis};
    p.offset_ = offset;
    GSQ_CHECK(words.size() == p.code_words() + p.exponent_words(), "PackedGseTensor: a ", rows, "x",
              cols, " tensor needs ", p.code_words() + p.exponent_words(), " words, got ",
              words.size());
    p.words_ = std::move(words);
    for (Index line = 0; line < p.lines(); ++line) {
      for (Index pos = 0; pos < p.length(); ++pos) {
        const int code = p.code_at(line, pos);
        GSQ_CHECK(code >= -Format::kQMax, "PackedGseTensor: corrupt code ", code, " at row ",
                  p.shape_.row_of(line, pos), ", column ", p.shape_.col_of(line, pos));
      }
    }
    return p;
  }

  /// Unpacks into compute form.  Throws std::invalid_argument if a code is the unused pattern
  /// -2^(Bits-1) (possible only in corrupt data).
  void unpack_into(GseTensor<Bits, GroupSize>& dst) const {
    dst.reshape(shape_.rows, shape_.cols, shape_.axis);
    const auto v = dst.view();
    const std::uint64_t* codes = words_.data();
    const std::uint64_t* exps = codes + code_words();
    std::size_t k = 0;
    for (Index line = 0; line < v.lines(); ++line) {
      std::int8_t* c = dst.mutable_codes() + line * v.padded_length();
      Index pos = 0;
      if constexpr (Bits == 4 || Bits == 8) {
        // Whole bytes (8 bits, or 2 nibbles from an even value index): the LSB-first word
        // stream is the little-endian byte stream, so read bytes directly.
        if (little_endian() && (Bits == 8 || k % 2 == 0)) {
          const auto* bytes = reinterpret_cast<const std::uint8_t*>(codes) + k * Bits / 8;
          int bad = 0;
          if constexpr (Bits == 8) {
            for (; pos < v.length(); ++pos) {
              c[pos] = static_cast<std::int8_t>(bytes[pos]);
              bad |= bytes[pos] == 0x80;
            }
          } else {
            for (; pos + 1 < v.length(); pos += 2) {
              const std::uint8_t b = bytes[pos / 2];
              // Sign-extend each nibble: (n ^ 8) - 8.
              c[pos] = static_cast<std::int8_t>(((b & 0x0F) ^ 8) - 8);
              c[pos + 1] = static_cast<std::int8_t>(((b >> 4) ^ 8) - 8);
              bad |= (b & 0x0F) == 8 || (b >> 4) == 8;
            }
          }
          if (bad != 0) pos = 0;  // rescan with the checking path to name the bad code
          k += static_cast<std::size_t>(pos);
        }
      }
      for (; pos < v.length(); ++pos, ++k) {
        const auto raw = static_cast<int>(get(codes, k * Bits, Bits));
        const int code = raw >= (1 << (Bits - 1)) ? raw - (1 << Bits) : raw;  // sign-extend
        GSQ_CHECK(code >= -Format::kQMax, "PackedGseTensor: corrupt code ", code, " at row ",
                  shape_.row_of(line, pos), ", column ", shape_.col_of(line, pos));
        c[pos] = static_cast<std::int8_t>(code);
      }
    }
    for (std::size_t g = 0; g < exponent_count(); ++g) {
      dst.mutable_exponents()[g] =
          static_cast<std::uint8_t>(get(exps, g * kExponentBits, kExponentBits));
    }
    dst.set_offset(offset_);
  }
  GseTensor<Bits, GroupSize> unpack() const {
    GseTensor<Bits, GroupSize> t;
    unpack_into(t);
    return t;
  }

  Index rows() const noexcept { return shape_.rows; }
  Index cols() const noexcept { return shape_.cols; }
  Axis axis() const noexcept { return shape_.axis; }
  const GseShape& shape() const noexcept { return shape_; }
  int offset() const noexcept { return offset_; }
  const std::vector<std::uint64_t>& words() const noexcept { return words_; }
  Index lines() const noexcept { return shape_.lines(); }
  Index length() const noexcept { return shape_.length(); }
  Index groups_per_line() const noexcept { return (length() + GroupSize - 1) / GroupSize; }

  /// Code `pos` of line `line`, sign-extended.  For streaming readers.
  int code_at(Index line, Index pos) const noexcept {
    const auto k = static_cast<std::size_t>(line * length() + pos);
    int raw;
    if constexpr (Bits == 4) {
      const auto* bytes = reinterpret_cast<const std::uint8_t*>(words_.data());
      raw = little_endian() ? (bytes[k / 2] >> (4 * (k % 2))) & 0x0F
                            : static_cast<int>(get(words_.data(), k * Bits, Bits));
    } else {
      raw = static_cast<int>(get(words_.data(), k * Bits, Bits));
    }
    return raw >= (1 << (Bits - 1)) ? raw - (1 << Bits) : raw;
  }
  /// Codes [pos, pos + count) of line `line` into out (unchecked, like code_at).
  void codes_at(Index line, Index pos, Index count, std::int8_t* out) const noexcept {
    if (count <= 0) return;
    auto k = static_cast<std::size_t>(line * length() + pos);
    Index i = 0;
    if constexpr (Bits == 4 || Bits == 8) {
      if (little_endian()) {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(words_.data());
        if constexpr (Bits == 8) {
          std::memcpy(out, bytes + k, static_cast<std::size_t>(count));
          return;
        } else {
          if (k % 2 == 1 && count > 0) out[i++] = static_cast<std::int8_t>(code_at(line, pos));
          const std::uint8_t* b = bytes + (k + static_cast<std::size_t>(i)) / 2;
          // 16 bytes (32 codes) at a time: each byte widened to a 16-bit lane holding its low
          // nibble in the first byte and its high nibble in the second, then sign-extended
          // bytewise, the same values as the loop below.
          typedef std::uint8_t U8x16 __attribute__((vector_size(16)));
          typedef std::uint16_t U16x16 __attribute__((vector_size(32)));
          typedef std::int8_t I8x32 __attribute__((vector_size(32)));
          for (; i + 32 <= count; i += 32, b += 16) {
            U8x16 packed;
            std::memcpy(&packed, b, sizeof packed);
            const U16x16 w = __builtin_convertvector(packed, U16x16);
            const U16x16 lanes = (w & 0x0F) | static_cast<U16x16>((w & 0xF0) << 4);
            const I8x32 codes = (reinterpret_cast<I8x32>(lanes) ^ 8) - 8;
            std::memcpy(out + i, &codes, sizeof codes);
          }
          for (; i + 1 < count; i += 2, ++b) {
            out[i] = static_cast<std::int8_t>(((*b & 0x0F) ^ 8) - 8);
            out[i + 1] = static_cast<std::int8_t>(((*b >> 4) ^ 8) - 8);
          }
        }
      }
    }
    for (; i < count; ++i) out[i] = static_cast<std::int8_t>(code_at(line, pos + i));
  }
  /// Exponent E of group `group` of line `line`.
  int exponent_at(Index line, Index group) const noexcept {
    const auto k = static_cast<std::size_t>(line * groups_per_line() + group);
    return static_cast<int>(get(words_.data() + code_words(), k * kExponentBits, kExponentBits));
  }

  /// Storage actually held: the packed words and the object.
  std::size_t bytes() const noexcept {
    return sizeof(*this) + words_.size() * sizeof(std::uint64_t);
  }

 private:
  std::size_t value_count() const noexcept {
    return static_cast<std::size_t>(shape_.rows) * static_cast<std::size_t>(shape_.cols);
  }
  std::size_t exponent_count() const noexcept {
    const auto groups = (shape_.length() + GroupSize - 1) / GroupSize;
    return static_cast<std::size_t>(shape_.lines() * groups);
  }
  std::size_t code_words() const noexcept { return (value_count() * Bits + 63) / 64; }
  std::size_t exponent_words() const noexcept {
    return (exponent_count() * kExponentBits + 63) / 64;
  }

  static bool little_endian() noexcept {
    const std::uint16_t probe = 1;
    std::uint8_t first;
    std::memcpy(&first, &probe, 1);
    return first == 1;
  }
  static void put(std::uint64_t* words, std::size_t bit, int width, std::uint64_t value) noexcept {
    value &= (std::uint64_t{1} << width) - 1;
    const std::size_t w = bit / 64;
    const auto s = static_cast<int>(bit % 64);
    words[w] |= value << s;
    if (s + width > 64) words[w + 1] |= value >> (64 - s);
  }
  static std::uint64_t get(const std::uint64_t* words, std::size_t bit, int width) noexcept {
    const std::size_t w = bit / 64;
    const auto s = static_cast<int>(bit % 64);
    std::uint64_t value = words[w] >> s;
    if (s + width > 64) value |= words[w + 1] << (64 - s);
    return value & ((std::uint64_t{1} << width) - 1);
  }

  std::vector<std::uint64_t> words_;
  GseShape shape_;
  int offset_ = 0;
};

}  // namespace gsq
