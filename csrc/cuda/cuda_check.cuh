// Error checking for CUDA runtime calls and kernel launches: every failure becomes a std::runtime_error
// naming the call, the file:line and CUDA's own description, so a Python user sees what failed and where.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

inline cudaStream_t to_cuda(StreamHandle s) { return reinterpret_cast<cudaStream_t>(s); }

inline int ceil_div(int64_t a, int64_t b) { return int((a + b - 1) / b); }

}  // namespace mmcurate::cuda

#define MMCURATE_CUDA_CHECK(expr)                                                                                   \
  do {                                                                                                              \
    cudaError_t mmcurate_err_ = (expr);                                                                             \
    if (mmcurate_err_ != cudaSuccess) ::mmcurate::cuda::throw_cuda_error(mmcurate_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: catches bad configurations at once (execution errors surface at the next sync).
#define MMCURATE_CUDA_CHECK_LAUNCH(name)                                                        \
  do {                                                                                          \
    cudaError_t mmcurate_err_ = cudaGetLastError();                                             \
    if (mmcurate_err_ != cudaSuccess)                                                           \
      ::mmcurate::cuda::throw_cuda_error(mmcurate_err_, "launch of " name, __FILE__, __LINE__); \
  } while (0)
