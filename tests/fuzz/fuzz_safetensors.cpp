// fuzz_safetensors.cpp: the Hugging Face readers on untrusted bytes: safetensors images
// (safetensors::File::parse and reads of every tensor), model.safetensors.index.json texts
// (safetensors::parse_index) and config.json texts (llama_config_from_hf_json).
//
// Input: [mode] [bytes...]; mode % 3 picks the reader:
//   0  bytes are a safetensors image.  parse() either throws a "safetensors: '<memory>'"
//      std::invalid_argument or accepts; an accepted image's tensors must tile its data section
//      exactly, each read_bytes() must equal its slice of the image, read_floats() must decode
//      F32/F16/BF16 and refuse the other dtypes naming them, and the writer must serialize what
//      was read into an image that parses back to the same tensors and metadata.
//   1  bytes are config.json: llama_config_from_hf_json either throws an "hf config: " or
//      "llama config: " std::invalid_argument or returns a config that validates.
//   2  bytes are an index: parse_index either throws a "safetensors: " std::invalid_argument or
//      returns shard names that are plain file names.
#include <cstdint>
#include <cstring>
#include <gsq/half.hpp>
#include <gsq/models/llama/hf_source.hpp>
#include <gsq/models/safetensors.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

namespace st = gsq::safetensors;

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

void check_floats(const st::File& f, const st::TensorInfo& t, const std::uint8_t* slice) {
  std::vector<float> v;
  if (!st::decodes_to_float(t.dtype)) {
    std::string error = "(no exception)";
    try {
      f.read_floats(t, v);
    } catch (const std::invalid_argument& e) {
      error = e.what();
    }
    GSQ_FUZZ_EXPECT(
        starts_with(error, "safetensors: '<memory>': tensor '") &&
            error.find(std::string("has dtype ") + st::to_string(t.dtype)) != std::string::npos,
        "read_floats of a non-float dtype did not refuse it by name");
    return;
  }
  f.read_floats(t, v);
  GSQ_FUZZ_EXPECT(v.size() == static_cast<std::size_t>(t.elements), "wrong float count");
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t want = 0;
    if (t.dtype == st::Dtype::kF32) {
      std::memcpy(&want, slice + 4 * i, 4);  // the fuzz hosts are little-endian
    } else {
      std::uint16_t h;
      std::memcpy(&h, slice + 2 * i, 2);
      want = gsq::float_bits(t.dtype == st::Dtype::kBF16 ? gsq::to_float(gsq::Bf16{h})
                                                         : gsq::to_float(gsq::Fp16{h}));
    }
    GSQ_FUZZ_EXPECT(gsq::float_bits(v[i]) == want, "read_floats decoded a value wrongly");
  }
}

void fuzz_image(const std::vector<std::uint8_t>& image) {
  st::File f;
  try {
    f = st::File::parse(image.data(), image.size());
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(starts_with(e.what(), "safetensors: '<memory>'"),
                    "a rejection does not say it is the safetensors reader's");
    return;
  }
  // Outside the try: nothing an accepted image offers may throw (but non-float reads).
  GSQ_FUZZ_EXPECT(image.size() >= 8 && f.data_offset() <= image.size(),
                  "accepted an image whose header runs past its end");
  const std::uint64_t data = image.size() - f.data_offset();
  std::uint64_t at = 0;
  std::vector<st::TensorData> copy;
  for (const st::TensorInfo& t : f.tensors()) {
    GSQ_FUZZ_EXPECT(t.begin == at && t.end >= t.begin && t.end <= data,
                    "accepted tensors that do not tile the data section");
    std::uint64_t elements = 1;
    for (const std::int64_t d : t.shape) {
      GSQ_FUZZ_EXPECT(d >= 0, "accepted a negative dimension");
      elements *= static_cast<std::uint64_t>(d);
    }
    GSQ_FUZZ_EXPECT(elements == static_cast<std::uint64_t>(t.elements) &&
                        t.bytes() == elements * static_cast<std::uint64_t>(st::dtype_size(t.dtype)),
                    "accepted a tensor whose bytes do not match its shape");
    GSQ_FUZZ_EXPECT(f.find(t.name) == &t, "find() does not return the tensor by its name");
    at = t.end;
    std::vector<std::uint8_t> bytes;
    f.read_bytes(t, bytes);
    const std::uint8_t* slice = image.data() + f.data_offset() + t.begin;
    GSQ_FUZZ_EXPECT(bytes.size() == t.bytes() &&
                        (bytes.empty() || std::memcmp(bytes.data(), slice, bytes.size()) == 0),
                    "read_bytes differs from the image");
    check_floats(f, t, slice);
    copy.push_back({t.name, t.dtype, t.shape, std::move(bytes)});
  }
  GSQ_FUZZ_EXPECT(at == data, "accepted an image with bytes outside every tensor");

  // Writer round trip.
  const std::vector<std::uint8_t> again = st::serialize(copy, f.metadata());
  const st::File g = st::File::parse(again.data(), again.size());
  GSQ_FUZZ_EXPECT(g.metadata() == f.metadata() && g.tensors().size() == f.tensors().size(),
                  "the writer's image reads back differently");
  for (const st::TensorInfo& t : f.tensors()) {
    const st::TensorInfo* u = g.find(t.name);
    GSQ_FUZZ_EXPECT(
        u != nullptr && u->dtype == t.dtype && u->shape == t.shape && u->bytes() == t.bytes(),
        "the writer's image lost a tensor");
    std::vector<std::uint8_t> a, b;
    f.read_bytes(t, a);
    g.read_bytes(*u, b);
    GSQ_FUZZ_EXPECT(a == b, "the writer's image holds other bytes");
  }
}

void fuzz_config(const std::string& text) {
  gsq::LlamaConfig c;
  try {
    c = gsq::llama_config_from_hf_json(text);
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(starts_with(e.what(), "hf config: ") || starts_with(e.what(), "llama config: "),
                    "a config rejection does not say whose it is");
    return;
  }
  c.validate();  // must not throw
  GSQ_FUZZ_EXPECT(c.q_dim() > 0 && c.kv_dim() > 0, "accepted a config without heads");
}

void fuzz_index(const std::string& text) {
  std::map<std::string, std::string> map;
  try {
    map = st::parse_index(text);
  } catch (const std::invalid_argument& e) {
    GSQ_FUZZ_EXPECT(starts_with(e.what(), "safetensors: '<memory>'"),
                    "an index rejection does not say it is the safetensors reader's");
    return;
  }
  for (const auto& kv : map) {
    const std::string& s = kv.second;
    GSQ_FUZZ_EXPECT(!s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
                        s.find('\\') == std::string::npos && s.find('\0') == std::string::npos,
                    "accepted a shard name that leaves the index's directory");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  gsq::fuzz::Bytes in(data, size);
  const int mode = in.u8() % 3;
  // A copy of exactly the bytes given, so that reads past the end are caught by ASan.
  const std::vector<std::uint8_t> rest(in.rest(), in.rest() + in.remaining());
  if (mode == 0) fuzz_image(rest);
  if (mode == 1) fuzz_config(std::string(rest.begin(), rest.end()));
  if (mode == 2) fuzz_index(std::string(rest.begin(), rest.end()));
  return 0;
}
