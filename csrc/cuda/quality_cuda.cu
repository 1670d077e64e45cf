// Image-quality signals on the GPU, the CPU kernel's twin: one block per image; each thread computes canonical
// cells with kernels/quality.h's quality_cell (the CPU's sequence of float operations; --fmad=false keeps
// products and sums separately rounded), then one thread runs quality_stats on the planes in shared memory, as
// the CPU does. The planes agree bit for bit; the statistics up to the device's log2 / sqrt in double.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "kernels/quality.h"
#include "mmcurate/cuda_api.h"
#include "mmcurate/quality.h"

namespace mmcurate::cuda {
namespace {

using namespace kernels;

constexpr int kQualityThreads = 256;

__global__ void quality_kernel(const DeviceImageRef* __restrict__ images, QualityValues* __restrict__ out) {
  __shared__ float planes[3 * kQualityCells];  // luma, rg, yb: 48 KiB, the static shared-memory limit
  const DeviceImageRef im = images[blockIdx.x];
  const int64_t row_stride = int64_t(im.width) * im.channels;
  for (int cell = threadIdx.x; cell < kQualityCells; cell += blockDim.x) {
    float m[3];
    quality_cell(im.data, row_stride, im.channels, im.height, im.width, im.channels, cell / kQualitySide,
                 cell % kQualitySide, m);
    quality_convert(m, im.channels, false, planes + cell, planes + kQualityCells + cell,
                    planes + 2 * kQualityCells + cell);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int hist[kQualityHistSize];
    float binned[kQualityCells / 4];
    out[blockIdx.x] = quality_stats(planes, planes + kQualityCells, planes + 2 * kQualityCells, hist, binned);
  }
}

}  // namespace

void quality_batch(const std::vector<DeviceImageRef>& images, QualitySignals* out, StreamHandle stream) {
  const size_t n = images.size();
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i) {
    const DeviceImageRef& im = images[i];
    if (im.height < 1 || im.width < 1 || im.channels < 1 || im.channels > 4)
      throw std::invalid_argument("image_quality: image " + std::to_string(i) + " is empty or has 0 or >4 channels");
  }
  DeviceBuffer d_images(n * sizeof(DeviceImageRef)), d_out(n * sizeof(QualityValues));
  copy_to_device(d_images.data(), images.data(), d_images.size(), stream);
  quality_kernel<<<unsigned(n), kQualityThreads, 0, to_cuda(stream)>>>(d_images.as<DeviceImageRef>(),
                                                                       d_out.as<QualityValues>());
  MMCURATE_CUDA_CHECK_LAUNCH("quality_kernel");
  std::vector<QualityValues> host(n);
  copy_to_host(host.data(), d_out.data(), d_out.size(), stream);
  for (size_t i = 0; i < n; ++i) {
    const QualityValues& v = host[i];
    out[i] = QualitySignals{v.sharpness,       v.brightness,    v.contrast, v.colourfulness,
                            v.border_fraction, v.flat_fraction, v.entropy,  v.low_information != 0};
  }
}

}  // namespace mmcurate::cuda
