// Exact Hamming search over 64-bit codes (pHash, dHash, ...) and 256-bit codes (PDQ): the radius self-join,
// the radius search of queries against a database (with dihedral variants) and top-k.
//
// Layout: a code is `words` uint64 in a row (words 1 or 4), bit b in bit b % 64 of word b / 64; n codes are
// n such rows back to back. Distances fit uint8: max_distance is 0..64 for 64-bit codes, 0..255 for 256-bit.
//
// Contracts shared by the CPU and CUDA implementations, so their outputs compare with ==:
//  * pairs: every (i, j) with i < j and popcount(codes[i] ^ codes[j]) <= max_distance, exactly once,
//    sorted by (i, j); distances[p] is the distance of pair p.
//  * knn: per query, the k database entries with the smallest (distance, index), ascending; a query with
//    fewer than k candidates is padded with distance -1 and index -1 (the faiss convention).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mmcurate {

enum class HammingPairsMethod { kAuto, kMultiIndex, kBruteForce };

// Throws std::invalid_argument unless words is 1 or 4 and 0 <= max_distance <= the limit above.
void check_hamming_args(int words, int max_distance);

// How the self-join splits the code's bits: substring t covers bits [offset[t], offset[t] + width[t]) and is
// searched within radius[t] (radius -1: substring not probed). sum(radius[t] + 1) == max_distance + 1, so
// by the pigeonhole principle every pair within max_distance agrees within radius[t] on some substring t.
struct HammingJoinPlan {
  HammingPairsMethod method = HammingPairsMethod::kBruteForce;
  std::vector<int> offset, width, radius;
  double estimated_seconds = 0.0;  // cost-model estimate (single thread), for logs and benchmarks
  std::string describe() const;
};

// The plan hamming_pairs_cpu would use for n distinct codes of `words` words (uniform-code cost model).
HammingJoinPlan plan_hamming_join(int64_t n_unique, int max_distance,
                                  HammingPairsMethod method = HammingPairsMethod::kAuto, int words = 1);

struct HammingPairsResult {
  std::vector<int64_t> pairs;     // row-major [m, 2]
  std::vector<uint8_t> distances;  // [m]
  HammingJoinPlan plan;           // what was run
  int64_t n_unique = 0;           // distinct codes after collapsing duplicates
};

HammingPairsResult hamming_pairs_cpu(const uint64_t* codes, int64_t n, int words, int max_distance, int num_threads,
                                     HammingPairsMethod method = HammingPairsMethod::kAuto);

// Query-vs-database radius search: every (q, j) with distance(q, database[j]) <= max_distance, sorted by
// (q, j), as pairs [m, 2] and distances [m]. A query is `variants` codes in a row (1, or 8 for the dihedral
// group of a PDQ hash): its distance to a code is the minimum over its variants. A tiled brute force or
// multi-index hashing over the database, chosen by the self-join's cost model.
struct HammingRangeResult {
  std::vector<int64_t> pairs;
  std::vector<uint8_t> distances;
  HammingJoinPlan plan;  // what was run
};
HammingRangeResult hamming_range_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq,
                                     int words, int variants, int max_distance, int num_threads,
                                     HammingPairsMethod method = HammingPairsMethod::kAuto);

// The plan hamming_range_cpu would use for n database codes searched by query_codes codes (nq * variants).
// query_codes 0: a HammingRangeIndex searched many times, whose build is not costed (it is paid once) and whose
// substrings are narrower (at most n buckets each), so that its memory stays O(n) per substring.
HammingJoinPlan plan_hamming_range(int64_t n, int64_t query_codes, int max_distance,
                                   HammingPairsMethod method = HammingPairsMethod::kAuto, int words = 1);

// A database indexed once for many radius searches within max_distance (hamming_range_cpu is one build and one
// search): the substring buckets of multi-index hashing hold database ids only (4 bytes per code per substring,
// plus 4 bytes per bucket), and candidates are verified against the database rows, which the caller keeps
// alive and unchanged. Built for one search (query_codes > 0), it indexes one substring at a time during the
// search, with the codes copied in bucket order for contiguous scans (faster, and memory for one substring).
// search() is const and thread-safe; its results are hamming_range_cpu's.
class HammingRangeIndex {
 public:
  // query_codes: codes per search when the index serves one search (its build then counts in the plan), 0 when
  // it serves many.
  HammingRangeIndex(const uint64_t* database, int64_t n, int words, int max_distance, int num_threads,
                    HammingPairsMethod method = HammingPairsMethod::kAuto, int64_t query_codes = 0);
  HammingRangeResult search(const uint64_t* queries, int64_t nq, int variants, int num_threads) const;

  const HammingJoinPlan& plan() const { return plan_; }
  int64_t size() const { return n_; }
  int words() const { return words_; }
  int max_distance() const { return max_distance_; }
  int64_t memory_bytes() const;  // what the index adds to the database

  struct Substring {
    std::vector<uint32_t> begin;  // bucket b holds id[begin[b] .. begin[b + 1])
    std::vector<uint32_t> id;     // database ids in bucket order
    std::vector<uint64_t> code;   // their codes in bucket order: only while a one-search index probes it
  };

 private:
  const uint64_t* database_;
  int64_t n_;
  int words_, max_distance_;
  HammingJoinPlan plan_;
  // One per plan substring (empty where its radius is -1) when kept; none for brute force or one search.
  std::vector<Substring> substrings_;
};

// Top-k of each query (`variants` codes in a row, as above) over `database`. With exclude_self, query q is
// database entry q (queries == database, nq == n, variants == 1) and never its own neighbour. Writes
// out_distances/out_indices, both [nq, k] row-major.
void hamming_knn_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int words, int variants,
                     int k, bool exclude_self, int num_threads, int32_t* out_distances, int64_t* out_indices);

}  // namespace mmcurate
