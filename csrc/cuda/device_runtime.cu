// CUDA runtime plumbing behind cuda_api.h: device discovery, streams, the DeviceBuffer RAII, copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "cuda/cuda_check.cuh"
#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  std::string msg = std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in " +
                    what + " at " + file + ":" + std::to_string(line);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    msg = "no CUDA device is available: " + msg + " (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
  } else if (err == cudaErrorMemoryAllocation) {
    msg = "GPU out of memory: " + msg;
  }
  throw std::runtime_error(msg);
}

int device_count() noexcept {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int require_device() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("no CUDA device is available (cudaGetDeviceCount: ") + cudaGetErrorName(err) +
                             ": " + cudaGetErrorString(err) +
                             "); check nvidia-smi and CUDA_VISIBLE_DEVICES, or use device='cpu'");
  }
  if (n == 0) {
    throw std::runtime_error(
        "no CUDA device is available (0 devices visible); check CUDA_VISIBLE_DEVICES, "
        "or use device='cpu'");
  }
  int dev = 0;
  MMCURATE_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attr{};
  cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
  return -1;
}

void set_device(int device) { MMCURATE_CUDA_CHECK(cudaSetDevice(device)); }

void stream_synchronize(StreamHandle stream) { MMCURATE_CUDA_CHECK(cudaStreamSynchronize(to_cuda(stream))); }

void stream_wait(StreamHandle waiter, StreamHandle producer) {
  if (waiter == producer) return;
  cudaEvent_t ev;
  MMCURATE_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t err = cudaEventRecord(ev, to_cuda(producer));
  if (err == cudaSuccess) err = cudaStreamWaitEvent(to_cuda(waiter), ev, 0);
  cudaEventDestroy(ev);  // safe: destruction is deferred until the event completes
  MMCURATE_CUDA_CHECK(err);
}

StreamScope::StreamScope(bool has_caller_stream, StreamHandle caller_stream) {
  if (has_caller_stream) {
    stream_ = caller_stream;
    return;
  }
  cudaStream_t s;
  MMCURATE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = reinterpret_cast<StreamHandle>(s);
  owned_ = true;
}

StreamScope::~StreamScope() {
  if (owned_) {
    // Results already handed back were synchronised by the op; this also covers an op that threw midway.
    cudaStreamSynchronize(to_cuda(stream_));
    cudaStreamDestroy(to_cuda(stream_));
  }
}

void StreamScope::synchronize() const { stream_synchronize(stream_); }

DeviceBuffer::DeviceBuffer(size_t bytes) {
  MMCURATE_CUDA_CHECK(cudaGetDevice(&device_));
  if (bytes == 0) return;
  MMCURATE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);  // never throw from a destructor; a failure here means the context is gone
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      device_(std::exchange(other.device_, -1)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

void copy_to_device(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  MMCURATE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, to_cuda(stream)));
}

void copy_to_host(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  MMCURATE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, to_cuda(stream)));
  MMCURATE_CUDA_CHECK(cudaStreamSynchronize(to_cuda(stream)));
}

void copy_on_device(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  MMCURATE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, to_cuda(stream)));
}

namespace {

constexpr int kMaxGatherDims = 6;

struct GatherLayout {
  int ndim;
  int itemsize;
  int64_t shape[kMaxGatherDims];
  int64_t strides[kMaxGatherDims];
};

__global__ void gather_strided_kernel(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, int64_t count,
                                      GatherLayout layout) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = e, offset = 0;
    for (int d = layout.ndim - 1; d >= 0; --d) {
      int64_t idx = rem % layout.shape[d];
      rem /= layout.shape[d];
      offset += idx * layout.strides[d];
    }
    for (int b = 0; b < layout.itemsize; ++b) dst[e * layout.itemsize + b] = src[offset + b];
  }
}

}  // namespace

void gather_strided(void* dst, const void* src, int ndim, const int64_t* shape, const int64_t* byte_strides,
                    int itemsize, StreamHandle stream) {
  if (ndim < 0 || ndim > kMaxGatherDims) throw std::invalid_argument("gather_strided: at most 6 dimensions");
  GatherLayout layout{};
  layout.ndim = ndim;
  layout.itemsize = itemsize;
  int64_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    layout.shape[d] = shape[d];
    layout.strides[d] = byte_strides[d];
    count *= shape[d];
  }
  if (count == 0) return;
  int blocks = int(std::min<int64_t>((count + 255) / 256, 65535));
  gather_strided_kernel<<<blocks, 256, 0, to_cuda(stream)>>>(static_cast<uint8_t*>(dst),
                                                             static_cast<const uint8_t*>(src), count, layout);
  MMCURATE_CUDA_CHECK_LAUNCH("gather_strided_kernel");
}

}  // namespace mmcurate::cuda
