// The two integer passes of Pillow's resampler over one axis plan (private to csrc/cpu/), in a scalar
// reference form and an AVX2 form selected at compile time by __AVX2__.
//
// Both give Pillow's result bit for bit. The scalar passes are Pillow's arithmetic (int32 sums of
// uint8 x int32 coefficient, rounding half, >> 22, clip): they run for plans whose coefficients the
// split cannot carry (AxisPlan::simd_exact false), for tails, and when SIMD is switched off for tests.
// The AVX2 passes multiply 16-bit pixels by the 16-bit halves of each coefficient with vpmaddwd and
// recombine (hi products << 15) + lo products in int32 lanes; the exactness argument is on
// AxisPlan::simd_exact.
//
// Layouts: the horizontal pass reads int16 planes (one per gray row or per channel), zero-extended from
// uint8 and readable kChunkTaps elements past their last column (the tail of a chunk has coefficient 0).
// The vertical pass reads uint8 rows of interleaved samples, so the channel count does not matter.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "cpu/resample_plan.h"
#include "kernels/resample.h"

namespace mmcurate::cpu {

constexpr int kPlanePad = kChunkTaps;  // readable int16 past a plane's last column

// Process-wide switch for the vector passes (on when compiled in); tests turn it off to check that
// the scalar reference path gives the same (Pillow's) result.
std::atomic<bool>& resample_simd_enabled();

inline bool resample_simd_compiled() {
#if defined(__AVX2__)
  return true;
#else
  return false;
#endif
}

inline bool use_simd(const AxisPlan& p) {
  return resample_simd_compiled() && p.simd_exact && resample_simd_enabled().load(std::memory_order_relaxed);
}

// ---- scalar reference -------------------------------------------------------------------------------

// Horizontal pass of R planes sharing one plan: out[r][i * step] for outputs i of the plan. Plane
// column 0 is input index `origin`.
template <int R>
inline void horizontal_planes_scalar(const int16_t* const* planes, int origin, const AxisPlan& p, uint8_t* const* out,
                                     int64_t step) {
  const int n = p.end - p.begin;
  for (int i = 0; i < n; ++i) {
    const int32_t* k = p.coeffs(i);
    const int taps = p.taps(i);
    for (int r = 0; r < R; ++r) {
      const int16_t* px = planes[r] + (p.first(i) - origin);
      int32_t acc = kernels::kResampleRoundHalf;
      for (int t = 0; t < taps; ++t) acc += int32_t(px[t]) * k[t];
      out[r][i * step] = kernels::resample_clip8(acc);
    }
  }
}

// Vertical pass of output i: `rows` points at its first tap's row, rows `stride` bytes apart,
// columns [from, len).
inline void vertical_row_scalar(const uint8_t* rows, int64_t stride, const AxisPlan& p, int i, int64_t from,
                                int64_t len, uint8_t* out) {
  const int32_t* k = p.coeffs(i);
  const int taps = p.taps(i);
  for (int64_t x = from; x < len; ++x) {
    int32_t acc = kernels::kResampleRoundHalf;
    for (int t = 0; t < taps; ++t) acc += int32_t(rows[t * stride + x]) * k[t];
    out[x] = kernels::resample_clip8(acc);
  }
}

// ---- AVX2 -------------------------------------------------------------------------------------------
#if defined(__AVX2__)

// R planes (1..4) at once: each chunk's coefficient halves are loaded once and used for every plane.
template <int R>
inline void horizontal_planes_avx2(const int16_t* const* planes, int origin, const AxisPlan& p, uint8_t* const* out,
                                   int64_t step) {
  static_assert(R >= 1 && R <= 4, "1..4 planes per call");
  const int n = p.end - p.begin;
  const __m128i round = _mm_set1_epi32(kernels::kResampleRoundHalf);
  for (int i = 0; i < n; ++i) {
    const int16_t* kc = p.hk.data() + p.hoff[i];
    const int x0 = p.first(i) - origin;
    // One accumulator per plane, (madd(v, hi) << 15) + madd(v, lo) added per chunk: separate hi and
    // lo sums would need eight vector registers and gcc spills them. Named variables, not arrays, so
    // they stay in registers.
    const __m256i zero = _mm256_setzero_si256();
    __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    const int16_t* p0 = planes[0] + x0;
    const int16_t* p1 = planes[R > 1 ? 1 : 0] + x0;
    const int16_t* p2 = planes[R > 2 ? 2 : 0] + x0;
    const int16_t* p3 = planes[R > 3 ? 3 : 0] + x0;
    const int nc = p.hchunks[i];
    auto add_chunk = [](__m256i acc, const int16_t* px, __m256i kh, __m256i kl) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px));
      const __m256i hi = _mm256_slli_epi32(_mm256_madd_epi16(v, kh), kSplitShift);
      return _mm256_add_epi32(acc, _mm256_add_epi32(hi, _mm256_madd_epi16(v, kl)));
    };
    for (int c = 0; c < nc; ++c, kc += 2 * kChunkTaps) {
      const __m256i kh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc));
      const __m256i kl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc + kChunkTaps));
      const int off = c * kChunkTaps;
      a0 = add_chunk(a0, p0 + off, kh, kl);
      if constexpr (R > 1) a1 = add_chunk(a1, p1 + off, kh, kl);
      if constexpr (R > 2) a2 = add_chunk(a2, p2 + off, kh, kl);
      if constexpr (R > 3) a3 = add_chunk(a3, p3 + off, kh, kl);
    }
    // Unused planes hold zero sums.
    const __m256i s[4] = {a0, a1, a2, a3};
    // Lane sums of the four planes: [s0, s1, s2, s3] in each 128-bit half, then the halves added.
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    sum = _mm_srai_epi32(_mm_add_epi32(sum, round), kernels::kResamplePrecisionBits);
    sum = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);  // clip to [0, 255] as clip8
    const uint32_t bytes = uint32_t(_mm_cvtsi128_si32(sum));
    for (int r = 0; r < R; ++r) out[r][i * step] = uint8_t(bytes >> (8 * r));
  }
}

// Vertical pass of output i over 32 columns per step: tap rows t and t+1 are interleaved bytewise so
// one vpmaddwd applies both taps' coefficients; unpack and pack undo each other, so no permutes.
inline void vertical_row_avx2(const uint8_t* rows, int64_t stride, const AxisPlan& p, int i, int64_t len,
                              uint8_t* out) {
  const int taps = p.taps(i);
  const int32_t* khi = p.vhi.data() + int64_t(i) * p.vstride;
  const int32_t* klo = p.vlo.data() + int64_t(i) * p.vstride;
  const __m256i zero = _mm256_setzero_si256();
  const __m256i round = _mm256_set1_epi32(kernels::kResampleRoundHalf);
  int64_t x = 0;
  for (; x + 32 <= len; x += 32) {
    __m256i hi[4], lo[4];
    for (int j = 0; j < 4; ++j) hi[j] = lo[j] = zero;
    for (int t = 0; t < taps; t += 2) {
      const uint8_t* ra = rows + t * stride + x;
      const uint8_t* rb = t + 1 < taps ? ra + stride : ra;  // odd tap count: the pair's second weight is 0
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ra));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rb));
      const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
      const __m256i v[4] = {_mm256_unpacklo_epi8(ab_lo, zero), _mm256_unpackhi_epi8(ab_lo, zero),
                            _mm256_unpacklo_epi8(ab_hi, zero), _mm256_unpackhi_epi8(ab_hi, zero)};
      const __m256i kh = _mm256_set1_epi32(khi[t / 2]), kl = _mm256_set1_epi32(klo[t / 2]);
      for (int j = 0; j < 4; ++j) {
        hi[j] = _mm256_add_epi32(hi[j], _mm256_madd_epi16(v[j], kh));
        lo[j] = _mm256_add_epi32(lo[j], _mm256_madd_epi16(v[j], kl));
      }
    }
    __m256i s[4];
    for (int j = 0; j < 4; ++j) {
      s[j] = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi[j], kSplitShift), lo[j]), round);
      s[j] = _mm256_srai_epi32(s[j], kernels::kResamplePrecisionBits);
    }
    const __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(s[0], s[1]), _mm256_packs_epi32(s[2], s[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + x), packed);
  }
  if (x < len) vertical_row_scalar(rows, stride, p, i, x, len, out);
}

#endif  // __AVX2__

// ---- dispatch ---------------------------------------------------------------------------------------

template <int R>
inline void horizontal_planes(const int16_t* const* planes, int origin, const AxisPlan& p, uint8_t* const* out,
                              int64_t step) {
#if defined(__AVX2__)
  if (use_simd(p)) return horizontal_planes_avx2<R>(planes, origin, p, out, step);
#endif
  horizontal_planes_scalar<R>(planes, origin, p, out, step);
}

inline void vertical_row(const uint8_t* rows, int64_t stride, const AxisPlan& p, int i, int64_t len, uint8_t* out) {
#if defined(__AVX2__)
  if (use_simd(p)) return vertical_row_avx2(rows, stride, p, i, len, out);
#endif
  vertical_row_scalar(rows, stride, p, i, 0, len, out);
}

// ---- plane builders ---------------------------------------------------------------------------------

// Columns [x0, x0 + n) of a uint8 row with C interleaved channels (pixels `ps` bytes apart) into C int16
// planes.
template <int C>
inline void deinterleave_to_planes(const uint8_t* row, int64_t ps, int x0, int n, int16_t* const* planes) {
  const uint8_t* src = row + int64_t(x0) * ps;
  int x = 0;
#if defined(__AVX2__)
  if constexpr (C == 1) {
    for (; ps == 1 && x + 16 <= n; x += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(planes[0] + x),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x))));
  } else if constexpr (C == 4) {
    // 8 pixels: bytes regrouped to [c0 x4, c1 x4, c2 x4, c3 x4] per half, then dwords to channel order.
    const __m256i by_channel = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,  //
                                                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i dwords = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; ps == 4 && x + 8 <= n; x += 8) {
      __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + x * 4));
      v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, by_channel), dwords);
      const __m128i c01 = _mm256_castsi256_si128(v), c23 = _mm256_extracti128_si256(v, 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[0] + x), _mm_cvtepu8_epi16(c01));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[1] + x), _mm_cvtepu8_epi16(_mm_srli_si128(c01, 8)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[2] + x), _mm_cvtepu8_epi16(c23));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[3] + x), _mm_cvtepu8_epi16(_mm_srli_si128(c23, 8)));
    }
  } else if constexpr (C == 3) {
    // 8 pixels (24 bytes) as two overlapping 16-byte loads at +0 and +8: pixels 0-3 sit at bytes 0-11
    // of the low half and pixels 4-7 at bytes 4-15 of the high half; no byte past the 24 is read.
    const __m256i by_channel = _mm256_setr_epi8(0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, -1, -1, -1, -1,  //
                                                4, 7, 10, 13, 5, 8, 11, 14, 6, 9, 12, 15, -1, -1, -1, -1);
    const __m256i dwords = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; ps == 3 && x + 8 <= n; x += 8) {
      const uint8_t* p = src + x * 3;
      __m256i v = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, by_channel), dwords);
      const __m128i c01 = _mm256_castsi256_si128(v), c2 = _mm256_extracti128_si256(v, 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[0] + x), _mm_cvtepu8_epi16(c01));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[1] + x), _mm_cvtepu8_epi16(_mm_srli_si128(c01, 8)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[2] + x), _mm_cvtepu8_epi16(c2));
    }
  }
#endif
  for (; x < n; ++x)
    for (int c = 0; c < C; ++c) planes[c][x] = src[x * ps + c];
}

}  // namespace mmcurate::cpu
