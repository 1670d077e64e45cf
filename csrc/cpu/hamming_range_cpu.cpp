// Query-vs-database Hamming radius search, with optional dihedral variants per query: a tiled brute force,
// or multi-index hashing over the database (hamming_plan_cpu.cpp picks). HammingRangeIndex builds the
// substring buckets once (ids only: a persistent index of millions of codes must not copy them per
// substring) and serves any number of searches; hamming_range_cpu is one build and one search. Both methods
// gather (q, j) keys per query tile; one sort + unique per tile dedups the candidates found through several
// substrings or variants and restores (q, j) order, and the distance is the minimum over the query's
// variants, recomputed once.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/hamming_index.h"
#include "cpu/hamming_scan.h"
#include "mmcurate/hamming.h"
#include "mmcurate/parallel.h"

namespace mmcurate {
namespace {

using TileKeys = std::vector<std::vector<uint64_t>>;  // (q - q0) << 32 | j, per tile of queries

template <int W, int V>
void brute_force(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int64_t tile_size, int r,
                 int num_threads, TileKeys& found) {
  constexpr int64_t kColumns = 4096 / W;  // a 32 KiB database tile reused by the query tile
  parallel_for(int64_t(found.size()), num_threads, [&](int64_t tile) {
    const int64_t q0 = tile * tile_size, q1 = std::min(nq, q0 + tile_size);
    auto& out = found[tile];
    for (int64_t j0 = 0; j0 < n; j0 += kColumns) {
      const int64_t j1 = std::min(n, j0 + kColumns);
      for (int64_t q = q0; q < q1; ++q)
        cpu::scan_below<W, V>(
            database, j0, j1, queries + q * V * W, [r] { return r + 1; },
            [&out, q, q0](int64_t j, int) { out.push_back(uint64_t(q - q0) << 32 | uint64_t(j)); });
    }
  });
}

// with_codes: also the codes in bucket order, so that a bucket is scanned contiguously (AVX2) instead of read
// row by row through the ids: 8 * W bytes per code more, worth it for one search, not for an index kept.
template <int W>
HammingRangeIndex::Substring build_substring(const uint64_t* code, int64_t n, int offset, int width, bool with_codes) {
  HammingRangeIndex::Substring s;
  s.begin.assign((size_t(1) << width) + 1, 0);
  for (int64_t u = 0; u < n; ++u) ++s.begin[kernels::bit_field(&code[u * W], offset, width) + 1];
  for (size_t b = 0; b + 1 < s.begin.size(); ++b) s.begin[b + 1] += s.begin[b];
  std::vector<uint32_t> fill(s.begin.begin(), s.begin.end() - 1);
  s.id.resize(size_t(n));
  if (with_codes) s.code.resize(size_t(n) * W);
  for (int64_t u = 0; u < n; ++u) {
    const uint32_t slot = fill[kernels::bit_field(&code[u * W], offset, width)]++;
    s.id[slot] = uint32_t(u);
    if (with_codes) std::copy_n(&code[u * W], W, &s.code[size_t(slot) * W]);
  }
  return s;
}

// Each variant probes the buckets of substring t within its radius of the variant's own key: a code within r of
// the variant agrees with it within radius[t] on some substring t (pigeonhole), so some substring finds it.
template <int W, int V>
void probe_substring(const uint64_t* database, const HammingRangeIndex::Substring& s, const HammingJoinPlan& plan,
                     size_t t, const uint64_t* queries, int64_t nq, int64_t tile_size, int r, int num_threads,
                     TileKeys& found) {
  const int width = plan.width[t], offset = plan.offset[t];
  std::vector<uint32_t> masks = cpu::neighbour_masks(width, plan.radius[t]);
  masks.insert(masks.begin(), 0u);  // the query's own bucket
  parallel_for(int64_t(found.size()), num_threads, [&](int64_t tile) {
    const int64_t q0 = tile * tile_size, q1 = std::min(nq, q0 + tile_size);
    auto& out = found[tile];
    const uint32_t* id = s.id.data();
    for (int64_t q = q0; q < q1; ++q)
      for (int v = 0; v < V; ++v) {
        const uint64_t* query = queries + (q * V + v) * W;
        const uint64_t key = kernels::bit_field(query, offset, width);
        for (uint32_t mask : masks) {
          const uint32_t begin = s.begin[key ^ mask], end = s.begin[(key ^ mask) + 1];
          if (!s.code.empty()) {
            cpu::scan_below<W>(
                s.code.data(), begin, end, query, [r] { return r + 1; },
                [&](int64_t p, int) { out.push_back(uint64_t(q - q0) << 32 | id[p]); });
            continue;
          }
          for (uint32_t p = begin; p < end; ++p) {
            if (p + 4 < end) __builtin_prefetch(database + size_t(id[p + 4]) * W);  // candidates are random rows
            if (kernels::hamming<W>(query, database + size_t(id[p]) * W) <= r)
              out.push_back(uint64_t(q - q0) << 32 | id[p]);
          }
        }
      }
  });
}

template <int W, int V>
HammingRangeResult range_search(const uint64_t* database, const std::vector<HammingRangeIndex::Substring>& substrings,
                                int64_t n, const uint64_t* queries, int64_t nq, const HammingJoinPlan& plan, int r,
                                int num_threads) {
  HammingRangeResult result;
  result.plan = plan;
  const bool mih = plan.method == HammingPairsMethod::kMultiIndex;
  // Brute force: 16 queries share an L1 database tile. Multi-index: no shared tile, so tiles only need to be
  // many enough for the threads (a batch of 256 queries in one tile would run on one core), at most 256.
  const int64_t tile_size = mih ? std::clamp<int64_t>(nq / 64, 1, 256) : 16;
  const int64_t tiles = (nq + tile_size - 1) / tile_size;
  TileKeys found(tiles);
  if (!mih) {
    brute_force<W, V>(database, n, queries, nq, tile_size, r, num_threads, found);
  } else {
    for (size_t t = 0; t < plan.width.size(); ++t) {
      if (plan.radius[t] < 0) continue;
      if (!substrings.empty()) {  // a kept index
        probe_substring<W, V>(database, substrings[t], plan, t, queries, nq, tile_size, r, num_threads, found);
        continue;
      }
      // one search: one substring at a time, with its codes in bucket order (memory: one substring's worth)
      const auto s = build_substring<W>(database, n, plan.offset[t], plan.width[t], true);
      probe_substring<W, V>(database, s, plan, t, queries, nq, tile_size, r, num_threads, found);
    }
  }

  parallel_for(tiles, num_threads, [&](int64_t t) {
    std::sort(found[t].begin(), found[t].end());
    found[t].erase(std::unique(found[t].begin(), found[t].end()), found[t].end());
  });
  std::vector<int64_t> offset(tiles + 1, 0);
  for (int64_t t = 0; t < tiles; ++t) offset[t + 1] = offset[t] + int64_t(found[t].size());
  result.pairs.resize(2 * offset[tiles]);
  result.distances.resize(offset[tiles]);
  parallel_for(tiles, num_threads, [&](int64_t t) {
    for (size_t p = 0; p < found[t].size(); ++p) {
      const int64_t q = t * tile_size + int64_t(found[t][p] >> 32), j = int64_t(found[t][p] & 0xffffffffu);
      const int64_t slot = offset[t] + int64_t(p);
      result.pairs[2 * slot] = q;
      result.pairs[2 * slot + 1] = j;
      result.distances[slot] = uint8_t(cpu::variant_distance<W, V>(queries + q * V * W, database + j * W));
    }
  });
  return result;
}

}  // namespace

HammingRangeIndex::HammingRangeIndex(const uint64_t* database, int64_t n, int words, int max_distance, int num_threads,
                                     HammingPairsMethod method, int64_t query_codes)
    : database_(database), n_(n), words_(words), max_distance_(max_distance) {
  check_hamming_args(words, max_distance);
  if (n < 0) throw std::invalid_argument("sizes must be >= 0");
  if (n >= (int64_t(1) << 32)) throw std::invalid_argument("hamming_range supports fewer than 2**32 codes");
  plan_ = plan_hamming_range(n, query_codes, max_distance, method, words);
  // Served once (query_codes > 0): search() builds each substring in turn, with its codes. Kept: all now, ids only.
  if (plan_.method != HammingPairsMethod::kMultiIndex || query_codes > 0) return;
  substrings_.resize(plan_.width.size());
  parallel_for(int64_t(substrings_.size()), num_threads, [&](int64_t t) {
    if (plan_.radius[t] < 0) return;
    substrings_[t] = words == 1 ? build_substring<1>(database, n, plan_.offset[t], plan_.width[t], false)
                                : build_substring<4>(database, n, plan_.offset[t], plan_.width[t], false);
  });
}

HammingRangeResult HammingRangeIndex::search(const uint64_t* queries, int64_t nq, int variants, int num_threads) const {
  if (nq < 0) throw std::invalid_argument("sizes must be >= 0");
  if (variants != 1 && variants != 8) throw std::invalid_argument("a query has 1 or 8 (dihedral) variants");
  auto run = [&](auto search) {
    return search(database_, substrings_, n_, queries, nq, plan_, max_distance_, num_threads);
  };
  if (words_ == 1) return variants == 1 ? run(range_search<1, 1>) : run(range_search<1, 8>);
  return variants == 1 ? run(range_search<4, 1>) : run(range_search<4, 8>);
}

int64_t HammingRangeIndex::memory_bytes() const {
  int64_t bytes = 0;
  for (const auto& s : substrings_) bytes += int64_t(4 * (s.begin.size() + s.id.size()) + 8 * s.code.size());
  return bytes;
}

HammingRangeResult hamming_range_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq,
                                     int words, int variants, int max_distance, int num_threads,
                                     HammingPairsMethod method) {
  check_hamming_args(words, max_distance);
  if (variants != 1 && variants != 8) throw std::invalid_argument("a query has 1 or 8 (dihedral) variants");
  const HammingRangeIndex index(database, n, words, max_distance, num_threads, method,
                                std::max<int64_t>(nq * variants, 1));
  return index.search(queries, nq, variants, num_threads);
}

}  // namespace mmcurate
