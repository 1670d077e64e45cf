// Hamming search over packed binary codes on the GPU: radius all-pairs and exact top-k.
// Both reproduce the CPU contract exactly: pairs i < j sorted by (i, j) with uint8 distances; top-k ordered
// by (distance, index) with -1 padding.
#include <cuda_runtime.h>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;

template <int W>
struct Code {
  uint64_t w[W];
};

template <int W>
__device__ __forceinline__ Code<W> load_code(const uint64_t* codes, int64_t row) {
  Code<W> c;
#pragma unroll
  for (int k = 0; k < W; ++k) c.w[k] = codes[row * W + k];
  return c;
}

template <int W>
__device__ __forceinline__ int distance(const Code<W>& a, const uint64_t* b) {
  int d = 0;
#pragma unroll
  for (int k = 0; k < W; ++k) d += __popcll(a.w[k] ^ b[k]);
  return d;
}

// ------------------------------------------------------------------ radius all-pairs
constexpr int kPairRows = 256;    // rows i per block (one per thread)
constexpr int kPairCols = 1024;   // columns j per block, staged in shared memory

// Block (bx, by) compares rows [bx*256, +256) with columns [by*1024, +1024), keeping j > i. Matches are
// appended with one atomic per warp and iteration (ballot + popc), as key (i << 32 | j) and distance.
// The counter keeps counting past `capacity`, so the host learns the exact size to re-run with.
template <int W>
__global__ void pairs_kernel(const uint64_t* __restrict__ codes, int64_t n, int max_distance,
                             unsigned long long* __restrict__ out_keys, uint8_t* __restrict__ out_dist,
                             unsigned long long capacity, unsigned long long* __restrict__ counter) {
  __shared__ uint64_t tile[kPairCols * W];
  const int64_t row0 = int64_t(blockIdx.x) * kPairRows;
  const int64_t col0 = int64_t(blockIdx.y) * kPairCols;
  if (col0 + kPairCols <= row0 + 1) return;  // the whole tile lies on or below the diagonal
  const int cols = n - col0 < kPairCols ? int(n - col0) : kPairCols;
  for (int t = threadIdx.x; t < cols * W; t += blockDim.x) tile[t] = codes[col0 * W + t];
  __syncthreads();

  const int64_t i = row0 + threadIdx.x;
  const bool row_ok = i < n;
  Code<W> a = row_ok ? load_code<W>(codes, i) : Code<W>{};
  const int lane = threadIdx.x & 31;
  // Every lane runs the same trip count so the ballots see the full warp.
  for (int c = 0; c < cols; ++c) {
    const int64_t j = col0 + c;
    bool hit = false;
    int d = 0;
    if (row_ok && j > i) {
      d = distance<W>(a, &tile[c * W]);
      hit = d <= max_distance;
    }
    const unsigned ballot = __ballot_sync(kFullMask, hit);
    if (ballot == 0) continue;
    unsigned long long base = 0;
    const int leader = __ffs(ballot) - 1;
    if (lane == leader) base = atomicAdd(counter, (unsigned long long)__popc(ballot));
    base = __shfl_sync(kFullMask, base, leader);
    if (hit) {
      const unsigned long long slot = base + __popc(ballot & ((1u << lane) - 1u));
      if (slot < capacity) {
        out_keys[slot] = ((unsigned long long)i << 32) | (unsigned long long)j;
        out_dist[slot] = uint8_t(d);
      }
    }
  }
}

// ------------------------------------------------------------------ top-k by histogram selection
constexpr int kKnnThreads = 256;
constexpr int kKnnWarps = kKnnThreads / 32;

// One block per query. Pass 1 histograms the distances (64*W + 1 bins) and finds the threshold bin t:
// everything closer than t is kept, and of distance t only the `need` smallest indices. Pass 2 walks the
// codes in index order and writes each kept candidate straight to its final slot: bin base + rank within
// its bin, the rank counted across chunks (cursor), warps (per-warp counts) and lanes (match_any), which
// yields the (distance, index) order without any sort.
template <int W>
__global__ void knn_kernel(const uint64_t* __restrict__ codes, int64_t n, const uint64_t* __restrict__ queries, int k,
                           bool exclude_self, int32_t* __restrict__ out_dist, int64_t* __restrict__ out_idx) {
  constexpr int kBins = 64 * W + 1;
  __shared__ int hist[kBins];
  __shared__ long long base[kBins];
  __shared__ long long cursor[kBins];
  __shared__ int warp_counts[kKnnWarps][kBins];
  __shared__ int s_threshold;
  __shared__ long long s_need;
  __shared__ long long s_total;

  const int64_t q = blockIdx.x;
  const Code<W> a = load_code<W>(queries, q);
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) {
    hist[b] = 0;
    cursor[b] = 0;
    for (int w = 0; w < kKnnWarps; ++w) warp_counts[w][b] = 0;
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (exclude_self && j == q) continue;
    atomicAdd(&hist[distance<W>(a, codes + j * W)], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    long long cum = 0;
    int t = kBins - 1;
    long long need = 0;
    bool found = false;
    for (int b = 0; b < kBins; ++b) {
      base[b] = cum;
      if (!found && cum + hist[b] >= k) {
        t = b;
        need = k - cum;
        found = true;
      }
      cum += hist[b];
    }
    if (!found) need = hist[kBins - 1];  // fewer candidates than k: keep all of them
    s_threshold = t;
    s_need = need;
    s_total = cum;
  }
  __syncthreads();
  const int t = s_threshold;
  const long long need = s_need;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int32_t* row_dist = out_dist + q * k;
  int64_t* row_idx = out_idx + q * k;

  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    const int64_t j = c0 + threadIdx.x;
    int d = -1;
    if (j < n && !(exclude_self && j == q)) {
      d = distance<W>(a, codes + j * W);
      if (d > t) d = -1;
    }
    const unsigned peers = __match_any_sync(kFullMask, d);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    const bool leader = (__ffs(peers) - 1) == lane;
    if (d >= 0 && leader) warp_counts[warp][d] = __popc(peers);
    __syncthreads();
    if (d >= 0) {
      long long pos = cursor[d] + rank;
      for (int w = 0; w < warp; ++w) pos += warp_counts[w][d];
      if (d < t || pos < need) {
        row_dist[base[d] + pos] = d;
        row_idx[base[d] + pos] = j;
      }
    }
    __syncthreads();
    for (int b = threadIdx.x; b <= t; b += blockDim.x) {
      long long add = 0;
      for (int w = 0; w < kKnnWarps; ++w) add += warp_counts[w][b];
      cursor[b] += add;
    }
    __syncthreads();
    if (d >= 0 && leader) warp_counts[warp][d] = 0;
    __syncthreads();
  }
  for (long long p = (s_total < k ? s_total : k) + threadIdx.x; p < k; p += blockDim.x) {
    row_dist[p] = -1;
    row_idx[p] = -1;
  }
}

void check_words(int words) {
  if (words < 1 || words > 4)
    throw std::invalid_argument("hamming: codes must be 64 to 256 bits (1 to 4 uint64 words per row), got " +
                                std::to_string(words) + " words");
}

template <int W>
unsigned long long launch_pairs(const uint64_t* codes, int64_t n, int max_distance, DeviceBuffer& keys,
                                DeviceBuffer& dist, unsigned long long capacity, DeviceBuffer& counter,
                                cudaStream_t s) {
  MMCURATE_CUDA_CHECK(cudaMemsetAsync(counter.data(), 0, sizeof(unsigned long long), s));
  dim3 grid(ceil_div(n, kPairRows), ceil_div(n, kPairCols));
  if (grid.y > 65535) throw std::invalid_argument("hamming_pairs: at most 67M codes per call on the GPU");
  pairs_kernel<W><<<grid, kPairRows, 0, s>>>(codes, n, max_distance, keys.as<unsigned long long>(), dist.as<uint8_t>(),
                                             capacity, counter.as<unsigned long long>());
  MMCURATE_CUDA_CHECK_LAUNCH("pairs_kernel");
  unsigned long long found = 0;
  copy_to_host(&found, counter.data(), sizeof(found), reinterpret_cast<StreamHandle>(s));
  return found;
}

}  // namespace

void hamming_pairs(const uint64_t* codes, int64_t n, int words, int max_distance, StreamHandle stream,
                   std::vector<int64_t>* pairs_ij, std::vector<uint8_t>* distances) {
  check_words(words);
  pairs_ij->clear();
  distances->clear();
  if (n >= (int64_t(1) << 32)) throw std::invalid_argument("hamming_pairs: at most 2^32 - 1 codes");
  if (n < 2 || max_distance < 0) return;
  cudaStream_t s = to_cuda(stream);
  DeviceBuffer counter(sizeof(unsigned long long));
  // A first guess for the output size; an overflow re-runs once with the exact count.
  unsigned long long capacity = std::max<unsigned long long>(1 << 16, 4ull * n);
  for (int attempt = 0;; ++attempt) {
    DeviceBuffer keys(capacity * sizeof(unsigned long long));
    DeviceBuffer dist(capacity);
    unsigned long long found = 0;
    switch (words) {
      case 1: found = launch_pairs<1>(codes, n, max_distance, keys, dist, capacity, counter, s); break;
      case 2: found = launch_pairs<2>(codes, n, max_distance, keys, dist, capacity, counter, s); break;
      case 3: found = launch_pairs<3>(codes, n, max_distance, keys, dist, capacity, counter, s); break;
      default: found = launch_pairs<4>(codes, n, max_distance, keys, dist, capacity, counter, s); break;  // PDQ
    }
    if (found > capacity) {
      if (attempt > 0) throw std::runtime_error("hamming_pairs: output count changed between runs");
      capacity = found;
      continue;
    }
    if (found == 0) return;
    // Keys (i << 32 | j) sort into (i, j) order; only the bits that can be set take part.
    int end_bit = 32;
    while (end_bit < 64 && (uint64_t(1) << (end_bit - 32)) < uint64_t(n)) ++end_bit;
    DeviceBuffer keys_sorted(found * sizeof(unsigned long long));
    DeviceBuffer dist_sorted(found);
    size_t temp_bytes = 0;
    MMCURATE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.as<unsigned long long>(),
                                                        keys_sorted.as<unsigned long long>(), dist.as<uint8_t>(),
                                                        dist_sorted.as<uint8_t>(), (int64_t)found, 0, end_bit, s));
    DeviceBuffer temp(std::max<size_t>(temp_bytes, 1));
    MMCURATE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, keys.as<unsigned long long>(),
                                                        keys_sorted.as<unsigned long long>(), dist.as<uint8_t>(),
                                                        dist_sorted.as<uint8_t>(), (int64_t)found, 0, end_bit, s));
    std::vector<unsigned long long> host_keys(found);
    distances->resize(found);
    copy_to_host(host_keys.data(), keys_sorted.data(), found * sizeof(unsigned long long), stream);
    copy_to_host(distances->data(), dist_sorted.data(), found, stream);
    pairs_ij->resize(2 * found);
    for (size_t p = 0; p < found; ++p) {
      (*pairs_ij)[2 * p] = int64_t(host_keys[p] >> 32);
      (*pairs_ij)[2 * p + 1] = int64_t(host_keys[p] & 0xffffffffull);
    }
    return;
  }
}

void hamming_knn(const uint64_t* codes, int64_t n, const uint64_t* queries, int64_t nq, int words, int k,
                 StreamHandle stream, int32_t* out_distances, int64_t* out_indices) {
  check_words(words);
  if (k < 0) throw std::invalid_argument("hamming_knn: k must be >= 0");
  if (nq == 0 || k == 0) return;
  if (nq > 0x7fffffffLL) throw std::invalid_argument("hamming_knn: at most 2^31 - 1 queries per call");
  cudaStream_t s = to_cuda(stream);
  const bool exclude_self = queries == nullptr;
  const uint64_t* q = exclude_self ? codes : queries;
  DeviceBuffer d_dist(size_t(nq) * k * sizeof(int32_t));
  DeviceBuffer d_idx(size_t(nq) * k * sizeof(int64_t));
  switch (words) {
    case 1:
      knn_kernel<1><<<unsigned(nq), kKnnThreads, 0, s>>>(codes, n, q, k, exclude_self, d_dist.as<int32_t>(),
                                                         d_idx.as<int64_t>());
      break;
    case 2:
      knn_kernel<2><<<unsigned(nq), kKnnThreads, 0, s>>>(codes, n, q, k, exclude_self, d_dist.as<int32_t>(),
                                                         d_idx.as<int64_t>());
      break;
    case 3:
      knn_kernel<3><<<unsigned(nq), kKnnThreads, 0, s>>>(codes, n, q, k, exclude_self, d_dist.as<int32_t>(),
                                                         d_idx.as<int64_t>());
      break;
    default:  // 256-bit (PDQ)
      knn_kernel<4><<<unsigned(nq), kKnnThreads, 0, s>>>(codes, n, q, k, exclude_self, d_dist.as<int32_t>(),
                                                         d_idx.as<int64_t>());
      break;
  }
  MMCURATE_CUDA_CHECK_LAUNCH("knn_kernel");
  copy_to_host(out_distances, d_dist.data(), size_t(nq) * k * sizeof(int32_t), stream);
  copy_to_host(out_indices, d_idx.data(), size_t(nq) * k * sizeof(int64_t), stream);
}

}  // namespace mmcurate::cuda
