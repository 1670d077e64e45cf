// Exact Hamming self-join over W-word codes (W = 1: 64-bit, W = 4: 256-bit): all pairs within max_distance,
// each exactly once, sorted. One template serves both widths.
//
// 1. Identical codes are collapsed (a sort by code), so a group of g duplicates costs one code in the
//    join and expands to g(g-1)/2 distance-0 pairs at the end instead of swamping one bucket.
// 2. The distinct codes are joined by multi-index hashing or a tiled brute force (see hamming_plan_cpu.cpp).
//    For substring t, a counting-sort CSR stores codes contiguously per bucket; each bucket is compared
//    with itself and with every neighbouring bucket within radius[t] whose key is larger, so an unordered
//    bucket pair is visited once. A verified pair is reported by the first substring whose radius it
//    meets, which makes every pair come out exactly once without a hash set.
// 3. Pairs of distinct codes expand to pairs of original ids, which are sorted by (i, j).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/hamming_index.h"
#include "cpu/hamming_scan.h"
#include "kernels/popcount.h"
#include "mmcurate/hamming.h"
#include "mmcurate/parallel.h"

namespace mmcurate {
namespace {

using kernels::popcount64;

// Pair of distinct-code indices (u < v) packed as u << 32 | v: sorts by (u, v) as one integer.
inline uint64_t pack(uint64_t u, uint64_t v) { return (u << 32) | v; }

struct DistinctCodes {
  std::vector<uint64_t> code;        // W words per distinct value, in radix order
  std::vector<int64_t> group_begin;  // members of code[u]: member_id[group_begin[u] .. group_begin[u+1])
  std::vector<uint32_t> member_id;   // original ids, ascending within a group
};

// Below this many codes a comparison sort beats the radix sort's fixed cost (a 65,536-entry count array cleared and
// summed per digit: 4 W passes, ~1 ms at 256 bits, which dominated joins of many small buckets).
constexpr int64_t kRadixSortMinCodes = 8192;

// Ids ordered by code (word W-1 most significant), then id: an LSD radix sort on 16-bit digits (stable, so ids
// stay ascending within equal codes); digits on which all codes agree are skipped. Small inputs: the same order by
// a comparison sort.
template <int W>
std::vector<uint32_t> order_by_code(const uint64_t* codes, int64_t n) {
  std::vector<uint32_t> order(n), scratch(n);
  std::iota(order.begin(), order.end(), 0u);
  if (n < kRadixSortMinCodes) {
    std::sort(order.begin(), order.end(), [codes](uint32_t a, uint32_t b) {
      for (int word = W - 1; word >= 0; --word) {
        const uint64_t x = codes[int64_t(a) * W + word], y = codes[int64_t(b) * W + word];
        if (x != y) return x < y;
      }
      return a < b;
    });
    return order;
  }
  std::vector<uint32_t> count(1 << 16);
  for (int word = 0; word < W; ++word) {
    auto digit = [codes, word](int64_t id, int shift) { return (codes[id * W + word] >> shift) & 0xffff; };
    for (int shift = 0; shift < 64; shift += 16) {
      std::fill(count.begin(), count.end(), 0u);
      for (int64_t p = 0; p < n; ++p) ++count[digit(p, shift)];
      if (count[digit(0, shift)] == uint32_t(n)) continue;  // every code has this digit
      uint32_t sum = 0;
      for (auto& c : count) sum += std::exchange(c, sum);
      for (int64_t p = 0; p < n; ++p) {
        const uint32_t id = order[p];
        scratch[count[digit(id, shift)]++] = id;
      }
      order.swap(scratch);
    }
  }
  return order;
}

template <int W>
DistinctCodes collapse_duplicates(const uint64_t* codes, int64_t n) {
  DistinctCodes d;
  d.member_id = order_by_code<W>(codes, n);
  for (int64_t p = 0; p < n; ++p) {
    const uint64_t* c = codes + int64_t(d.member_id[p]) * W;
    if (p == 0 || !std::equal(c, c + W, d.code.end() - W)) {
      d.code.insert(d.code.end(), c, c + W);
      d.group_begin.push_back(p);
    }
  }
  d.group_begin.push_back(n);
  return d;
}

// Chunked outputs: one vector per work item, concatenated in item order (deterministic, no locks).
using ChunkOutputs = std::vector<std::vector<uint64_t>>;

template <int W>
void brute_force_join(const std::vector<uint64_t>& code, int r, int num_threads, ChunkOutputs& out) {
  const int64_t n = int64_t(code.size()) / W;
  constexpr int64_t kRows = 64, kCols = 4096 / W;  // a 32 KiB column tile stays in L1/L2 across the row block
  const int64_t blocks = (n + kRows - 1) / kRows;
  out.assign(blocks, {});
  const uint64_t* c = code.data();
  // Early row blocks hold the longest rows; dynamic scheduling hands them out first.
  parallel_for(blocks, num_threads, [&](int64_t b) {
    auto& found = out[b];
    const int64_t i0 = b * kRows, i1 = std::min(n, i0 + kRows);
    for (int64_t j0 = i0 + 1; j0 < n; j0 += kCols) {
      const int64_t j1 = std::min(n, j0 + kCols);
      for (int64_t i = i0; i < i1; ++i)
        cpu::scan_below<W>(
            c, std::max(j0, i + 1), j1, c + i * W, [r] { return r + 1; },
            [&found, i](int64_t j, int) { found.push_back(pack(uint64_t(i), uint64_t(j))); });
    }
  });
}

// Whether a pair was already reported by an earlier substring (its first qualifying one).
struct EarlierSubstrings {
  int offset[64], width[64], radius[64];
  int count = 0;
  bool claim(const uint64_t* a, const uint64_t* b) const {
    for (int t = 0; t < count; ++t)
      if (popcount64(kernels::xor_field(a, b, offset[t], width[t])) <= radius[t]) return true;
    return false;
  }
};

template <int W>
void multi_index_join(const std::vector<uint64_t>& code, const HammingJoinPlan& plan, int r, int num_threads,
                      ChunkOutputs& out) {
  EarlierSubstrings earlier;
  for (size_t t = 0; t < plan.width.size(); ++t) {
    const int width = plan.width[t], offset = plan.offset[t], radius = plan.radius[t];
    if (radius < 0) continue;
    const cpu::SubstringIndex ix = cpu::build_index<W>(code.data(), code.size() / W, offset, width);
    const std::vector<uint32_t> masks = cpu::neighbour_masks(width, radius);
    const int64_t buckets = int64_t(1) << width;
    const int64_t chunk = std::max<int64_t>(64, buckets / 4096);
    const int64_t chunks = (buckets + chunk - 1) / chunk;
    const size_t first_out = out.size();
    out.resize(first_out + chunks);
    const uint32_t* begin = ix.begin.data();
    const uint64_t* bcode = ix.code.data();
    const uint32_t* bid = ix.id.data();

    parallel_for(chunks, num_threads, [&](int64_t ch) {
      auto& found = out[first_out + ch];
      auto emit = [&](uint32_t p, int64_t q) {
        if (earlier.claim(bcode + size_t(p) * W, bcode + q * W)) return;
        const uint32_t a = bid[p], b = bid[q];
        found.push_back(a < b ? pack(a, b) : pack(b, a));
      };
      const int64_t b_end = std::min(buckets, (ch + 1) * chunk);
      for (int64_t bucket = ch * chunk; bucket < b_end; ++bucket) {
        const uint32_t p0 = begin[bucket], p1 = begin[bucket + 1];
        if (p0 == p1) continue;
        auto bound = [r] { return r + 1; };
        for (uint32_t p = p0; p < p1; ++p)  // pairs inside the bucket
          cpu::scan_below<W>(bcode, p + 1, p1, bcode + size_t(p) * W, bound, [&](int64_t q, int) { emit(p, q); });
        for (uint32_t mask : masks) {  // neighbouring buckets, each unordered pair once
          const uint64_t other = uint64_t(bucket) ^ mask;
          if (other < uint64_t(bucket)) continue;
          const uint32_t q0 = begin[other], q1 = begin[other + 1];
          if (q0 == q1) continue;
          for (uint32_t p = p0; p < p1; ++p)
            cpu::scan_below<W>(bcode, q0, q1, bcode + size_t(p) * W, bound, [&](int64_t q, int) { emit(p, q); });
        }
      }
    });
    earlier.offset[earlier.count] = offset;
    earlier.width[earlier.count] = width;
    earlier.radius[earlier.count] = radius;
    ++earlier.count;
  }
}

template <int W>
HammingPairsResult pairs_of(const uint64_t* codes, int64_t n, int max_distance, int num_threads,
                            HammingPairsMethod method) {
  HammingPairsResult result;
  if (n == 0) {
    result.plan = plan_hamming_join(0, max_distance, method, W);
    return result;
  }

  const DistinctCodes distinct = collapse_duplicates<W>(codes, n);
  const int64_t nu = int64_t(distinct.code.size()) / W;
  result.n_unique = nu;
  result.plan = plan_hamming_join(nu, max_distance, method, W);

  ChunkOutputs found;
  if (result.plan.method == HammingPairsMethod::kMultiIndex)
    multi_index_join<W>(distinct.code, result.plan, max_distance, num_threads, found);
  else
    brute_force_join<W>(distinct.code, max_distance, num_threads, found);

  // Expand distinct-code pairs to original-id pairs: offsets first, then a parallel fill.
  const int64_t* gb = distinct.group_begin.data();
  const uint32_t* member = distinct.member_id.data();
  auto group_size = [gb](uint64_t u) { return gb[u + 1] - gb[u]; };
  const int64_t n_chunks = int64_t(found.size());
  std::vector<int64_t> chunk_begin(n_chunks + 2, 0);  // last slot: the duplicate groups
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    int64_t count = 0;
    for (uint64_t key : found[ch]) count += group_size(key >> 32) * group_size(key & 0xffffffffu);
    chunk_begin[ch + 1] = chunk_begin[ch] + count;
  }
  int64_t duplicate_pairs = 0;
  for (int64_t u = 0; u < nu; ++u) duplicate_pairs += group_size(u) * (group_size(u) - 1) / 2;
  chunk_begin[n_chunks + 1] = chunk_begin[n_chunks] + duplicate_pairs;
  const int64_t total = chunk_begin[n_chunks + 1];

  std::vector<uint64_t> keys(total);  // original (i, j) packed as i << 32 | j, i < j
  parallel_for(n_chunks + 1, num_threads, [&](int64_t ch) {
    uint64_t* dst = keys.data() + chunk_begin[ch];
    if (ch == n_chunks) {
      for (int64_t u = 0; u < nu; ++u)
        for (int64_t a = gb[u]; a < gb[u + 1]; ++a)
          for (int64_t b = a + 1; b < gb[u + 1]; ++b) *dst++ = pack(member[a], member[b]);  // ids ascend
      return;
    }
    for (uint64_t key : found[ch]) {
      const uint64_t u = key >> 32, v = key & 0xffffffffu;
      for (int64_t a = gb[u]; a < gb[u + 1]; ++a)
        for (int64_t b = gb[v]; b < gb[v + 1]; ++b) {
          const uint64_t i = member[a], j = member[b];
          *dst++ = i < j ? pack(i, j) : pack(j, i);
        }
    }
  });
  found.clear();
  found.shrink_to_fit();
  std::sort(keys.begin(), keys.end());

  result.pairs.resize(2 * total);
  result.distances.resize(total);
  parallel_for(
      total, num_threads,
      [&](int64_t p) {
        const uint64_t i = keys[p] >> 32, j = keys[p] & 0xffffffffu;
        result.pairs[2 * p] = int64_t(i);
        result.pairs[2 * p + 1] = int64_t(j);
        result.distances[p] = uint8_t(kernels::hamming<W>(codes + i * W, codes + j * W));
      },
      1 << 16);
  return result;
}

}  // namespace

HammingPairsResult hamming_pairs_cpu(const uint64_t* codes, int64_t n, int words, int max_distance, int num_threads,
                                     HammingPairsMethod method) {
  check_hamming_args(words, max_distance);
  if (n < 0) throw std::invalid_argument("n must be >= 0");
  if (n >= (int64_t(1) << 32)) throw std::invalid_argument("hamming_pairs supports fewer than 2**32 codes");
  return words == 1 ? pairs_of<1>(codes, n, max_distance, num_threads, method)
                    : pairs_of<4>(codes, n, max_distance, num_threads, method);
}

}  // namespace mmcurate
