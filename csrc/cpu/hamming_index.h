// The multi-index-hashing pieces shared by the self-join and the query search: the neighbour masks of a
// substring ball and the per-substring bucket index (Norouzi, Punjani & Fleet, TPAMI 2014). CPU-only.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/popcount.h"

namespace mmcurate::cpu {

// All w-bit masks with 1..radius bits set, fewest bits first.
inline std::vector<uint32_t> neighbour_masks(int width, int radius) {
  std::vector<uint32_t> masks;
  for (int bits = 1; bits <= radius; ++bits) {
    // Gosper's hack: next integer with the same number of set bits.
    uint64_t m = (uint64_t(1) << bits) - 1;
    const uint64_t limit = uint64_t(1) << width;
    while (m < limit) {
      masks.push_back(uint32_t(m));
      const uint64_t lowest = m & (~m + 1), ripple = m + lowest;
      m = (((ripple ^ m) >> 2) / lowest) | ripple;
    }
  }
  return masks;
}

// Counting-sort CSR of codes by one substring: bucket b holds entries [begin[b], begin[b+1]).
struct SubstringIndex {
  std::vector<uint32_t> begin;
  std::vector<uint64_t> code;  // codes in bucket order, contiguous per bucket for the verification loop
  std::vector<uint32_t> id;    // index of each entry's code in the input
};

template <int W>
SubstringIndex build_index(const uint64_t* code, size_t n, int offset, int width) {
  const size_t buckets = size_t(1) << width;
  SubstringIndex ix;
  ix.begin.assign(buckets + 1, 0);
  for (size_t u = 0; u < n; ++u) ++ix.begin[kernels::bit_field(&code[u * W], offset, width) + 1];
  for (size_t b = 0; b < buckets; ++b) ix.begin[b + 1] += ix.begin[b];
  std::vector<uint32_t> fill(ix.begin.begin(), ix.begin.end() - 1);
  ix.code.resize(n * W);
  ix.id.resize(n);
  for (size_t u = 0; u < n; ++u) {
    const uint32_t slot = fill[kernels::bit_field(&code[u * W], offset, width)]++;
    std::copy_n(&code[u * W], W, &ix.code[size_t(slot) * W]);
    ix.id[slot] = uint32_t(u);
  }
  return ix;
}

}  // namespace mmcurate::cpu
