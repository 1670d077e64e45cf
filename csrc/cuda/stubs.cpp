// Built when CUDA is off: every GPU entry point of cuda_api.h exists and raises an error that says how to
// rebuild, so the Python module has the same symbols in every build. device_count() reports 0.
#include <stdexcept>

#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {
namespace {

[[noreturn]] void not_built() {
  throw std::runtime_error(
      "mmcurate was built without CUDA; rebuild with nvcc on PATH and MMCURATE_CUDA=1: "
      "pip install nvidia-nvjpeg && pip install -e . --no-build-isolation");
}

}  // namespace

int device_count() noexcept { return 0; }
int require_device() { not_built(); }
int pointer_device(const void*) { return -1; }
void set_device(int) { not_built(); }
void stream_synchronize(StreamHandle) { not_built(); }
void stream_wait(StreamHandle, StreamHandle) { not_built(); }

StreamScope::StreamScope(bool, StreamHandle) { not_built(); }
StreamScope::~StreamScope() = default;
void StreamScope::synchronize() const { not_built(); }

DeviceBuffer::DeviceBuffer(size_t) { not_built(); }
DeviceBuffer::~DeviceBuffer() = default;  // never holds memory in this build
DeviceBuffer::DeviceBuffer(DeviceBuffer&&) noexcept = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept = default;

void copy_to_device(void*, const void*, size_t, StreamHandle) { not_built(); }
void copy_to_host(void*, const void*, size_t, StreamHandle) { not_built(); }
void copy_on_device(void*, const void*, size_t, StreamHandle) { not_built(); }
void gather_strided(void*, const void*, int, const int64_t*, const int64_t*, int, StreamHandle) { not_built(); }

void hamming_pairs(const uint64_t*, int64_t, int, int, StreamHandle, std::vector<int64_t>*, std::vector<uint8_t>*) {
  not_built();
}
void hamming_knn(const uint64_t*, int64_t, const uint64_t*, int64_t, int, int, StreamHandle, int32_t*, int64_t*) {
  not_built();
}

void resize_batch(const std::vector<DeviceImageRef>&, ResizeMode, int, int, ResampleFilter, uint8_t*, StreamHandle) {
  not_built();
}
void hash_batch(const std::vector<DeviceImageRef>&, HashKind, uint64_t*, StreamHandle) { not_built(); }
void pdq_batch(const std::vector<DeviceImageRef>&, bool, uint8_t*, int32_t*, StreamHandle) { not_built(); }
void quality_batch(const std::vector<DeviceImageRef>&, QualitySignals*, StreamHandle) { not_built(); }

NvjpegInfo nvjpeg_load(const std::vector<std::string>&) {
  NvjpegInfo info;
  info.error = "mmcurate was built without CUDA";
  return info;
}

std::vector<GpuDecodeResult> decode_batch(const std::vector<ByteSpan>&, const DecodeOptions&, StreamHandle, int) {
  not_built();
}

GpuHashBytesResult phash_bytes(const std::vector<ByteSpan>&, bool, bool, StreamHandle, int) { not_built(); }

}  // namespace mmcurate::cuda
