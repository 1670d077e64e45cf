// The inner loop shared by the CPU Hamming kernels: scan a run of W-word codes for distances below a bound.
// With AVX2, four distances at a time (nibble-table popcount + SAD), branching only on the rare hit;
// otherwise POPCNT per word. A query may carry V variants (dihedral search): its distance to a code is the
// minimum over the variants. CPU-only (the CUDA kernels have their own loops).
#pragma once
#include <algorithm>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/popcount.h"

namespace mmcurate::cpu {

// Distance of a query (V variants of W words) to one code: the minimum over the variants.
template <int W, int V>
inline int variant_distance(const uint64_t* query, const uint64_t* code) {
  int d = kernels::hamming<W>(query, code);
  for (int v = 1; v < V; ++v) d = std::min(d, kernels::hamming<W>(query + v * W, code));
  return d;
}

#if defined(__AVX2__)
// Per-byte popcount of x (values 0..8): the nibble table.
inline __m256i popcount_bytes(__m256i x) {
  const __m256i nibble_counts = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                                 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(x, low_nibbles);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles);
  return _mm256_add_epi8(_mm256_shuffle_epi8(nibble_counts, lo), _mm256_shuffle_epi8(nibble_counts, hi));
}

inline __m256i load256(const uint64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Distances of codes[0..3] to q as four 64-bit lanes. q holds the query broadcast for W == 1 and the
// query itself (one 256-bit register) for W == 4.
template <int W>
inline __m256i distances4(const uint64_t* codes, __m256i q) {
  static_assert(W == 1 || W == 4, "AVX2 path: 64- or 256-bit codes");
  if constexpr (W == 1) {
    return _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(q, load256(codes))), _mm256_setzero_si256());
  } else {
    // Per code, SAD leaves four partial sums (one per word); add them across lanes for four codes at once.
    __m256i c[4];
    for (int k = 0; k < 4; ++k)
      c[k] = _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(q, load256(codes + 4 * k))), _mm256_setzero_si256());
    const __m256i s01 = _mm256_add_epi64(_mm256_unpacklo_epi64(c[0], c[1]), _mm256_unpackhi_epi64(c[0], c[1]));
    const __m256i s23 = _mm256_add_epi64(_mm256_unpacklo_epi64(c[2], c[3]), _mm256_unpackhi_epi64(c[2], c[3]));
    return _mm256_add_epi64(_mm256_permute2x128_si256(s01, s23, 0x20), _mm256_permute2x128_si256(s01, s23, 0x31));
  }
}

template <int W>
inline __m256i query_register(const uint64_t* query) {
  if constexpr (W == 1)
    return _mm256_set1_epi64x(int64_t(query[0]));
  else
    return load256(query);
}
#endif

// Calls on_hit(j, d) for each j in [begin, end), in order, with d = distance(query, codes[j]) < bound().
// bound() is re-read after every hit, so a caller may tighten it while scanning (the kNN selection does).
template <int W, int V = 1, typename Bound, typename OnHit>
inline void scan_below(const uint64_t* codes, int64_t begin, int64_t end, const uint64_t* query, Bound bound,
                       OnHit on_hit) {
  int64_t j = begin;
#if defined(__AVX2__)
  if constexpr (W == 1 || W == 4) {
    __m256i q[V];
    for (int v = 0; v < V; ++v) q[v] = query_register<W>(query + v * W);
    __m256i limit = _mm256_set1_epi64x(bound());
    for (; j + 4 <= end; j += 4) {
      __m256i dist = distances4<W>(codes + j * W, q[0]);
      for (int v = 1; v < V; ++v) {  // lane-wise minimum (AVX2 has no 64-bit min)
        const __m256i other = distances4<W>(codes + j * W, q[v]);
        dist = _mm256_blendv_epi8(dist, other, _mm256_cmpgt_epi64(dist, other));
      }
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
  }
#endif
  for (; j < end; ++j) {
    const int d = variant_distance<W, V>(query, codes + j * W);
    if (d < bound()) on_hit(j, d);
  }
}

}  // namespace mmcurate::cpu
