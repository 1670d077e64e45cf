// PDQ-256 on the GPU, the CPU kernel's twin: one block per image, one lane per thread through the same
// kernels/pdq.h helpers (each row, column or coefficient sees the CPU's sequence of float operations;
// --fmad=false keeps products and sums separately rounded). The DCT matrix comes from the host
// (pdq_dct_matrix), because device cos() is not glibc's.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "kernels/pdq.h"
#include "mmcurate/cuda_api.h"
#include "mmcurate/pdq.h"

namespace mmcurate::cuda {
namespace {

using namespace kernels;

struct PdqJob {
  DeviceImageRef im;
  float* full1;  // H x W
  float* full2;  // H x W
};

constexpr int kPdqThreads = 256;

__global__ void pdq_kernel(const PdqJob* __restrict__ jobs, const float* __restrict__ D, int variants,
                           uint8_t* __restrict__ codes, int32_t* __restrict__ quality) {
  __shared__ float A[kPdqSide * kPdqSide];
  __shared__ float T[kPdqDct * kPdqSide];
  __shared__ float B[kPdqDct * kPdqDct];
  const PdqJob job = jobs[blockIdx.x];
  const int h = job.im.height, w = job.im.width, c = job.im.channels, tid = threadIdx.x;
  uint8_t* out = codes + size_t(blockIdx.x) * variants * kPdqBytes;
  if (h < kPdqMinSide || w < kPdqMinSide) {
    for (int e = tid; e < variants * kPdqBytes; e += blockDim.x) out[e] = 0;
    if (tid == 0) quality[blockIdx.x] = 0;
    return;
  }
  const int64_t n = int64_t(h) * w;
  for (int64_t e = tid; e < n; e += blockDim.x) {
    const uint8_t* p = job.im.data + e * c;
    job.full1[e] = c >= 3 ? pdq_luma(p[0], p[1], p[2]) : pdq_luma(p[0], p[0], p[0]);
  }
  __syncthreads();
  if (h == kPdqSide && w == kPdqSide && variants == 1) {
    // pdqhash.compute takes a 64 x 64 image unfiltered (as the CPU twin).
    for (int e = tid; e < kPdqSide * kPdqSide; e += blockDim.x) A[e] = job.full1[e];
  } else {
    const int wr = pdq_window(w), wc = pdq_window(h);
    float sum;
    for (int r = tid; r < h; r += blockDim.x)
      pdq_box_lanes(job.full1 + int64_t(r) * w, job.full2 + int64_t(r) * w, w, 1, 1, 0, wr, &sum);
    __syncthreads();
    for (int x = tid; x < w; x += blockDim.x) pdq_box_lanes(job.full2 + x, job.full1 + x, h, w, 1, 0, wc, &sum);
    __syncthreads();
    for (int r = tid; r < h; r += blockDim.x)
      pdq_box_lanes(job.full1 + int64_t(r) * w, job.full2 + int64_t(r) * w, w, 1, 1, 0, wr, &sum);
    __syncthreads();
    // The last column pass only on the 64 columns the decimation reads (each once: narrow images repeat them).
    if (tid < kPdqSide) {
      const int x = pdq_decimate_index(tid, w);
      if (tid == 0 || pdq_decimate_index(tid - 1, w) != x)
        pdq_box_lanes(job.full2 + x, job.full1 + x, h, w, 1, 0, wc, &sum);
    }
    __syncthreads();
    for (int e = tid; e < kPdqSide * kPdqSide; e += blockDim.x)
      A[e] = job.full1[int64_t(pdq_decimate_index(e / kPdqSide, h)) * w + pdq_decimate_index(e % kPdqSide, w)];
  }
  __syncthreads();
  for (int e = tid; e < kPdqDct * kPdqSide; e += blockDim.x)
    pdq_dct_first(D, A, e / kPdqSide, e % kPdqSide, 1, T + (e / kPdqSide) * kPdqSide);
  __syncthreads();
  for (int e = tid; e < kPdqDct * kPdqDct; e += blockDim.x)
    pdq_dct_second(D, T + (e / kPdqDct) * kPdqSide, e % kPdqDct, 1, B + (e / kPdqDct) * kPdqDct);
  __syncthreads();
  if (tid < variants) {
    float aux[kPdqDct * kPdqDct];
    pdq_dihedral(B, tid, aux);
    pdq_bits(aux, out + tid * kPdqBytes);
  } else if (tid == kPdqVariants) {
    quality[blockIdx.x] = pdq_quality(A);
  }
}

// The float planes are 8 bytes per pixel; images go in groups that stay under this budget.
constexpr size_t kPdqScratchBudget = size_t(1) << 30;

}  // namespace

void pdq_batch(const std::vector<DeviceImageRef>& images, bool dihedral, uint8_t* codes, int32_t* quality,
               StreamHandle stream) {
  const size_t n = images.size();
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i) {
    const DeviceImageRef& im = images[i];
    if (im.height < 1 || im.width < 1 || im.channels < 1 || im.channels > 4)
      throw std::invalid_argument("pdq: image " + std::to_string(i) + " is empty or has 0 or >4 channels");
  }
  cudaStream_t s = to_cuda(stream);
  const int variants = dihedral ? kPdqVariants : 1;
  const size_t stride = size_t(variants) * kPdqBytes;
  DeviceBuffer d_matrix(kPdqDct * kPdqSide * sizeof(float));
  copy_to_device(d_matrix.data(), pdq_dct_matrix(), d_matrix.size(), stream);
  DeviceBuffer d_codes(n * stride), d_quality(n * sizeof(int32_t));
  for (size_t begin = 0; begin < n;) {
    size_t end = begin, floats = 0;
    while (end < n) {
      const size_t need = 2 * size_t(images[end].height) * images[end].width;
      if (end > begin && (floats + need) * sizeof(float) > kPdqScratchBudget) break;
      floats += need;
      ++end;
    }
    DeviceBuffer scratch(floats * sizeof(float));
    std::vector<PdqJob> jobs;
    size_t at = 0;
    for (size_t i = begin; i < end; ++i) {
      const size_t px = size_t(images[i].height) * images[i].width;
      jobs.push_back(PdqJob{images[i], scratch.as<float>() + at, scratch.as<float>() + at + px});
      at += 2 * px;
    }
    DeviceBuffer d_jobs(jobs.size() * sizeof(PdqJob));
    copy_to_device(d_jobs.data(), jobs.data(), d_jobs.size(), stream);
    pdq_kernel<<<unsigned(end - begin), kPdqThreads, 0, s>>>(d_jobs.as<PdqJob>(), d_matrix.as<float>(), variants,
                                                             d_codes.as<uint8_t>() + begin * stride,
                                                             d_quality.as<int32_t>() + begin);
    MMCURATE_CUDA_CHECK_LAUNCH("pdq_kernel");
    stream_synchronize(stream);  // the scratch of this group is freed next
    begin = end;
  }
  copy_to_host(codes, d_codes.data(), n * stride, stream);
  copy_to_host(quality, d_quality.data(), n * sizeof(int32_t), stream);
}

}  // namespace mmcurate::cuda
