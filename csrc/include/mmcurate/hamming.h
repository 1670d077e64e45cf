// Exact Hamming search over 64-bit codes (perceptual hashes): the radius self-join and top-k.
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

// How the self-join splits the 64 bits: substring t covers bits [offset[t], offset[t] + width[t]) and is
// searched within radius[t] (radius -1: substring not probed). sum(radius[t] + 1) == max_distance + 1, so
// by the pigeonhole principle every pair within max_distance agrees within radius[t] on some substring t.
struct HammingJoinPlan {
  HammingPairsMethod method = HammingPairsMethod::kBruteForce;
  std::vector<int> offset, width, radius;
  double estimated_seconds = 0.0;  // cost-model estimate (single thread), for logs and benchmarks
  std::string describe() const;
};

// The plan hamming_pairs_cpu would use for n distinct codes (uniform-code cost model).
HammingJoinPlan plan_hamming_join(int64_t n_unique, int max_distance,
                                  HammingPairsMethod method = HammingPairsMethod::kAuto);

struct HammingPairsResult {
  std::vector<int64_t> pairs;     // row-major [m, 2]
  std::vector<uint8_t> distances;  // [m]
  HammingJoinPlan plan;           // what was run
  int64_t n_unique = 0;           // distinct codes after collapsing duplicates
};

// Throws std::invalid_argument for max_distance outside 0..64.
HammingPairsResult hamming_pairs_cpu(const uint64_t* codes, int64_t n, int max_distance, int num_threads,
                                     HammingPairsMethod method = HammingPairsMethod::kAuto);

// Top-k of each query over `database`. With exclude_self, query q is database entry q (queries == database,
// nq == n) and never its own neighbour. Writes out_distances/out_indices, both [nq, k] row-major.
void hamming_knn_cpu(const uint64_t* database, int64_t n, const uint64_t* queries, int64_t nq, int k, bool exclude_self,
                     int num_threads, int32_t* out_distances, int64_t* out_indices);

}  // namespace mmcurate
