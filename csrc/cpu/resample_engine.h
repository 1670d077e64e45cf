// The CPU two-pass resampler shared by resize_cpu.cpp and hashes_cpu.cpp (private to csrc/cpu/).
// Mirrors Pillow's ImagingResampleInner (Pillow 13): each pass rounds to uint8, so the pass order is
// part of the result. Pillow runs the horizontal pass first (over only the source rows the vertical
// pass reads), unless the height shrinks by more than twice as many pixels as the width does; a pass
// is skipped when its axis keeps its size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/resample.h"
#include "mmcurate/resize.h"

namespace mmcurate::cpu {

// Grow-only buffers, one set per thread, so batch kernels do no heap work per image once warm.
struct ResampleScratch {
  std::vector<double> coeffs_f64;
  std::vector<int32_t> kx, ky;
  std::vector<int> bx, by;
  std::vector<uint8_t> rows;      // the intermediate image between the two passes
  std::vector<uint8_t> src_rows;  // vertical-first: the source block the vertical pass reads
  std::vector<uint8_t> row_in;    // one converted (gray / premultiplied) source row
  std::vector<int32_t> acc;       // vertical-pass accumulators, one output row
  std::vector<int> nearest_x, nearest_y;
};

ResampleScratch& thread_scratch();

template <typename T>
inline T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Coefficients for outputs [begin, end) of an in -> out axis, as int32 fixed point. Returns ksize.
inline int plan_axis(int in_size, int out_size, ResampleFilter f, int begin, int end, ResampleScratch& s,
                     std::vector<int>& bounds, std::vector<int32_t>& k) {
  const int ksize = kernels::resample_ksize(in_size, out_size, f);
  const size_t n = size_t(end - begin) * ksize;
  double* kd = grow(s.coeffs_f64, n);
  kernels::resample_precompute(in_size, out_size, f, begin, end, ksize, grow(bounds, size_t(end - begin) * 2), kd);
  kernels::resample_normalize(kd, int64_t(n), grow(k, n));
  return ksize;
}

// Horizontal pass of one row: n_out outputs, C interleaved channels, source pixels `ps` bytes apart.
template <int C>
inline void horizontal_row(const uint8_t* in, int64_t ps, const int* bounds, const int32_t* kk, int ksize,
                           int n_out, uint8_t* out) {
  for (int xx = 0; xx < n_out; ++xx) {
    const int xmin = bounds[2 * xx], taps = bounds[2 * xx + 1];
    const int32_t* k = kk + int64_t(xx) * ksize;
    const uint8_t* p = in + xmin * ps;
    int32_t acc[C];
    for (int c = 0; c < C; ++c) acc[c] = kernels::kResampleRoundHalf;
    for (int t = 0; t < taps; ++t) {
      const int32_t w = k[t];
      for (int c = 0; c < C; ++c) acc[c] += int32_t(p[t * ps + c]) * w;
    }
    for (int c = 0; c < C; ++c) out[xx * C + c] = kernels::resample_clip8(acc[c]);
  }
}

// Specialisation for packed gray rows: a plain dot product the compiler vectorises.
template <>
inline void horizontal_row<1>(const uint8_t* in, int64_t ps, const int* bounds, const int32_t* kk, int ksize,
                              int n_out, uint8_t* out) {
  if (ps != 1) {
    for (int xx = 0; xx < n_out; ++xx)
      out[xx] = kernels::resample_dot_u8(in + bounds[2 * xx] * ps, ps, kk + int64_t(xx) * ksize, bounds[2 * xx + 1]);
    return;
  }
  for (int xx = 0; xx < n_out; ++xx) {
    const uint8_t* p = in + bounds[2 * xx];
    const int32_t* k = kk + int64_t(xx) * ksize;
    const int taps = bounds[2 * xx + 1];
    int32_t acc = kernels::kResampleRoundHalf;
    for (int t = 0; t < taps; ++t) acc += int32_t(p[t]) * k[t];
    out[xx] = kernels::resample_clip8(acc);
  }
}

// Vertical pass of one output row over `len` interleaved samples; `rows` points at the first tap's row.
inline void vertical_row(const uint8_t* rows, int64_t row_len, const int32_t* k, int taps, int64_t len,
                         int32_t* acc, uint8_t* out) {
  for (int64_t i = 0; i < len; ++i) acc[i] = kernels::kResampleRoundHalf;
  for (int t = 0; t < taps; ++t) {
    const uint8_t* r = rows + t * row_len;
    const int32_t w = k[t];
    for (int64_t i = 0; i < len; ++i) acc[i] += int32_t(r[i]) * w;
  }
  for (int64_t i = 0; i < len; ++i) out[i] = kernels::resample_clip8(acc[i]);
}

// Two-pass resample of an in_h x in_w image with C channels to out_h x out_w, window `win`, into dst
// (packed rows of win.width * C). row_of(y) returns source row y with pixels `ps` bytes apart; it may
// convert into a scratch row (gray, premultiplied), so each returned row is used before the next call.
template <int C, typename RowFn>
void resample_two_pass(int in_h, int in_w, int64_t ps, RowFn&& row_of, int out_h, int out_w, ResampleFilter f,
                       const ResizeWindow& win, uint8_t* dst, ResampleScratch& s) {
  const bool need_h = out_w != in_w;
  const bool need_v = out_h != in_h;
  const int64_t row_len = int64_t(win.width) * C;

  int ksize_y = 0, r0 = win.top, r1 = win.top + win.height;
  if (need_v) {
    ksize_y = plan_axis(in_h, out_h, f, win.top, win.top + win.height, s, s.by, s.ky);
    r0 = s.by[0];
    r1 = 0;
    for (int i = 0; i < win.height; ++i) r1 = std::max(r1, s.by[2 * i] + s.by[2 * i + 1]);
  }
  int ksize_x = 0, c0 = win.left, c1 = win.left + win.width;
  if (need_h) {
    ksize_x = plan_axis(in_w, out_w, f, win.left, win.left + win.width, s, s.bx, s.kx);
    c0 = s.bx[0];
    c1 = 0;
    for (int i = 0; i < win.width; ++i) c1 = std::max(c1, s.bx[2 * i] + s.bx[2 * i + 1]);
  }

  if (need_h && need_v && !kernels::resample_horizontal_first(in_h, in_w, out_h, out_w)) {
    // Vertical first. Gather the source block [r0, r1) x [c0, c1) (rows are read by several outputs),
    // filter it vertically to win.height rows, then horizontally into dst.
    const int64_t block_len = int64_t(c1 - c0) * C;
    uint8_t* block = grow(s.src_rows, size_t(r1 - r0) * block_len);
    for (int y = r0; y < r1; ++y) {
      const uint8_t* in = row_of(y);
      uint8_t* out = block + int64_t(y - r0) * block_len;
      for (int x = c0; x < c1; ++x)
        for (int c = 0; c < C; ++c) out[(x - c0) * C + c] = in[int64_t(x) * ps + c];
    }
    uint8_t* mid = grow(s.rows, size_t(win.height) * block_len);
    int32_t* acc = grow(s.acc, size_t(block_len));
    for (int i = 0; i < win.height; ++i)
      vertical_row(block + int64_t(s.by[2 * i] - r0) * block_len, block_len, s.ky.data() + int64_t(i) * ksize_y,
                   s.by[2 * i + 1], block_len, acc, mid + int64_t(i) * block_len);
    for (int i = 0; i < win.width; ++i) s.bx[2 * i] -= c0;
    for (int i = 0; i < win.height; ++i)
      horizontal_row<C>(mid + int64_t(i) * block_len, C, s.bx.data(), s.kx.data(), ksize_x, win.width,
                        dst + int64_t(i) * row_len);
    return;
  }

  // Horizontal first: stage rows [r0, r1) at the output width; without a vertical pass they are the
  // output itself.
  uint8_t* staged = need_v ? grow(s.rows, size_t(r1 - r0) * row_len) : dst;
  for (int y = r0; y < r1; ++y) {
    const uint8_t* in = row_of(y);
    uint8_t* out = staged + int64_t(y - r0) * row_len;
    if (need_h) {
      horizontal_row<C>(in, ps, s.bx.data(), s.kx.data(), ksize_x, win.width, out);
    } else {
      for (int x = 0; x < win.width; ++x)
        for (int c = 0; c < C; ++c) out[x * C + c] = in[int64_t(win.left + x) * ps + c];
    }
  }
  if (!need_v) return;
  int32_t* acc = grow(s.acc, size_t(row_len));
  for (int i = 0; i < win.height; ++i) {
    const int ymin = s.by[2 * i], taps = s.by[2 * i + 1];
    vertical_row(staged + int64_t(ymin - r0) * row_len, row_len, s.ky.data() + int64_t(i) * ksize_y, taps, row_len,
                 acc, dst + int64_t(i) * row_len);
  }
}

}  // namespace mmcurate::cpu
