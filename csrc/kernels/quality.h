// Image-quality signals, shared by the CPU kernel (csrc/cpu/quality_cpu.cpp) and its CUDA twin
// (csrc/cuda/quality_cuda.cu). Both run the same helpers in the same order (no FMA contraction on either
// side), so the canonical planes agree bit for bit; the statistics differ only by the device's log2.
//
// Canonical image: whatever the decoded size (a JPEG at a reduced DCT scale, a PNG at full size), every
// signal is computed on a 64 x 64 grid made by area averaging (each cell the exact mean of the source pixels
// it covers, fractional pixels weighted by their overlap), so the values are comparable across formats and
// sizes. The decoded channels (R, G, B; or the JPEG decoder's Y, Cb, Cr; or gray) are averaged, then turned into
// three planes: BT.601 luma (0..255) and the Hasler-Süsstrunk opponent channels rg = R - G, yb = (R + G) / 2 - B
// (zero for gray sources): quality_convert.
//
//   brightness      mean luma (0..255)
//   contrast        luma standard deviation (population)
//   sharpness       variance of the 4-neighbour Laplacian of the luma binned to 32 x 32 (quality_sharpness)
//   colourfulness   Hasler-Süsstrunk M = sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)
//   entropy         bits of the 256-bin histogram of the rounded luma (0..8)
//   flat_fraction   share of cells whose 3 x 3 neighbourhood (clipped at the edges) spans <= kFlatRange levels
//   border_fraction share of the area in uniform bars along the four edges (letterbox / pillarbox): rows
//                   (columns) from each edge whose luma spans <= kBarRange and stays within kBarRange of the
//                   edge row's mean
//   low_information the rule at the end of this file (blank, flat, placeholder or mostly padding)
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate::kernels {

constexpr int kQualitySide = 64;
constexpr int kQualityCells = kQualitySide * kQualitySide;
constexpr float kFlatRange = 2.0f;  // luma levels: a 3 x 3 neighbourhood this narrow is "flat"
constexpr float kBarRange = 3.0f;   // luma levels: a row or column this narrow is a bar
constexpr int kQualityHistSize = 4 * 256;  // quality_stats' histogram scratch (ints)

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

// Source column / row footprint of output cell o (0..63) on an axis of n samples: [o n / 64, (o + 1) n / 64). The
// bounds are exact in float (integers over a power of two, n * 64 < 2^24), so are the overlaps.
struct QualitySpan {
  float lo, hi;
  int first, end;  // source samples first .. end - 1 overlap it
};

MMCURATE_HD inline QualitySpan quality_span(int o, int n) {
  QualitySpan s;
  s.lo = float(o * n) / float(kQualitySide);
  s.hi = float((o + 1) * n) / float(kQualitySide);
  s.first = int(s.lo);
  const int end = int(ceilf(s.hi));
  s.end = end < n ? end : n;
  return s;
}

// Overlap of source sample k with a span.
MMCURATE_HD inline float quality_overlap(const QualitySpan& s, int k) {
  const float a = float(k) > s.lo ? float(k) : s.lo, b = float(k + 1) < s.hi ? float(k + 1) : s.hi;
  return b - a;
}

// The horizontal part of a cell: sum over the span's source pixels of one row of overlap * channel, for the
// first min(channels, 3) channels (alpha ignored), in column order. out: 3 floats (unused channels 0).
MMCURATE_HD inline void quality_row_sum(const uint8_t* row, int64_t pixel_stride, int channels, const QualitySpan& sx,
                                        float* out) {
  const int c3 = channels >= 3 ? 3 : 1;
  out[0] = out[1] = out[2] = 0.0f;
  for (int x = sx.first; x < sx.end; ++x) {
    const float wx = quality_overlap(sx, x);
    const uint8_t* p = row + x * pixel_stride;
    for (int c = 0; c < c3; ++c) out[c] += wx * float(p[c]);
  }
}

// Cell (oy, ox): the area mean of the decoded channels (rows summed in row order of their quality_row_sum, each
// weighted by its overlap). The CPU computes each row's sums once and reuses them for the cells above and below
// (the same operations in the same order); the GPU calls this per cell. out: 3 channel means.
MMCURATE_HD inline void quality_cell(const uint8_t* data, int64_t row_stride, int64_t pixel_stride, int h, int w,
                                     int channels, int oy, int ox, float* out) {
  const QualitySpan sy = quality_span(oy, h), sx = quality_span(ox, w);
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int y = sy.first; y < sy.end; ++y) {
    float r[3];
    quality_row_sum(data + y * row_stride, pixel_stride, channels, sx, r);
    const float wy = quality_overlap(sy, y);
    for (int c = 0; c < 3; ++c) acc[c] += wy * r[c];
  }
  const float area = (sy.hi - sy.lo) * (sx.hi - sx.lo);
  for (int c = 0; c < 3; ++c) out[c] = acc[c] / area;
}

// Channel means of a cell -> (luma, rg, yb). 1 or 2 channels: gray, no colour. RGB: BT.601 luma
// 0.299 R + 0.587 G + 0.114 B. YCbCr (the JPEG decoder's planes, JFIF): luma Y; the opponent channels are linear
// in RGB, so in Cb, Cr (Y cancels): rg = 0.344136 Cb' + 2.116136 Cr', yb = 0.343932 Cr' - 1.944068 Cb'
// (Cb' = Cb - 128), i.e. R, G, B before libjpeg's clamping (out-of-gamut colours differ from the RGB decode).
// Averaging before converting is exact for these linear maps, and 64 x 64 conversions cost nothing.
MMCURATE_HD inline void quality_convert(const float* m, int channels, bool ycbcr, float* l, float* rg, float* yb) {
  if (channels < 3) {
    *l = m[0];
    *rg = *yb = 0.0f;
  } else if (ycbcr) {
    const float cb = m[1] - 128.0f, cr = m[2] - 128.0f;
    *l = m[0];
    *rg = 0.344136f * cb + 2.116136f * cr;
    *yb = 0.343932f * cr - 1.944068f * cb;
  } else {
    *l = 0.299f * m[0] + 0.587f * m[1] + 0.114f * m[2];
    *rg = m[0] - m[1];
    *yb = 0.5f * (m[0] + m[1]) - m[2];
  }
}

// Mean and population variance of n floats (n a multiple of 8), two passes in double. Eight partial sums (element
// i into sum i % 8, summed in order at the end): the same result on every device, without one long chain of
// dependent additions.
MMCURATE_HD inline void quality_moments(const float* v, int n, double* mean, double* var) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; i += 8)
    for (int l = 0; l < 8; ++l) p[l] += double(v[i + l]);
  double s = 0.0;
  for (int l = 0; l < 8; ++l) s += p[l];
  const double m = s / double(n);
  for (int l = 0; l < 8; ++l) p[l] = 0.0;
  for (int i = 0; i < n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double d = double(v[i + l]) - m;
      p[l] += d * d;
    }
  double q = 0.0;
  for (int l = 0; l < 8; ++l) q += p[l];
  *mean = m;
  *var = q / double(n);
}

// Share of cells whose 3 x 3 neighbourhood (clipped at the edges: the clamped index repeats an edge cell, which
// leaves the window's min and max unchanged) spans <= kFlatRange. Separable: each row's column mins and maxes over
// the three rows first, then over three columns (min and max are exact, so the order does not matter).
// scratch: 2 x 64 floats.
MMCURATE_HD inline float quality_flat_fraction(const float* L, float* scratch) {
  constexpr int S = kQualitySide;
  float* cmn = scratch;
  float* cmx = scratch + S;
  int flat = 0;
  for (int y = 0; y < S; ++y) {
    const float* r0 = L + (y > 0 ? y - 1 : 0) * S;
    const float* r1 = L + y * S;
    const float* r2 = L + (y < S - 1 ? y + 1 : S - 1) * S;
    for (int x = 0; x < S; ++x) {  // comparisons, not fminf/fmaxf: those are libm calls without fast-math
      const float a = r0[x], b = r1[x], c = r2[x];
      const float mn = a < b ? a : b, mx = a > b ? a : b;
      cmn[x] = c < mn ? c : mn;
      cmx[x] = c > mx ? c : mx;
    }
    for (int x = 0; x < S; ++x) {
      const int xl = x > 0 ? x - 1 : 0, xr = x < S - 1 ? x + 1 : S - 1;
      float mn = cmn[xl] < cmn[x] ? cmn[xl] : cmn[x], mx = cmx[xl] > cmx[x] ? cmx[xl] : cmx[x];
      mn = cmn[xr] < mn ? cmn[xr] : mn;
      mx = cmx[xr] > mx ? cmx[xr] : mx;
      flat += (mx - mn <= kFlatRange) ? 1 : 0;
    }
  }
  return float(flat) / float(S * S);
}

// Is line k (a row when rows, else a column) of the luma a bar of the level of line `edge`: spanning at most
// kBarRange levels, its mean within kBarRange of the edge line's? Luma only: a JPEG's chroma rings near the edge of
// the content, out of gamut in black or white bars.
MMCURATE_HD inline bool quality_bar_line(const float* L, bool rows, int k, int edge) {
  float mn = 1e30f, mx = -1e30f, s = 0.0f, se = 0.0f;
  for (int t = 0; t < kQualitySide; ++t) {
    const float v = L[rows ? k * kQualitySide + t : t * kQualitySide + k];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    s += v;
    se += L[rows ? edge * kQualitySide + t : t * kQualitySide + edge];
  }
  return mx - mn <= kBarRange && fabsf(s - se) <= kBarRange * float(kQualitySide);
}

// Bars from both ends of one axis: lines from the first (then the last) edge while quality_bar_line holds.
// A uniform image is all bar (kQualitySide lines).
MMCURATE_HD inline int quality_bars(const float* L, bool rows) {
  int first = 0;
  while (first < kQualitySide && quality_bar_line(L, rows, first, 0)) ++first;
  if (first == kQualitySide) return kQualitySide;
  int last = 0;
  while (last < kQualitySide - first && quality_bar_line(L, rows, kQualitySide - 1 - last, kQualitySide - 1)) ++last;
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

// Every signal from the three canonical planes (64 x 64 each). hist: kQualityHistSize ints, scratch: 1024 floats.
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

  // Four interleaved histograms (cell i into copy i % 4), summed per bin: neighbouring cells usually share a bin,
  // and one histogram would serialise their increments on the same counter.
  for (int b = 0; b < kQualityHistSize; ++b) hist[b] = 0;
  for (int i = 0; i < N; ++i) {
    const int b = int(L[i] + 0.5f);
    ++hist[(i & 3) * 256 + (b < 0 ? 0 : (b > 255 ? 255 : b))];
  }
  double e = 0.0;
  for (int b = 0; b < 256; ++b) {
    const int count = hist[b] + hist[256 + b] + hist[512 + b] + hist[768 + b];
    if (count) {
      const double p = double(count) / double(N);
      e -= p * log2(p);
    }
  }
  q.entropy = float(e);

  q.flat_fraction = quality_flat_fraction(L, scratch);  // scratch is free again after quality_sharpness

  const int rows = quality_bars(L, true), cols = quality_bars(L, false);
  q.border_fraction = 1.0f - float((S - rows) * (S - cols)) / float(N);

  q.low_information =
      (q.entropy < kLowInfoEntropy || q.flat_fraction > kLowInfoFlat || q.border_fraction > kLowInfoBorder) ? 1 : 0;
  return q;
}

}  // namespace mmcurate::kernels
