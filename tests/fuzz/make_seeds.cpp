// make_seeds.cpp: writes the seed corpora in tests/fuzz/corpus/<target>/ (a few small, valid
// inputs per target that reach deep into the code; the fuzzers mutate from there).
//   cmake --build --preset fuzz --target gsq_fuzz_make_seeds
//   build/fuzz/tests/fuzz/gsq_fuzz_make_seeds tests/fuzz/corpus
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <gsq/half.hpp>
#include <gsq/io/checkpoint.hpp>
#include <limits>
#include <string>
#include <vector>

namespace {

using Bytes = std::vector<std::uint8_t>;

void write(const std::string& dir, const std::string& name, const Bytes& bytes) {
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
  std::fclose(f);
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

template <typename T>
void put(Bytes& out, T v) {
  std::uint8_t raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  out.insert(out.end(), raw, raw + sizeof(T));
}

/// fuzz_convert: [format][rows][cols][flags][seed][elements].
/// format = bits_index + 7 * type + 21 * group (bits 2 + bits_index; float, bf16, fp16; G 16, 32,
/// 64).
Bytes convert_seed(int bits, int type, int group, int rows, int cols, int flags,
                   const std::vector<float>& values) {
  Bytes out{static_cast<std::uint8_t>((bits - 2) + 7 * type + 21 * group),
            static_cast<std::uint8_t>(rows), static_cast<std::uint8_t>(cols),
            static_cast<std::uint8_t>(flags), 42};
  for (float v : values) {
    if (type == 0) put(out, v);
    if (type == 1) put(out, gsq::to_bf16(v).bits);
    if (type == 2) put(out, gsq::to_fp16(v).bits);
  }
  return out;
}

void convert_seeds(const std::string& dir) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float sub = std::numeric_limits<float>::denorm_min();
  std::vector<float> mixed;  // magnitudes 2^-140 .. 2^100, both signs, a repeating pattern
  for (int i = 0; i < 97; ++i) {
    mixed.push_back(std::ldexp(i % 2 ? -1.0f : 1.0f, (i * 37) % 240 - 140) * (1.0f + i / 128.0f));
  }
  std::vector<float> gaussianish;
  for (int i = 0; i < 160; ++i) gaussianish.push_back(std::sin(i * 0.7f) * (1 + i % 5));
  std::vector<float> specials = {0.0f, -0.0f, sub,   -sub,   3 * sub, inf,  -inf,
                                 nan,  1.0f,  -1.5f, 1e-30f, 1e30f,   0.75f};
  std::vector<float> ties;  // exact halves, for the nearest-even / nearest-away difference
  for (int i = 0; i < 64; ++i) ties.push_back(static_cast<float>(i) + 0.5f);

  // bits, type, group, rows, cols, flags, values
  write(dir, "f32-g32-w8", convert_seed(8, 0, 1, 7, 45, 0, gaussianish));
  write(dir, "f32-g16-w4-cols-colmajor", convert_seed(4, 0, 0, 33, 5, 1 | 16, gaussianish));
  write(dir, "f32-g64-w2-mixed-ld", convert_seed(2, 0, 2, 3, 130, 32, mixed));
  write(dir, "f32-w8-clamped-groups", convert_seed(8, 0, 1, 4, 96, 0, mixed));
  write(dir, "f32-w5-specials-zero", convert_seed(5, 0, 1, 2, 40, 8, specials));
  write(dir, "f32-w6-specials-throw", convert_seed(6, 0, 1, 2, 13, 0, specials));
  write(dir, "f32-w3-ties-away", convert_seed(3, 0, 0, 2, 64, 2, ties));
  write(dir, "f32-w7-ties-even", convert_seed(7, 0, 1, 2, 64, 0, ties));
  write(dir, "f32-w8-stochastic", convert_seed(8, 0, 1, 5, 70, 6, gaussianish));
  write(dir, "f32-w4-towardzero-corrupt", convert_seed(4, 0, 1, 9, 33, 4 | 64, gaussianish));
  write(dir, "bf16-w8-g32", convert_seed(8, 1, 1, 6, 50, 0, gaussianish));
  write(dir, "bf16-w4-specials-zero", convert_seed(4, 1, 2, 3, 20, 8 | 1, specials));
  write(dir, "fp16-w8-g16", convert_seed(8, 2, 0, 6, 50, 1, gaussianish));
  write(dir, "fp16-w5-specials-zero", convert_seed(5, 2, 1, 3, 17, 8 | 16, specials));
  write(dir, "empty", convert_seed(8, 0, 1, 0, 0, 0, {}));
}

void checkpoint_seeds(const std::string& dir) {
  gsq::CheckpointWriter w;
  const float floats[] = {1.0f, -2.5f, 3.25f, std::numeric_limits<float>::quiet_NaN()};
  w.add_floats("lora.a", floats, 4);
  w.add_bytes("rng", {1, 2, 3, 4, 5});
  w.add_int64("step", 1234567);
  w.add_floats("empty", nullptr, 0);
  const Bytes image = w.serialize();

  Bytes raw{0};  // mode 0: the image as is
  raw.insert(raw.end(), image.begin(), image.end());
  write(dir, "image", raw);
  Bytes fixed{1};  // mode 1: the image without its CRC, which the harness appends
  fixed.insert(fixed.end(), image.begin(), image.end() - 4);
  write(dir, "image-crc-appended", fixed);
  Bytes records{2};  // mode 2: records for a writer -> reader round trip
  const std::string names[] = {"a", "bb", "step", "a"};  // the second "a" is a duplicate
  int kind = 0;
  for (const std::string& n : names) {
    records.push_back(static_cast<std::uint8_t>(n.size()));
    records.insert(records.end(), n.begin(), n.end());
    records.push_back(static_cast<std::uint8_t>(kind++));
    records.push_back(8);
    for (int i = 0; i < 8; ++i) records.push_back(static_cast<std::uint8_t>(i * 31));
  }
  write(dir, "records", records);
  Bytes truncated{1};
  truncated.insert(truncated.end(), image.begin(), image.begin() + 30);
  write(dir, "truncated-crc-appended", truncated);
}

/// A llama2.c file: 7 int32 of header, then the weights run.c expects.
Bytes llama2_file(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq) {
  Bytes out;
  for (int v : {dim, hidden, layers, heads, kv_heads, vocab, seq}) put(out, std::int32_t{v});
  const long head = dim / heads, kv = head * kv_heads, v = vocab < 0 ? -vocab : vocab;
  const long floats = v * dim +
                      layers * (2L * dim + 2L * dim * dim + 2L * dim * kv + 3L * dim * hidden) +
                      dim + seq * head + (vocab < 0 ? v * dim : 0);
  for (long i = 0; i < floats; ++i) put(out, static_cast<float>(i % 17) * 0.125f - 1.0f);
  return out;
}

void llama2_seeds(const std::string& dir) {
  // mode byte: odd = parse the image as is, even = the harness sizes the weights from the header.
  Bytes tiny{1};
  const Bytes file = llama2_file(4, 6, 2, 2, 1, 5, 3);
  tiny.insert(tiny.end(), file.begin(), file.end());
  write(dir, "tiny-shared", tiny);
  Bytes unshared{1};
  const Bytes file2 = llama2_file(8, 4, 1, 4, 2, -7, 2);
  unshared.insert(unshared.end(), file2.begin(), file2.end());
  write(dir, "tiny-unshared-classifier", unshared);
  Bytes sized{0};  // header only: the harness fills the weights
  sized.insert(sized.end(), file.begin(), file.begin() + 28);
  sized.push_back(0x3f);
  write(dir, "header-sized-by-harness", sized);
  Bytes truncated{1};
  truncated.insert(truncated.end(), file.begin(), file.end() - 3);
  write(dir, "truncated", truncated);
}

void packed_matmul_seeds(const std::string& dir) {
  // [K][N][M][-offset][flags][alpha index][word bytes...]
  auto seed = [](int k, int n, int m, int offset, int flags, int alpha, int fill) {
    Bytes out{static_cast<std::uint8_t>(k),     static_cast<std::uint8_t>(n),
              static_cast<std::uint8_t>(m),     static_cast<std::uint8_t>(offset),
              static_cast<std::uint8_t>(flags), static_cast<std::uint8_t>(alpha)};
    for (int i = 0; i < 64; ++i) out.push_back(static_cast<std::uint8_t>(i * fill + 0x17));
    return out;
  };
  write(dir, "k64-n24-m6", seed(64, 24, 6, 30, 0, 0, 37));
  write(dir, "k45-n17-m13-beta", seed(45, 17, 12, 12, 8, 2, 11));
  write(dir, "k96-n40-m1", seed(96, 40, 0, 70, 0, 1, 5));
  write(dir, "k33-n7-minus8-kept", seed(33, 7, 4, 3, 4, 0, 3));
  write(dir, "bad-offset", seed(32, 8, 2, 0, 1, 0, 9));
  write(dir, "bad-count", seed(32, 8, 2, 0, 2, 0, 9));
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <tests/fuzz/corpus>\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  convert_seeds(root + "/convert");
  checkpoint_seeds(root + "/checkpoint");
  llama2_seeds(root + "/llama2");
  packed_matmul_seeds(root + "/packed_matmul");
  return 0;
}
