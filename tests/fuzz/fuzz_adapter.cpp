// fuzz_adapter.cpp: the LoRA adapter readers on untrusted bytes: a llama.cpp adapter GGUF
// (read_adapter_gguf) and a PEFT directory (read_peft_adapter: adapter_config.json and
// adapter_model.safetensors), against a fixed small base (dim 32, hidden 64, 2 layers, 4 heads,
// 2 kv heads, vocab 40).
//
// Input: [mode] [bytes...]
//   mode even  the bytes are an adapter GGUF file
//   mode odd   [n: u16] n bytes of adapter_config.json, then adapter_model.safetensors
// The readers take paths, so the harness writes the bytes to a per-process folder under /tmp.
// A reader either throws std::invalid_argument starting "adapter: ", "gguf: " or
// "safetensors: ", or returns an adapter that validates against the base and merges into it
// (every value read through LoraMergedSource; ASan checks the bounds).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <gsq/models/llama/adapter.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

gsq::LlamaConfig base_config() {
  gsq::LlamaConfig c;
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.seq_len = 8;
  return c;
}

void write(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) gsq::fuzz::fail("cannot write the harness's temporary file");
  if (size > 0 && std::fwrite(data, 1, size, f) != size) gsq::fuzz::fail("short write");
  std::fclose(f);
}

bool expected(const std::string& what) {
  for (const char* prefix : {"adapter: ", "gguf: ", "safetensors: "}) {
    if (what.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

/// An accepted adapter: it validates, and merging it into a random base reads every value.
void use(const gsq::LlamaAdapter& a, const gsq::LlamaConfig& c) {
  a.validate(c);
  GSQ_FUZZ_EXPECT(a.rank >= 1 && !a.targets.empty(), "accepted an adapter without rank/targets");
  const gsq::RandomLlamaWeights base(c, 1);
  const gsq::LoraMergedSource merged(base, a);
  std::vector<float> w;
  double sum = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    for (gsq::LlamaTensor t : {gsq::LlamaTensor::kWq, gsq::LlamaTensor::kWk, gsq::LlamaTensor::kWv,
                               gsq::LlamaTensor::kWo, gsq::LlamaTensor::kW1, gsq::LlamaTensor::kW2,
                               gsq::LlamaTensor::kW3}) {
      merged.read(t, l, w);
      GSQ_FUZZ_EXPECT(static_cast<gsq::Index>(w.size()) == gsq::shape_of(c, t).size(),
                      "merged tensor has the wrong size");
      for (float v : w) sum += static_cast<double>(v);
    }
  }
  (void)sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const gsq::LlamaConfig c = base_config();
  static const std::string dir = "/tmp/gsq_fuzz_adapter_" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0700);
  const bool peft = (data[0] & 1) != 0;
  gsq::fuzz::Bytes in(data + 1, size - 1);
  std::string error;
  gsq::LlamaAdapter a;
  bool accepted = false;
  try {
    if (!peft) {
      write(dir + "/adapter.gguf", in.rest(), in.remaining());
      a = gsq::read_adapter_gguf(dir + "/adapter.gguf", c);
    } else {
      const std::size_t n = std::min<std::size_t>(in.u16(), in.remaining());
      write(dir + "/adapter_config.json", in.rest(), n);
      write(dir + "/adapter_model.safetensors", in.rest() + n, in.remaining() - n);
      a = gsq::read_peft_adapter(dir, c);
    }
    accepted = true;
  } catch (const std::invalid_argument& e) {
    error = e.what();
  }
  if (!accepted) {
    GSQ_FUZZ_EXPECT(expected(error), "an adapter reader threw an unexpected message");
    return 0;
  }
  use(a, c);  // outside the try: an accepted adapter must not throw
  return 0;
}
