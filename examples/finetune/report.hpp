// finetune/report.hpp: the comparison table of examples/finetune.cpp as Markdown and CSV, and
// the bits x rank sweep as CSV and as a hand-written SVG plot (memory against held-out loss).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "train.hpp"

namespace finetune {

/// One row of the comparison table.
struct Row {
  std::string name;
  std::string bits;  ///< W-A-G-adapter bits, as the paper writes them
  bool trained = false;
  Measured m;
};

/// One point of the sweep.
struct SweepPoint {
  int bits = 0;  ///< activations, gradients and adapters (the base is 4-bit)
  int rank = 0;
  Measured m;
};

/// The share of the W4 quantization gap (W4 loss - fp32 loss) that a row closes, in percent.
inline double gap_recovered(double loss, double fp32_loss, double w4_loss) {
  return 100.0 * (w4_loss - loss) / (w4_loss - fp32_loss);
}

/// The comparison table in Markdown; rows[0] is fp32, rows[1] the untrained W4 base.  With
/// `recovery` (the model's own text), a column says how much of the W4 gap each row closes;
/// otherwise (fine-tuning on new text) how far each row is from the fp32 model.
inline std::string table_markdown(const std::vector<Row>& rows, bool recovery) {
  const double fp32 = rows[0].m.heldout_loss, w4 = rows[1].m.heldout_loss;
  std::string md = format(
      "| configuration | W-A-G-adapter bits | held-out loss | perplexity | %s "
      "| merged into W4: loss | training memory (accounted) | largest temporary | peak RSS "
      "| step time | inference per window |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      recovery ? "W4 gap recovered" : "vs fp32");
  for (const Row& r : rows) {
    const double loss = r.m.heldout_loss;
    md +=
        format("| %s | %s | %.4f | %.3f | ", r.name.c_str(), r.bits.c_str(), loss, std::exp(loss));
    md += recovery ? format("%.1f %% | ", gap_recovered(loss, fp32, w4))
                   : format("%+.4f | ", loss - fp32);
    md += r.m.merged_loss > 0 ? format("%.4f | ", r.m.merged_loss) : std::string("— | ");
    md += r.trained ? format("%.1f KiB | %.1f KiB | ", r.m.accounted_bytes / 1024.0,
                             r.m.temporary_bytes / 1024.0)
                    : std::string("— | — | ");
    md += format("%.1f MiB | ", r.m.peak_rss_kib / 1024.0);
    md += r.trained ? format("%.1f ms | %.2f ms |\n", r.m.step_ms, r.m.infer_ms)
                    : std::string("— | — |\n");
  }
  return md;
}

inline std::string table_csv(const std::vector<Row>& rows) {
  std::string csv =
      "configuration,bits,heldout_loss,perplexity,loss_minus_fp32,w4_gap_recovered_percent,"
      "merged_loss,accounted_bytes,largest_temporary_bytes,peak_rss_kib,step_ms,tokens_per_s,"
      "infer_ms_per_window\n";
  const double fp32 = rows[0].m.heldout_loss, w4 = rows[1].m.heldout_loss;
  for (const Row& r : rows) {
    csv += format("\"%s\",%s,%.6f,%.6f,%.6f,%.2f,%.6f,%llu,%llu,%ld,%.3f,%.0f,%.3f\n",
                  r.name.c_str(), r.bits.c_str(), r.m.heldout_loss, std::exp(r.m.heldout_loss),
                  r.m.heldout_loss - fp32, gap_recovered(r.m.heldout_loss, fp32, w4),
                  r.m.merged_loss, static_cast<unsigned long long>(r.m.accounted_bytes),
                  static_cast<unsigned long long>(r.m.temporary_bytes), r.m.peak_rss_kib,
                  r.m.step_ms, r.m.tokens_per_s, r.m.infer_ms);
  }
  return csv;
}

inline std::string sweep_csv(const std::vector<SweepPoint>& points) {
  std::string csv =
      "bits,rank,heldout_loss,perplexity,accounted_bytes,largest_temporary_bytes,peak_rss_kib,"
      "step_ms\n";
  for (const SweepPoint& p : points) {
    csv +=
        format("%d,%d,%.6f,%.6f,%llu,%llu,%ld,%.3f\n", p.bits, p.rank, p.m.heldout_loss,
               std::exp(p.m.heldout_loss), static_cast<unsigned long long>(p.m.accounted_bytes),
               static_cast<unsigned long long>(p.m.temporary_bytes), p.m.peak_rss_kib, p.m.step_ms);
  }
  return csv;
}

/// An axis from lo to hi with round tick steps (1, 2 or 5 times a power of ten).
struct Axis {
  double lo, hi, step;

  /// Decimals that show every tick exactly.
  int decimals() const {
    return std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  }

  static Axis around(double min, double max, int ticks) {
    if (max <= min) max = min + 1e-6;
    const double raw = (max - min) / ticks;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = 10 * mag;
    for (double m : {1.0, 2.0, 5.0}) {
      if (m * mag >= raw) {
        step = m * mag;
        break;
      }
    }
    return {std::floor(min / step) * step, std::ceil(max / step) * step, step};
  }
};

/// Held-out loss (y) against accounted training memory in KiB (x), one colour per bit width,
/// each point labelled with its rank.
inline std::string sweep_svg(const std::vector<SweepPoint>& points, const std::string& subtitle) {
  const double width = 720, height = 480, left = 80, right = 150, top = 60, bottom = 60;
  const double pw = width - left - right, ph = height - top - bottom;
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const SweepPoint& p : points) {
    xmin = std::min(xmin, p.m.accounted_bytes / 1024.0);
    xmax = std::max(xmax, p.m.accounted_bytes / 1024.0);
    ymin = std::min(ymin, p.m.heldout_loss);
    ymax = std::max(ymax, p.m.heldout_loss);
  }
  const Axis ax = Axis::around(xmin, xmax, 6), ay = Axis::around(ymin, ymax, 5);
  auto sx = [&](double v) { return left + (v - ax.lo) / (ax.hi - ax.lo) * pw; };
  auto sy = [&](double v) { return top + ph - (v - ay.lo) / (ay.hi - ay.lo) * ph; };

  std::string svg = format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">GSQ (W4, GSE "
      "activations, gradients and adapters): memory vs held-out loss</text>\n"
      "<text x=\"%.0f\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">%s</text>\n",
      width, height, width / 2, width / 2, subtitle.c_str());
  for (double v = ax.lo; v <= ax.hi + ax.step / 2; v += ax.step) {  // x grid and ticks
    svg += format(
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.*f</text>\n",
        sx(v), top, sx(v), top + ph, sx(v), top + ph + 18, ax.decimals(), v);
  }
  for (double v = ay.lo; v <= ay.hi + ay.step / 2; v += ay.step) {  // y grid and ticks
    svg += format(
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n",
        left, sy(v), left + pw, sy(v), left - 6, sy(v) + 4, ay.decimals(), v);
  }
  svg += format(
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
      "stroke=\"black\"/>\n"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">training memory, accounted (KiB)"
      "</text>\n"
      "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\">held-out "
      "loss (nats per token)</text>\n",
      left, top, pw, ph, left + pw / 2, height - 18, 22.0, top + ph / 2);

  struct Series {
    int bits;
    const char* colour;
  };
  const Series series[] = {{5, "#d62728"}, {6, "#ff7f0e"}, {8, "#1f77b4"}};
  int legend_row = 0;
  for (const Series& s : series) {
    std::string line, markers;
    for (const SweepPoint& p : points) {
      if (p.bits != s.bits) continue;
      const double x = sx(p.m.accounted_bytes / 1024.0), y = sy(p.m.heldout_loss);
      line += format("%.1f,%.1f ", x, y);
      markers += format(
          "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>"
          "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" font-size=\"10\">r%d</text>\n",
          x, y, s.colour, x + 7, y - 6, s.colour, p.rank);
    }
    if (line.empty()) continue;
    svg += format("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-opacity=\"0.5\"/>\n",
                  line.c_str(), s.colour) +
           markers;
    const double ly = top + 10 + 20 * legend_row++;
    svg += format(
        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>"
        "<text x=\"%.1f\" y=\"%.1f\">GSE %d-%d-%d</text>\n",
        left + pw + 20, ly, s.colour, left + pw + 32, ly + 4, s.bits, s.bits, s.bits);
  }
  return svg + "</svg>\n";
}

}  // namespace finetune
