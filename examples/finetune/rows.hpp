// finetune/rows.hpp: the configurations of examples/finetune.cpp compiled in their own
// translation unit, rows.cpp, so that a parallel build compiles them beside finetune.cpp (each
// layer type instantiates the whole training model: one file took 45 s to compile, two take
// about 30 s each).
#pragma once

#include <string>
#include <vector>

#include "gsq/models/llama/tokenizer.hpp"
#include "gsq/models/llama/weights.hpp"
#include "train.hpp"

namespace finetune {

/// train_adapters in GSE mode for LoraLinear<4, bits, bits, bits, 32>, bits 5 or 6 (else
/// std::invalid_argument).
Measured train_narrow_gse(int bits, const gsq::Llama2Weights& w, const Dataset& data,
                          const TrainSettings& s, const std::string& label, bool merge);

/// train_lota, then the merged model with `tok`'s vocabulary written as lota_file(out)
/// (export.hpp): a stock Q4_0 GGUF that needs no adapter.  Prints what it wrote.
Measured train_lota_row(const gsq::Llama2Weights& w, const Dataset& data, const TrainSettings& s,
                        const std::string& label, const gsq::Tokenizer& tok,
                        const std::string& out);

/// Loads lota_file(out) back as a user would, through gsq's GGUF reader, and returns the
/// held-out loss over `windows` of (1) the training model on it (LlamaLoraModel<Lota> with the
/// row's options, B = 0: the merged layers' forward; requantizing the file's exact GSE values
/// gives the same values, so this is the row's merged loss bit for bit) and (2) gsq's
/// inference runner on the integer engine at W4A8.
void reload_lota_file(const std::string& out, const TrainSettings& s,
                      const std::vector<std::vector<int>>& windows, double& model_loss,
                      double& inference_loss);

}  // namespace finetune
