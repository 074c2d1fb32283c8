// adapter_test.cpp: LoRA adapters out (llama.cpp adapter.gguf, PEFT directory), read back,
// applied merged and unmerged, and the frozen GSE base exported bit-exactly as Q4_0 / Q8_0 GGUF.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/detail/sha256.hpp"
#include "models.hpp"

#if GSQ_HAVE_JSON
#include "gsq/models/llama/adapter.hpp"
#include "gsq/models/llama/base_export.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/inference.hpp"
#include "testing.hpp"
#endif

TEST_CASE("sha256: FIPS 180-4 vectors, streamed and from a file", "[adapter]") {
  using gsq::detail::sha256_hex;
  CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(sha256_hex(two.data(), two.size()) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string four =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
      "lmnopqrsmnopqrstnopqrstu";
  CHECK(sha256_hex(four.data(), four.size()) ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  const std::string million(1000000, 'a');
  const std::string want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(sha256_hex(million.data(), million.size()) == want);
  gsq::detail::Sha256 s;  // uneven pieces across block boundaries
  for (std::size_t at = 0, k = 1; at < million.size(); at += k, k = k * 7 % 131 + 1)
    s.update(million.data() + at, std::min(k, million.size() - at));
  CHECK(s.hex() == want);
  const std::string path = "/tmp/gsq_sha256_" + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary) << million;
  CHECK(gsq::detail::sha256_file(path) == want);
  std::remove(path.c_str());
  CHECK_THROWS_WITH(gsq::detail::sha256_file(path), "sha256: cannot open '" + path + "'");
}

#if GSQ_HAVE_JSON

namespace {

using gsq::AdapterTarget;
using gsq::Index;
using gsq::LlamaAdapter;
using gsq::LlamaConfig;
using gsq::LlamaTensor;
using gsq::gguf::GgmlType;
using gsq::gguf::GgufFile;
using gsq::gguf::GgufWriter;

using gsq::test::error_of;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// A fresh directory under /tmp, removed (one level deep) at the end of the test.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag)
      : path("/tmp/gsq_adapter_" + tag + "_" + std::to_string(::getpid())) {
    ::mkdir(path.c_str(), 0777);
  }
  ~TempDir() {
    for (const char* f : {"a.gguf", "b.gguf", "base.gguf", "peft/adapter_config.json",
                          "peft/adapter_model.safetensors", "check.py", "list.cjs", "bad.gguf"})
      std::remove((path + "/" + f).c_str());
    ::rmdir((path + "/peft").c_str());
    ::rmdir(path.c_str());
  }
};

LlamaConfig small_config() {
  LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 80;  // w2's rows are not whole groups of 32: F32 in the base export
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 96;
  c.seq_len = 16;
  return c;
}

/// An adapter of `targets` with uniform values on +-bound from seed.
LlamaAdapter random_adapter(const LlamaConfig& c, int rank, float alpha, std::uint64_t seed,
                            std::vector<AdapterTarget> targets = {}, float bound = 0.1f) {
  if (targets.empty()) {
    for (int i = 0; i < gsq::kAdapterTargets; ++i) targets.push_back(static_cast<AdapterTarget>(i));
  }
  LlamaAdapter a;
  a.rank = rank;
  a.alpha = alpha;
  a.targets = targets;
  a.base_format = "llama2c";
  a.base_sha256 = std::string(64, '0');
  a.layers.resize(static_cast<std::size_t>(c.n_layers));
  gsq::detail::Rng rng(seed);
  for (auto& layer : a.layers) {
    for (AdapterTarget t : targets) {
      const gsq::TensorShape s = gsq::shape_of(c, gsq::tensor_of(t));
      auto& x = layer[static_cast<std::size_t>(t)];
      x.a.resize(static_cast<std::size_t>(rank * s.cols));
      x.b.resize(static_cast<std::size_t>(s.rows * rank));
      for (float& v : x.a) v = rng.uniform(-bound, bound);
      for (float& v : x.b) v = rng.uniform(-bound, bound);
    }
  }
  return a;
}

void check_same(const LlamaAdapter& a, const LlamaAdapter& b) {
  CHECK(a.rank == b.rank);
  CHECK(a.alpha == b.alpha);
  CHECK(a.targets == b.targets);
  CHECK(a.base_format == b.base_format);
  CHECK(a.base_sha256 == b.base_sha256);
  REQUIRE(a.layers.size() == b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    for (int i = 0; i < gsq::kAdapterTargets; ++i) {
      CHECK(same_bits(a.layers[l][static_cast<std::size_t>(i)].a,
                      b.layers[l][static_cast<std::size_t>(i)].a));
      CHECK(same_bits(a.layers[l][static_cast<std::size_t>(i)].b,
                      b.layers[l][static_cast<std::size_t>(i)].b));
    }
  }
}

/// Output of a shell command (empty on failure), and its exit status.
std::string run(const std::string& cmd, int& status) {
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    status = -1;
    return "";
  }
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  status = ::pclose(p);
  return out;
}

/// Gives every adapter of the model uniform values on +-bound (B nonzero).
template <typename Model>
void randomize(Model& m, std::uint64_t seed, float bound) {
  gsq::detail::Rng rng(seed);
  for (auto* p : m.loras()) {
    for (float& v : p->a()) v = rng.uniform(-bound, bound);
    for (float& v : p->b()) v = rng.uniform(-bound, bound);
  }
}

/// max |x - y| / max |y| over two logit vectors.
double relative_diff(const std::vector<float>& x, const std::vector<float>& y) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    d = std::max(d, std::fabs(double{x[i]} - y[i]));
    m = std::max(m, std::fabs(double{y[i]}));
  }
  return d / m;
}

}  // namespace

TEST_CASE("adapter: from a LlamaLoraModel, in llama.cpp's orientation", "[adapter]") {
  const LlamaConfig c = small_config();
  const gsq::RandomLlamaWeights base(c, 5);
  gsq::LoraOptions o;
  o.rank = 4;
  o.alpha = 8.0f;
  gsq::LlamaLoraModel<> m(base, o);
  randomize(m, 11, 0.2f);
  const LlamaAdapter a = gsq::adapter_from_model(m, "gguf", "ab");
  CHECK(a.rank == 4);
  CHECK(a.alpha == 8.0f);
  CHECK(a.scale() == 2.0f);
  CHECK(a.targets.size() == 7);
  const auto loras = m.loras();
  // The merged weight (out x in) is the transpose of the layer's effective weight (in x out).
  const gsq::LoraMergedSource merged(base, a);
  std::vector<float> w;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int i = 0; i < 7; ++i) {
      const auto t = static_cast<AdapterTarget>(i);
      const auto& lora = *loras[static_cast<std::size_t>(l * 7 + i)];
      merged.read(gsq::tensor_of(t), l, w);
      const std::vector<float> eff = lora.effective_weight();  // dequantized base + s A B
      const std::vector<float> base_q = lora.base_float();
      std::vector<float> orig;
      base.read(gsq::tensor_of(t), l, orig);
      const Index in = lora.in_features(), out = lora.out_features();
      double worst = 0;
      for (Index r = 0; r < out; ++r) {
        for (Index k = 0; k < in; ++k) {
          const auto io = static_cast<std::size_t>(k * out + r),
                     oi = static_cast<std::size_t>(r * in + k);
          // merged - original = s B A = effective - dequantized base.
          worst = std::max(worst,
                           std::fabs((double{w[oi]} - orig[oi]) - (double{eff[io]} - base_q[io])));
        }
      }
      CHECK(worst < 1e-6);
    }
  }
  const LlamaAdapter some =
      gsq::adapter_from_model(m, "gguf", "ab", {AdapterTarget::kV, AdapterTarget::kQ});
  CHECK(some.targets == std::vector<AdapterTarget>{AdapterTarget::kQ, AdapterTarget::kV});
  CHECK(some.layers[0][static_cast<std::size_t>(AdapterTarget::kK)].a.empty());
}

TEST_CASE("adapter: llama.cpp adapter.gguf names, shapes, metadata and round trip", "[adapter]") {
  const LlamaConfig c = small_config();
  const LlamaAdapter a = random_adapter(c, 3, 6.0f, 1);
  TempDir dir("gguf");
  const std::string path = dir.path + "/a.gguf";
  gsq::write_adapter_gguf(path, a, c);
  const GgufFile f = GgufFile::open(path);
  CHECK(f.at("general.type").as_string() == "adapter");
  CHECK(f.at("general.architecture").as_string() == "llama");
  CHECK(f.at("adapter.type").as_string() == "lora");
  CHECK(f.at("adapter.lora.alpha").type() == gsq::gguf::ValueType::kFloat32);
  CHECK(f.at("adapter.lora.alpha").as_float() == 6.0);
  CHECK(f.at("gsq.base.format").as_string() == "llama2c");
  CHECK(f.tensors().size() == 2u * 7u * 2u);
  // ne: lora_a [in, r], lora_b [r, out] for a base of ne [in, out]; w1 = gate, w3 = up, w2 = down.
  struct Want {
    const char* name;
    std::int64_t in, out;
    AdapterTarget t;
  };
  const Want wants[] = {
      {"attn_q", 64, 64, AdapterTarget::kQ},      {"attn_k", 64, 32, AdapterTarget::kK},
      {"attn_v", 64, 32, AdapterTarget::kV},      {"attn_output", 64, 64, AdapterTarget::kO},
      {"ffn_gate", 64, 80, AdapterTarget::kGate}, {"ffn_up", 64, 80, AdapterTarget::kUp},
      {"ffn_down", 80, 64, AdapterTarget::kDown}};
  CHECK(gsq::tensor_of(AdapterTarget::kGate) == LlamaTensor::kW1);
  CHECK(gsq::tensor_of(AdapterTarget::kUp) == LlamaTensor::kW3);
  CHECK(gsq::tensor_of(AdapterTarget::kDown) == LlamaTensor::kW2);
  std::vector<float> v;
  for (const Want& want : wants) {
    INFO(want.name);
    const std::string n = std::string("blk.1.") + want.name + ".weight";
    const gsq::gguf::TensorInfo& ta = f.tensor(n + ".lora_a");
    const gsq::gguf::TensorInfo& tb = f.tensor(n + ".lora_b");
    CHECK(ta.type == GgmlType::kF32);
    CHECK(ta.n_dims == 2);
    CHECK(ta.ne == std::array<std::int64_t, 4>{want.in, 3, 1, 1});
    CHECK(tb.ne == std::array<std::int64_t, 4>{3, want.out, 1, 1});
    f.read_f32(ta, v);
    CHECK(same_bits(v, a.layers[1][static_cast<std::size_t>(want.t)].a));
    f.read_f32(tb, v);
    CHECK(same_bits(v, a.layers[1][static_cast<std::size_t>(want.t)].b));
  }
  check_same(gsq::read_adapter_gguf(path, c), a);

  // F16: every value rounded to nearest-even half.
  gsq::write_adapter_gguf(path, a, c, true);
  CHECK(GgufFile::open(path).tensor("blk.0.attn_q.weight.lora_a").type == GgmlType::kF16);
  const LlamaAdapter h = gsq::read_adapter_gguf(path, c);
  for (std::size_t i = 0; i < a.layers[0][0].b.size(); ++i)
    CHECK(h.layers[0][0].b[i] == gsq::to_float(gsq::to_fp16(a.layers[0][0].b[i])));

  // A subset of targets.
  const LlamaAdapter qv = random_adapter(c, 2, 2.0f, 2, {AdapterTarget::kQ, AdapterTarget::kV});
  gsq::write_adapter_gguf(path, qv, c);
  CHECK(GgufFile::open(path).tensors().size() == 8u);
  check_same(gsq::read_adapter_gguf(path, c), qv);
}

TEST_CASE("adapter: hostile adapter.gguf files get named errors", "[adapter]") {
  const LlamaConfig c = small_config();
  TempDir dir("hostile");
  const std::string path = dir.path + "/bad.gguf";
  const std::vector<float> a(3 * 64, 0.01f), b(64 * 3, 0.01f);
  // A file with one q pair per layer and the given metadata / tensor changes.
  auto make = [&](const std::string& type, bool alpha, std::int64_t a_rank, std::int64_t b_rank,
                  std::int64_t in, bool b_present, const std::string& extra = "") {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    if (!type.empty()) w.add_string("general.type", type);
    w.add_string("adapter.type", "lora");
    if (alpha) w.add_float32("adapter.lora.alpha", 4.0f);
    for (int l = 0; l < 2; ++l) {
      const std::string n = "blk." + std::to_string(l) + ".attn_q.weight";
      w.add_tensor(n + ".lora_a", GgmlType::kF32, {in, a_rank},
                   std::vector<float>(static_cast<std::size_t>(in * a_rank), 0.01f));
      if (b_present || l == 0)
        w.add_tensor(n + ".lora_b", GgmlType::kF32, {b_rank, 64},
                     std::vector<float>(static_cast<std::size_t>(b_rank * 64), 0.01f));
    }
    if (!extra.empty()) w.add_tensor(extra, GgmlType::kF32, {4}, std::vector<float>(4, 0.0f));
    w.write(path);
    return error_of([&] { (void)gsq::read_adapter_gguf(path, c); });
  };
  CHECK(make("adapter", true, 3, 3, 64, true).empty());
  CHECK(make("model", true, 3, 3, 64, true) == "adapter: general.type is 'model', not 'adapter'");
  CHECK(make("", true, 3, 3, 64, true) ==
        "adapter: 'general.type' is missing (not a llama.cpp LoRA adapter)");
  CHECK(make("adapter", false, 3, 3, 64, true) == "adapter: adapter.lora.alpha is missing");
  CHECK(make("adapter", true, 3, 4, 64, true) ==
        "adapter: 'blk.0.attn_q.weight' has lora_a of rank 3 and lora_b of rank 4 (lora_a not "
        "transposed?)");
  CHECK(make("adapter", true, 3, 3, 32, true) ==
        "adapter: 'blk.0.attn_q.weight' has lora_a [32, 3] and lora_b [3, 64], the base weight "
        "is [64, 64] (wrong base model?)");
  CHECK(make("adapter", true, 3, 3, 64, false) ==
        "adapter: tensor 'blk.1.attn_q.weight.lora_b' is missing");
  CHECK(make("adapter", true, 3, 3, 64, true, "blk.7.attn_q.weight.lora_a") ==
        "adapter: tensor 'blk.7.attn_q.weight.lora_a' is not a LoRA tensor of a 2-layer llama "
        "(blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_down|ffn_up>.weight.lora_a / "
        ".lora_b)");
  CHECK(make("adapter", true, 3, 3, 64, true, "token_embd.weight").find("is not a LoRA tensor") !=
        std::string::npos);
  // Only one layer has a k adapter.
  {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_string("general.type", "adapter");
    w.add_string("adapter.type", "lora");
    w.add_float32("adapter.lora.alpha", 4.0f);
    w.add_tensor("blk.0.attn_k.weight.lora_a", GgmlType::kF32, {64, 3}, a);
    w.add_tensor("blk.0.attn_k.weight.lora_b", GgmlType::kF32, {3, 32},
                 std::vector<float>(96, 0.0f));
    w.write(path);
    CHECK(error_of([&] { (void)gsq::read_adapter_gguf(path, c); }) ==
          "adapter: tensor 'blk.1.attn_k.weight.lora_a' is missing");
  }
  // Writing checks the adapter first.
  LlamaAdapter bad = random_adapter(c, 2, 2.0f, 3);
  bad.layers[1][2].b.pop_back();
  CHECK(error_of([&] { gsq::write_adapter_gguf(path, bad, c); }) ==
        "adapter: layer 1 v: A has 128 and B 63 values, rank 2 on a 32 x 64 weight needs 128 and "
        "64");
  bad = random_adapter(c, 2, 0.0f, 3);
  CHECK(error_of([&] { gsq::write_adapter_gguf(path, bad, c); }) ==
        "adapter: alpha 0 must be finite and > 0");
}

TEST_CASE("adapter: PEFT directory round trip and the q/k permutation", "[adapter]") {
  const LlamaConfig c = small_config();
  const LlamaAdapter a = random_adapter(c, 4, 16.0f, 7);
  TempDir dir("peft");
  const std::string peft = dir.path + "/peft";
  gsq::write_peft_adapter(peft, a, c, "stories260K-hf");
  check_same(gsq::read_peft_adapter(peft, c), a);

  const auto st = gsq::safetensors::File::open(peft + "/adapter_model.safetensors");
  CHECK(st.tensors().size() == 2u * 7u * 2u);
  std::vector<float> qa, qb, va, vb;
  const std::string p = "base_model.model.model.layers.1.";
  st.read_floats(p + "self_attn.q_proj.lora_A.weight", qa);
  st.read_floats(p + "self_attn.q_proj.lora_B.weight", qb);
  CHECK(st.tensor(p + "self_attn.q_proj.lora_A.weight").shape == std::vector<std::int64_t>{4, 64});
  CHECK(st.tensor(p + "self_attn.k_proj.lora_B.weight").shape == std::vector<std::int64_t>{32, 4});
  CHECK(st.tensor(p + "mlp.down_proj.lora_A.weight").shape == std::vector<std::int64_t>{4, 80});
  CHECK(st.tensor(p + "mlp.gate_proj.lora_B.weight").shape == std::vector<std::int64_t>{80, 4});
  st.read_floats(p + "self_attn.v_proj.lora_B.weight", vb);
  CHECK(same_bits(qa, a.layers[1][0].a));  // A is never permuted
  CHECK(same_bits(vb, a.layers[1][2].b));  // v is never permuted
  CHECK(!same_bits(qb, a.layers[1][0].b));
  // The HF-layout delta B_hf A equals the Meta delta with HF's row permutation.
  const int hs = static_cast<int>(c.head_size());
  std::vector<float> meta(64 * 64), hf(64 * 64), permuted(64 * 64);
  for (int o = 0; o < 64; ++o) {
    for (int i = 0; i < 64; ++i) {
      double dm = 0, dh = 0;
      for (int k = 0; k < 4; ++k) {
        dm += double{a.layers[1][0].b[static_cast<std::size_t>(o * 4 + k)]} *
              a.layers[1][0].a[static_cast<std::size_t>(k * 64 + i)];
        dh += double{qb[static_cast<std::size_t>(o * 4 + k)]} *
              qa[static_cast<std::size_t>(k * 64 + i)];
      }
      meta[static_cast<std::size_t>(o * 64 + i)] = static_cast<float>(dm);
      hf[static_cast<std::size_t>(o * 64 + i)] = static_cast<float>(dh);
    }
  }
  gsq::hf_from_meta_rows(meta.data(), permuted.data(), c.n_heads, hs, 64);
  CHECK(same_bits(hf, permuted));
  // Meta row h * hs + 2j + i is HF row h * hs + i * hs / 2 + j: Meta row 1 (j 0, i 1) is HF row
  // hs / 2.
  for (int k = 0; k < 4; ++k) {
    CHECK(qb[static_cast<std::size_t>((hs / 2) * 4 + k)] ==
          a.layers[1][0].b[static_cast<std::size_t>(1 * 4 + k)]);
  }

  std::ifstream in(peft + "/adapter_config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  CHECK(j["peft_type"] == "LORA");
  CHECK(j["task_type"] == "CAUSAL_LM");
  CHECK(j["r"] == 4);
  CHECK(j["lora_alpha"] == 16.0);
  CHECK(j["bias"] == "none");
  CHECK(j["base_model_name_or_path"] == "stories260K-hf");
  CHECK(j["target_modules"] == nlohmann::json({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                               "down_proj", "up_proj"}));
  CHECK(j["gsq_base_sha256"] == a.base_sha256);
  CHECK(j["gsq_base_format"] == "llama2c");
}

TEST_CASE("adapter: hostile PEFT directories get named errors", "[adapter]") {
  const LlamaConfig c = small_config();
  TempDir dir("peftbad");
  const std::string peft = dir.path + "/peft";
  const LlamaAdapter a = random_adapter(c, 2, 4.0f, 9, {AdapterTarget::kQ});
  gsq::write_peft_adapter(peft, a, c, "x");
  const std::string cfg = peft + "/adapter_config.json";
  const std::string who = "adapter: '" + cfg + "'";
  auto with_config = [&](const std::string& text) {
    std::ofstream(cfg) << text;
    return error_of([&] { (void)gsq::read_peft_adapter(peft, c); });
  };
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]})")
            .empty());
  CHECK(with_config(R"({"peft_type":"IA3","r":2,"lora_alpha":4,"target_modules":["q_proj"]})") ==
        who + ": peft_type is \"IA3\", not \"LORA\"");
  CHECK(with_config(R"({"peft_type":"LORA","lora_alpha":4,"target_modules":["q_proj"]})") ==
        who + ": r is missing, not an integer in [1, 65536]");
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"target_modules":["q_proj"]})") ==
        who + ": lora_alpha is missing, not a number");
  CHECK(with_config(R"({"peft_type":"LORA","r":3,"lora_alpha":4,"target_modules":["q_proj"]})") ==
        "adapter: '" + peft +
            "/adapter_model.safetensors': tensor "
            "'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [2, 64], "
            "rank 3 on the base needs [3, 64]");
  CHECK(with_config(
            R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj","k_proj"]})") ==
        "adapter: '" + peft +
            "/adapter_model.safetensors': tensor "
            "'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight' is missing");
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["lm_head"]})") ==
        who +
            ": target module \"lm_head\" is not one of q_proj, k_proj, v_proj, o_proj, "
            "gate_proj, up_proj, down_proj");
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":"q_proj"})") ==
        who + ": target_modules must be a non-empty list of module names");
  CHECK(
      with_config(
          R"({"peft_type":"LORA","r":2,"lora_alpha":4,"use_rslora":true,"target_modules":["q_proj"]})") ==
      who + ": use_rslora is true (gsq applies plain LoRA only)");
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"r":2})") ==
        who + " has the key 'r' twice in one object");
  // An extra tensor.
  const LlamaAdapter qv = random_adapter(c, 2, 4.0f, 9, {AdapterTarget::kQ, AdapterTarget::kV});
  gsq::write_peft_adapter(peft, qv, c, "x");
  CHECK(with_config(R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]})")
            .find("self_attn.v_proj.lora_A.weight' is not a LoRA tensor of the targets "
                  "[\"q_proj\"] of a 2-layer llama") != std::string::npos);
}

TEST_CASE("adapter: LlamaRunner with an unmerged adapter equals the merged source", "[adapter]") {
  const LlamaConfig c = small_config();
  const gsq::RandomLlamaWeights base(c, 3);
  const LlamaAdapter a = random_adapter(c, 4, 8.0f, 21, {}, 0.05f);
  const gsq::LoraMergedSource merged(base, a);
  gsq::LlamaRunner plain(base), with(base), ref(merged);
  gsq::apply_adapter(with, a);
  CHECK(with.adapter_bytes() > 0);
  double worst = 0, moved = 0;
  const int tokens[] = {1, 17, 40, 3, 95, 60, 2, 33};
  for (int pos = 0; pos < 8; ++pos) {
    const std::vector<float> x = with.forward(tokens[pos], pos);
    const std::vector<float> y = ref.forward(tokens[pos], pos);
    const std::vector<float> z = plain.forward(tokens[pos], pos);
    worst = std::max(worst, relative_diff(x, y));
    moved = std::max(moved, relative_diff(z, y));
  }
  INFO("unmerged vs merged " << worst << ", base vs merged " << moved);
  CHECK(worst < 1e-5);
  CHECK(moved > 1e-2);  // the adapter changes the logits
  with.clear_adapters();
  CHECK(with.adapter_bytes() == 0);
  CHECK(error_of([&] { with.set_adapter(LlamaTensor::kRmsAtt, 0, {}, {}, 1, 1.0f); }) ==
        "llama inference: adapters apply to the seven linears of a layer, not to rms_att");
  CHECK(error_of([&] { with.set_adapter(LlamaTensor::kWq, 0, {1.0f}, {1.0f}, 1, 1.0f); }) ==
        "llama inference: an adapter of rank 1 for a 64 x 64 weight needs 1 x 64 and 64 x 1 "
        "values, got 1 and 1");
}

TEST_CASE("adapter: the GSE runner with the adapter tracks LlamaLoraModel's loss on stories260K",
          "[adapter][model]") {
  const std::string path = gsq::test::model_path("stories260K.bin");
  if (path.empty()) GSQ_SKIP("stories260K.bin not found (set GSQ_MODELS_DIR); skipping");
  const auto w = gsq::Llama2Weights::load(path);
  const gsq::Llama2WeightSource source(w);
  gsq::LoraOptions o;
  o.rank = 4;
  o.alpha = 8.0f;
  gsq::LlamaLoraModel<> m(source, o);
  randomize(m, 5,
            0.1f);  // moves the loss by 0.22: well above the 4-bit base's requantization noise
  const LlamaAdapter a = gsq::adapter_from_model(m, "llama2c", "");
  // A window: the base's own greedy continuation of BOS.
  std::vector<int> tokens{1};
  {
    gsq::LlamaRunner r(source);
    for (int pos = 0; pos < 48; ++pos)
      tokens.push_back(gsq::Sampler::argmax(r.forward(tokens.back(), pos).data(), 512));
  }
  const double model_loss = m.loss(tokens, false);
  gsq::LlamaInferenceOptions io;
  io.compute = gsq::LlamaCompute::kGse;
  io.weight_bits = 4;
  io.activation_bits = 8;
  gsq::LlamaRunner gse(source, io), plain(source, io);
  gsq::apply_adapter(gse, a);
  auto ce = [&tokens](gsq::LlamaRunner& r) {
    double sum = 0;
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
      const std::vector<float>& z = r.forward(tokens[t], static_cast<int>(t));
      double mx = z[0];
      for (float v : z) mx = std::max(mx, double{v});
      double s = 0;
      for (float v : z) s += std::exp(double{v} - mx);
      sum += mx + std::log(s) - z[static_cast<std::size_t>(tokens[t + 1])];
    }
    return sum / static_cast<double>(tokens.size() - 1);
  };
  const double runner_loss = ce(gse), base_loss = ce(plain);
  // Measured (gcc 12, x86-64; both sides are the same bits on every ISA): model 0.722963,
  // runner 0.723748, a difference of 7.85e-4 (0.4% of the adapter's effect on the loss: the
  // model's 8-bit A, B and A x against the runner's float adapter); base without the adapter
  // 0.505281 (the model's with B = 0 differs by 1.2e-8: only the cross-entropy's float sums).  The
  // bound is 1.5x the measured difference.
  INFO("model " << model_loss << ", runner " << runner_loss << ", base " << base_loss);
  CHECK(std::fabs(runner_loss - model_loss) < 1.5 * 7.85e-4);
  CHECK(std::fabs(base_loss - model_loss) > 0.1);
  for (auto* p : m.loras()) std::fill(p->b().begin(), p->b().end(), 0.0f);
  CHECK(std::fabs(m.loss(tokens, false) - base_loss) < 1e-7);  // 1.2e-8 measured
}

TEST_CASE("adapter: the frozen base exports exactly as Q4_0 / Q8_0 and loads", "[adapter]") {
  const LlamaConfig c = small_config();
  const gsq::RandomLlamaWeights base(c, 8);
  TempDir dir("base");
  const std::string path = dir.path + "/base.gguf";
  auto check_exact = [&](const auto& m, GgmlType want) {
    const gsq::GgufLlamaSource src(path);  // loads: names, shapes, types, metadata
    CHECK(src.config().dim == c.dim);
    CHECK(src.config().hidden_dim == c.hidden_dim);
    CHECK(src.config().n_kv_heads == c.n_kv_heads);
    CHECK(src.config().tied_classifier);
    const GgufFile& f = src.file();
    const auto loras = m.loras();
    std::vector<float> got;
    for (int l = 0; l < c.n_layers; ++l) {
      for (int i = 0; i < 7; ++i) {
        const auto t = gsq::tensor_of(static_cast<AdapterTarget>(i));
        INFO("layer " << l << " " << gsq::to_string(t));
        const gsq::gguf::TensorInfo& info = f.tensor(src.tensor_name(t, l));
        CHECK(info.type == (t == LlamaTensor::kW2 ? GgmlType::kF32 : want));  // 80 is not 32k
        src.read(t, l, got);  // ggml's decoding rules (gsq's dequantize_row)
        const auto& lora = *loras[static_cast<std::size_t>(l * 7 + i)];
        const std::vector<float> wt = lora.base_float();  // in x out
        std::vector<float> rows(wt.size());
        const Index in = lora.in_features(), out = lora.out_features();
        for (Index r = 0; r < out; ++r)
          for (Index k = 0; k < in; ++k)
            rows[static_cast<std::size_t>(r * in + k)] = wt[static_cast<std::size_t>(k * out + r)];
        CHECK(same_bits(got, rows));
      }
    }
    CHECK(f.tensor("token_embd.weight").type == GgmlType::kQ8_0);
    src.read(LlamaTensor::kTokenEmbedding, 0, got);
    CHECK(same_bits(got, gsq::dequantize(m.classifier().embedding())));
    std::vector<float> norm;
    src.read(LlamaTensor::kRmsFfn, 1, got);
    base.read(LlamaTensor::kRmsFfn, 1, norm);
    CHECK(same_bits(got, norm));
  };
  gsq::LoraOptions o;
  gsq::LlamaLoraModel<> m4(base, o);
  const gsq::BaseExport r4 = gsq::write_base_gguf(path, m4, base);
  CHECK(r4.block_tensors == 1 + 2 * 6);
  CHECK(r4.f32_tensors ==
        std::vector<std::string>{"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"});
  CHECK(GgufFile::open(path).at("general.file_type").as_uint() == 2);
  check_exact(m4, GgmlType::kQ4_0);

  gsq::LlamaLoraModel<gsq::LoraLinear<8, 8, 8, 8, 32>> m8(base, o);
  const gsq::BaseExport r8 = gsq::write_base_gguf(path, m8, base);
  CHECK(r8.block_tensors == 13);
  check_exact(m8, GgmlType::kQ8_0);

  // A weight 2^-40 times smaller has group quanta below fp16's range: exact F32 instead.
  struct Tiny final : gsq::LlamaWeightSource {
    const gsq::LlamaWeightSource& b;
    explicit Tiny(const gsq::LlamaWeightSource& s) : b(s) {}
    const LlamaConfig& config() const noexcept override { return b.config(); }
    void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
      b.read(t, layer, out);
      if (t == LlamaTensor::kWv && layer == 1)
        for (float& v : out) v = std::ldexp(v, -40);
    }
  } tiny(base);
  gsq::LlamaLoraModel<> mt(tiny, o);
  const gsq::BaseExport rt = gsq::write_base_gguf(path, mt, tiny);
  CHECK(rt.f32_tensors == std::vector<std::string>{"blk.0.ffn_down.weight", "blk.1.attn_v.weight",
                                                   "blk.1.ffn_down.weight"});
  const gsq::GgufLlamaSource st(path);
  std::vector<float> got;
  st.read(LlamaTensor::kWv, 1, got);
  const std::vector<float> wt = mt.loras()[7 + 2]->base_float();
  CHECK(got[1] == wt[static_cast<std::size_t>(1 * 32)]);  // row 0, column 1 = in 1, out 0

  // With a tokenizer copied from a GGUF: stories260K.
  const std::string s260 = gsq::test::model_path("stories260K.gguf");
  if (s260.empty()) return;
  const gsq::GgufLlamaSource story(s260);
  gsq::LlamaLoraModel<> ms(story, o);
  const GgufFile tok = GgufFile::open(s260);
  gsq::write_base_gguf(path, ms, story, &tok);
  const GgufFile out = GgufFile::open(path);
  CHECK(out.at("tokenizer.ggml.tokens").strings() == tok.at("tokenizer.ggml.tokens").strings());
  CHECK(out.at("tokenizer.ggml.model").as_string() == tok.at("tokenizer.ggml.model").as_string());
  CHECK(out.at("tokenizer.ggml.scores").floats() == tok.at("tokenizer.ggml.scores").floats());
  const gsq::GgufLlamaSource back(path);
  CHECK(back.config().n_kv_heads == story.config().n_kv_heads);
  CHECK(back.config().rope_theta == story.config().rope_theta);
  CHECK(back.config().norm_eps == story.config().norm_eps);
}

// An independent reader: @huggingface/gguf (node) parses adapter.gguf.
TEST_CASE("adapter: @huggingface/gguf parses adapter.gguf", "[adapter]") {
  std::string why;
  const std::string modules = gsq::test::hfgguf_modules(why);
  if (modules.empty()) GSQ_SKIP(why);
  const LlamaConfig c = small_config();
  const LlamaAdapter a = random_adapter(c, 3, 6.0f, 4);
  TempDir dir("node");
  const std::string path = dir.path + "/a.gguf", script = dir.path + "/list.cjs";
  gsq::write_adapter_gguf(path, a, c);
  std::ofstream(script)
      << "const { gguf } = require('@huggingface/gguf');\n"
         "(async () => {\n"
         "  const { metadata, tensorInfos } = await gguf(process.argv[2], { allowLocalFile: true "
         "});\n"
         "  for (const k of ['general.type', 'general.architecture', 'adapter.type', "
         "'adapter.lora.alpha', 'gsq.base.format']) console.log('kv\\t' + k + '\\t' + "
         "String(metadata[k]));\n"
         "  for (const t of tensorInfos) console.log('tensor\\t' + t.name + '\\t' + t.dtype + "
         "'\\t' + t.shape.map(String).join(','));\n"
         "})().catch((e) => { console.error(e); process.exit(1); });\n";
  int status = 0;
  const std::string out =
      run("NODE_PATH='" + modules + "' node " + script + " '" + path + "'", status);
  REQUIRE(status == 0);
  CHECK(out.find("kv\tgeneral.type\tadapter\n") != std::string::npos);
  CHECK(out.find("kv\tgeneral.architecture\tllama\n") != std::string::npos);
  CHECK(out.find("kv\tadapter.type\tlora\n") != std::string::npos);
  CHECK(out.find("kv\tadapter.lora.alpha\t6\n") != std::string::npos);
  CHECK(out.find("kv\tgsq.base.format\tllama2c\n") != std::string::npos);
  CHECK(out.find("tensor\tblk.1.ffn_down.weight.lora_a\t0\t80,3\n") != std::string::npos);
  CHECK(out.find("tensor\tblk.1.ffn_down.weight.lora_b\t0\t3,64\n") != std::string::npos);
  CHECK(out.find("tensor\tblk.0.attn_k.weight.lora_b\t0\t3,32\n") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 5 + 28);
}

// PyTorch, independently: the HF base (stories260K-hf, read by a plain safetensors reader) plus
// the PEFT adapter merged as W + (alpha / r) B A in HF layout, run by a rotate-half llama forward
// in float64, against gsq's LlamaRunner on the llama2.c base (Meta layout) with the adapter.
TEST_CASE("adapter: a PEFT adapter in PyTorch on the HF base equals gsq on the llama2.c base",
          "[adapter][model]") {
  const std::string bin = gsq::test::model_path("stories260K.bin");
  const std::string hf = gsq::test::model_path("stories260K-hf/model.safetensors");
  if (bin.empty() || hf.empty()) GSQ_SKIP("stories260K.bin or stories260K-hf not found");
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0)
    GSQ_SKIP("PyTorch (python3-torch) is not installed");
  const auto w = gsq::Llama2Weights::load(bin);
  const gsq::Llama2WeightSource source(w);
  const LlamaConfig& c = source.config();
  const LlamaAdapter a = random_adapter(c, 4, 8.0f, 77, {}, 0.1f);
  TempDir dir("torch");
  gsq::write_peft_adapter(dir.path + "/peft", a, c, "stories260K-hf");
  const std::string script = dir.path + "/check.py";
  std::ofstream(script) << R"PY(
import json, struct, sys, torch
def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        assert t['dtype'] == 'F32', t['dtype']
        b, e = t['data_offsets']
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(t['shape']).double()
    return out
hf_dir, peft_dir = sys.argv[1], sys.argv[2]
tokens = [int(t) for t in sys.argv[3].split(',')]
cfg = json.load(open(hf_dir + '/config.json'))
W = load(hf_dir + '/model.safetensors')
acfg = json.load(open(peft_dir + '/adapter_config.json'))
s = acfg['lora_alpha'] / acfg['r']
L = load(peft_dir + '/adapter_model.safetensors')
for name, A in L.items():
    if '.lora_A.' not in name:
        continue
    B = L[name.replace('.lora_A.', '.lora_B.')]
    W[name[len('base_model.model.'):].replace('.lora_A.weight', '.weight')] += s * (B @ A)
dim, heads, kvh = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_key_value_heads']
hs, eps, theta = dim // heads, cfg['rms_norm_eps'], cfg.get('rope_theta', 10000.0)
T = len(tokens)
def rms(x, g):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g
inv = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
def rope(x):
    x1, x2 = x[..., :hs // 2], x[..., hs // 2:]
    return x * cos[:, None, :] + torch.cat([-x2, x1], -1) * sin[:, None, :]
E = W['model.embed_tokens.weight']
x = E[tokens]
mask = torch.triu(torch.full((T, T), float('-inf'), dtype=torch.float64), 1)
for l in range(cfg['num_hidden_layers']):
    p = 'model.layers.%d.' % l
    h = rms(x, W[p + 'input_layernorm.weight'])
    q = rope((h @ W[p + 'self_attn.q_proj.weight'].T).reshape(T, heads, hs))
    k = rope((h @ W[p + 'self_attn.k_proj.weight'].T).reshape(T, kvh, hs))
    v = (h @ W[p + 'self_attn.v_proj.weight'].T).reshape(T, kvh, hs)
    k = k.repeat_interleave(heads // kvh, 1)
    v = v.repeat_interleave(heads // kvh, 1)
    att = torch.einsum('thd,shd->hts', q, k) / hs ** 0.5 + mask
    o = torch.einsum('hts,shd->thd', att.softmax(-1), v).reshape(T, dim)
    x = x + o @ W[p + 'self_attn.o_proj.weight'].T
    h = rms(x, W[p + 'post_attention_layernorm.weight'])
    g = h @ W[p + 'mlp.gate_proj.weight'].T
    x = x + (torch.nn.functional.silu(g) * (h @ W[p + 'mlp.up_proj.weight'].T)) @ W[p + 'mlp.down_proj.weight'].T
x = rms(x, W['model.norm.weight'])
logits = x @ W.get('lm_head.weight', E).T
for row in logits:
    print(' '.join(repr(float(v)) for v in row))
)PY";
  const std::vector<int> tokens{1, 403, 407, 261, 378, 200, 50, 7};
  std::string list;
  for (int t : tokens) list += (list.empty() ? "" : ",") + std::to_string(t);
  const std::string hf_dir = hf.substr(0, hf.size() - std::string("/model.safetensors").size());
  int status = 0;
  const std::string out = run(
      "/usr/bin/python3 " + script + " '" + hf_dir + "' '" + dir.path + "/peft' " + list, status);
  REQUIRE(status == 0);
  gsq::LlamaRunner runner(source), plain(source);
  gsq::apply_adapter(runner, a);
  std::istringstream lines(out);
  double worst = 0, moved = 0;
  for (std::size_t pos = 0; pos < tokens.size(); ++pos) {
    std::string line;
    REQUIRE(std::getline(lines, line));
    std::istringstream cells(line);
    std::vector<float> torch_logits;
    for (double v; cells >> v;) torch_logits.push_back(static_cast<float>(v));
    REQUIRE(torch_logits.size() == 512);
    worst = std::max(
        worst, relative_diff(runner.forward(tokens[pos], static_cast<int>(pos)), torch_logits));
    moved = std::max(
        moved, relative_diff(plain.forward(tokens[pos], static_cast<int>(pos)), torch_logits));
  }
  INFO("gsq + adapter vs PyTorch: " << worst << ", gsq without the adapter: " << moved);
  CHECK(worst < 1e-4);
  CHECK(moved > 1e-2);
}

#else

TEST_CASE("adapter: formats need nlohmann/json", "[adapter]") {
  GSQ_SKIP("nlohmann/json (gsq::json) is absent: adapter.hpp is not built");
}

#endif
