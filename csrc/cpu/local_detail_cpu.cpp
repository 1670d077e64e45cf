// The template rule on the CPU, pair by pair: curate.local_detail.template_pairs_reference restated (the same
// fit, the same median rule, the same counts). Sums run in double in cell order; NumPy's pairwise sums can differ
// in the last bits, which decides a pair only when a residual lands on a threshold (tests compare the decisions).
#include "mmcurate/local_detail.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mmcurate/parallel.h"

namespace mmcurate {

namespace {

bool is_template(const uint8_t* a, const uint8_t* b, const int32_t* perm, int cells, const TemplateRule& rule,
                 std::vector<double>& scratch) {
  scratch.resize(size_t(cells) * 5);
  double* x = scratch.data();
  double* res = x + cells;
  double* r = res + cells;
  double* sorted = r + cells;
  double* w = sorted + cells;  // 1 for the cells the fit uses
  std::fill(w, w + cells, 1.0);
  for (int c = 0; c < cells; ++c) x[c] = a[perm[c]];
  double alpha = 1.0;
  for (int round = 0; round < rule.fit_rounds; ++round) {
    double n = 0, sx = 0, sy = 0;
    for (int c = 0; c < cells; ++c) {
      if (!w[c]) continue;
      n += 1;
      sx += x[c];
      sy += b[c];
    }
    const double mx = sx / n, my = sy / n;
    double vx = 0, cxy = 0;
    for (int c = 0; c < cells; ++c) {
      if (!w[c]) continue;
      const double dx = x[c] - mx;
      vx += dx * dx;
      cxy += dx * (b[c] - my);
    }
    alpha = vx > 1e-9 ? cxy / std::max(vx, 1e-9) : 1.0;
    const double beta = my - alpha * mx;
    for (int c = 0; c < cells; ++c) {
      res[c] = b[c] - (alpha * x[c] + beta);
      r[c] = std::abs(res[c]);
      sorted[c] = r[c];
    }
    // np.median: the mean of the two middle values of an even count
    const int mid = cells / 2;
    std::nth_element(sorted, sorted + mid, sorted + cells);
    double median = sorted[mid];
    if (cells % 2 == 0) median = (median + *std::max_element(sorted, sorted + mid)) / 2;
    const double limit = std::max(3 * median, 4.0);
    for (int c = 0; c < cells; ++c) w[c] = r[c] <= limit + rule.tie ? 1.0 : 0.0;
  }
  const double scale = std::abs(alpha), past = rule.change + rule.tie;
  int gain_a = 0, gain_b = 0, changed = 0;
  for (int c = 0; c < cells; ++c) {
    const double dev = double(b[cells + c]) - scale * double(a[cells + perm[c]]);
    const bool gb = res[c] > past || dev > past;
    const bool ga = res[c] < -past || dev < -past;
    gain_a += ga;
    gain_b += gb;
    changed += ga || gb;
  }
  const int each_way = std::min(gain_a, gain_b);
  return each_way >= 1 && each_way >= rule.two_sided * changed;
}

}  // namespace

void template_pairs(const uint8_t* grids_a, int64_t stride_a, const uint8_t* grids_b, int64_t stride_b,
                    const int64_t* transform, int64_t m, const int32_t* perm, int cells, const TemplateRule& rule,
                    uint8_t* out, int num_threads) {
  parallel_for(
      m, num_threads,
      [&](int64_t i) {
        thread_local std::vector<double> scratch;
        out[i] = is_template(grids_a + i * stride_a, grids_b + i * stride_b, perm + transform[i] * cells, cells, rule,
                             scratch);
      },
      256);
}

}  // namespace mmcurate
