// finetune/rows.cpp: the configurations of rows.hpp (GSQ 6-6-6 and 5-5-5, and the LoTA-QAF row
// with its file), compiled apart from finetune.cpp.
// GCC 12 reports the undefined pass-through operand of AVX-512 intrinsics as maybe-uninitialized
// where Eigen's AVX-512 GEMM (the float rows', enabled by -march=native, GSQ_NATIVE) inlines
// them: GCC bug 105593, fixed in 13.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "rows.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include "export.hpp"
#include "gsq/models/llama/gguf_source.hpp"
#include "gsq/models/llama/inference.hpp"

namespace finetune {

Measured train_narrow_gse(int bits, const gsq::Llama2Weights& w, const Dataset& data,
                          const TrainSettings& s, const std::string& label, bool merge) {
  if (bits == 6)
    return train_adapters<gsq::LoraLinear<4, 6, 6, 6, 32>>(w, data, s, gsq::LoraMode::kGse, label,
                                                          merge);
  if (bits == 5)
    return train_adapters<gsq::LoraLinear<4, 5, 5, 5, 32>>(w, data, s, gsq::LoraMode::kGse, label,
                                                          merge);
  throw std::invalid_argument("train_narrow_gse: bits " + std::to_string(bits) + " is not 5 or 6");
}

Measured train_lota_row(const gsq::Llama2Weights& w, const Dataset& data, const TrainSettings& s,
                        const std::string& label, const gsq::Tokenizer& tok,
                        const std::string& out) {
  return train_lota(w, data, s, label, [&](const gsq::Llama2LoraModel<Lota>& merged) {
    write_gguf_with_vocabulary(lota_file(out), merged, w, tok, "LoTA-QAF merged model");
  });
}

void reload_lota_file(const std::string& out, const TrainSettings& s,
                      const std::vector<std::vector<int>>& windows, double& model_loss,
                      double& inference_loss) {
  const gsq::GgufLlamaSource source(lota_file(out));
  gsq::Llama2LoraModel<Lota> model(source, lota_options(s));
  model_loss = heldout_loss(model, windows);
  gsq::LlamaInferenceOptions io;
  io.compute = gsq::LlamaCompute::kGse;
  io.weight_bits = 4;
  io.activation_bits = 8;
  gsq::LlamaRunner runner(source, io);
  inference_loss = runner_loss(runner, windows);
}

}  // namespace finetune
