// Pillow's separable resampling (libImaging/Resample.c, 8 bits per channel), as plain functions over
// raw pointers so the CPU kernels and their CUDA twins share one definition.
//
// Exactness contract: the coefficient tables are computed in double exactly as Pillow's
// precompute_coeffs does (same expressions, same evaluation order; build with -ffp-contract=off), then
// rounded to int32 fixed point as normalize_coeffs_8bpc does. The filters call sin/cos, whose device
// implementations are not glibc's, so a GPU must take the tables computed on the host
// (resample_precompute + resample_normalize) and only run the integer passes on the device.
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate {

// Values match PIL.Image.Resampling where Pillow has the filter (NEAREST=0, LANCZOS=1, BILINEAR=2,
// BICUBIC=3, BOX=4, HAMMING=5), so they can cross the Python boundary as Pillow's own ids.
enum class ResampleFilter : int8_t { nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

namespace kernels {

constexpr int kResamplePrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS: 8-bit data, 2 bits headroom
constexpr double kPi = 3.14159265358979323846;      // M_PI

MMCURATE_HD inline double filter_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

MMCURATE_HD inline double filter_bilinear(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

MMCURATE_HD inline double filter_hamming(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // Pillow writes the window constants as float literals (0.54f, 0.46f); they are promoted to double.
  return sin(x) / x * (double(0.54f) + double(0.46f) * cos(x));
}

MMCURATE_HD inline double filter_bicubic(double x) {  // Keys kernel with a = -0.5
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

MMCURATE_HD inline double sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return sin(x) / x;
}

MMCURATE_HD inline double filter_lanczos(double x) {  // a = 3
  if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
  return 0.0;
}

MMCURATE_HD inline double filter_support(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::box: return 0.5;
    case ResampleFilter::bilinear: return 1.0;
    case ResampleFilter::hamming: return 1.0;
    case ResampleFilter::bicubic: return 2.0;
    case ResampleFilter::lanczos: return 3.0;
    default: return 0.0;
  }
}

MMCURATE_HD inline double filter_eval(ResampleFilter f, double x) {
  switch (f) {
    case ResampleFilter::box: return filter_box(x);
    case ResampleFilter::bilinear: return filter_bilinear(x);
    case ResampleFilter::hamming: return filter_hamming(x);
    case ResampleFilter::bicubic: return filter_bicubic(x);
    case ResampleFilter::lanczos: return filter_lanczos(x);
    default: return 0.0;
  }
}

// Pillow computes the scale from the float box (0, 0, in_size, ...): (double)(float(in1) - float(in0)).
MMCURATE_HD inline double resample_scale(int in_size, int out_size) { return double(float(in_size) - 0.0f) / out_size; }

// Taps per output sample (Pillow's ksize): the row length of the coefficient table.
MMCURATE_HD inline int resample_ksize(int in_size, int out_size, ResampleFilter f) {
  double filterscale = resample_scale(in_size, out_size);
  if (filterscale < 1.0) filterscale = 1.0;
  double support = filter_support(f) * filterscale;
  return int(ceil(support)) * 2 + 1;
}

// Pillow's precompute_coeffs for output samples [out_begin, out_end) of an in_size -> out_size axis.
// Writes bounds[2*i] = first input index, bounds[2*i+1] = tap count, and kk[i*ksize + t] (double,
// normalised to sum 1, zero-padded to ksize), for i = xx - out_begin. Each output sample depends on its
// own index only, so computing a window (a center crop) gives the same numbers as the full axis.
MMCURATE_HD inline void resample_precompute(int in_size, int out_size, ResampleFilter f, int out_begin, int out_end,
                                            int ksize, int* bounds, double* kk) {
  const float in0 = 0.0f;
  double scale = resample_scale(in_size, out_size);
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = filter_support(f) * filterscale;
  for (int xx = out_begin; xx < out_end; ++xx) {
    double* k = kk + int64_t(xx - out_begin) * ksize;
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // truncation, as Pillow's "round"
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    int x = 0;
    for (; x < xmax; ++x) {
      double w = filter_eval(f, (x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    for (; x < ksize; ++x) k[x] = 0;
    bounds[2 * (xx - out_begin)] = xmin;
    bounds[2 * (xx - out_begin) + 1] = xmax;
  }
}

// Pillow's normalize_coeffs_8bpc: double weights -> int32 with kResamplePrecisionBits fraction bits,
// rounding half away from zero (truncation after adding +-0.5).
MMCURATE_HD inline void resample_normalize(const double* kk, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    double v = kk[i] * (1 << kResamplePrecisionBits);
    out[i] = kk[i] < 0 ? int32_t(-0.5 + v) : int32_t(0.5 + v);
  }
}

// Accumulator start value and the final clip of one output sample (Pillow's clip8 lookup table).
constexpr int32_t kResampleRoundHalf = 1 << (kResamplePrecisionBits - 1);

MMCURATE_HD inline uint8_t resample_clip8(int32_t acc) {
  int32_t v = acc >> kResamplePrecisionBits;  // arithmetic shift, as Pillow
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output sample of the horizontal pass: taps `n` from `src` (channel c of pixel xmin), pixels
// `pixel_stride` bytes apart. Integer sums are exact, so any summation order gives Pillow's result.
MMCURATE_HD inline uint8_t resample_dot_u8(const uint8_t* src, int64_t pixel_stride, const int32_t* k, int n) {
  int32_t acc = kResampleRoundHalf;
  for (int t = 0; t < n; ++t) acc += int32_t(src[t * pixel_stride]) * k[t];
  return resample_clip8(acc);
}

// Pillow 13's pass order (ImagingResampleInner). Each pass rounds to uint8, so the order is part of
// the result: the vertical pass runs first when the height loses more than twice as many pixels as
// the width does; otherwise the horizontal pass runs first, over only the source rows the vertical
// pass reads.
MMCURATE_HD inline bool resample_horizontal_first(int in_h, int in_w, int out_h, int out_w) {
  return !((in_h - out_h) > 0 && (in_h - out_h) > (in_w - out_w) * 2);
}

// NEAREST, as Pillow's resize does it (ImagingScaleAffine): source index of output sample i is
// COORD(a*0.5 + i*a) with a = in/out, accumulated by repeated addition in double exactly as Pillow
// does; -1 marks "outside" (Pillow fills it with 0). Writes out_size entries.
MMCURATE_HD inline void nearest_table(int in_size, int out_size, int* index) {
  double a = double(float(in_size) - 0.0f) / out_size;
  double xo = 0.0 + a * 0.5;
  for (int i = 0; i < out_size; ++i) {
    int xin = xo < 0.0 ? -1 : int(xo);
    index[i] = (xin >= 0 && xin < in_size) ? xin : -1;
    xo += a;
  }
}

}  // namespace kernels
}  // namespace mmcurate
