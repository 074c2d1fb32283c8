// hf_test.cpp: the safetensors reader and writer, sharded indexes, config.json, the q/k row
// permutation and HfLlamaSource, on generated files, hostile images and, when present, the real
// stories260K-hf and stories260K-hf-bf16 directories against stories260K.bin.
#include "catch.hpp"

#if GSQ_HAVE_JSON

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gsq/half.hpp"
#include "gsq/io/file.hpp"
#include "gsq/models/llama/hf_source.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/models/llama/weights.hpp"
#include "gsq/models/safetensors.hpp"
#include "models.hpp"
#include "testing.hpp"

namespace st = gsq::safetensors;
namespace fs = std::filesystem;

namespace {

/// A safetensors image from a header text and a data section of `data` bytes (0, 1, 2, ...).
std::vector<std::uint8_t> image(const std::string& header, std::size_t data) {
  std::vector<std::uint8_t> b;
  gsq::ByteWriter w(b);
  w.u64(header.size());
  w.bytes(header.data(), header.size());
  for (std::size_t i = 0; i < data; ++i) b.push_back(static_cast<std::uint8_t>(i));
  return b;
}

std::string parse_error(const std::vector<std::uint8_t>& b) {
  return gsq::test::error_of([&b] { (void)st::File::parse(b.data(), b.size(), "t.safetensors"); });
}

using gsq::test::error_of;

/// A fresh empty directory under the system's temporary directory, removed with the object.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() / ("gsq_hf_test_" + std::to_string(::getpid()) + "_" + tag +
                                        "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

void write_text(const fs::path& path, const std::string& text) {
  gsq::write_file_atomic(path.string(), reinterpret_cast<const std::uint8_t*>(text.data()),
                         text.size(), "test");
}

std::vector<float> floats_of(const gsq::LlamaWeightSource& s, gsq::LlamaTensor t, int layer) {
  std::vector<float> v;
  s.read(t, layer, v);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

constexpr gsq::LlamaTensor kLayerTensors[] = {
    gsq::LlamaTensor::kRmsAtt, gsq::LlamaTensor::kWq, gsq::LlamaTensor::kWk,
    gsq::LlamaTensor::kWv,     gsq::LlamaTensor::kWo, gsq::LlamaTensor::kRmsFfn,
    gsq::LlamaTensor::kW1,     gsq::LlamaTensor::kW2, gsq::LlamaTensor::kW3};

/// The HF name of a tensor (as HfLlamaSource names it for an untied config).
std::string hf_name(gsq::LlamaTensor t, int layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  switch (t) {
    case gsq::LlamaTensor::kTokenEmbedding:
      return "model.embed_tokens.weight";
    case gsq::LlamaTensor::kClassifier:
      return "lm_head.weight";
    case gsq::LlamaTensor::kRmsFinal:
      return "model.norm.weight";
    case gsq::LlamaTensor::kRmsAtt:
      return p + "input_layernorm.weight";
    case gsq::LlamaTensor::kWq:
      return p + "self_attn.q_proj.weight";
    case gsq::LlamaTensor::kWk:
      return p + "self_attn.k_proj.weight";
    case gsq::LlamaTensor::kWv:
      return p + "self_attn.v_proj.weight";
    case gsq::LlamaTensor::kWo:
      return p + "self_attn.o_proj.weight";
    case gsq::LlamaTensor::kRmsFfn:
      return p + "post_attention_layernorm.weight";
    case gsq::LlamaTensor::kW1:
      return p + "mlp.gate_proj.weight";
    case gsq::LlamaTensor::kW2:
      return p + "mlp.down_proj.weight";
    case gsq::LlamaTensor::kW3:
      return p + "mlp.up_proj.weight";
  }
  return {};
}

/// The HF tensors of a weight source, q and k permuted to rotate-half order, in `dtype`.
std::vector<st::TensorData> hf_tensors(const gsq::LlamaWeightSource& s, st::Dtype dtype) {
  const gsq::LlamaConfig& c = s.config();
  std::vector<st::TensorData> out;
  auto add = [&](gsq::LlamaTensor t, int layer) {
    std::vector<float> v = floats_of(s, t, layer);
    if (t == gsq::LlamaTensor::kWq || t == gsq::LlamaTensor::kWk) {
      std::vector<float> hf(v.size());
      gsq::hf_from_meta_rows(v.data(), hf.data(),
                             t == gsq::LlamaTensor::kWq ? c.n_heads : c.n_kv_heads, c.head_size(),
                             c.dim);
      v = hf;
    }
    const gsq::TensorShape sh = gsq::shape_of(c, t);
    const bool norm = t == gsq::LlamaTensor::kRmsAtt || t == gsq::LlamaTensor::kRmsFfn ||
                      t == gsq::LlamaTensor::kRmsFinal;
    out.push_back(
        {hf_name(t, layer), dtype,
         norm ? std::vector<std::int64_t>{sh.cols} : std::vector<std::int64_t>{sh.rows, sh.cols},
         st::encode(v.data(), v.size(), dtype)});
  };
  add(gsq::LlamaTensor::kTokenEmbedding, 0);
  for (int l = 0; l < c.n_layers; ++l) {
    for (gsq::LlamaTensor t : kLayerTensors) add(t, l);
  }
  add(gsq::LlamaTensor::kRmsFinal, 0);
  if (!c.tied_classifier) add(gsq::LlamaTensor::kClassifier, 0);
  return out;
}

/// Writes tensors as `shards` files plus an index (or model.safetensors when shards == 0).
void write_model(const fs::path& dir, const std::vector<st::TensorData>& tensors, int shards) {
  if (shards == 0) {
    st::write((dir / "model.safetensors").string(), tensors);
    return;
  }
  nlohmann::json map = nlohmann::json::object();
  for (int s = 0; s < shards; ++s) {
    const std::string name =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    std::vector<st::TensorData> part;
    for (std::size_t i = static_cast<std::size_t>(s); i < tensors.size();
         i += static_cast<std::size_t>(shards)) {
      part.push_back(tensors[i]);
      map[tensors[i].name] = name;
    }
    st::write((dir / name).string(), part, {{"format", "pt"}});
  }
  write_text(dir / "model.safetensors.index.json",
             nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2));
}

nlohmann::json small_config() {
  return nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", 16},
                        {"intermediate_size", 24},
                        {"num_hidden_layers", 2},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},
                        {"vocab_size", 20},
                        {"max_position_embeddings", 32},
                        {"rms_norm_eps", 1e-6},
                        {"rope_theta", 500000.0},
                        {"tie_word_embeddings", false}};
}

std::string config_error(const nlohmann::json& j) {
  return error_of([&] { (void)gsq::llama_config_from_hf_json(j); });
}

}  // namespace

// ---- safetensors ---------------------------------------------------------------------------

TEST_CASE("safetensors: writer and reader round trip F32, F16, BF16, raw dtypes and metadata",
          "[hf][safetensors]") {
  const std::vector<float> x = {1.0f, -2.5f, 3.0e-5f, 65504.0f, 1.0f / 3.0f, -0.0f};
  std::vector<st::TensorData> in = {
      {"b.f16", st::Dtype::kF16, {2, 3}, st::encode(x.data(), 6, st::Dtype::kF16)},
      {"a.f32", st::Dtype::kF32, {3, 2}, st::encode(x.data(), 6, st::Dtype::kF32)},
      {"c.bf16", st::Dtype::kBF16, {6}, st::encode(x.data(), 6, st::Dtype::kBF16)},
      {"d.i8", st::Dtype::kI8, {2, 2}, {1, 2, 3, 0xFF}},
      {"e.scalar", st::Dtype::kF32, {}, st::encode(x.data(), 1, st::Dtype::kF32)},
      {"f.empty", st::Dtype::kBF16, {0, 7}, {}},
  };
  const auto img = st::serialize(in, {{"format", "pt"}, {"note", "gsq test"}});
  REQUIRE(gsq::detail::load_le(img.data(), 8) % 8 == 0);  // the data section is 8-aligned
  const st::File f = st::File::parse(img.data(), img.size());
  REQUIRE(f.tensors().size() == 6);
  REQUIRE(f.metadata() ==
          std::map<std::string, std::string>{{"format", "pt"}, {"note", "gsq test"}});
  // In the writer's order, which tensors() reports by offset.
  REQUIRE(f.tensors()[0].name == "b.f16");
  REQUIRE(f.tensor("a.f32").shape == std::vector<std::int64_t>{3, 2});
  REQUIRE(f.tensor("e.scalar").elements == 1);
  REQUIRE(f.tensor("f.empty").elements == 0);
  std::vector<float> v;
  f.read_floats("a.f32", v);
  REQUIRE(same_bits(v, x));
  f.read_floats("b.f16", v);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(v[i] == gsq::to_float(gsq::to_fp16(x[i])));
  f.read_floats("c.bf16", v);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(v[i] == gsq::to_float(gsq::to_bf16(x[i])));
  f.read_floats("f.empty", v);
  REQUIRE(v.empty());
  std::vector<std::uint8_t> raw;
  f.read_bytes(f.tensor("d.i8"), raw);
  REQUIRE(raw == std::vector<std::uint8_t>{1, 2, 3, 0xFF});
  REQUIRE(error_of([&] { f.read_floats("d.i8", v); }) ==
          "safetensors: '<memory>': tensor 'd.i8' has dtype I8, which gsq does not read as "
          "weights (F32, F16 and BF16 only)");
  REQUIRE(error_of([&] { f.read_floats("zz", v); }) ==
          "safetensors: '<memory>' has no tensor 'zz'");

  // The same through a file: open() reads the header only, reads go to disk.
  TempDir dir("roundtrip");
  const std::string path = (dir.path / "x.safetensors").string();
  st::write(path, in, {{"format", "pt"}});
  const st::File g = st::File::open(path);
  REQUIRE(g.data_offset() % 8 == 0);
  REQUIRE(g.tensors().size() == 6);
  g.read_floats("c.bf16", v);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(v[i] == gsq::to_float(gsq::to_bf16(x[i])));
  REQUIRE(error_of([&] {
            (void)st::File::open((dir.path / "none").string());
          }).rfind("safetensors: cannot open '", 0) == 0);
  REQUIRE(error_of([&] { (void)st::File::open(dir.str()); }) ==
          "safetensors: '" + dir.str() + "' is not a regular file");
}

TEST_CASE("safetensors: large tensors decode across 1 MiB chunks", "[hf][safetensors]") {
  std::vector<float> x(300000 + 3);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f - 7.0f;
  TempDir dir("chunks");
  const std::string path = (dir.path / "big.safetensors").string();
  st::write(path, {{"w",
                    st::Dtype::kF32,
                    {static_cast<std::int64_t>(x.size())},
                    st::encode(x.data(), x.size(), st::Dtype::kF32)},
                   {"h",
                    st::Dtype::kBF16,
                    {static_cast<std::int64_t>(x.size())},
                    st::encode(x.data(), x.size(), st::Dtype::kBF16)}});
  const st::File f = st::File::open(path);
  std::vector<float> v;
  f.read_floats("w", v);
  REQUIRE(same_bits(v, x));
  f.read_floats("h", v);
  for (std::size_t i = 0; i < x.size(); i += 997) {
    REQUIRE(v[i] == gsq::to_float(gsq::to_bf16(x[i])));
  }
  REQUIRE(v.back() == gsq::to_float(gsq::to_bf16(x.back())));
}

TEST_CASE("safetensors: hostile images are rejected with a message naming the problem",
          "[hf][safetensors][errors]") {
  const std::string one = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(parse_error(image(one, 8)).empty());
  auto b = image(one, 8);
  REQUIRE(parse_error(std::vector<std::uint8_t>(b.begin(), b.begin() + 5)) ==
          "safetensors: 't.safetensors': file holds 5 bytes, less than the 8-byte header length");
  // Header length past the end, and beyond the 100 MB limit.
  REQUIRE(parse_error(std::vector<std::uint8_t>(b.begin(), b.begin() + 20)) ==
          "safetensors: 't.safetensors': header length " + std::to_string(one.size()) +
              " runs past the end of the file (12 bytes follow it)");
  auto huge = b;
  for (int i = 0; i < 8; ++i) huge[static_cast<std::size_t>(i)] = 0xFF;
  REQUIRE(parse_error(huge) ==
          "safetensors: 't.safetensors': header length 18446744073709551615 "
          "exceeds the 100000000-byte limit");

  struct Case {
    std::string header;
    std::size_t data;
    std::string message;  // after "safetensors: 't.safetensors'"
  };
  const std::vector<Case> cases = {
      {"{\"a\":", 0, ": header is not valid JSON ("},
      {"", 0, ": header is not valid JSON ("},
      {"[1,2]", 0, ": header is a JSON array, not an object"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, ": header has the key 'a' twice in one object"},
      {R"({"a":{"dtype":"F32","shape":[[[[1]]]],"data_offsets":[0,4]}})", 4,
       ": header is nested deeper than 4 levels"},
      {R"({"a":7})", 0, ": tensor 'a' is a JSON number, not an object"},
      {R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4,
       ": tensor 'a' has unknown dtype 'Q4'"},
      {R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4,
       ": tensor 'a': dtype is a number, not a string"},
      {R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, ": tensor 'a' has no dtype"},
      {R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4, ": tensor 'a' has no shape"},
      {R"({"a":{"dtype":"F32","shape":[1]}})", 4, ": tensor 'a' has no data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
       ": tensor 'a': a shape dimension is negative (-1)"},
      {R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4,
       ": tensor 'a': a shape dimension is not an integer (number)"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4,
       ": tensor 'a': shape [4294967296,4294967296] has too many elements"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
       ": tensor 'a': data_offsets is not an array of two integers"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4,
       ": tensor 'a': data_offsets [4, 0] end before they begin"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
       ": tensor 'a': data_offsets [0, 8] run past the data section (4 bytes)"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
       ": tensor 'a': shape [2] of F32 needs 2 x 4 bytes but data_offsets [0, 4] hold 4"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, ": tensor 'b' (bytes 4..8) overlaps tensor 'a' (which ends at 8)"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
       ": tensor 'a' starts at byte 4 of the data section, leaving a gap of 4 bytes after the "
       "header"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6,
       ": the data section holds 6 bytes but its tensors cover 4 (2 trailing bytes)"},
      {R"({"__metadata__":{"k":1}})", 0, ": __metadata__ entry 'k' is a number, not a string"},
      {R"({"__metadata__":[]})", 0, ": __metadata__ is a array, not an object"},
  };
  for (const Case& c : cases) {
    INFO(c.header);
    const std::string e = parse_error(image(c.header, c.data));
    REQUIRE(e.rfind("safetensors: 't.safetensors'" + c.message, 0) == 0);
  }
  // Metadata alone and no tensors is a valid (empty) file; so is "{}".
  REQUIRE(parse_error(image(R"({"__metadata__":{"format":"pt"}})", 0)).empty());
  REQUIRE(parse_error(image("{}  ", 0)).empty());
}

TEST_CASE("safetensors: the index of a sharded model", "[hf][safetensors][errors]") {
  REQUIRE(st::parse_index(R"({"metadata":{"total_size":8},"weight_map":{"a":"m-1.safetensors"}})")
              .at("a") == "m-1.safetensors");
  for (const std::string shard :
       {"../x.safetensors", "sub/x", "/etc/passwd", "..", ".", "", "a\\\\b"}) {
    INFO(shard);
    REQUIRE(error_of([&] {
              (void)st::parse_index(R"({"weight_map":{"a":")" + shard + "\"}}", "i.json");
            }) == "safetensors: 'i.json': tensor 'a' is mapped to shard '" +
                      (shard == "a\\\\b" ? std::string("a\\b") : shard) +
                      "', which is not a plain file name in the index's directory");
  }
  REQUIRE(error_of([] { (void)st::parse_index(R"({"metadata":{}})", "i.json"); }) ==
          "safetensors: 'i.json' has no weight_map");
  REQUIRE(error_of([] { (void)st::parse_index(R"({"weight_map":{"a":3}})", "i.json"); }) ==
          "safetensors: 'i.json': weight_map entry 'a' is a number, not a file name");
  REQUIRE(error_of([] {
            (void)st::parse_index("{", "i.json");
          }).rfind("safetensors: 'i.json' is not valid JSON (", 0) == 0);

  // A tensor listed in the map but absent from its shard; a shard that is not there.
  TempDir dir("index");
  const float one = 1.0f;
  st::write((dir.path / "s1.safetensors").string(),
            {{"a", st::Dtype::kF32, {1}, st::encode(&one, 1, st::Dtype::kF32)}});
  const std::string index = (dir.path / "model.safetensors.index.json").string();
  write_text(index, R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})");
  REQUIRE(error_of([&] { (void)st::Model::open_directory(dir.str()); }) ==
          "safetensors: '" + index +
              "' maps tensor 'b' to shard 's1.safetensors', which has no such tensor");
  write_text(index, R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  REQUIRE(error_of([&] {
            (void)st::Model::open_directory(dir.str());
          }).rfind("safetensors: cannot open '" + dir.str() + "/s2.safetensors'", 0) == 0);
  write_text(index, R"({"weight_map":{"a":"s1.safetensors"}})");
  const st::Model m = st::Model::open_directory(dir.str());
  std::vector<float> v;
  m.read_floats("a", v);
  REQUIRE(v == std::vector<float>{1.0f});
  REQUIRE(m.names() == std::vector<std::string>{"a"});
  REQUIRE(error_of([&] { m.read_floats("b", v); }) == "safetensors: the model has no tensor 'b'");
}

// ---- q/k permutation -----------------------------------------------------------------------

TEST_CASE("hf: the q/k row permutation and its inverse", "[hf]") {
  // 2 heads of head_dim 6, 3 columns; each row holds its Meta index.
  const int heads = 2, hd = 6;
  const gsq::Index cols = 3;
  std::vector<float> meta(static_cast<std::size_t>(heads * hd * cols));
  for (std::size_t i = 0; i < meta.size(); ++i) meta[i] = static_cast<float>(i / cols);
  std::vector<float> hf(meta.size()), back(meta.size());
  gsq::hf_from_meta_rows(meta.data(), hf.data(), heads, hd, cols);
  // HF's head is [the even Meta rows, then the odd ones]: rotate-half pairs j with j + hd/2.
  const std::vector<float> hf_rows = {0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11};
  for (int r = 0; r < heads * hd; ++r) {
    for (gsq::Index c = 0; c < cols; ++c) {
      REQUIRE(hf[static_cast<std::size_t>(r * cols + c)] == hf_rows[static_cast<std::size_t>(r)]);
    }
  }
  gsq::meta_from_hf_rows(hf.data(), back.data(), heads, hd, cols);
  REQUIRE(back == meta);
  // numpy's reshape(heads, hd/2, 2, in).transpose(0, 2, 1, 3), restated, on random data.
  gsq::RandomLlamaWeights r(gsq::LlamaConfig::stories260k(), 3);
  std::vector<float> w;
  r.read(gsq::LlamaTensor::kWq, 0, w);
  const int H = 8, D = 8, in = 64;
  std::vector<float> ref(w.size()), got(w.size());
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < D / 2; ++j)
        for (int c = 0; c < in; ++c)
          ref[static_cast<std::size_t>(((h * 2 + i) * (D / 2) + j) * in + c)] =
              w[static_cast<std::size_t>(((h * (D / 2) + j) * 2 + i) * in + c)];
  gsq::hf_from_meta_rows(w.data(), got.data(), H, D, in);
  REQUIRE(same_bits(got, ref));
  gsq::meta_from_hf_rows(ref.data(), got.data(), H, D, in);
  REQUIRE(same_bits(got, w));
  REQUIRE(error_of([] { gsq::meta_from_hf_rows(nullptr, nullptr, 1, 3, 1); }) ==
          "meta_from_hf_rows: heads 1, head_dim 3 (must be even), cols 1");
}

// ---- config.json ---------------------------------------------------------------------------

TEST_CASE("hf: config.json to LlamaConfig", "[hf][config]") {
  gsq::LlamaConfig c = gsq::llama_config_from_hf_json(small_config());
  REQUIRE(c.dim == 16);
  REQUIRE(c.hidden_dim == 24);
  REQUIRE(c.n_layers == 2);
  REQUIRE(c.n_heads == 4);
  REQUIRE(c.n_kv_heads == 2);
  REQUIRE(c.head_dim == 0);
  REQUIRE(c.vocab_size == 20);
  REQUIRE(c.seq_len == 32);
  REQUIRE(c.norm_eps == 1e-6f);
  REQUIRE(c.rope_theta == 500000.0);
  REQUIRE(!c.tied_classifier);
  REQUIRE(!c.rope_scaling.enabled());

  // Defaults: kv heads = heads, theta 10000, untied (transformers' default); head_dim kept
  // when it differs from hidden / heads.
  nlohmann::json j = small_config();
  j.erase("num_key_value_heads");
  j.erase("rope_theta");
  j.erase("tie_word_embeddings");
  j["head_dim"] = 8;
  j["rope_scaling"] = nullptr;
  c = gsq::llama_config_from_hf_json(j.dump());
  REQUIRE(c.n_kv_heads == 4);
  REQUIRE(c.rope_theta == 10000.0);
  REQUIRE(!c.tied_classifier);
  REQUIRE(c.head_dim == 8);
  REQUIRE(c.q_dim() == 32);

  // Llama 3.1's rope_scaling.
  j = small_config();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  c = gsq::llama_config_from_hf_json(j);
  REQUIRE(c.rope_scaling.enabled());
  REQUIRE(c.rope_scaling.factor == 8.0);
  REQUIRE(c.rope_scaling.low_freq_factor == 1.0);
  REQUIRE(c.rope_scaling.high_freq_factor == 4.0);
  REQUIRE(c.rope_scaling.original_context == 8192);
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";  // the older key
  REQUIRE(gsq::llama_config_from_hf_json(j).rope_scaling.factor == 8.0);
  // No architectures but model_type llama is enough.
  j = small_config();
  j.erase("architectures");
  REQUIRE(gsq::llama_config_from_hf_json(j).dim == 16);
}

TEST_CASE("hf: config.json errors name the key", "[hf][config][errors]") {
  auto with = [](const char* key, nlohmann::json v) {
    nlohmann::json j = small_config();
    j[key] = std::move(v);
    return j;
  };
  auto without = [](const char* key) {
    nlohmann::json j = small_config();
    j.erase(key);
    return j;
  };
  nlohmann::json mistral = small_config();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["model_type"] = "mistral";
  REQUIRE(config_error(mistral) ==
          "hf config: not a LLaMA model (architectures [\"MistralForCausalLM\"], model_type "
          "'mistral'; gsq reads LlamaForCausalLM)");
  REQUIRE(config_error(without("hidden_size")) == "hf config: 'hidden_size' is missing");
  REQUIRE(config_error(without("rms_norm_eps")) == "hf config: 'rms_norm_eps' is missing");
  REQUIRE(config_error(with("num_hidden_layers", "5")) ==
          "hf config: 'num_hidden_layers' must be an integer, not a string (\"5\")");
  REQUIRE(config_error(with("vocab_size", 2.5)) ==
          "hf config: 'vocab_size' must be an integer, not a number (2.5)");
  REQUIRE(config_error(with("vocab_size", 4294967296LL)) ==
          "hf config: 'vocab_size' = 4294967296 does not fit in an int");
  REQUIRE(config_error(with("rope_theta", "x")) ==
          "hf config: 'rope_theta' must be a number, not a string (\"x\")");
  REQUIRE(config_error(with("tie_word_embeddings", 1)) ==
          "hf config: 'tie_word_embeddings' must be true or false, not a number (1)");
  REQUIRE(config_error(with("architectures", "LlamaForCausalLM")) ==
          "hf config: 'architectures' must be an array of strings, not a string");
  REQUIRE(config_error(with("hidden_act", "gelu")) ==
          "hf config: hidden_act 'gelu' is not supported (LLaMA uses silu)");
  REQUIRE(config_error(with("attention_bias", true)) ==
          "hf config: attention_bias = true is not supported (LLaMA has no biases)");
  REQUIRE(config_error(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}})) ==
          "hf config: rope_scaling type 'yarn' is not supported (gsq implements 'llama3' and "
          "'default')");
  REQUIRE(config_error(with("rope_scaling", {{"rope_type", "llama3"},
                                             {"factor", 8.0},
                                             {"low_freq_factor", 1.0},
                                             {"high_freq_factor", 4.0}})) ==
          "hf config: 'rope_scaling.original_max_position_embeddings' is missing");
  REQUIRE(config_error(with("num_key_value_heads", 3)) ==
          "llama config: n_kv_heads 3 does not divide n_heads 4");
  REQUIRE(config_error(with("hidden_size", -16)) ==
          "llama config: dim = -16 is outside [1, 65536]");
  REQUIRE(config_error(nlohmann::json::array()) ==
          "hf config: config.json is a JSON array, not an object");
  REQUIRE(error_of([] {
            (void)gsq::llama_config_from_hf_json(std::string("{\"a\":1,\"a\":2}"));
          }) == "hf config: config.json has the key 'a' twice in one object");
}

// ---- HfLlamaSource on generated models -----------------------------------------------------

TEST_CASE("hf: HfLlamaSource reads back a generated model, single and sharded", "[hf]") {
  nlohmann::json cj = small_config();
  const gsq::LlamaConfig cfg = gsq::llama_config_from_hf_json(cj);
  const gsq::RandomLlamaWeights random(cfg, 11);
  const auto tensors = hf_tensors(random, st::Dtype::kF32);
  for (const int shards : {0, 1, 3}) {
    INFO("shards " << shards);
    TempDir dir("gen");
    write_text(dir.path / "config.json", cj.dump());
    write_model(dir.path, tensors, shards);
    const gsq::HfLlamaSource hf(dir.str());
    REQUIRE(!hf.lm_head_ignored());
    for (gsq::LlamaTensor t : {gsq::LlamaTensor::kTokenEmbedding, gsq::LlamaTensor::kClassifier,
                               gsq::LlamaTensor::kRmsFinal}) {
      REQUIRE(same_bits(floats_of(hf, t, 0), floats_of(random, t, 0)));
    }
    for (int l = 0; l < cfg.n_layers; ++l) {
      for (gsq::LlamaTensor t : kLayerTensors) {
        INFO(gsq::to_string(t) << " layer " << l);
        REQUIRE(same_bits(floats_of(hf, t, l), floats_of(random, t, l)));
      }
    }
    REQUIRE(error_of([&] { (void)floats_of(hf, gsq::LlamaTensor::kWq, 2); }) ==
            "hf llama: layer 2 out of range [0, 2)");
  }
}

TEST_CASE("hf: HfLlamaSource rejects missing tensors, wrong shapes and dtypes", "[hf][errors]") {
  const nlohmann::json cj = small_config();
  const gsq::LlamaConfig cfg = gsq::llama_config_from_hf_json(cj);
  const gsq::RandomLlamaWeights random(cfg, 5);
  const auto good = hf_tensors(random, st::Dtype::kBF16);
  auto open_with = [&](const std::vector<st::TensorData>& tensors, const nlohmann::json& config) {
    TempDir dir("bad");
    write_text(dir.path / "config.json", config.dump());
    write_model(dir.path, tensors, 0);
    return error_of([&] { (void)gsq::HfLlamaSource(dir.str()); });
  };
  REQUIRE(open_with(good, cj).empty());

  auto missing = good;
  missing.erase(missing.begin() + 3);  // layer 0's k_proj
  REQUIRE(missing[2].name == "model.layers.0.self_attn.q_proj.weight");
  REQUIRE(open_with(missing, cj).find("has no tensor 'model.layers.0.self_attn.k_proj.weight'") !=
          std::string::npos);

  auto shaped = good;
  shaped[3].shape = {4, 16};  // k_proj is 8 x 16 (2 kv heads of 4); give it 4 x 16 bytes
  shaped[3].bytes.resize(4 * 16 * 2);
  REQUIRE(open_with(shaped, cj) ==
          "hf llama: tensor 'model.layers.0.self_attn.k_proj.weight' has shape [4, 16], the "
          "config needs [8, 16]");

  auto norm2d = good;
  norm2d[1].shape = {1, 16};  // input_layernorm as a row
  REQUIRE(open_with(norm2d, cj) ==
          "hf llama: tensor 'model.layers.0.input_layernorm.weight' has shape [1, 16], the config "
          "needs [16]");

  auto ints = good;
  ints[1].dtype = st::Dtype::kI16;
  REQUIRE(open_with(ints, cj) ==
          "hf llama: tensor 'model.layers.0.input_layernorm.weight' has dtype I16 (gsq reads F32, "
          "F16 and BF16)");

  // Untied without lm_head; tied with an lm_head (ignored, as transformers does).
  auto no_head = good;
  no_head.pop_back();
  REQUIRE(no_head.size() + 1 == good.size());
  REQUIRE(open_with(no_head, cj).find("has no tensor 'lm_head.weight'") != std::string::npos);
  nlohmann::json tied = cj;
  tied["tie_word_embeddings"] = true;
  {
    TempDir dir("tied");
    write_text(dir.path / "config.json", tied.dump());
    write_model(dir.path, good, 0);
    const gsq::HfLlamaSource hf(dir.str());
    REQUIRE(hf.lm_head_ignored());
    REQUIRE(same_bits(floats_of(hf, gsq::LlamaTensor::kClassifier, 0),
                      floats_of(hf, gsq::LlamaTensor::kTokenEmbedding, 0)));
  }
  // A config that is not a llama, and no config at all.
  nlohmann::json other = cj;
  other["architectures"] = {"Qwen2ForCausalLM"};
  other["model_type"] = "qwen2";
  REQUIRE(open_with(good, other)
              .rfind("hf config: not a LLaMA model (architectures "
                     "[\"Qwen2ForCausalLM\"]",
                     0) == 0);
  TempDir empty("empty");
  REQUIRE(error_of([&] { (void)gsq::HfLlamaSource(empty.str()); }) ==
          "hf config: cannot open '" + empty.str() + "/config.json'");
}

// ---- The real stories260K ------------------------------------------------------------------

TEST_CASE("hf: stories260K-hf equals stories260K.bin bit for bit", "[hf][models]") {
  const std::string bin = gsq::test::model_path("stories260K.bin");
  const std::string cfg = gsq::test::model_path("stories260K-hf/config.json");
  if (bin.empty() || cfg.empty()) GSQ_SKIP("stories260K.bin or stories260K-hf/ is absent");
  const std::string dir = fs::path(cfg).parent_path().string();
  const gsq::Llama2Weights weights = gsq::Llama2Weights::load(bin);
  const gsq::Llama2WeightSource ref(weights);
  const gsq::HfLlamaSource hf(dir);
  // llama2.c's header lacks rope_theta, norm_eps, rope_scaling and head_dim: llama_config()
  // puts run.c's constants there (10000, 1e-5, none, dim / heads), and config.json agrees.
  const gsq::LlamaConfig& a = hf.config();
  const gsq::LlamaConfig b = gsq::llama_config(weights.config());
  REQUIRE(a.dim == b.dim);
  REQUIRE(a.hidden_dim == b.hidden_dim);
  REQUIRE(a.n_layers == b.n_layers);
  REQUIRE(a.n_heads == b.n_heads);
  REQUIRE(a.n_kv_heads == b.n_kv_heads);
  REQUIRE(a.head_dim == b.head_dim);
  REQUIRE(a.vocab_size == b.vocab_size);
  REQUIRE(a.seq_len == b.seq_len);
  REQUIRE(a.rope_theta == b.rope_theta);
  REQUIRE(a.norm_eps == b.norm_eps);
  REQUIRE(a.rope_scaling.enabled() == b.rope_scaling.enabled());
  REQUIRE(a.tied_classifier == b.tied_classifier);
  REQUIRE(!hf.lm_head_ignored());

  auto check_all = [&](const gsq::LlamaWeightSource& s) {
    for (gsq::LlamaTensor t : {gsq::LlamaTensor::kTokenEmbedding, gsq::LlamaTensor::kClassifier,
                               gsq::LlamaTensor::kRmsFinal}) {
      INFO(gsq::to_string(t));
      REQUIRE(same_bits(floats_of(s, t, 0), floats_of(ref, t, 0)));
    }
    for (int l = 0; l < a.n_layers; ++l) {
      for (gsq::LlamaTensor t : kLayerTensors) {
        INFO(gsq::to_string(t) << " layer " << l);
        REQUIRE(same_bits(floats_of(s, t, l), floats_of(ref, t, l)));
      }
    }
  };
  check_all(hf);
  // Without the un-permutation q and k would differ (the test above would catch a no-op).
  std::vector<float> raw;
  st::Model::open_directory(dir).read_floats("model.layers.0.self_attn.q_proj.weight", raw);
  REQUIRE(!same_bits(raw, floats_of(ref, gsq::LlamaTensor::kWq, 0)));

  // Sharded: the F32 file's tensors in 4 shards + an index, read identically.
  const st::File f32 = st::File::open(dir + "/model.safetensors");
  std::vector<st::TensorData> tensors;
  for (const st::TensorInfo& t : f32.tensors()) {
    st::TensorData d{t.name, t.dtype, t.shape, {}};
    f32.read_bytes(t, d.bytes);
    tensors.push_back(std::move(d));
  }
  TempDir shards("stories");
  fs::copy_file(cfg, shards.path / "config.json");
  write_model(shards.path, tensors, 4);
  const gsq::HfLlamaSource sharded(shards.str());
  check_all(sharded);
}

TEST_CASE("hf: stories260K-hf-bf16 holds the nearest-even bf16 of stories260K.bin",
          "[hf][models]") {
  const std::string bin = gsq::test::model_path("stories260K.bin");
  const std::string cfg = gsq::test::model_path("stories260K-hf-bf16/config.json");
  if (bin.empty() || cfg.empty()) GSQ_SKIP("stories260K.bin or stories260K-hf-bf16/ is absent");
  const gsq::Llama2Weights weights = gsq::Llama2Weights::load(bin);
  const gsq::Llama2WeightSource ref(weights);
  const gsq::HfLlamaSource hf(fs::path(cfg).parent_path().string());
  REQUIRE(st::Model::open_directory(fs::path(cfg).parent_path().string())
              .at("model.embed_tokens.weight")
              .info->dtype == st::Dtype::kBF16);
  auto rounded = [](std::vector<float> v) {
    for (float& x : v) x = gsq::to_float(gsq::to_bf16(x));
    return v;
  };
  std::size_t changed = 0;
  auto check = [&](gsq::LlamaTensor t, int l) {
    INFO(gsq::to_string(t) << " layer " << l);
    const std::vector<float> want = floats_of(ref, t, l);
    REQUIRE(same_bits(floats_of(hf, t, l), rounded(want)));
    changed += !same_bits(want, rounded(want));
  };
  check(gsq::LlamaTensor::kTokenEmbedding, 0);
  check(gsq::LlamaTensor::kRmsFinal, 0);
  for (int l = 0; l < hf.config().n_layers; ++l) {
    for (gsq::LlamaTensor t : kLayerTensors) check(t, l);
  }
  REQUIRE(changed > 0);  // the rounding is not the identity on these weights
}

#else

TEST_CASE("hf: safetensors and config.json readers", "[hf]") {
  GSQ_SKIP("nlohmann/json (gsq::json) is not available: the Hugging Face readers are not built");
}

#endif
