// quant_report.cpp: SQNR of GSE-INT8..4 against FP8 E4M3/E5M2 and per-tensor INT8, on synthetic
// data and on the real weights of a llama2.c checkpoint.
//
//   quant_report [path/to/stories260K.bin]     (default: ../shared/models/stories260K.bin)
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "gsq/baselines/fp8.hpp"
#include "gsq/baselines/int8.hpp"
#include "gsq/detail/rng.hpp"
#include "gsq/gsq.hpp"
#include "gsq/models/llama/weights.hpp"

namespace {

using gsq::Index;
using gsq::MatrixRef;

/// A matrix to quantize: row-major, groups along the rows (the reduction axis of X or of a
/// llama2.c weight stored out x in).
struct Data {
  std::vector<float> x;
  Index rows = 0;
  Index cols = 0;
};

/// Signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - y)^2).
double sqnr_db(const std::vector<float>& x, const std::vector<float>& y) {
  double signal = 0, noise = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    signal += double{x[k]} * x[k];
    noise += (double{x[k]} - y[k]) * (double{x[k]} - y[k]);
  }
  return noise == 0 ? INFINITY : 10 * std::log10(signal / noise);
}

template <int Bits, int G = 32>
std::vector<float> gse(const Data& d) {
  const auto t = gsq::quantize<Bits, G>(
      MatrixRef<const float>::row_major(d.x.data(), d.rows, d.cols), gsq::Axis::kCols);
  return gsq::dequantize(t);
}
template <typename F>
std::vector<float> fp8(const Data& d) {
  return gsq::dequantize_fp8(gsq::quantize_fp8<F>(d.x.data(), d.rows, d.cols, d.cols));
}
std::vector<float> int8(const Data& d) {
  return gsq::dequantize_int8(gsq::quantize_int8(d.x.data(), d.rows, d.cols, d.cols));
}

struct Format {
  const char* name;
  std::function<std::vector<float>(const Data&)> roundtrip;
};

const std::vector<Format>& formats() {
  static const std::vector<Format> f = {
      {"GSE-INT8 (E5M7)", gse<8>},
      {"GSE-INT7", gse<7>},
      {"GSE-INT6", gse<6>},
      {"GSE-INT5", gse<5>},
      {"GSE-INT4", gse<4>},
      {"FP8 E4M3, per-tensor scale", fp8<gsq::Fp8E4M3>},
      {"FP8 E5M2, per-tensor scale", fp8<gsq::Fp8E5M2>},
      {"INT8, per-tensor scale", int8},
  };
  return f;
}

/// Prints one Markdown table: a row per format, a column per data set.
void table(const std::vector<std::pair<std::string, Data>>& sets) {
  std::printf("| format |");
  for (const auto& s : sets) std::printf(" %s |", s.first.c_str());
  std::printf("\n|---|");
  for (std::size_t k = 0; k < sets.size(); ++k) std::printf("---:|");
  std::printf("\n");
  for (const auto& f : formats()) {
    std::printf("| %s |", f.name);
    for (const auto& s : sets) std::printf(" %.2f |", sqnr_db(s.second.x, f.roundtrip(s.second)));
    std::printf("\n");
  }
  std::printf("\n");
}

/// 256 x 4096 draws times `scale`, from gsq's portable generator (the same data with every
/// standard library; std:: distributions are not specified to the bit).
Data synthetic(const std::function<double(gsq::detail::Rng&)>& draw, double scale) {
  Data d;
  d.rows = 256;
  d.cols = 4096;
  d.x.resize(static_cast<std::size_t>(d.rows * d.cols));
  gsq::detail::Rng rng(42);
  for (auto& v : d.x) v = static_cast<float>(draw(rng) * scale);
  return d;
}

template <int Bits, int... Gs>
void group_sweep_row(const char* name, const Data& d) {
  std::printf("| %s |", name);
  (std::printf(" %.2f |", sqnr_db(d.x, gse<Bits, Gs>(d))), ...);
  std::printf("\n");
}

/// Concatenates every layer's matrix of one kind into a single rows x in matrix.
Data layers(const gsq::Llama2Weights& w,
            MatrixRef<const float> (gsq::Llama2Weights::*m)(int) const) {
  Data d;
  for (int l = 0; l < w.config().n_layers; ++l) {
    const auto a = (w.*m)(l);
    d.cols = a.cols;
    d.rows += a.rows;
    d.x.insert(d.x.end(), a.data, a.data + a.rows * a.cols);
  }
  return d;
}

}  // namespace

/// The backward pass reduces W along the other axis.  Rows: the forward weight (W4, groups along
/// the rows of the row-major data) regrouped in integers (gsq::regroup) to 4 or 8 bits, against
/// quantizing the float weight along the other axis directly.  SQNR against the float weight, and
/// against the forward's W4 values (the weight the backward must differentiate).
void regroup_rows(const Data& d) {
  const auto src = MatrixRef<const float>::row_major(d.x.data(), d.rows, d.cols);
  const auto w4 = gsq::quantize<4>(src, gsq::Axis::kCols);
  const auto fwd = gsq::dequantize(w4);
  auto row = [&](const char* name, const std::vector<float>& y) {
    Index changed = 0;
    for (std::size_t k = 0; k < y.size(); ++k) changed += y[k] != fwd[k];
    std::printf("| %s | %.2f | %.2f | %.2f %% |\n", name, sqnr_db(d.x, y), sqnr_db(fwd, y),
                100.0 * static_cast<double>(changed) / static_cast<double>(y.size()));
  };
  std::printf(
      "| backward weight | SQNR vs float W | SQNR vs forward W4 | values changed |\n"
      "|---|---:|---:|---:|\n");
  row("forward W4 itself (groups along in)", fwd);
  row("W4 regrouped to GSE-INT4 along out",
      gsq::dequantize(gsq::regroup<4>(w4.view(), gsq::Axis::kRows)));
  row("W4 regrouped to GSE-INT8 along out",
      gsq::dequantize(gsq::regroup<8>(w4.view(), gsq::Axis::kRows)));
  row("float W quantized to GSE-INT4 along out",
      gsq::dequantize(gsq::quantize<4>(src, gsq::Axis::kRows)));
  std::printf("\n");
}

int main(int argc, char** argv) {
  std::printf("# gsq quantization report\n\n");
  std::printf(
      "SQNR in dB = 10 log10(sum x^2 / sum (x - x^)^2), higher is better. GSE: groups of 32\n"
      "along each row, nearest-even rounding, conversion ISA: %s. FP8 and INT8 use one\n"
      "scale per tensor (amax -> max finite). Synthetic sets: 256 x 4096 values, seed 42.\n\n",
      gsq::to_string(gsq::conversion_isa()));

  auto gauss = [](gsq::detail::Rng& r) { return static_cast<double>(r.normal()); };
  auto laplace = [](gsq::detail::Rng& r) {  // a random sign times an exponential(1) draw
    const double sign = r.below(2) == 0 ? 1.0 : -1.0;
    return sign * -std::log(1.0 - static_cast<double>(r.uniform()));
  };
  auto t3 = [&gauss](gsq::detail::Rng& r) {  // Z / sqrt(chi-square(3) / 3)
    const double z = gauss(r);
    double chi2 = 0.0;
    for (int k = 0; k < 3; ++k) {
      const double n = gauss(r);
      chi2 += n * n;
    }
    return z / std::sqrt(chi2 / 3.0);
  };
  const Data g = synthetic(gauss, 1.0);
  std::printf("## Synthetic data\n\n");
  table({{"Gaussian", g},
         {"Laplace", synthetic(laplace, 1.0)},
         {"Student-t (3)", synthetic(t3, 1.0)},
         {"Gaussian x 1e-8", synthetic(gauss, 1e-8)},
         {"Gaussian x 1e4", synthetic(gauss, 1e4)}});

  std::printf("## Group-size sweep (Gaussian | Student-t (3))\n\n");
  std::printf("| format | G=16 | 32 | 64 | 128 | 256 |\n|---|---:|---:|---:|---:|---:|\n");
  const Data t = synthetic(t3, 1.0);
  group_sweep_row<8, 16, 32, 64, 128, 256>("GSE-INT8, Gaussian", g);
  group_sweep_row<8, 16, 32, 64, 128, 256>("GSE-INT8, Student-t", t);
  group_sweep_row<4, 16, 32, 64, 128, 256>("GSE-INT4, Gaussian", g);
  group_sweep_row<4, 16, 32, 64, 128, 256>("GSE-INT4, Student-t", t);
  std::printf("\n");

  std::printf("## Regrouping the frozen weight for the backward pass (Gaussian)\n\n");
  regroup_rows(g);

  const std::string path = argc > 1 ? argv[1] : "../shared/models/stories260K.bin";
  std::printf("## Real weights: %s\n\n", path.c_str());
  gsq::Llama2Weights w;
  try {
    w = gsq::Llama2Weights::load(path);
  } catch (const std::invalid_argument& e) {
    std::printf(
        "Skipped: %s.\nstories260K.bin (MIT) is at https://huggingface.co/karpathy/tinyllamas"
        " (stories260K/); pass its path as the first argument.\n",
        e.what());
    return 0;
  }
  const auto& c = w.config();
  std::printf(
      "dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d. Each kind concatenates\n"
      "all layers (out x in, groups along in); per-tensor scales are per kind.\n\n",
      c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
  const auto emb = w.token_embedding();
  Data e{std::vector<float>(emb.data, emb.data + emb.rows * emb.cols), emb.rows, emb.cols};
  using W = gsq::Llama2Weights;
  table({{"embedding", e},
         {"wq", layers(w, &W::wq)},
         {"wk", layers(w, &W::wk)},
         {"wv", layers(w, &W::wv)},
         {"wo", layers(w, &W::wo)},
         {"w1", layers(w, &W::w1)},
         {"w2", layers(w, &W::w2)},
         {"w3", layers(w, &W::w3)}});
  std::printf("### Regrouping the real weights for the backward pass: wq\n\n");
  regroup_rows(layers(w, &W::wq));
  std::printf("### Regrouping the real weights for the backward pass: w2\n\n");
  regroup_rows(layers(w, &W::w2));
  return 0;
}
