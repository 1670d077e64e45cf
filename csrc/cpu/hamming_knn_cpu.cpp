// Exact Hamming k-nearest neighbours: a blocked brute force with a counting selection per query.
//
// Distances take only 64W + 1 values, so instead of a heap each query keeps an append-only buffer of
// candidates strictly better than its current k-th distance; when the buffer fills, a histogram
// finds the new k-th distance and the buffer is compacted to k. The database is scanned in index order,
// so among equal distances the earlier (smaller) index wins without any comparison of indices.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/hamming_scan.h"
#include "mmcurate/hamming.h"
#include "mmcurate/parallel.h"

namespace mmcurate {
namespace {

class TopKByDistance {
 public:
  static constexpr int kMaxDistance = 256;  // 256-bit codes

  explicit TopKByDistance(int k, int bits) : k_(k), capacity_(k + std::max(k, 256)), bits_(bits) {
    dist_.reserve(capacity_);
    index_.reserve(capacity_);
  }

  void reset() {
    dist_.clear();
    index_.clear();
    bound_ = bits_ + 1;
  }

  // Candidates must arrive in increasing index order.
  int bound() const { return bound_; }  // only distances < bound() can still enter the top k
  void push(int d, int64_t index) {
    dist_.push_back(uint16_t(d));
    index_.push_back(index);
    if (int(dist_.size()) == capacity_) compact();
  }

  // Writes the k best as (distance, index) ascending, padded with -1.
  void finish(int32_t* out_dist, int64_t* out_index) {
    if (int(dist_.size()) > k_) compact();
    int count[kMaxDistance + 2] = {0};
    for (uint16_t d : dist_) ++count[d + 1];
    for (int d = 0; d <= bits_; ++d) count[d + 1] += count[d];
    const int m = int(dist_.size());
    for (int p = 0; p < m; ++p) {  // stable counting sort keeps index order within a distance
      const int slot = count[dist_[p]]++;
      out_dist[slot] = dist_[p];
      out_index[slot] = index_[p];
    }
    for (int p = m; p < k_; ++p) {
      out_dist[p] = -1;
      out_index[p] = -1;
    }
  }

 private:
  void compact() {
    int hist[kMaxDistance + 1] = {0};
    for (uint16_t d : dist_) ++hist[d];
    int kth = 0, below = 0;  // below: candidates with distance < kth
    while (below + hist[kth] < k_) below += hist[kth++];
    int ties_left = k_ - below;  // how many at distance kth survive: the earliest ones
    size_t w = 0;
    for (size_t p = 0; p < dist_.size(); ++p) {
      const int d = dist_[p];
      if (d < kth || (d == kth && ties_left-- > 0)) {
        dist_[w] = dist_[p];
        index_[w] = index_[p];
        ++w;
      }
    }
    dist_.resize(w);
    index_.resize(w);
    bound_ = kth;  // a later candidate at distance kth has a larger index, so it loses the tie
  }

  int k_, capacity_, bits_, bound_ = bits_ + 1;
  std::vector<uint16_t> dist_;
  std::vector<int64_t> index_;
};

template <int W, int V>
void knn(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int k, bool exclude_self,
         int num_threads, int32_t* out_distances, int64_t* out_indices) {
  constexpr int64_t kQueries = 16, kColumns = 2048 / W;  // 16 KiB database tile reused by 16 queries from L1
  const int64_t tiles = (nq + kQueries - 1) / kQueries;
  parallel_for(tiles, num_threads, [&](int64_t tile) {
    const int64_t q0 = tile * kQueries, q1 = std::min(nq, q0 + kQueries);
    std::vector<TopKByDistance> top(size_t(q1 - q0), TopKByDistance(k, 64 * W));
    for (int64_t j0 = 0; j0 < n; j0 += kColumns) {
      const int64_t j1 = std::min(n, j0 + kColumns);
      for (int64_t q = q0; q < q1; ++q) {
        TopKByDistance& t = top[q - q0];
        const int64_t self = exclude_self ? q : -1;
        cpu::scan_below<W, V>(
            database, j0, j1, queries + q * V * W, [&t] { return t.bound(); },
            [&t, self](int64_t j, int d) {
              if (j != self) t.push(d, j);
            });
      }
    }
    for (int64_t q = q0; q < q1; ++q) top[q - q0].finish(out_distances + q * k, out_indices + q * k);
  });
}

}  // namespace

void hamming_knn_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int words, int variants,
                     int k, bool exclude_self, int num_threads, int32_t* out_distances, int64_t* out_indices) {
  check_hamming_args(words, 0);
  if (k <= 0) throw std::invalid_argument("k must be >= 1, got " + std::to_string(k));
  if (n < 0 || nq < 0) throw std::invalid_argument("sizes must be >= 0");
  if (variants != 1 && variants != 8) throw std::invalid_argument("a query has 1 or 8 (dihedral) variants");
  if (exclude_self && (nq != n || variants != 1)) throw std::invalid_argument("exclude_self needs queries == database");
  auto run = [&](auto kernel) {
    kernel(database, n, queries, nq, k, exclude_self, num_threads, out_distances, out_indices);
  };
  if (words == 1)
    variants == 1 ? run(knn<1, 1>) : run(knn<1, 8>);
  else
    variants == 1 ? run(knn<4, 1>) : run(knn<4, 8>);
}

}  // namespace mmcurate
