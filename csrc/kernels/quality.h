// Image-quality signals, shared by the CPU kernel (csrc/cpu/quality_cpu.cpp) and its CUDA twin
// (csrc/cuda/quality_cuda.cu). Both run the same helpers in the same order (no FMA contraction on either
// side), so the canonical planes agree bit for bit; the statistics differ only by the device's log2.
//
// Canonical image: whatever the decoded size (a JPEG at a reduced DCT scale, a PNG at full size), every
// signal is computed on a 64 x 64 grid made by area averaging (each cell the exact mean of the source pixels
// it covers, fractional pixels weighted by their overlap), so the values are comparable across formats and
// sizes. Three planes: luma (the decoder's JPEG Y, or Pillow's L of RGB: both BT.601, 0..255) and the
// Hasler-Süsstrunk opponent channels rg = R - G, yb = (R + G) / 2 - B (zero for gray sources).
//
//   brightness      mean luma (0..255)
//   contrast        luma standard deviation (population)
//   sharpness       variance of the 4-neighbour Laplacian of the luma binned to 32 x 32 (quality_sharpness)
//   colourfulness   Hasler-Süsstrunk M = sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)
//   entropy         bits of the 256-bin histogram of the rounded luma (0..8)
//   flat_fraction   share of cells whose 3 x 3 neighbourhood (clipped at the edges) spans <= kFlatRange levels
//   border_fraction share of the area in uniform bars along the four edges (letterbox / pillarbox): rows
//                   (columns) from each edge whose luma and opponent channels span <= kBarRange and stay
//                   within kBarRange of the edge row's mean
//   low_information the rule at the end of this file (blank, flat, placeholder or mostly padding)
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/hd.h"
#include "kernels/luma.h"

namespace mmcurate::kernels {

constexpr int kQualitySide = 64;
constexpr int kQualityCells = kQualitySide * kQualitySide;
constexpr float kFlatRange = 2.0f;  // luma levels: a 3 x 3 neighbourhood this narrow is "flat"
constexpr float kBarRange = 3.0f;   // luma / opponent levels: a row or column this narrow is a bar

// The low-information rule (measured in benchmarks/bench_image_quality.py, README "Image quality": it removes
// the flat-flat false pHash links of the labelled set while flagging ~1.5 % of real photo tiles, all sky or
// background): almost no distinct grey levels, almost everything flat, or padding over most of the area.
constexpr float kLowInfoEntropy = 2.0f;
constexpr float kLowInfoFlat = 0.9f;
constexpr float kLowInfoBorder = 0.75f;

// The signals of one image, in this order everywhere (the Python result's columns too).
struct QualityValues {
  float sharpness, brightness, contrast, colourfulness, border_fraction, flat_fraction, entropy;
  uint8_t low_information;
};

MMCURATE_HD inline float quality_clamp255(float v) { return v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v); }

// One decoded pixel -> (luma, rg, yb). channels 1 (L) / 2 (LA): gray, opponent channels 0. channels 3/4:
// RGB(A), luma Pillow's L; or, with ycbcr, the JPEG decoder's Y, Cb, Cr (JFIF), RGB recovered as libjpeg does
// (before rounding) for the opponent channels.
MMCURATE_HD inline void quality_pixel(const uint8_t* p, int channels, bool ycbcr, float* l, float* rg, float* yb) {
  if (channels < 3) {
    *l = float(p[0]);
    *rg = *yb = 0.0f;
    return;
  }
  float r, g, b;
  if (ycbcr) {
    const float y = float(p[0]), cb = float(p[1]) - 128.0f, cr = float(p[2]) - 128.0f;
    r = quality_clamp255(y + 1.402f * cr);
    g = quality_clamp255(y - 0.344136f * cb - 0.714136f * cr);
    b = quality_clamp255(y + 1.772f * cb);
    *l = y;
  } else {
    r = float(p[0]), g = float(p[1]), b = float(p[2]);
    *l = float(luma_l24(p[0], p[1], p[2]));
  }
  *rg = r - g;
  *yb = 0.5f * (r + g) - b;
}

// Cell (oy, ox) of the canonical planes: the area mean over source rows [oy h / 64, (oy + 1) h / 64) and
// columns likewise. The bounds are exact in float (integers over a power of two, h * 64 < 2^24), so are the
// overlaps; sums in row-major order. out: luma, rg, yb.
MMCURATE_HD inline void quality_cell(const uint8_t* data, int64_t row_stride, int64_t pixel_stride, int h, int w,
                                     int channels, bool ycbcr, int oy, int ox, float* out) {
  const float y0 = float(oy * h) / float(kQualitySide), y1 = float((oy + 1) * h) / float(kQualitySide);
  const float x0 = float(ox * w) / float(kQualitySide), x1 = float((ox + 1) * w) / float(kQualitySide);
  const int sy0 = int(y0), sx0 = int(x0);
  const int sy1 = int(ceilf(y1)) < h ? int(ceilf(y1)) : h, sx1 = int(ceilf(x1)) < w ? int(ceilf(x1)) : w;
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int sy = sy0; sy < sy1; ++sy) {
    const float top = float(sy) > y0 ? float(sy) : y0, bottom = float(sy + 1) < y1 ? float(sy + 1) : y1;
    const float wy = bottom - top;
    const uint8_t* row = data + sy * row_stride;
    float racc[3] = {0.0f, 0.0f, 0.0f};
    for (int sx = sx0; sx < sx1; ++sx) {
      const float left = float(sx) > x0 ? float(sx) : x0, right = float(sx + 1) < x1 ? float(sx + 1) : x1;
      const float wx = right - left;
      float v[3];
      quality_pixel(row + sx * pixel_stride, channels, ycbcr, v, v + 1, v + 2);
      for (int c = 0; c < 3; ++c) racc[c] += wx * v[c];
    }
    for (int c = 0; c < 3; ++c) acc[c] += wy * racc[c];
  }
  const float area = (y1 - y0) * (x1 - x0);
  for (int c = 0; c < 3; ++c) out[c] = acc[c] / area;
}

// Mean and population variance of n floats, two passes in double.
MMCURATE_HD inline void quality_moments(const float* v, int n, double* mean, double* var) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += double(v[i]);
  const double m = s / double(n);
  double q = 0.0;
  for (int i = 0; i < n; ++i) q += (double(v[i]) - m) * (double(v[i]) - m);
  *mean = m;
  *var = q / double(n);
}

// Is line k (a row when rows, else a column) of the canonical planes a bar of the colour of line `edge`?
MMCURATE_HD inline bool quality_bar_line(const float* L, const float* RG, const float* YB, bool rows, int k,
                                         int edge) {
  const float* planes[3] = {L, RG, YB};
  for (int c = 0; c < 3; ++c) {
    float mn = 1e30f, mx = -1e30f, s = 0.0f, se = 0.0f;
    for (int t = 0; t < kQualitySide; ++t) {
      const float v = planes[c][rows ? k * kQualitySide + t : t * kQualitySide + k];
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
      s += v;
      se += planes[c][rows ? edge * kQualitySide + t : t * kQualitySide + edge];
    }
    if (mx - mn > kBarRange || fabsf(s - se) > kBarRange * float(kQualitySide)) return false;
  }
  return true;
}

// Bars from both ends of one axis: lines from the first (then the last) edge while quality_bar_line holds.
// A uniform image is all bar (kQualitySide lines).
MMCURATE_HD inline int quality_bars(const float* L, const float* RG, const float* YB, bool rows) {
  int first = 0;
  while (first < kQualitySide && quality_bar_line(L, RG, YB, rows, first, 0)) ++first;
  if (first == kQualitySide) return kQualitySide;
  int last = 0;
  while (last < kQualitySide - first && quality_bar_line(L, RG, YB, rows, kQualitySide - 1 - last, kQualitySide - 1))
    ++last;
  return first + last;
}

// Variance of the 4-neighbour Laplacian of the luma binned to 32 x 32 (means of 2 x 2 cells), over the 30 x 30
// interior, two passes in double. Binned because a JPEG decoded at a reduced DCT scale has lost part of the energy
// right below the 64 grid's Nyquist frequency (the scaled IDCT is a softer low-pass than area averaging): at 64 the
// same picture measured 0.65x its full-size decode's value (median, benchmarks), at 32 0.87x. binned: 1024 floats.
MMCURATE_HD inline float quality_sharpness(const float* L, float* binned) {
  constexpr int S = kQualitySide, B = kQualitySide / 2;
  for (int y = 0; y < B; ++y)
    for (int x = 0; x < B; ++x) {
      const float* c = L + 2 * y * S + 2 * x;
      binned[y * B + x] = ((c[0] + c[1]) + (c[S] + c[S + 1])) * 0.25f;
    }
  double s = 0.0;
  for (int y = 1; y < B - 1; ++y)
    for (int x = 1; x < B - 1; ++x) {
      const float* c = binned + y * B + x;
      s += double(c[-B] + c[B] + c[-1] + c[1] - 4.0f * c[0]);
    }
  const double mean = s / double((B - 2) * (B - 2));
  double v = 0.0;
  for (int y = 1; y < B - 1; ++y)
    for (int x = 1; x < B - 1; ++x) {
      const float* c = binned + y * B + x;
      const double d = double(c[-B] + c[B] + c[-1] + c[1] - 4.0f * c[0]) - mean;
      v += d * d;
    }
  return float(v / double((B - 2) * (B - 2)));
}

// Every signal from the three canonical planes (64 x 64 each). hist: 256 ints, scratch: 1024 floats.
MMCURATE_HD inline QualityValues quality_stats(const float* L, const float* RG, const float* YB, int* hist,
                                               float* scratch) {
  constexpr int S = kQualitySide, N = kQualityCells;
  QualityValues q;
  double mean, var;
  quality_moments(L, N, &mean, &var);
  q.brightness = float(mean);
  q.contrast = float(sqrt(var));

  q.sharpness = quality_sharpness(L, scratch);

  double mrg, vrg, myb, vyb;
  quality_moments(RG, N, &mrg, &vrg);
  quality_moments(YB, N, &myb, &vyb);
  q.colourfulness = float(sqrt(vrg + vyb) + 0.3 * sqrt(mrg * mrg + myb * myb));

  for (int b = 0; b < 256; ++b) hist[b] = 0;
  for (int i = 0; i < N; ++i) {
    const int b = int(L[i] + 0.5f);
    ++hist[b < 0 ? 0 : (b > 255 ? 255 : b)];
  }
  double e = 0.0;
  for (int b = 0; b < 256; ++b)
    if (hist[b]) {
      const double p = double(hist[b]) / double(N);
      e -= p * log2(p);
    }
  q.entropy = float(e);

  int flat = 0;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      float mn = 1e30f, mx = -1e30f;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= S || xx < 0 || xx >= S) continue;
          const float v = L[yy * S + xx];
          mn = v < mn ? v : mn;
          mx = v > mx ? v : mx;
        }
      flat += (mx - mn <= kFlatRange) ? 1 : 0;
    }
  q.flat_fraction = float(flat) / float(N);

  const int rows = quality_bars(L, RG, YB, true), cols = quality_bars(L, RG, YB, false);
  q.border_fraction = 1.0f - float((S - rows) * (S - cols)) / float(N);

  q.low_information =
      (q.entropy < kLowInfoEntropy || q.flat_fraction > kLowInfoFlat || q.border_fraction > kLowInfoBorder) ? 1 : 0;
  return q;
}

}  // namespace mmcurate::kernels
