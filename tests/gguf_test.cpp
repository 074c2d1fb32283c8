// gguf_test.cpp: the GGUF reader, decoders, writer and llama weight source: real files bit for
// bit against references, round trips through the writer, and hostile images.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "catch.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/gguf/writer.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/weights.hpp"
#include "models.hpp"
#include "testing.hpp"

namespace {

using gsq::gguf::GgmlType;
using gsq::gguf::GgufFile;
using gsq::gguf::GgufWriter;
using gsq::gguf::ValueType;
using Bytes = std::vector<std::uint8_t>;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

using gsq::test::error_of;

std::string parse_error(const Bytes& image) {
  return error_of([&] { (void)GgufFile::parse(image.data(), image.size()); });
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  return a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> wave(std::size_t n, float scale, int seed) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = scale * std::sin(0.37f * static_cast<float>(i) + static_cast<float>(seed)) *
           (1.0f + static_cast<float>(i % 7) * 0.25f);
  return v;
}

/// A small valid file: metadata of every type, tensors of several types.
GgufWriter sample_writer(std::uint64_t alignment = 32, std::uint32_t version = 3) {
  GgufWriter w(alignment, version);
  w.add_uint8("t.u8", 200);
  w.add_int8("t.i8", -5);
  w.add_uint16("t.u16", 60000);
  w.add_int16("t.i16", -30000);
  w.add_uint32("t.u32", 4000000000u);
  w.add_int32("t.i32", -2000000000);
  w.add_uint64("t.u64", 0xFFFFFFFFFFFFFFFFull);
  w.add_int64("t.i64", -(std::int64_t{1} << 62));
  w.add_float32("t.f32", 1.5f);
  w.add_float64("t.f64", -0.125);
  w.add_bool("t.bool", true);
  w.add_string("t.str", "h\xc3\xa9llo");
  w.add_strings("t.strs", {"a", "", "ccc"});
  w.add_floats("t.floats", {0.5f, -2.0f});
  w.add_int32s("t.ints", {-1, 7});
  w.add_tensor("a.f32", GgmlType::kF32, {5, 3}, wave(15, 1.0f, 1));
  w.add_tensor("b.q8", GgmlType::kQ8_0, {64, 2}, wave(128, 0.1f, 2));
  w.add_tensor("c.q4", GgmlType::kQ4_0, {32, 3}, wave(96, 3.0f, 3));
  w.add_tensor("d.f16", GgmlType::kF16, {7}, wave(7, 100.0f, 4));
  w.add_tensor("e.bf16", GgmlType::kBF16, {3, 1, 2, 1}, wave(6, 0.01f, 5));
  return w;
}

/// Position of the n_dims field of tensor `name` in an image (just after its name).
std::size_t tensor_field(const Bytes& image, const std::string& name) {
  const std::string s(image.begin(), image.end());
  const std::size_t at = s.find(name);
  REQUIRE(at != std::string::npos);
  return at + name.size();
}

void put_u32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(Bytes& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace

TEST_CASE("gguf: decoders match llama.cpp's reference values bit for bit", "[gguf]") {
  const char* files[] = {"f16",  "bf16", "q8_0",   "q4_0",   "q4_1",
                         "q5_0", "q5_1", "q4_k_m", "q5_k_m", "q6_k"};
  if (gsq::test::model_path("quant-ref/rand256-q4_0.json").empty())
    GSQ_SKIP("../shared/models/quant-ref is absent");
  int checked = 0;
  for (const char* f : files) {
    const std::string stem = std::string("rand256-") + f;
    const std::string json = slurp(gsq::test::model_path("quant-ref/" + stem + ".json"));
    const GgufFile file = GgufFile::open(gsq::test::model_path(stem + ".gguf"));
    for (const std::string name : {"blk.0.attn_q.weight", "blk.2.ffn_down.weight"}) {
      INFO(stem << " " << name);
      // {"NAME": {"type": "Q4_K", "ne": [256, 256], ..., "file": "FILE", ...}
      const std::size_t at = json.find("\"" + name + "\"");
      REQUIRE(at != std::string::npos);
      auto field = [&](const std::string& key) {
        const std::size_t k = json.find("\"" + key + "\": ", at);
        REQUIRE(k != std::string::npos);
        const std::size_t v = k + key.size() + 4;
        const char end = json[v] == '"' ? '"' : ']';
        return json.substr(v + 1, json.find(end, v + 1) - v - 1);
      };
      const gsq::gguf::TensorInfo& t = file.tensor(name);
      CHECK(field("type") == gsq::gguf::to_string(t.type));
      CHECK(field("ne") == std::to_string(t.ne[0]) + ", " + std::to_string(t.ne[1]));
      const std::string ref = slurp(gsq::test::model_path("quant-ref/" + field("file")));
      std::vector<float> got;
      file.read_f32(t, got);
      REQUIRE(ref.size() == got.size() * 4);
      std::size_t mismatches = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        std::uint32_t r;
        std::memcpy(&r, ref.data() + 4 * i, 4);
        mismatches += r != gsq::float_bits(got[i]);
      }
      CHECK(mismatches == 0);
      ++checked;
    }
  }
  CHECK(checked == 20);
}

TEST_CASE("gguf: every quantized file decodes close to the F32 one", "[gguf]") {
  const std::string f32 = gsq::test::model_path("rand256-f32.gguf");
  if (f32.empty()) GSQ_SKIP("../shared/models/rand256-f32.gguf is absent");
  const gsq::GgufLlamaSource ref(f32);
  // Bounds relative to the tensor's largest magnitude (sigma 0.02, so about 0.1): a wrong
  // nibble order or scale is off by far more.
  const std::pair<const char*, double> files[] = {
      {"f16", 1e-3},  {"bf16", 1e-2}, {"q8_0", 1e-2},  {"q4_0", 0.15},   {"q4_1", 0.1},
      {"q5_0", 0.07}, {"q5_1", 0.05}, {"q4_k_m", 0.1}, {"q5_k_m", 0.06}, {"q6_k", 0.03}};
  for (const auto& [name, bound] : files) {
    INFO(name);
    const gsq::GgufLlamaSource q(gsq::test::model_path(std::string("rand256-") + name + ".gguf"));
    CHECK(q.config().dim == 256);
    for (const gsq::LlamaTensor t :
         {gsq::LlamaTensor::kWq, gsq::LlamaTensor::kW2, gsq::LlamaTensor::kTokenEmbedding}) {
      std::vector<float> a, b;
      ref.read(t, 1, a);
      q.read(t, 1, b);
      REQUIRE(a.size() == b.size());
      double amax = 0.0, err = 0.0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        amax = std::max(amax, std::fabs(static_cast<double>(a[i])));
        err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
      }
      CHECK(err <= bound * amax);
    }
  }
}

TEST_CASE("gguf: stories260K.gguf equals stories260K.bin", "[gguf]") {
  const std::string gguf = gsq::test::model_path("stories260K.gguf");
  const std::string bin = gsq::test::model_path("stories260K.bin");
  if (gguf.empty() || bin.empty()) GSQ_SKIP("../shared/models/stories260K.{gguf,bin} absent");
  const gsq::GgufLlamaSource src(gguf);
  const GgufFile& f = src.file();
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.at("general.architecture").as_string() == "llama");
  CHECK(f.at("tokenizer.ggml.model").as_string() == "llama");
  CHECK(f.at("tokenizer.ggml.tokens").strings().size() == 512);
  CHECK(f.at("tokenizer.ggml.scores").floats().size() == 512);
  CHECK(f.at("tokenizer.ggml.token_type").ints().size() == 512);
  CHECK(f.at("llama.context_length").as_uint() == 128);
  CHECK(f.find("no.such.key") == nullptr);
  CHECK(error_of([&] { (void)f.at("no.such.key"); }) == "gguf: key 'no.such.key' is missing");
  CHECK(error_of([&] {
          (void)f.at("general.name").as_uint();
        }).find("gguf: key 'general.name' is a string, not an integer") == 0);

  const gsq::LlamaConfig& c = src.config();
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.head_size() == 8);
  CHECK(c.seq_len == 128);  // as the file says (trained at 512; see llama_config)
  // llama.cpp's converter writes output.weight (a copy of the embedding) although llama2.c ties
  // them, so the GGUF model is untied; the classifier still equals llama2.c's below.
  CHECK(!c.tied_classifier);
  CHECK(c.rope_freq_factors.empty());

  const gsq::Llama2Weights w = gsq::Llama2Weights::load(bin);
  const gsq::Llama2WeightSource ref(w);
  using T = gsq::LlamaTensor;
  int compared = 0;
  for (const T t : {T::kTokenEmbedding, T::kClassifier, T::kRmsFinal}) {
    std::vector<float> a, b;
    src.read(t, 0, a);
    ref.read(t, 0, b);
    CHECK(same_bits(a, b));
    ++compared;
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (const T t :
         {T::kRmsAtt, T::kWq, T::kWk, T::kWv, T::kWo, T::kRmsFfn, T::kW1, T::kW2, T::kW3}) {
      INFO(gsq::to_string(t) << " layer " << l);
      std::vector<float> a, b;
      src.read(t, l, a);
      ref.read(t, l, b);
      CHECK(a.size() == static_cast<std::size_t>(gsq::shape_of(c, t).size()));
      CHECK(same_bits(a, b));
      ++compared;
    }
  }
  CHECK(compared == 48);
}

TEST_CASE("gguf: writer round trip", "[gguf]") {
  for (const std::uint64_t alignment : {std::uint64_t{32}, std::uint64_t{1}, std::uint64_t{64}}) {
    for (const std::uint32_t version : {3u, 2u}) {
      INFO("alignment " << alignment << " version " << version);
      const Bytes image = sample_writer(alignment, version).serialize();
      const GgufFile f = GgufFile::parse(image.data(), image.size());
      CHECK(f.version() == version);
      CHECK(f.alignment() == alignment);
      CHECK(f.data_offset() % alignment == 0);
      CHECK(f.metadata().size() == (alignment == 32 ? 15u : 16u));
      CHECK(f.at("t.u8").as_uint() == 200);
      CHECK(f.at("t.i8").as_int() == -5);
      CHECK(f.at("t.u16").as_uint() == 60000);
      CHECK(f.at("t.i16").as_int() == -30000);
      CHECK(f.at("t.u32").as_uint() == 4000000000u);
      CHECK(f.at("t.i32").as_int() == -2000000000);
      CHECK(f.at("t.u64").as_uint() == 0xFFFFFFFFFFFFFFFFull);
      CHECK(f.at("t.i64").as_int() == -(std::int64_t{1} << 62));
      CHECK(f.at("t.f32").as_float() == 1.5);
      CHECK(f.at("t.f64").as_float() == -0.125);
      CHECK(f.at("t.u32").as_float() == 4000000000.0);
      CHECK(f.at("t.bool").as_bool());
      CHECK(f.at("t.str").as_string() == "h\xc3\xa9llo");
      CHECK(f.at("t.strs").strings() == std::vector<std::string>{"a", "", "ccc"});
      CHECK(f.at("t.strs").element_type() == ValueType::kString);
      CHECK(f.at("t.floats").floats() == std::vector<float>{0.5f, -2.0f});
      CHECK(f.at("t.ints").ints() == std::vector<std::int64_t>{-1, 7});
      CHECK(f.at("t.ints").floats() == std::vector<float>{-1.0f, 7.0f});
      CHECK(f.at("t.ints").array_size() == 2);
      CHECK(error_of([&] { (void)f.at("t.i8").as_uint(); }) == "gguf: key 't.i8' is negative (-5)");
      CHECK(error_of([&] { (void)f.at("t.u64").as_int(); }).find("does not fit in int64") !=
            std::string::npos);
      CHECK(error_of([&] { (void)f.at("t.str").strings(); }) ==
            "gguf: key 't.str' is a string, not an array of strings");
      CHECK(error_of([&] { (void)f.at("t.floats").ints(); }) ==
            "gguf: key 't.floats' is an array of float32, not an array of integers");
      CHECK(error_of([&] { (void)f.at("t.u8").array_size(); }) ==
            "gguf: key 't.u8' is a uint8, not an array");

      REQUIRE(f.tensors().size() == 5);
      CHECK(f.tensors()[0].name == "a.f32");
      const gsq::gguf::TensorInfo& e = f.tensor("e.bf16");
      CHECK(e.n_dims == 4);
      CHECK(e.ne == std::array<std::int64_t, 4>{3, 1, 2, 1});
      CHECK(e.elements() == 6);
      std::vector<float> got;
      f.read_f32(f.tensor("a.f32"), got);
      CHECK(same_bits(got, wave(15, 1.0f, 1)));
      // Quantized and half tensors: exactly decode(encode(x)).
      const std::tuple<const char*, GgmlType, std::size_t, float, int> enc[] = {
          {"b.q8", GgmlType::kQ8_0, 128, 0.1f, 2},
          {"c.q4", GgmlType::kQ4_0, 96, 3.0f, 3},
          {"d.f16", GgmlType::kF16, 7, 100.0f, 4},
          {"e.bf16", GgmlType::kBF16, 6, 0.01f, 5}};
      for (const auto& [name, type, n, scale, seed] : enc) {
        INFO(name);
        const std::vector<float> x = wave(n, scale, seed);
        Bytes code(static_cast<std::size_t>(static_cast<std::int64_t>(n) /
                                            gsq::gguf::block_elements(type) *
                                            gsq::gguf::block_bytes(type)));
        gsq::gguf::quantize_row(type, x.data(), code.data(), static_cast<std::int64_t>(n));
        std::vector<float> want(n);
        gsq::gguf::dequantize_row(type, code.data(), want.data(), static_cast<std::int64_t>(n));
        f.read_f32(f.tensor(name), got);
        CHECK(same_bits(got, want));
        double amax = 0.0, err = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
          err = std::max(err, std::fabs(static_cast<double>(x[i]) - want[i]));
        }
        // Q4_0 steps are amax / 8 (error <= half a step plus fp16 scale rounding), Q8_0 amax / 127.
        // (Q4_0 codes reach +8 d on the side of the largest magnitude but only -7 d on the other).
        const double bound = type == GgmlType::kQ4_0   ? 0.126
                             : type == GgmlType::kQ8_0 ? 0.005
                                                       : 0.004;
        CHECK(err <= bound * amax);
      }
    }
  }

  // Through a file: write() then open() reads the same.
  const std::string path = "/tmp/gsq_gguf_test_" + std::to_string(::getpid()) + ".gguf";
  sample_writer().write(path);
  const Bytes image = sample_writer().serialize();
  CHECK(slurp(path) == std::string(image.begin(), image.end()));
  const GgufFile f = GgufFile::open(path);
  const GgufFile g = GgufFile::parse(image.data(), image.size());
  CHECK(f.file_size() == image.size());
  for (const gsq::gguf::TensorInfo& t : g.tensors()) {
    std::vector<float> a, b;
    f.read_f32(f.tensor(t.name), a);
    g.read_f32(t, b);
    CHECK(same_bits(a, b));
  }
  std::remove(path.c_str());
  CHECK(error_of([] { (void)GgufFile::open("/nonexistent/x.gguf"); }) ==
        "gguf: cannot open '/nonexistent/x.gguf'");

  // The writer refuses what the reader would.
  GgufWriter w;
  w.add_uint8("k", 1);
  CHECK(error_of([&] { w.add_string("k", "again"); }) == "gguf writer: duplicate key 'k'");
  CHECK(error_of([&] {
          w.add_tensor("q", GgmlType::kQ8_0, {16}, std::vector<float>(16));
        }).find("not a multiple of the Q8_0 block") != std::string::npos);
  CHECK(error_of([&] {
          w.add_tensor("n", GgmlType::kQ4_0, {32}, std::vector<float>(32, NAN));
        }).empty());  // rows are encoded at write time
  CHECK(error_of([&] { (void)w.serialize(); }).find("quantized types need finite values") !=
        std::string::npos);
}

TEST_CASE("gguf: quantize_row follows ggml's reference rounding", "[gguf]") {
  // Q8_0: d = 127 / 127 = 1, q = round(x) with halves away from zero.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.49f;
  Bytes q8(34);
  gsq::gguf::quantize_row(GgmlType::kQ8_0, x.data(), q8.data(), 32);
  CHECK(q8[0] == 0x00);
  CHECK(q8[1] == 0x3C);  // fp16 1.0
  CHECK(static_cast<std::int8_t>(q8[2]) == 127);
  CHECK(static_cast<std::int8_t>(q8[3]) == 3);
  CHECK(static_cast<std::int8_t>(q8[4]) == -3);
  CHECK(static_cast<std::int8_t>(q8[5]) == 0);
  // Q4_0: the largest magnitude -8 gives d = 1; codes x + 8 (clamped to 15).
  std::vector<float> y(32, 0.0f);
  y[0] = -8.0f;
  y[16] = 7.0f;
  y[1] = 3.0f;
  Bytes q4(18);
  gsq::gguf::quantize_row(GgmlType::kQ4_0, y.data(), q4.data(), 32);
  CHECK(q4[1] == 0x3C);
  CHECK(q4[2] == (0 | (15 << 4)));
  CHECK(q4[3] == (11 | (8 << 4)));
  // All zeros: d = 0, every value decodes to (-)0.
  std::vector<float> z(32, 0.0f), back(32, 1.0f);
  gsq::gguf::quantize_row(GgmlType::kQ4_0, z.data(), q4.data(), 32);
  gsq::gguf::dequantize_row(GgmlType::kQ4_0, q4.data(), back.data(), 32);
  CHECK(back == z);
}

TEST_CASE("gguf: hostile images are rejected with a clear message", "[gguf]") {
  const Bytes good = sample_writer().serialize();
  const GgufFile parsed = GgufFile::parse(good.data(), good.size());
  const std::size_t header_end = static_cast<std::size_t>(parsed.data_offset());

  SECTION("truncated at every byte") {
    const gsq::gguf::TensorInfo& last = parsed.tensors().back();
    const std::size_t data_end = static_cast<std::size_t>(last.offset + last.bytes);
    for (std::size_t n = 0; n < data_end; ++n) {  // the padding after the last tensor is optional
      INFO("cut at " << n);
      const Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      const std::string e = parse_error(cut);
      REQUIRE(e.rfind("gguf: ", 0) == 0);
      if (n >= 24 && n < header_end - 32) {  // inside metadata / tensor entries
        const bool says = e.find("truncated") != std::string::npos ||
                          e.find("cannot fit") != std::string::npos ||
                          e.find("more than") != std::string::npos;
        CHECK(says);
      }
      if (n >= header_end) CHECK(e.find("extends past the end of the file") != std::string::npos);
    }
  }
  SECTION("magic and version") {
    Bytes b = good;
    b[0] = 'X';
    CHECK(parse_error(b) == "gguf: bad magic (not a GGUF file)");
    for (const std::uint32_t v : {1u, 0u, 4u}) {
      b = good;
      put_u32(b, 4, v);
      CHECK(parse_error(b) ==
            "gguf: unsupported version " + std::to_string(v) + " (gsq reads versions 2 and 3)");
    }
    b = good;
    put_u32(b, 4, 0x03000000u);
    CHECK(parse_error(b) == "gguf: big-endian GGUF files are not supported");
    CHECK(parse_error(Bytes{'G', 'G'}).find("too few for the magic") != std::string::npos);
  }
  SECTION("huge counts and lengths") {
    Bytes b = good;
    put_u64(b, 16, std::uint64_t{1} << 62);
    CHECK(parse_error(b).find("gguf: metadata count 4611686018427387904 cannot fit") == 0);
    b = good;
    put_u64(b, 8, ~std::uint64_t{0});
    CHECK(parse_error(b).find("gguf: tensor count 18446744073709551615 cannot fit") == 0);
    b = good;
    put_u64(b, 24, ~std::uint64_t{0});  // the first key's length
    CHECK(parse_error(b).find("gguf: truncated: a key of metadata entry 0 needs") == 0);
    // The string array's length.
    const std::size_t strs = tensor_field(good, "t.strs") + 8;
    b = good;
    put_u64(b, strs, std::uint64_t{1} << 61);
    CHECK(parse_error(b).find("gguf: key 't.strs' is an array of 2305843009213693952 strings, "
                              "more than the") == 0);
    const std::size_t floats = tensor_field(good, "t.floats") + 8;
    b = good;
    put_u64(b, floats, std::uint64_t{1} << 62);
    CHECK(parse_error(b).find("gguf: key 't.floats' is an array of 4611686018427387904 "
                              "float32 values, more than") == 0);
    // A string inside the array longer than the file.
    b = good;
    put_u64(b, strs + 8, std::uint64_t{1} << 40);
    CHECK(parse_error(b).find("gguf: truncated: an array's string of key 't.strs'") == 0);
  }
  SECTION("value types") {
    Bytes b = good;
    put_u32(b, tensor_field(good, "t.u8"), 13);
    CHECK(parse_error(b) == "gguf: key 't.u8' has unknown value type 13");
    b = good;
    put_u32(b, tensor_field(good, "t.floats") + 4, 99);
    CHECK(parse_error(b) == "gguf: key 't.floats' is an array of unknown value type 99");
  }
  SECTION("duplicates") {
    Bytes b = good;
    b[tensor_field(good, "t.i8") - 2] = 'u';  // "t.i8" -> "t.u8"
    CHECK(parse_error(b) == "gguf: duplicate key 't.u8'");
    b = good;
    const std::size_t c = tensor_field(good, "c.q4");
    b[c - 4] = 'b';
    b[c - 1] = '8';
    CHECK(parse_error(b) == "gguf: duplicate tensor 'b.q8'");
  }
  SECTION("alignment") {
    for (const std::uint32_t a : {0u, 3u, 48u}) {
      GgufWriter w;
      Bytes payload(4);
      put_u32(payload, 0, a);
      w.add_raw_value("general.alignment", 4, payload);
      const Bytes b = w.serialize();
      CHECK(parse_error(b) ==
            "gguf: general.alignment " + std::to_string(a) + " is not a power of two in [1, 2^30]");
    }
    GgufWriter w;
    w.add_raw_value("general.alignment", 8, {1, 0, 0, 0, 0, 0, 0, 0, 'x'});
    CHECK(parse_error(w.serialize()) == "gguf: general.alignment is a string, not an integer");
  }
  SECTION("tensor entries") {
    const std::size_t a = tensor_field(good, "a.f32");  // n_dims 2, ne 5 3, type, offset
    Bytes b = good;
    put_u32(b, a, 5);
    CHECK(parse_error(b) == "gguf: tensor 'a.f32' has n_dims 5, outside 1..4");
    b = good;
    put_u32(b, a, 0);
    CHECK(parse_error(b) == "gguf: tensor 'a.f32' has n_dims 0, outside 1..4");
    b = good;
    put_u64(b, a + 4, 0);
    CHECK(parse_error(b).find("gguf: tensor 'a.f32' has ne[0] = 0 (empty)") == 0);
    b = good;
    put_u64(b, a + 4, std::uint64_t{1} << 32);
    put_u64(b, a + 12, std::uint64_t{1} << 32);
    CHECK(parse_error(b).find("gguf: tensor 'a.f32' has ne[1] = 4294967296, the element count "
                              "leaves [1, 2^40]") == 0);
    b = good;
    put_u64(b, a + 4, ~std::uint64_t{0});
    CHECK(parse_error(b).find("gguf: tensor 'a.f32' has ne[0] = 18446744073709551615") == 0);
    b = good;
    put_u32(b, a + 20, 37);
    CHECK(parse_error(b) == "gguf: tensor 'a.f32' has unknown ggml type 37");
    b = good;
    put_u32(b, a + 20, 4);
    CHECK(parse_error(b) == "gguf: tensor 'a.f32' has unknown ggml type 4");
    b = good;
    put_u32(b, a + 20, static_cast<std::uint32_t>(GgmlType::kQ8_0));
    CHECK(parse_error(b) ==
          "gguf: tensor 'a.f32' has rows of ne[0] = 5, not a multiple of the Q8_0 block of 32");
    const std::size_t q = tensor_field(good, "b.q8");  // 2 dims: offset at +24
    b = good;
    put_u64(b, q + 24, 1);
    CHECK(parse_error(b) == "gguf: tensor 'b.q8' has offset 1, not a multiple of the alignment 32");
    b = good;
    put_u64(b, q + 24, 0);  // on top of a.f32
    CHECK(parse_error(b).find("gguf: tensors 'a.f32' and 'b.q8' overlap") == 0);
    b = good;
    put_u64(b, q + 24, std::uint64_t{1} << 40);
    CHECK(parse_error(b).find("gguf: tensor 'b.q8' (136 bytes at data offset 1099511627776) "
                              "extends past the end of the file") == 0);
    b = good;
    put_u64(b, q + 24, ~std::uint64_t{0} - 31);
    CHECK(parse_error(b).find("extends past the end of the file") != std::string::npos);
  }
  SECTION("arrays of arrays are walked, bounded, and not kept") {
    auto nested = [](int depth, std::uint64_t inner) {
      Bytes p;
      gsq::ByteWriter w(p);
      for (int d = 0; d < depth; ++d) {
        w.u32(9);
        w.u64(1);
      }
      w.u32(4);  // uint32 elements
      w.u64(inner);
      for (std::uint64_t i = 0; i < inner && i < 4; ++i) w.u32(7);
      GgufWriter gw;
      gw.add_raw_value("n", 9, p);
      gw.add_uint8("after", 1);
      return gw.serialize();
    };
    const Bytes ok = nested(3, 4);
    const GgufFile f = GgufFile::parse(ok.data(), ok.size());
    CHECK(f.at("n").element_type() == ValueType::kArray);
    CHECK(f.at("n").array_size() == 1);
    CHECK(f.at("after").as_uint() == 1);
    CHECK(error_of([&] { (void)f.at("n").ints(); }) ==
          "gguf: key 'n' is an array of array, not an array of integers");
    CHECK(parse_error(nested(9, 4)) == "gguf: key 'n' nests arrays more than 8 deep");
    CHECK(parse_error(nested(2, std::uint64_t{1} << 62)).find("gguf: key 'n' nests an array of") ==
          0);
  }
  SECTION("an unsupported type is read as an error naming tensor and type") {
    GgufWriter w;
    w.add_raw_tensor("blk.0.attn_q.weight", GgmlType::kQ2_K, {256}, Bytes(84));
    const Bytes b = w.serialize();
    const GgufFile f = GgufFile::parse(b.data(), b.size());
    std::vector<float> out;
    CHECK(error_of([&] {
            f.read_f32(f.tensor("blk.0.attn_q.weight"), out);
          }).find("gguf: tensor 'blk.0.attn_q.weight' has type Q2_K, which gsq cannot decode") ==
          0);
    CHECK(error_of([&] { (void)f.tensor("nope"); }) == "gguf: tensor 'nope' is missing");
    CHECK(std::string(gsq::gguf::to_string(static_cast<GgmlType>(37))) == "type 37");
  }
}

namespace {

/// A tiny llama GGUF from a random source (F32, exact), optionally untied, with extras.
Bytes tiny_llama(const gsq::LlamaConfig& c, const std::function<void(GgufWriter&)>& extra = {},
                 const std::string& skip = "") {
  const gsq::RandomLlamaWeights src(c, 3);
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_uint32("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  w.add_uint32("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.add_uint32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  w.add_uint32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.add_uint32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  w.add_uint32("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  w.add_float32("llama.rope.freq_base", 500000.0f);
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  if (extra) extra(w);
  auto add = [&](const std::string& name, gsq::LlamaTensor t, int layer) {
    if (name == skip) return;
    std::vector<float> v;
    src.read(t, layer, v);
    const gsq::TensorShape s = gsq::shape_of(c, t);
    if (s.rows == 1) {
      w.add_tensor(name, GgmlType::kF32, {s.cols}, v);
    } else {
      w.add_tensor(name, GgmlType::kF32, {s.cols, s.rows}, v);
    }
  };
  using T = gsq::LlamaTensor;
  add("token_embd.weight", T::kTokenEmbedding, 0);
  add("output_norm.weight", T::kRmsFinal, 0);
  if (!c.tied_classifier) add("output.weight", T::kClassifier, 0);
  const std::pair<const char*, T> layer[] = {
      {"attn_norm", T::kRmsAtt}, {"attn_q", T::kWq},      {"attn_k", T::kWk},
      {"attn_v", T::kWv},        {"attn_output", T::kWo}, {"ffn_norm", T::kRmsFfn},
      {"ffn_gate", T::kW1},      {"ffn_down", T::kW2},    {"ffn_up", T::kW3}};
  for (int l = 0; l < c.n_layers; ++l)
    for (const auto& [n, t] : layer) add("blk." + std::to_string(l) + "." + n + ".weight", t, l);
  return w.serialize();
}

gsq::LlamaConfig tiny_config(bool tied) {
  gsq::LlamaConfig c;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 10;
  c.seq_len = 32;
  c.tied_classifier = tied;
  return c;
}

std::string source_error(const Bytes& b) {
  return error_of([&] { gsq::GgufLlamaSource s(GgufFile::parse(b.data(), b.size())); });
}

}  // namespace

TEST_CASE("gguf: GgufLlamaSource serves every tensor and checks every shape", "[gguf]") {
  for (const bool tied : {true, false}) {
    const gsq::LlamaConfig c = tiny_config(tied);
    const Bytes b = tiny_llama(c);
    const gsq::GgufLlamaSource s(GgufFile::parse(b.data(), b.size()));
    CHECK(s.config().dim == 16);
    CHECK(s.config().vocab_size == 10);
    CHECK(s.config().tied_classifier == tied);
    CHECK(s.config().rope_theta == 500000.0);
    CHECK(s.config().norm_eps == 1e-6f);
    CHECK(s.config().head_dim == 0);
    const gsq::RandomLlamaWeights ref(c, 3);
    using T = gsq::LlamaTensor;
    for (int l = 0; l < c.n_layers; ++l) {
      for (const T t : {T::kTokenEmbedding, T::kClassifier, T::kRmsFinal, T::kRmsAtt, T::kWq,
                        T::kWk, T::kWv, T::kWo, T::kRmsFfn, T::kW1, T::kW2, T::kW3}) {
        std::vector<float> a, want;
        s.read(t, l, a);
        ref.read(tied && t == T::kClassifier ? T::kTokenEmbedding : t,
                 t == T::kTokenEmbedding || t == T::kClassifier || t == T::kRmsFinal ? 0 : l, want);
        CHECK(same_bits(a, want));
      }
    }
  }
  const gsq::LlamaConfig c = tiny_config(true);
  CHECK(source_error(tiny_llama(c, {}, "blk.1.ffn_up.weight")) ==
        "gguf: tensor 'blk.1.ffn_up.weight' is missing");
  CHECK(source_error(tiny_llama(c, {}, "output_norm.weight")) ==
        "gguf: tensor 'output_norm.weight' is missing");
  gsq::LlamaConfig wide = c;
  wide.hidden_dim = 32;
  const Bytes b = tiny_llama(wide, [](GgufWriter&) {});
  // The metadata says 32; patching it to 24 leaves every ffn tensor the wrong shape.
  Bytes patched = b;
  put_u32(patched, tensor_field(b, "llama.feed_forward_length") + 4, 24);
  CHECK(source_error(patched) ==
        "gguf: tensor 'blk.0.ffn_gate.weight' has shape [16, 32], expected [16, 24] (w1)");
  Bytes arch = b;
  std::memcpy(&arch[tensor_field(b, "general.architecture") + 12], "LLAMA", 5);
  CHECK(source_error(arch) ==
        "gguf: general.architecture is 'LLAMA', gsq reads only 'llama' models");
  CHECK(source_error(tiny_llama(c, [](GgufWriter& w) { w.add_uint32("llama.vocab_size", 11); })) ==
        "gguf: the vocabulary has 11 tokens but token_embd.weight has 10 rows");
  CHECK(source_error(tiny_llama(c, [](GgufWriter& w) {
          w.add_strings("tokenizer.ggml.tokens", {"a", "b"});
        })) == "gguf: the vocabulary has 2 tokens but token_embd.weight has 10 rows");
  CHECK(source_error(
            tiny_llama(c, [](GgufWriter& w) { w.add_uint32("llama.rope.dimension_count", 2); })) ==
        "gguf: llama.rope.dimension_count 2 differs from the head size 4 (partial RoPE is "
        "not supported)");
  Bytes kv = tiny_llama(c);
  put_u32(kv, tensor_field(kv, "llama.attention.head_count_kv") + 4, 3);
  CHECK(source_error(kv) == "llama config: n_kv_heads 3 does not divide n_heads 4");
  Bytes layers = tiny_llama(c);
  put_u32(layers, tensor_field(layers, "llama.block_count") + 4, 0);
  CHECK(source_error(layers) == "gguf: key 'llama.block_count' = 0 is outside [1, 1024]");
  CHECK(source_error(tiny_llama(
            c,
            [](GgufWriter& w) {
              w.add_raw_tensor("blk.0.attn_q.weight", GgmlType::kQ2_K, {256, 1}, Bytes(84));
            },
            "blk.0.attn_q.weight")) ==
        "gguf: tensor 'blk.0.attn_q.weight' has shape [256], expected [16, 16] (wq)");
}

TEST_CASE("gguf: rope_freqs.weight divides the RoPE frequencies", "[gguf]") {
  const gsq::LlamaConfig c = tiny_config(true);  // head size 4: two pairs
  const Bytes b = tiny_llama(c, [](GgufWriter& w) {
    w.add_tensor("rope_freqs.weight", GgmlType::kF32, {2}, std::vector<float>{1.0f, 2.0f});
  });
  const gsq::GgufLlamaSource s(GgufFile::parse(b.data(), b.size()));
  REQUIRE(s.config().rope_freq_factors == std::vector<float>{1.0f, 2.0f});
  gsq::LlamaConfig plain = s.config();
  plain.rope_freq_factors.clear();
  const gsq::RopeTable with(s.config(), 16), without(plain, 16);
  for (int p = 0; p < 8; ++p) {
    CHECK(with.cos(p)[0] == without.cos(p)[0]);      // factor 1: the same frequency
    CHECK(with.cos(2 * p)[1] == without.cos(p)[1]);  // factor 2: half the frequency, exactly
    CHECK(with.sin(2 * p)[1] == without.sin(p)[1]);
  }
  CHECK(source_error(tiny_llama(c, [](GgufWriter& w) {
          w.add_tensor("rope_freqs.weight", GgmlType::kF32, {2}, std::vector<float>{1.0f, 0.0f});
        })) == "llama config: rope_freq_factors[1] = 0 must be finite and > 0");
  CHECK(source_error(tiny_llama(c, [](GgufWriter& w) {
          w.add_tensor("rope_freqs.weight", GgmlType::kF32, {3}, std::vector<float>(3, 1.0f));
        })) == "gguf: tensor 'rope_freqs.weight' has shape [3], expected [2]");
  gsq::LlamaConfig bad = c;
  bad.rope_freq_factors = {1.0f};
  CHECK(error_of([&] { bad.validate(); }) ==
        "llama config: rope_freq_factors has 1 values, head size 4 needs 2");
}

// An independent reader: Hugging Face's JavaScript GGUF parser (npm @huggingface/gguf) lists
// the metadata and tensor directory of the shared files, and gsq must agree on every key, value,
// tensor type, shape and offset.  Skipped unless `node` runs and the package is installed where
// GSQ_HFGGUF_MODULES points (default: build/npm/node_modules, where scripts/install-deps.sh
// installs it when npm is present), e.g.
//   npm install --prefix build/npm @huggingface/gguf@0.4.6
TEST_CASE("gguf: agrees with @huggingface/gguf", "[gguf]") {
  std::string why;
  const std::string modules = gsq::test::hfgguf_modules(why);
  if (modules.empty()) GSQ_SKIP(why);
  const char* names[] = {"stories260K.gguf", "rand256-q4_k_m.gguf", "rand256-bf16.gguf",
                         "vocab/ggml-vocab-gpt-2.gguf"};
  if (gsq::test::model_path(names[0]).empty()) GSQ_SKIP("../shared/models is absent");
  const std::string script = "/tmp/gsq_gguf_list_" + std::to_string(::getpid()) + ".cjs";
  {
    std::ofstream js(script);
    js << "const { gguf } = require('@huggingface/gguf');\n"
          "(async () => {\n"
          "  const { metadata, tensorInfos } = await gguf(process.argv[2], { allowLocalFile: true "
          "});\n"
          "  for (const k of Object.keys(metadata)) {\n"
          "    if (k === 'version' || k === 'tensor_count' || k === 'kv_count') continue;\n"
          "    const v = metadata[k];\n"
          "    console.log('kv\\t' + k + '\\t' + (Array.isArray(v) ? 'n=' + v.length : "
          "String(v)));\n"
          "  }\n"
          "  for (const t of tensorInfos) console.log('tensor\\t' + t.name + '\\t' + t.dtype + "
          "'\\t' + t.shape.map(String).join(',') + '\\t' + String(t.offset));\n"
          "})().catch((e) => { console.error(e); process.exit(1); });\n";
  }
  for (const char* name : names) {
    INFO(name);
    const std::string path = gsq::test::model_path(name);
    if (path.empty()) continue;
    const std::string cmd = "NODE_PATH='" + modules + "' node " + script + " '" + path + "'";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    REQUIRE(::pclose(p) == 0);
    const GgufFile f = GgufFile::open(path);
    std::size_t kvs = 0, tensors = 0;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      std::vector<std::string> col;
      std::istringstream cells(line);
      for (std::string c; std::getline(cells, c, '\t');) col.push_back(c);
      INFO(line);
      if (col[0] == "kv") {
        REQUIRE(col.size() == 3);
        const gsq::gguf::Value* v = f.find(col[1]);
        REQUIRE(v != nullptr);
        ++kvs;
        const ValueType t = v->type();
        if (v->is_array()) {
          CHECK(col[2] == "n=" + std::to_string(v->array_size()));
        } else if (t == ValueType::kString) {
          CHECK(col[2] == v->as_string());
        } else if (t == ValueType::kBool) {
          CHECK(col[2] == (v->as_bool() ? "true" : "false"));
        } else if (t == ValueType::kFloat32 || t == ValueType::kFloat64) {
          CHECK(std::strtod(col[2].c_str(), nullptr) == v->as_float());
        } else {
          CHECK(col[2] == (gsq::gguf::detail::is_signed(t) ? std::to_string(v->as_int())
                                                           : std::to_string(v->as_uint())));
        }
      } else {
        REQUIRE(col.size() == 5);
        const gsq::gguf::TensorInfo& t = f.tensor(col[1]);
        ++tensors;
        CHECK(col[2] == std::to_string(static_cast<std::uint32_t>(t.type)));
        std::string shape;
        for (int d = 0; d < t.n_dims; ++d) shape += (d ? "," : "") + std::to_string(t.ne[d]);
        CHECK(col[3] == shape);
        CHECK(col[4] == std::to_string(t.offset - f.data_offset()));
      }
    }
    CHECK(kvs == f.metadata().size());
    CHECK(tensors == f.tensors().size());
  }
  std::remove(script.c_str());
}
