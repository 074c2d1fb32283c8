// fuzz_gguf.cpp: the GGUF reader (GgufFile::parse), its decoders and the llama config on
// untrusted bytes.
//
// Input: a file image, parsed as is.  parse() must either accept it or throw
// std::invalid_argument starting "gguf: ", and nothing else.  For an accepted image every
// metadata accessor and every tensor is read: read_f32 must fill exactly elements() floats of a
// supported type (ASan checks that no byte outside the image is read) and throw "gguf: ... which
// gsq cannot decode" for the others; llama_config may reject the file with "gguf: " or
// "llama config: ".
//
// Seeds (corpus/gguf/) are written by this file's own main() when it is compiled with
// -DGSQ_GGUF_MAKE_SEEDS (g++ -std=c++17 -Iinclude -DGSQ_GGUF_MAKE_SEEDS
// tests/fuzz/fuzz_gguf.cpp -o /tmp/seeds && /tmp/seeds tests/fuzz/corpus/gguf).
#include <cstdint>
#include <cstdio>
#include <gsq/models/gguf/file.hpp>
#include <gsq/models/gguf/writer.hpp>
#include <gsq/models/llama/gguf_source.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

bool starts_with(const char* s, const char* prefix) { return std::string(s).rfind(prefix, 0) == 0; }

/// Runs f; an std::invalid_argument must start with one of the prefixes (p2 may be null).
template <typename F>
void expect_clean(F&& f, const char* p1, const char* p2, const char* what) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(starts_with(e.what(), p1) || (p2 != nullptr && starts_with(e.what(), p2)),
                    what);
  }
}

void touch_metadata(const gsq::gguf::Value& v) {
  using gsq::gguf::ValueType;
  auto quiet = [](auto&& f) { expect_clean(f, "gguf: ", nullptr, "a metadata accessor threw"); };
  quiet([&] { (void)v.as_uint(); });
  quiet([&] { (void)v.as_int(); });
  quiet([&] { (void)v.as_float(); });
  quiet([&] { (void)v.as_bool(); });
  quiet([&] { (void)v.as_string(); });
  if (v.is_array()) {
    std::size_t n = 0;
    quiet([&] { n += v.strings().size(); });
    quiet([&] { n += v.floats().size(); });
    quiet([&] { n += v.ints().size(); });
    volatile std::size_t sink = n + v.array_size();
    (void)sink;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A copy of exactly the bytes given, so that reads past the end are caught by ASan.
  const std::vector<std::uint8_t> image(data, data + size);
  gsq::gguf::GgufFile f;
  try {
    f = gsq::gguf::GgufFile::parse(image.data(), image.size());
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(starts_with(e.what(), "gguf: "), "a rejection does not start with 'gguf: '");
    return 0;
  }
  GSQ_FUZZ_EXPECT(f.version() == 2 || f.version() == 3, "accepted a bad version");
  GSQ_FUZZ_EXPECT(f.data_offset() % f.alignment() == 0, "data section not aligned");
  for (const gsq::gguf::Value& v : f.metadata()) {
    GSQ_FUZZ_EXPECT(f.find(v.key()) == &v, "find() does not return the key's value");
    touch_metadata(v);
  }
  std::vector<float> out;
  for (const gsq::gguf::TensorInfo& t : f.tensors()) {
    GSQ_FUZZ_EXPECT(
        t.offset + t.bytes <= size && t.offset >= f.data_offset() && t.offset % f.alignment() == 0,
        "accepted a tensor outside the data section");
    GSQ_FUZZ_EXPECT(f.find_tensor(t.name) == &t, "find_tensor() does not return the tensor");
    if (!gsq::gguf::is_supported(t.type)) {
      std::string error;
      try {
        f.read_f32(t, out);
      } catch (const std::invalid_argument& e) {
        error = e.what();
      }
      GSQ_FUZZ_EXPECT(error.find("which gsq cannot decode") != std::string::npos,
                      "an unsupported type was not reported as such");
      continue;
    }
    f.read_f32(t, out);  // must not throw for an accepted tensor of a supported type
    GSQ_FUZZ_EXPECT(out.size() == static_cast<std::size_t>(t.elements()),
                    "read_f32 gave the wrong count");
  }
  expect_clean([&] { (void)gsq::llama_config(f); },
               "gguf: ", "llama config: ", "llama_config threw something else");
  expect_clean([&] { gsq::GgufLlamaSource s(f); },
               "gguf: ", "llama config: ", "GgufLlamaSource threw something else");
  return 0;
}

#if defined(GSQ_GGUF_MAKE_SEEDS)
namespace {

using gsq::gguf::GgmlType;
using gsq::gguf::GgufWriter;

std::vector<float> wave(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 37) % 29) - scale * 14;
  return v;
}
std::vector<std::uint8_t> pattern(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>((i * 131 + seed) * 7 >> 1);
  return b;
}

void save(const std::string& dir, const std::string& name, const GgufWriter& w) {
  const std::vector<std::uint8_t> b = w.serialize();
  std::FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
  if (f == nullptr || std::fwrite(b.data(), 1, b.size(), f) != b.size()) std::exit(1);
  std::fclose(f);
  std::printf("%s/%s (%zu bytes)\n", dir.c_str(), name.c_str(), b.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  {  // every metadata type and every supported tensor type
    GgufWriter w;
    w.add_uint8("u8", 1);
    w.add_int8("i8", -1);
    w.add_uint16("u16", 2);
    w.add_int16("i16", -2);
    w.add_uint32("u32", 3);
    w.add_int32("i32", -3);
    w.add_uint64("u64", 4);
    w.add_int64("i64", -4);
    w.add_float32("f32", 0.5f);
    w.add_float64("f64", 0.25);
    w.add_bool("bool", true);
    w.add_string("str", "x");
    w.add_strings("strs", {"a", "bc"});
    w.add_floats("floats", {1.0f, 2.0f});
    w.add_int32s("ints", {5, -6});
    w.add_tensor("f32", GgmlType::kF32, {3, 2}, wave(6, 0.5f));
    w.add_tensor("f16", GgmlType::kF16, {4}, wave(4, 0.5f));
    w.add_tensor("bf16", GgmlType::kBF16, {2, 2}, wave(4, 0.5f));
    w.add_tensor("q8_0", GgmlType::kQ8_0, {32}, wave(32, 0.1f));
    w.add_tensor("q4_0", GgmlType::kQ4_0, {32}, wave(32, 0.1f));
    w.add_raw_tensor("q4_1", GgmlType::kQ4_1, {32}, pattern(20, 1));
    w.add_raw_tensor("q5_0", GgmlType::kQ5_0, {32}, pattern(22, 2));
    w.add_raw_tensor("q5_1", GgmlType::kQ5_1, {32}, pattern(24, 3));
    save(dir, "all-types-v3", w);
  }
  {  // K-quants and an unsupported type
    GgufWriter w(64);
    w.add_raw_tensor("q4_k", GgmlType::kQ4_K, {256}, pattern(144, 4));
    w.add_raw_tensor("q5_k", GgmlType::kQ5_K, {256}, pattern(176, 5));
    w.add_raw_tensor("q6_k", GgmlType::kQ6_K, {256}, pattern(210, 6));
    w.add_raw_tensor("q2_k", GgmlType::kQ2_K, {256}, pattern(84, 7));
    save(dir, "k-quants-align64", w);
  }
  {  // version 2, nested arrays
    GgufWriter w(32, 2);
    std::vector<std::uint8_t> nested = {8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,  // 2 arrays
                                        4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 8, 0,  0,
                                        0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'z'};
    nested[0] = 9;  // element type: array
    w.add_raw_value("nested", 9, nested);
    w.add_string("general.name", "v2");
    w.add_tensor("t", GgmlType::kF32, {2}, wave(2, 1.0f));
    save(dir, "v2-nested", w);
  }
  {  // a tiny llama (dim 8, 2 heads, 1 layer, vocab 4)
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_uint32("llama.embedding_length", 8);
    w.add_uint32("llama.feed_forward_length", 32);
    w.add_uint32("llama.block_count", 1);
    w.add_uint32("llama.attention.head_count", 2);
    w.add_uint32("llama.context_length", 16);
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.add_strings("tokenizer.ggml.tokens", {"a", "b", "c", "d"});
    w.add_tensor("token_embd.weight", GgmlType::kF16, {8, 4}, wave(32, 0.1f));
    w.add_tensor("output_norm.weight", GgmlType::kF32, {8}, wave(8, 0.1f));
    w.add_tensor("rope_freqs.weight", GgmlType::kF32, {2}, {1.0f, 4.0f});
    const char* sq[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
    for (const char* n : sq)
      w.add_tensor(std::string("blk.0.") + n + ".weight", GgmlType::kF32, {8, 8}, wave(64, 0.1f));
    w.add_tensor("blk.0.attn_norm.weight", GgmlType::kF32, {8}, wave(8, 0.1f));
    w.add_tensor("blk.0.ffn_norm.weight", GgmlType::kF32, {8}, wave(8, 0.1f));
    w.add_tensor("blk.0.ffn_gate.weight", GgmlType::kF16, {8, 32}, wave(256, 0.1f));
    w.add_raw_tensor("blk.0.ffn_down.weight", GgmlType::kQ4_1, {32, 8}, pattern(160, 8));
    w.add_tensor("blk.0.ffn_up.weight", GgmlType::kBF16, {8, 32}, wave(256, 0.1f));
    save(dir, "tiny-llama", w);
  }
  return 0;
}
#endif
