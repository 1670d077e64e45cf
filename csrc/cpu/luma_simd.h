// Pillow's convert("L") (L24 luma) for the CPU resampler and to_gray (private to csrc/cpu/): the
// scalar rule is kernels::luma_l24; the AVX2 form computes the same integers 8 pixels at a time.
#pragma once
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/luma.h"

namespace mmcurate::cpu {

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
  int x = 0;
  if (channels < 3) {
#if defined(__AVX2__)
    if (ps == 1)
      for (; x + 16 <= n; x += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + x),
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x))));
#endif
    for (; x < n; ++x) plane[x] = src[x * ps];
    return;
  }
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

// Row of n pixels to Pillow's L as bytes (convert("L")). channels 1..4, pixels `ps` bytes apart.
inline void gray_to_row(const uint8_t* src, int channels, int64_t ps, int n, uint8_t* dst) {
  int x = 0;
  if (channels < 3) {
    for (; x < n; ++x) dst[x] = src[x * ps];
    return;
  }
#if defined(__AVX2__)
  if (ps == 3 || ps == 4) {
    for (; x + 16 <= n; x += 16) {
      const __m256i g0 = ps == 3 ? luma8_avx2<3>(src + x * 3) : luma8_avx2<4>(src + x * 4);
      const __m256i g1 = ps == 3 ? luma8_avx2<3>(src + (x + 8) * 3) : luma8_avx2<4>(src + (x + 8) * 4);
      const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(g0, g1), 0xD8);  // 16 x int16, in order
      const __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + x), b);
    }
  }
#endif
  for (; x < n; ++x) {
    const uint8_t* p = src + x * ps;
    dst[x] = kernels::luma_l24(p[0], p[1], p[2]);
  }
}

}  // namespace mmcurate::cpu
