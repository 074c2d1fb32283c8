// lota_export_test.cpp: a LoTA-QAF model merged into its 4-bit base and written by write_base_gguf
// is a stock Q4_0 GGUF holding exactly the merged integer model (decoded by ggml's rules, run by
// the inference runner and by the training model).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/models/gguf/file.hpp"
#include "gsq/models/llama/base_export.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/inference.hpp"
#include "gsq/models/llama/lora_model.hpp"
#include "gsq/models/llama/source.hpp"
#include "gsq/nn/lota.hpp"
#include "gsq/optim/tsign_sgd.hpp"
#include "testing.hpp"

namespace {

using gsq::Index;
using gsq::LlamaConfig;
using gsq::LlamaTensor;
using gsq::gguf::GgmlType;
using Lota = gsq::LotaLinear<4, 8, 8, 32>;

constexpr LlamaTensor kLinears[] = {LlamaTensor::kWq, LlamaTensor::kWk, LlamaTensor::kWv,
                                    LlamaTensor::kWo, LlamaTensor::kW1, LlamaTensor::kW2,
                                    LlamaTensor::kW3};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// A layer's in x out weight as the out x in rows of a LlamaWeightSource.
std::vector<float> rows_of(const std::vector<float>& in_out, Index in, Index out) {
  std::vector<float> rows(in_out.size());
  for (Index o = 0; o < out; ++o) {
    for (Index k = 0; k < in; ++k)
      rows[static_cast<std::size_t>(o * in + k)] = in_out[static_cast<std::size_t>(k * out + o)];
  }
  return rows;
}

/// Serves given linears (out x in rows, layer * 7 + index in kLinears) and embedding, and the
/// norms of another source.
struct ServedSource final : gsq::LlamaWeightSource {
  const gsq::LlamaWeightSource& norms;
  std::vector<std::vector<float>> linears;
  std::vector<float> embedding;
  explicit ServedSource(const gsq::LlamaWeightSource& n) : norms(n) {}
  const LlamaConfig& config() const noexcept override { return norms.config(); }
  void read(LlamaTensor t, int layer, std::vector<float>& out) const override {
    if (t == LlamaTensor::kTokenEmbedding) {
      out = embedding;
      return;
    }
    for (int i = 0; i < 7; ++i) {
      if (t == kLinears[i]) {
        out = linears[static_cast<std::size_t>(layer * 7 + i)];
        return;
      }
    }
    norms.read(t, layer, out);
  }
};

}  // namespace

TEST_CASE("LoTA export: the merged LoTA-QAF model is a stock Q4_0 GGUF, exactly", "[lota]") {
  LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 80;  // ffn_down's rows (80) are not whole groups of 32: F32, exact too
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 96;
  c.seq_len = 16;
  const gsq::RandomLlamaWeights base(c, 8);
  gsq::LoraOptions o;
  o.rank = 4;
  o.seed = 3;
  gsq::LlamaLoraModel<Lota> m(base, o);
  const auto layers = m.loras();
  std::vector<std::vector<float>> untrained;
  std::vector<gsq::TernaryParameter<std::int64_t>> params;
  for (Lota* p : layers) {
    p->set_omega(1);  // |dW| >= 2 marks: a few steps move codes
    untrained.push_back(p->effective_weight());
    for (const auto& q : p->parameters()) params.push_back(q);
  }
  gsq::TSignSgd<std::int64_t> optimizer(params, {0.5, 0.7, 0.9, 0.8, 6});
  gsq::detail::Rng rng(11);
  auto window = [&rng, &c] {
    std::vector<int> t{1};
    while (t.size() < 17) t.push_back(static_cast<int>(rng.next_u64() % static_cast<std::uint64_t>(c.vocab_size)));
    return t;
  };
  const std::vector<int> heldout = window();
  for (int step = 0; step < 6; ++step) {
    m.zero_grad();
    m.loss_batch({window(), window()}, /*backward=*/true);
    optimizer.step();
  }

  // The function trained: the effective weights s (c + M), and the loss, before the merge.
  std::vector<std::vector<float>> trained;
  std::size_t moved = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    trained.push_back(layers[i]->effective_weight());
    for (std::size_t k = 0; k < trained[i].size(); ++k) moved += trained[i][k] != untrained[i][k];
  }
  INFO(moved << " weights moved by the markers");
  REQUIRE(moved > 0);  // otherwise the file would be the untrained base and prove nothing
  const double unmerged_loss = m.loss(heldout, false);

  const std::string path = "/tmp/gsq_lota_export_" + std::to_string(::getpid()) + ".gguf";
  std::size_t first = 0;
  while (layers[first]->b().all_zero()) ++first;
  const char* names[] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                         "ffn_gate", "ffn_down", "ffn_up"};
  CHECK(gsq::test::error_of([&] { gsq::write_base_gguf(path, m, base); }) ==
        "base export: layer " + std::to_string(first / 7) + " " + names[first % 7] +
            " has adapters not merged into its base (call merge() on every layer first)");

  for (Lota* p : layers) p->merge();
  const double merged_loss = m.loss(heldout, false);
  CHECK(merged_loss == unmerged_loss);  // LotaLinear::merge is exact
  const gsq::BaseExport r = gsq::write_base_gguf(path, m, base);
  CHECK(r.block_tensors == 1 + 2 * 6);
  CHECK(r.f32_tensors ==
        std::vector<std::string>{"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"});

  const gsq::GgufLlamaSource src(path);
  const gsq::gguf::GgufFile& f = src.file();
  CHECK(f.at("general.file_type").as_uint() == 2);
  CHECK(f.at("general.name").as_string() == "gsq LoTA-QAF merged model");
  ServedSource served(base);
  served.embedding = gsq::dequantize(m.classifier().embedding());
  std::vector<float> got;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int i = 0; i < 7; ++i) {
      INFO("layer " << l << " " << names[i]);
      const std::size_t at = static_cast<std::size_t>(l * 7 + i);
      const Lota& layer = *layers[at];
      CHECK(f.tensor(src.tensor_name(kLinears[i], l)).type ==
            (kLinears[i] == LlamaTensor::kW2 ? GgmlType::kF32 : GgmlType::kQ4_0));
      src.read(kLinears[i], l, got);  // ggml's decoding rules (gsq's dequantize_row)
      const Index in = layer.in_features(), out = layer.out_features();
      // Exactly the merged integer base, which is exactly the trained function's weight.
      CHECK(same_bits(got, rows_of(gsq::dequantize(layer.base().unpack()), in, out)));
      CHECK(same_bits(got, rows_of(trained[at], in, out)));
      served.linears.push_back(rows_of(trained[at], in, out));
    }
  }
  src.read(LlamaTensor::kTokenEmbedding, 0, got);
  CHECK(same_bits(got, served.embedding));

  // The inference runner (integer engine, W4A8) on the file: the same logits, bit for bit, as
  // on the merged model's weights served from memory.
  gsq::LlamaInferenceOptions io;
  io.compute = gsq::LlamaCompute::kGse;
  io.weight_bits = 4;
  io.activation_bits = 8;
  gsq::LlamaRunner from_file(src, io), from_memory(served, io);
  for (int pos = 0; pos + 1 < static_cast<int>(heldout.size()); ++pos) {
    INFO("position " << pos);
    const std::vector<float> a = from_file.forward(heldout[static_cast<std::size_t>(pos)], pos);
    CHECK(same_bits(a, from_memory.forward(heldout[static_cast<std::size_t>(pos)], pos)));
  }

  // The training model built from the file (requantizing exact GSE values gives the same
  // values): the merged model's loss, bit for bit.
  gsq::LlamaLoraModel<Lota> reloaded(src, o);
  CHECK(reloaded.loss(heldout, false) == merged_loss);
  std::remove(path.c_str());
}
