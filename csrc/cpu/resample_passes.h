// The two integer passes of Pillow's resampler over one axis plan (private to csrc/cpu/), in a scalar
// reference form and an AVX2 form selected at compile time by __AVX2__.
//
// Both give Pillow's result bit for bit. The scalar passes are Pillow's arithmetic (int32 sums of
// uint8 x int32 coefficient, rounding half, >> 22, clip): they run for plans whose coefficients the
// split cannot carry (AxisPlan::simd_exact false), for tails, and when SIMD is switched off for tests.
// The AVX2 passes multiply 16-bit pixels by the 16-bit halves of each coefficient with vpmaddwd and
// recombine (sum_hi << 15) + sum_lo; the exactness argument is on AxisPlan::simd_exact.
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
#include "kernels/luma.h"
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
inline void horizontal_planes_scalar(const int16_t* const* planes, int origin, const AxisPlan& p,
                                     uint8_t* const* out, int64_t step) {
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
inline void horizontal_planes_avx2(const int16_t* const* planes, int origin, const AxisPlan& p,
                                   uint8_t* const* out, int64_t step) {
  static_assert(R >= 1 && R <= 4, "1..4 planes per call");
  const int n = p.end - p.begin;
  const __m128i round = _mm_set1_epi32(kernels::kResampleRoundHalf);
  for (int i = 0; i < n; ++i) {
    const int16_t* kc = p.hk.data() + p.hoff[i];
    const int x0 = p.first(i) - origin;
    __m256i acc_hi[R], acc_lo[R];
    for (int r = 0; r < R; ++r) acc_hi[r] = acc_lo[r] = _mm256_setzero_si256();
    for (int c = 0; c < p.hchunks[i]; ++c, kc += 2 * kChunkTaps) {
      const __m256i kh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc));
      const __m256i kl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc + kChunkTaps));
      for (int r = 0; r < R; ++r) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(planes[r] + x0 + c * kChunkTaps));
        acc_hi[r] = _mm256_add_epi32(acc_hi[r], _mm256_madd_epi16(v, kh));
        acc_lo[r] = _mm256_add_epi32(acc_lo[r], _mm256_madd_epi16(v, kl));
      }
    }
    __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int r = 0; r < R; ++r) s[r] = _mm256_add_epi32(_mm256_slli_epi32(acc_hi[r], kSplitShift), acc_lo[r]);
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
  if (C == 1 && ps == 1) {
    for (; x + 16 <= n; x += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(planes[0] + x),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x))));
  } else if (C == 4 && ps == 4) {
    // 8 pixels: bytes regrouped to [c0 x4, c1 x4, c2 x4, c3 x4] per half, then dwords to channel order.
    const __m256i by_channel = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,  //
                                                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i dwords = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; x + 8 <= n; x += 8) {
      __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + x * 4));
      v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, by_channel), dwords);
      const __m128i c01 = _mm256_castsi256_si128(v), c23 = _mm256_extracti128_si256(v, 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[0] + x), _mm_cvtepu8_epi16(c01));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[1] + x), _mm_cvtepu8_epi16(_mm_srli_si128(c01, 8)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[2] + x), _mm_cvtepu8_epi16(c23));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(planes[3] + x), _mm_cvtepu8_epi16(_mm_srli_si128(c23, 8)));
    }
  } else if (C == 3 && ps == 3) {
    // 8 pixels (24 bytes) as two overlapping 16-byte loads at +0 and +8: pixels 0-3 sit at bytes 0-11
    // of the low half and pixels 4-7 at bytes 4-15 of the high half; no byte past the 24 is read.
    const __m256i by_channel = _mm256_setr_epi8(0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, -1, -1, -1, -1,  //
                                                4, 7, 10, 13, 5, 8, 11, 14, 6, 9, 12, 15, -1, -1, -1, -1);
    const __m256i dwords = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; x + 8 <= n; x += 8) {
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

#if defined(__AVX2__)
// Pillow's L24 of 8 packed RGB (C=3) or RGBX (C=4) pixels as 8 int32. With A = R + G * 2^16 (an int16
// pair) and B' = B + 2 * 2^16: R*19595 + G*38470 + B*7471 + 0x8000 = madd(A, (19594, -27066)) + A +
// madd(B', (7471, 16384)), every weight fitting int16; the total is below 2^24.
template <int C>
inline __m256i luma8_avx2(const uint8_t* p) {
  static_assert(C == 3 || C == 4, "RGB or RGBX");
  __m256i v;
  __m256i rg_mask, b_mask;
  if constexpr (C == 3) {
    v = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)),
                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    rg_mask = _mm256_setr_epi8(0, -1, 1, -1, 3, -1, 4, -1, 6, -1, 7, -1, 9, -1, 10, -1,  //
                               4, -1, 5, -1, 7, -1, 8, -1, 10, -1, 11, -1, 13, -1, 14, -1);
    b_mask = _mm256_setr_epi8(2, -1, -1, -1, 5, -1, -1, -1, 8, -1, -1, -1, 11, -1, -1, -1,  //
                              6, -1, -1, -1, 9, -1, -1, -1, 12, -1, -1, -1, 15, -1, -1, -1);
  } else {
    v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    rg_mask = _mm256_setr_epi8(0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1,  //
                               0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1);
    b_mask = _mm256_setr_epi8(2, -1, -1, -1, 6, -1, -1, -1, 10, -1, -1, -1, 14, -1, -1, -1,  //
                              2, -1, -1, -1, 6, -1, -1, -1, 10, -1, -1, -1, 14, -1, -1, -1);
  }
  const __m256i rg = _mm256_shuffle_epi8(v, rg_mask);
  const __m256i b2 = _mm256_or_si256(_mm256_shuffle_epi8(v, b_mask), _mm256_set1_epi32(2 << 16));
  const __m256i w_rg = _mm256_set1_epi32(int32_t(uint32_t(uint16_t(19594)) | (uint32_t(uint16_t(-27066)) << 16)));
  const __m256i w_b = _mm256_set1_epi32(int32_t(uint32_t(7471) | (uint32_t(16384) << 16)));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(rg, w_rg), rg), _mm256_madd_epi16(b2, w_b));
  return _mm256_srli_epi32(sum, 16);
}
#endif

// Columns [x0, x0 + n) of a row converted to Pillow's L (rounded to uint8, as convert("L") stores it),
// zero-extended into an int16 plane. channels 1..4 with pixels `ps` bytes apart.
inline void gray_to_plane(const uint8_t* row, int channels, int64_t ps, int x0, int n, int16_t* plane) {
  const uint8_t* src = row + int64_t(x0) * ps;
  if (channels < 3) {
    int16_t* planes[1] = {plane};
    if (ps == 1) return deinterleave_to_planes<1>(src, 1, 0, n, planes);
    for (int x = 0; x < n; ++x) plane[x] = src[x * ps];
    return;
  }
  int x = 0;
#if defined(__AVX2__)
  if (ps == 3 || ps == 4) {
    for (; x + 16 <= n; x += 16) {
      const __m256i g0 = ps == 3 ? luma8_avx2<3>(src + x * 3) : luma8_avx2<4>(src + x * 4);
      const __m256i g1 = ps == 3 ? luma8_avx2<3>(src + (x + 8) * 3) : luma8_avx2<4>(src + (x + 8) * 4);
      const __m256i g = _mm256_permute4x64_epi64(_mm256_packs_epi32(g0, g1), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + x), g);
    }
  }
#endif
  for (; x < n; ++x) {
    const uint8_t* p = src + x * ps;
    plane[x] = kernels::luma_l24(p[0], p[1], p[2]);
  }
}

}  // namespace mmcurate::cpu
