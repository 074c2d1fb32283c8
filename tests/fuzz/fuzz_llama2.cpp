// fuzz_llama2.cpp: the llama2.c checkpoint reader (Llama2Weights::parse) on untrusted bytes.
//
// Input: [mode] [bytes...]
//   mode odd   bytes are a file image, parsed as is
//   mode even  the first 28 bytes are the header; the harness sizes the weights the way
//              llama2.c's run.c lays them out and, when that is at most 1 MiB, fills them from the
//              remaining bytes, so the fuzzer reaches well-formed files with odd shapes
// parse() must accept exactly the files whose header is valid and whose size is what run.c reads
// for it (run_c_bytes below, restated from llama2.c), and reject the others with a "llama2: "
// std::invalid_argument and nothing else.  A file it accepts must be readable through every
// accessor without leaving the buffer, and the accessors must not throw.
#include <cstdint>
#include <cstring>
#include <gsq/models/llama/weights.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

double sum(gsq::MatrixRef<const float> m) {
  double s = 0.0;
  for (gsq::Index i = 0; i < m.rows; ++i) {
    for (gsq::Index j = 0; j < m.cols; ++j) s += static_cast<double>(m(i, j));
  }
  return s;
}

/// Reads every weight through the accessors (ASan checks the bounds).
void touch(const gsq::Llama2Weights& w) {
  const gsq::Llama2Config& c = w.config();
  GSQ_FUZZ_EXPECT(c.dim >= 1 && c.n_heads >= 1 && c.n_kv_heads >= 1 && c.n_layers >= 1 &&
                      c.vocab_size >= 1 && c.hidden_dim >= 1 && c.seq_len >= 1,
                  "accepted a header with a non-positive field");
  GSQ_FUZZ_EXPECT(c.kv_dim() <= c.dim && c.head_size() * c.n_heads == c.dim,
                  "accepted inconsistent head counts");
  double s = sum(w.token_embedding()) + sum(w.classifier());
  for (int l = 0; l < c.n_layers; ++l) {
    s += sum(w.wq(l)) + sum(w.wk(l)) + sum(w.wv(l)) + sum(w.wo(l));
    s += sum(w.w1(l)) + sum(w.w2(l)) + sum(w.w3(l));
    for (int i = 0; i < c.dim; ++i) s += static_cast<double>(w.rms_att(l)[i] + w.rms_ffn(l)[i]);
  }
  for (int i = 0; i < c.dim; ++i) s += static_cast<double>(w.rms_final()[i]);
  // Layers out of range are the one error an accessor reports.
  for (const int l : {c.n_layers, -1}) {
    std::string error = "(no exception)";
    try {
      (void)w.wq(l);
    } catch (const std::invalid_argument& e) {
      error = e.what();
    }
    GSQ_FUZZ_EXPECT(error == "llama2: layer " + std::to_string(l) + " out of range [0, " +
                                 std::to_string(c.n_layers) + ")",
                    "wq(l) for a layer out of range did not say so");
  }
  volatile double sink = s;
  (void)sink;
}

/// Bytes of weights run.c expects for this header, or 0 if the header is invalid or the weights
/// are larger than `limit`.
std::uint64_t run_c_bytes(const std::int32_t h[7], std::uint64_t limit) {
  for (int k = 0; k < 7; ++k) {
    const std::int64_t v = k == 5 && h[k] < 0 ? -std::int64_t{h[k]} : h[k];
    if (v < 1 || v > (1 << 20)) return 0;
  }
  const std::uint64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4];
  const std::uint64_t vocab = h[5] < 0 ? -std::int64_t{h[5]} : h[5], seq = h[6];
  if (dim % heads != 0 || kv_heads > heads || heads % kv_heads != 0) return 0;
  const std::uint64_t head = dim / heads;
  if (head % 2 != 0) return 0;
  const std::uint64_t kv = head * kv_heads;
  // Each product is below 2^60, and the floats are bounded by `limit` before they are added up.
  const std::uint64_t parts[] = {vocab * dim,
                                 layers * dim,
                                 layers * dim * dim,
                                 layers * dim * kv,
                                 layers * dim * kv,
                                 layers * dim * dim,
                                 layers * dim,
                                 layers * hidden * dim,
                                 layers * dim * hidden,
                                 layers * hidden * dim,
                                 dim,
                                 seq * head,
                                 h[5] < 0 ? vocab * dim : 0};
  std::uint64_t floats = 0;
  for (std::uint64_t p : parts) {
    if (p > limit / 4 || floats + p > limit / 4) return 0;
    floats += p;
  }
  return floats * 4;
}

void parse(const std::vector<unsigned char>& image) {
  std::uint64_t weights = 0;  // 0: the header is invalid or asks for more than the file holds
  if (image.size() >= 28) {
    std::int32_t h[7];
    std::memcpy(h, image.data(), sizeof h);
    weights = run_c_bytes(h, image.size() - 28);
  }
  const bool consistent = weights != 0 && weights == image.size() - 28;
  gsq::Llama2Weights w;
  try {
    w = gsq::Llama2Weights::parse(image.data(), image.size());
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(!consistent, "rejected a consistent llama2.c file of the run.c size");
    GSQ_FUZZ_EXPECT(std::string(e.what()).rfind("llama2: ", 0) == 0,
                    "a rejection does not say it is the llama2 reader's");
    return;
  }
  GSQ_FUZZ_EXPECT(consistent, "accepted a bad header or a file not of the run.c size");
  touch(w);  // outside the try: nothing an accepted file offers may throw
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  gsq::fuzz::Bytes in(data, size);
  const int mode = in.u8();
  // A copy of exactly the bytes given, so that reads past the end are caught by ASan.
  std::vector<unsigned char> image(in.rest(), in.rest() + in.remaining());
  if (mode % 2 == 1 || image.size() < 28) {
    parse(image);
    return 0;
  }
  std::int32_t h[7];
  std::memcpy(h, image.data(), sizeof h);
  const std::uint64_t weights = run_c_bytes(h, std::uint64_t{1} << 20);
  if (weights == 0) {
    parse(image);
    return 0;
  }
  const std::vector<unsigned char> source(image.begin() + 28, image.end());
  image.resize(28 + weights);
  for (std::uint64_t i = 0; i < weights; ++i) {
    image[28 + i] = source.empty() ? 0 : source[i % source.size()];
  }
  parse(image);  // consistent by construction: must be accepted
  return 0;
}
