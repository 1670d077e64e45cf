// Coefficient plans for one resampling axis (private to csrc/cpu/): Pillow's fixed-point tables plus
// the derived layouts the SIMD passes read, cached per thread.
//
// Why a cache: the filters call sin() per tap (LANCZOS: two per tap), and a 512 -> 32 axis has
// 32 x 97 taps, so building the tables costs as much as filtering the image. Photo collections repeat
// a few sizes, so the tables are built once per (axis size, output size, filter, window) and thread.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/resample.h"

namespace mmcurate::cpu {

// Split of a coefficient c = hi * 2^kSplitShift + lo with hi signed and lo in [0, 2^kSplitShift), both
// fitting int16, so the SIMD passes multiply uint8 pixels by 16-bit halves (vpmaddwd) and recombine
// (p*hi << kSplitShift) + p*lo in wrapping int32 lanes. See AxisPlan::simd_exact for why the total
// equals Pillow's int32 sum.
constexpr int kSplitShift = 15;
constexpr int kChunkTaps = 16;  // taps per horizontal SIMD step (one 256-bit vector of int16)

struct AxisPlan {
  // key
  int in_size = 0, out_size = 0, begin = 0, end = 0;
  ResampleFilter filter = ResampleFilter::lanczos;

  // Pillow's tables for outputs [begin, end): bounds[2i] = first input, bounds[2i+1] = taps,
  // k[i * ksize + t] = int32 fixed point with kResamplePrecisionBits fraction bits.
  int ksize = 0;
  std::vector<int> bounds;
  std::vector<int32_t> k;
  int first_input = 0, last_input = 0;  // [first, last) = the inputs any output reads

  // True when the split passes reproduce Pillow's sums exactly: every |c| < 2^30 (hi fits int16) and
  // every output's 255 * sum|c| + rounding fits int32. Then the SIMD sum, computed with wrapping int32
  // adds (a ring homomorphism mod 2^32), is congruent to the exact sum, and the exact sum is in int32
  // range, so the two are equal. Otherwise the scalar passes (Pillow's own arithmetic) run.
  bool simd_exact = false;

  // Horizontal layout: output i reads chunks [hoff[i], hoff[i] + hchunks[i]) of 2 x kChunkTaps int16,
  // hi halves then lo halves, zero past its taps.
  std::vector<int> hchunks, hoff;
  std::vector<int16_t> hk;

  // Vertical layout: output i, tap pair j -> int32 holding (hi[2j], hi[2j+1]) as two int16 (and the
  // same for lo), vstride pairs per output, zero past its taps.
  int vstride = 0;
  std::vector<int32_t> vhi, vlo;

  int taps(int i) const { return bounds[2 * i + 1]; }
  int first(int i) const { return bounds[2 * i]; }
  const int32_t* coeffs(int i) const { return k.data() + int64_t(i) * ksize; }
};

// The plan for outputs [begin, end) of an in_size -> out_size axis, from this thread's cache (built on
// a miss). The reference stays valid until this thread asks for kPlanCacheSlots other plans.
constexpr int kPlanCacheSlots = 16;
const AxisPlan& axis_plan(int in_size, int out_size, ResampleFilter filter, int begin, int end);

// Builds a plan without caching (the cache's builder; also used by tests of the layouts).
void build_axis_plan(AxisPlan& p);

}  // namespace mmcurate::cpu
