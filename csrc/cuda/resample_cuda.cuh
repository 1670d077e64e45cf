// The GPU twin of the CPU two-pass resampler (csrc/cpu/resample_engine.h), shared by resize and hashes.
#pragma once
#include <vector>

#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {

// One resize of one image into a device buffer: Pillow's resize((out_w, out_h), filter) restricted to
// `window`, written packed (window.height x window.width x C). to_gray converts the source to Pillow's L
// first (the result has 1 channel), as gray_resize_u8 does; otherwise 2- and 4-channel sources are
// filtered premultiplied by alpha (except NEAREST), as resize_u8 does.
struct ResampleJob {
  DeviceImageRef src;
  int out_h = 0;
  int out_w = 0;
  ResizeWindow window;
  bool to_gray = false;
  uint8_t* dst = nullptr;
};

// Runs every job with the same filter on `stream`. Coefficients are computed on the host with the CPU's
// functions (kernels/resample.h) and shared between jobs of the same geometry.
void resample_jobs(const std::vector<ResampleJob>& jobs, ResampleFilter filter, StreamHandle stream);

}  // namespace mmcurate::cuda
