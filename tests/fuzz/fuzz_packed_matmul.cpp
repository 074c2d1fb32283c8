// fuzz_packed_matmul.cpp: bit-packed GSE-INT4 / INT8 storage from untrusted words
// (PackedGseTensor<Bits>::from_words), streamed into the matmul (PackedStorageRhs,
// TransposedRegroupedRhs) and checked bit for bit against the unpacked paths on every ISA.
//
// Input: [K] [N] [M] [offset] [flags] [alpha] [word bytes, reused cyclically...]
//   K 0..96, N 0..40, M 1..13; offset T in [-100, 0]
//   flags bit 0  an offset outside the format's range (must be rejected)
//         bit 1  one word too many (must be rejected)
//         bit 2  keep the unused code -2^(Bits-1) where the bytes have it (from_words must
//                reject it); otherwise it is replaced by 0 so that most inputs reach the matmul
//         bit 3  beta = 1 (accumulate into C) instead of 0
//         bit 4  GSE-INT8 storage instead of GSE-INT4
// from_words must reject exactly the bad offsets, word counts and codes, naming the first (and
// throw nothing but std::invalid_argument); what it accepts unpacks, without throwing, to the
// stored bits.
#include <cstdint>
#include <cstring>
#include <gsq/gsq.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

using gsq::Axis;
using gsq::Index;
using gsq::Isa;

constexpr int kGroup = 32;

std::vector<float> floats_from(gsq::fuzz::Bytes& in, Index count, std::uint32_t salt) {
  std::vector<float> v(static_cast<std::size_t>(count));
  std::uint32_t state = salt * 2654435761u + static_cast<std::uint32_t>(in.remaining());
  for (float& x : v) {
    state = state * 1664525u + 1013904223u;
    x = static_cast<float>(static_cast<std::int32_t>(state >> 8) % 2001 - 1000) / 64.0f;
  }
  return v;
}

/// Bits [bit, bit + width) of an LSB-first word stream, read one bit at a time (tensor.hpp's
/// storage layout, restated independently of PackedGseTensor).
std::uint64_t bits_at(const std::vector<std::uint64_t>& words, std::size_t bit, int width) {
  std::uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    const std::size_t b = bit + static_cast<std::size_t>(i);
    v |= ((words[b / 64] >> (b % 64)) & 1u) << i;
  }
  return v;
}

/// Stored value i of a packed GSE-INT<Bits> tensor, sign-extended.
template <int Bits>
int stored_code(const std::vector<std::uint64_t>& words, Index i) {
  const auto raw = static_cast<int>(bits_at(words, static_cast<std::size_t>(i) * Bits, Bits));
  return raw >= (1 << (Bits - 1)) ? raw - (1 << Bits) : raw;
}

void expect_equal(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  GSQ_FUZZ_EXPECT(a.size() == b.size(), what);
  GSQ_FUZZ_EXPECT(a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
                  what);
}

template <int Bits>
void run(gsq::fuzz::Bytes& in) {
  using Packed = gsq::PackedGseTensor<Bits, kGroup>;
  const Index k = in.u8() % 97;
  const Index n = in.u8() % 41;
  const Index m = 1 + in.u8() % 13;
  int offset = -static_cast<int>(in.u8() % 101);
  const std::uint8_t flags = in.u8();
  const float alphas[] = {1.0f, 0.5f, -3.0f, 0.0f};
  const float alpha = alphas[in.u8() % 4];
  const bool bad_offset = (flags & 1) != 0;
  const bool bad_count = (flags & 2) != 0;
  const bool keep_minus8 = (flags & 4) != 0;
  const float beta = (flags & 8) != 0 ? 1.0f : 0.0f;
  if (bad_offset) offset = gsq::GseFormat<Bits, kGroup>::kMaxOffset + 1 + (-offset);

  // The word count of a K x N tensor grouped along K: codes, then 5-bit exponents.
  const Index groups = n * ((k + kGroup - 1) / kGroup);
  const auto code_words = static_cast<std::size_t>((k * n * Bits + 63) / 64);
  const auto exp_words = static_cast<std::size_t>((groups * 5 + 63) / 64);
  std::vector<std::uint64_t> words(code_words + exp_words + (bad_count ? 1 : 0));
  const std::uint8_t* bytes = in.rest();
  const std::size_t available = in.remaining();
  for (std::size_t w = 0; w < words.size(); ++w) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b) {
      const std::uint64_t byte = available == 0 ? 0 : bytes[(w * 8 + b) % available];
      v |= byte << (8 * b);
    }
    words[w] = v;
  }
  if (!keep_minus8) {
    constexpr std::uint64_t kMask = (1u << Bits) - 1;
    for (Index i = 0; i < k * n; ++i) {  // Bits divides 64: no code straddles two words
      std::uint64_t& w = words[static_cast<std::size_t>(i * Bits / 64)];
      const int shift = static_cast<int>(i * Bits % 64);
      if (((w >> shift) & kMask) == (kMask + 1) / 2) w &= ~(kMask << shift);
    }
  }

  // What from_words must say, checking the offset, then the word count, then each code in
  // storage order (value i is row i % K, column i / K of the K x N tensor grouped along K).
  std::string reason;
  if (bad_offset) {
    reason = "PackedGseTensor: exponent offset " + std::to_string(offset) + " is outside [";
  } else if (bad_count) {
    reason = "PackedGseTensor: a " + std::to_string(k) + "x" + std::to_string(n) +
             " tensor needs " + std::to_string(words.size() - 1) + " words, got " +
             std::to_string(words.size());
  } else {
    for (Index i = 0; i < k * n && reason.empty(); ++i) {
      if (stored_code<Bits>(words, i) == -(1 << (Bits - 1))) {
        reason = "PackedGseTensor: corrupt code " + std::to_string(-(1 << (Bits - 1))) +
                 " at row " + std::to_string(i % k) + ", column " + std::to_string(i / k);
      }
    }
  }
  Packed b;
  try {
    b = Packed::from_words(words, k, n, Axis::kRows, offset);
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(!reason.empty(), "from_words rejected a well-formed tensor");
    GSQ_FUZZ_EXPECT(std::string(e.what()).rfind(reason, 0) == 0,
                    "from_words's error is not the first problem of the words");
    return;
  }
  GSQ_FUZZ_EXPECT(reason.empty(), "from_words accepted a bad offset, word count or code");
  const auto unpacked = b.unpack();  // from_words checked every code: must not throw
  // The unpacked tensor holds the stored bits (tensor.hpp's layout, read independently).
  const auto uv = unpacked.view();
  const std::size_t exponent_base = code_words * 64;
  for (Index line = 0; line < uv.lines(); ++line) {
    for (Index pos = 0; pos < uv.padded_length(); ++pos) {
      const int want = pos < k ? stored_code<Bits>(words, line * k + pos) : 0;
      GSQ_FUZZ_EXPECT(uv.line_codes(line)[pos] == want, "unpack() differs from the stored codes");
    }
    for (Index g = 0; g < uv.groups_per_line(); ++g) {
      const auto e = static_cast<std::size_t>(line * uv.groups_per_line() + g);
      GSQ_FUZZ_EXPECT(uv.line_exponents(line)[g] == bits_at(words, exponent_base + 5 * e, 5),
                      "unpack() differs from the stored exponents");
    }
  }

  // C = alpha * A * B + beta * C, from packed storage and from the unpacked tensor.
  const std::vector<float> a = floats_from(in, m * k, 1);
  const auto qa =
      gsq::quantize<8, kGroup>(gsq::MatrixRef<const float>::row_major(a.data(), m, k), Axis::kCols);
  const std::vector<float> c0 = floats_from(in, m * n, 2);
  // W^T as the right operand: A2 (M x N) times W^T (N x K), regrouped along N.
  const std::vector<float> a2 = floats_from(in, m * n, 3);
  const auto qa2 = gsq::quantize<8, kGroup>(gsq::MatrixRef<const float>::row_major(a2.data(), m, n),
                                            Axis::kCols);
  const auto regrouped = gsq::regroup<8>(unpacked.view(), Axis::kCols);
  const std::vector<float> ct0 = floats_from(in, m * k, 4);

  std::vector<float> first, first_t;
  bool have_first = false;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeonDot}) {
    if (!gsq::cpu_supports(isa)) continue;
    gsq::MatmulOptions options;
    options.isa = isa;
    options.threads = 1;
    std::vector<float> streamed = c0, plain = c0, prepacked = c0;
    std::vector<float> t_streamed = ct0, t_plain = ct0;
    gsq::matmul(qa.view(), gsq::PackedStorageRhs<Bits, kGroup>(b),
                gsq::MatrixRef<float>::row_major(streamed.data(), m, n), alpha, beta, options);
    gsq::matmul(qa.view(), unpacked.view(), gsq::MatrixRef<float>::row_major(plain.data(), m, n),
                alpha, beta, options);
    expect_equal(streamed, plain, "PackedStorageRhs differs from the unpacked tensor");
    {
      const auto rhs = gsq::PackedMatmulRhs<kGroup>::pack(unpacked.view(), options);
      gsq::matmul(qa.view(), rhs, gsq::MatrixRef<float>::row_major(prepacked.data(), m, n), alpha,
                  beta, options);
      expect_equal(prepacked, plain, "PackedMatmulRhs differs from the unpacked tensor");
    }
    gsq::matmul(qa2.view(), gsq::TransposedRegroupedRhs<Bits, kGroup>(b),
                gsq::MatrixRef<float>::row_major(t_streamed.data(), m, k), alpha, beta, options);
    gsq::matmul(qa2.view(), regrouped.view().transposed(),
                gsq::MatrixRef<float>::row_major(t_plain.data(), m, k), alpha, beta, options);
    expect_equal(t_streamed, t_plain, "TransposedRegroupedRhs differs from regroup + transpose");

    if (!have_first) {
      first = plain;
      first_t = t_plain;
      have_first = true;
    } else {
      expect_equal(plain, first, "an ISA's matmul differs from the scalar kernel's");
      expect_equal(t_plain, first_t, "an ISA's transposed matmul differs from the scalar one");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  gsq::fuzz::Bytes in(data, size);
  // Bits is chosen by flag bit 4, the fifth byte; peek at it without consuming.
  const bool int8 = size > 4 && (data[4] & 16) != 0;
  if (int8) {
    run<8>(in);
  } else {
    run<4>(in);
  }
  return 0;
}
