// The inner loop shared by the CPU Hamming kernels: scan a run of codes for distances below a bound.
// With AVX2, four distances at a time (nibble-table popcount + SAD), branching only on the rare hit;
// otherwise one POPCNT per code. CPU-only (the CUDA kernels have their own loops).
#pragma once
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/popcount.h"

namespace mmcurate::cpu {

// Calls on_hit(j, d) for each j in [begin, end), in order, with d = popcount(query ^ codes[j]) < bound().
// bound() is re-read after every hit, so a caller may tighten it while scanning (the kNN selection does).
template <typename Bound, typename OnHit>
inline void scan_below(const uint64_t* codes, int64_t begin, int64_t end, uint64_t query, Bound bound, OnHit on_hit) {
  int64_t j = begin;
#if defined(__AVX2__)
  const __m256i nibble_counts = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                                 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i q = _mm256_set1_epi64x(int64_t(query));
  __m256i limit = _mm256_set1_epi64x(bound());
  for (; j + 4 <= end; j += 4) {
    const __m256i x = _mm256_xor_si256(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + j)));
    const __m256i lo = _mm256_and_si256(x, low_nibbles);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
    const __m256i bytes =
        _mm256_add_epi8(_mm256_shuffle_epi8(nibble_counts, lo), _mm256_shuffle_epi8(nibble_counts, hi));
    const __m256i dist = _mm256_sad_epu8(bytes, _mm256_setzero_si256());  // one count per 64-bit lane
    int hits = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(limit, dist)));
    if (__builtin_expect(hits != 0, 0)) {
      alignas(32) int64_t d[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(d), dist);
      for (; hits; hits &= hits - 1) {
        const int lane = __builtin_ctz(unsigned(hits));
        if (d[lane] < bound()) on_hit(j + lane, int(d[lane]));  // the bound may have tightened
      }
      limit = _mm256_set1_epi64x(bound());
    }
  }
#endif
  for (; j < end; ++j) {
    const int d = kernels::hamming64(query, codes[j]);
    if (d < bound()) on_hit(j, d);
  }
}

}  // namespace mmcurate::cpu
