// The CPU two-pass resampler shared by resize_cpu.cpp and hashes_cpu.cpp (private to csrc/cpu/).
// Mirrors Pillow's ImagingResampleInner (Pillow 13): each pass rounds to uint8, so the pass order is
// part of the result. Pillow runs the horizontal pass first (over only the source rows the vertical
// pass reads), unless the height shrinks by more than twice as many pixels as the width does; a pass
// is skipped when its axis keeps its size.
//
// Coefficients come from the per-thread plan cache (resample_plan.h); the passes themselves are in
// resample_passes.h (AVX2 where compiled in, scalar reference otherwise).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/resample_passes.h"
#include "cpu/resample_plan.h"
#include "kernels/resample.h"
#include "mmcurate/resize.h"

namespace mmcurate::cpu {

// Grow-only buffers, one set per thread, so batch kernels do no heap work per image once warm.
struct ResampleScratch {
  std::vector<uint8_t> rows;      // the intermediate image between the two passes
  std::vector<uint8_t> src_rows;  // vertical-first: the source block the vertical pass reads
  std::vector<uint8_t> row_in;    // one converted (gray / premultiplied) source row
  std::vector<int16_t> planes;    // horizontal-pass input: int16 planes (gray rows or channels)
  std::vector<int> nearest_x, nearest_y;
};

ResampleScratch& thread_scratch();

template <typename T>
inline T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Horizontal pass over n_rows rows. fill(i, planes) writes row i's C int16 planes, plane column 0 being
// input column px.first_input; out_row(i) receives the row's outputs (C interleaved bytes each). Gray
// rows go four at a time so each coefficient load serves four rows; colour rows serve their channels.
template <int C, typename Fill, typename OutRow>
void horizontal_rows(int n_rows, const AxisPlan& px, Fill&& fill, OutRow&& out_row, ResampleScratch& s) {
  constexpr int R = C == 1 ? 4 : C;
  const int64_t plane_len = int64_t(px.last_input - px.first_input) + kPlanePad;
  int16_t* buf = grow(s.planes, size_t(R * plane_len));
  int16_t* planes[R];
  for (int r = 0; r < R; ++r) planes[r] = buf + r * plane_len;
  uint8_t* outs[R];
  if constexpr (C == 1) {
    for (int i = 0; i < n_rows; i += 4) {
      const int m = std::min(4, n_rows - i);
      for (int j = 0; j < m; ++j) {
        fill(i + j, &planes[j]);
        outs[j] = out_row(i + j);
      }
      switch (m) {
        case 4: horizontal_planes<4>(planes, px.first_input, px, outs, 1); break;
        case 3: horizontal_planes<3>(planes, px.first_input, px, outs, 1); break;
        case 2: horizontal_planes<2>(planes, px.first_input, px, outs, 1); break;
        default: horizontal_planes<1>(planes, px.first_input, px, outs, 1); break;
      }
    }
  } else {
    for (int i = 0; i < n_rows; ++i) {
      fill(i, planes);
      uint8_t* o = out_row(i);
      for (int c = 0; c < C; ++c) outs[c] = o + c;
      horizontal_planes<C>(planes, px.first_input, px, outs, C);
    }
  }
}

// Two-pass resample of an in_h x in_w image with C channels to out_h x out_w, window `win`, into dst
// (packed rows of win.width * C). row_of(y) returns source row y with pixels `ps` bytes apart; it may
// convert into a scratch row (gray, premultiplied), so each returned row is used before the next call.
// planes_of(y, x0, n, planes) writes columns [x0, x0 + n) of the same row as C int16 planes; it may
// convert straight from the source (gray) instead of going through row_of.
template <int C, typename RowFn, typename PlanesFn>
void resample_two_pass(int in_h, int in_w, int64_t ps, RowFn&& row_of, PlanesFn&& planes_of, int out_h, int out_w,
                       ResampleFilter f, const ResizeWindow& win, uint8_t* dst, ResampleScratch& s) {
  const bool need_h = out_w != in_w;
  const bool need_v = out_h != in_h;
  const int64_t row_len = int64_t(win.width) * C;
  // Two cache slots at most are touched here, so the first reference survives the second lookup.
  const AxisPlan* py = need_v ? &axis_plan(in_h, out_h, f, win.top, win.top + win.height) : nullptr;
  const AxisPlan* px = need_h ? &axis_plan(in_w, out_w, f, win.left, win.left + win.width) : nullptr;
  const int r0 = py ? py->first_input : win.top, r1 = py ? py->last_input : win.top + win.height;
  const int c0 = px ? px->first_input : win.left, c1 = px ? px->last_input : win.left + win.width;

  if (need_h && need_v && !kernels::resample_horizontal_first(in_h, in_w, out_h, out_w)) {
    // Vertical first. Gather the source block [r0, r1) x [c0, c1) (rows are read by several outputs),
    // filter it vertically to win.height rows, then horizontally into dst.
    const int64_t block_len = int64_t(c1 - c0) * C;
    uint8_t* block = grow(s.src_rows, size_t(r1 - r0) * block_len);
    for (int y = r0; y < r1; ++y) {
      const uint8_t* in = row_of(y) + int64_t(c0) * ps;
      uint8_t* out = block + int64_t(y - r0) * block_len;
      if (ps == C) {
        std::memcpy(out, in, size_t(block_len));
      } else {
        for (int x = 0; x < c1 - c0; ++x)
          for (int c = 0; c < C; ++c) out[x * C + c] = in[int64_t(x) * ps + c];
      }
    }
    uint8_t* mid = grow(s.rows, size_t(win.height) * block_len);
    for (int i = 0; i < win.height; ++i)
      vertical_row(block + int64_t(py->first(i) - r0) * block_len, block_len, *py, i, block_len,
                   mid + int64_t(i) * block_len);
    horizontal_rows<C>(
        win.height, *px,
        [&](int i, int16_t* const* planes) { deinterleave_to_planes<C>(mid + i * block_len, C, 0, c1 - c0, planes); },
        [&](int i) { return dst + int64_t(i) * row_len; }, s);
    return;
  }

  // Horizontal first: stage rows [r0, r1) at the output width; without a vertical pass they are the
  // output itself.
  uint8_t* staged = need_v ? grow(s.rows, size_t(r1 - r0) * row_len) : dst;
  if (need_h) {
    horizontal_rows<C>(
        r1 - r0, *px, [&](int i, int16_t* const* planes) { planes_of(r0 + i, c0, c1 - c0, planes); },
        [&](int i) { return staged + int64_t(i) * row_len; }, s);
  } else {
    for (int y = r0; y < r1; ++y) {
      const uint8_t* in = row_of(y);
      uint8_t* out = staged + int64_t(y - r0) * row_len;
      for (int x = 0; x < win.width; ++x)
        for (int c = 0; c < C; ++c) out[x * C + c] = in[int64_t(win.left + x) * ps + c];
    }
  }
  if (!need_v) return;
  for (int i = 0; i < win.height; ++i)
    vertical_row(staged + int64_t(py->first(i) - r0) * row_len, row_len, *py, i, row_len, dst + int64_t(i) * row_len);
}

// The same with planes taken from row_of by deinterleaving.
template <int C, typename RowFn>
void resample_two_pass(int in_h, int in_w, int64_t ps, RowFn&& row_of, int out_h, int out_w, ResampleFilter f,
                       const ResizeWindow& win, uint8_t* dst, ResampleScratch& s) {
  auto planes_of = [&](int y, int x0, int n, int16_t* const* planes) {
    deinterleave_to_planes<C>(row_of(y), ps, x0, n, planes);
  };
  resample_two_pass<C>(in_h, in_w, ps, row_of, planes_of, out_h, out_w, f, win, dst, s);
}

}  // namespace mmcurate::cpu
