// Query-vs-database Hamming radius search, with optional dihedral variants per query: a tiled brute force.
// Each query tile writes its own (q, j) keys in one chunk; chunks concatenate in query order, and one sort
// per chunk restores (q, j) order across the column tiles.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/hamming_scan.h"
#include "mmcurate/hamming.h"
#include "mmcurate/parallel.h"

namespace mmcurate {
namespace {

template <int W, int V>
HammingRangeResult range_search(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int r,
                                int num_threads) {
  constexpr int64_t kQueries = 16, kColumns = 4096 / W;  // a 32 KiB database tile reused by 16 queries
  const int64_t tiles = (nq + kQueries - 1) / kQueries;
  std::vector<std::vector<uint64_t>> found(tiles);  // (q - q0) << 32 | j, per query tile
  parallel_for(tiles, num_threads, [&](int64_t tile) {
    const int64_t q0 = tile * kQueries, q1 = std::min(nq, q0 + kQueries);
    auto& out = found[tile];
    for (int64_t j0 = 0; j0 < n; j0 += kColumns) {
      const int64_t j1 = std::min(n, j0 + kColumns);
      for (int64_t q = q0; q < q1; ++q)
        cpu::scan_below<W, V>(
            database, j0, j1, queries + q * V * W, [r] { return r + 1; },
            [&out, q, q0](int64_t j, int) { out.push_back(uint64_t(q - q0) << 32 | uint64_t(j)); });
    }
    std::sort(out.begin(), out.end());
  });
  std::vector<int64_t> offset(tiles + 1, 0);
  for (int64_t t = 0; t < tiles; ++t) offset[t + 1] = offset[t] + int64_t(found[t].size());
  HammingRangeResult result;
  result.pairs.resize(2 * offset[tiles]);
  result.distances.resize(offset[tiles]);
  parallel_for(tiles, num_threads, [&](int64_t t) {
    for (size_t p = 0; p < found[t].size(); ++p) {
      const int64_t q = t * kQueries + int64_t(found[t][p] >> 32), j = int64_t(found[t][p] & 0xffffffffu);
      const int64_t slot = offset[t] + int64_t(p);
      result.pairs[2 * slot] = q;
      result.pairs[2 * slot + 1] = j;
      result.distances[slot] = uint8_t(cpu::variant_distance<W, V>(queries + q * V * W, database + j * W));
    }
  });
  return result;
}

}  // namespace

HammingRangeResult hamming_range_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq,
                                     int words, int variants, int max_distance, int num_threads) {
  check_hamming_args(words, max_distance);
  if (n < 0 || nq < 0) throw std::invalid_argument("sizes must be >= 0");
  if (n >= (int64_t(1) << 32)) throw std::invalid_argument("hamming_range supports fewer than 2**32 codes");
  if (variants != 1 && variants != 8) throw std::invalid_argument("a query has 1 or 8 (dihedral) variants");
  auto run = [&](auto search) { return search(database, n, queries, nq, max_distance, num_threads); };
  if (words == 1) return variants == 1 ? run(range_search<1, 1>) : run(range_search<1, 8>);
  return variants == 1 ? run(range_search<4, 1>) : run(range_search<4, 8>);
}

}  // namespace mmcurate
