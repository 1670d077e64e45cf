// Host-callable C++ API of the CUDA kernels. No CUDA types appear here, so CPU-only translation units
// (the Python bindings, csrc/cuda/stubs.cpp) include it freely:
//   - device memory is a plain pointer owned by DeviceBuffer (cudaMalloc'd on one device);
//   - a stream is a StreamHandle, the numeric value of a cudaStream_t (0 = legacy default stream,
//     1 = cudaStreamLegacy, 2 = cudaStreamPerThread, as in __cuda_array_interface__ v3 and DLPack).
// A build without CUDA defines every function in csrc/cuda/stubs.cpp: each throws an error saying how
// to rebuild, except device_count(), which returns 0.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mmcurate/decode.h"
#include "mmcurate/hashes.h"
#include "mmcurate/quality.h"
#include "mmcurate/resize.h"
#include "mmcurate/status.h"

namespace mmcurate::cuda {

using StreamHandle = std::uintptr_t;

// ---------------------------------------------------------------- runtime
// Visible CUDA devices; 0 when this build has no CUDA, or there is no driver or GPU. Never throws.
int device_count() noexcept;
// The current device; throws a clear "no CUDA device" error when none is usable. Every GPU entry point
// calls this first, so misuse on a GPU-less machine fails before any work.
int require_device();
// Device that owns a device (or managed) pointer; -1 for host memory.
int pointer_device(const void* ptr);
// Makes subsequent calls of this host thread target `device` (cudaSetDevice).
void set_device(int device);

void stream_synchronize(StreamHandle stream);
// Orders `waiter` after all work queued so far on `producer` (an event, no host blocking).
void stream_wait(StreamHandle waiter, StreamHandle producer);

// The stream an op runs on: the caller's when given, else a fresh non-blocking stream owned by the scope.
// An owned stream is synchronised and destroyed when the scope ends (results handed back are complete).
class StreamScope {
 public:
  explicit StreamScope(bool has_caller_stream, StreamHandle caller_stream = 0);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;
  StreamHandle get() const { return stream_; }
  bool owned() const { return owned_; }
  void synchronize() const;

 private:
  StreamHandle stream_ = 0;
  bool owned_ = false;
};

// Owning device allocation (RAII over cudaMalloc/cudaFree), move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);  // on the current device; 0 bytes allocates nothing
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }
  int device() const { return device_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

// Asynchronous on `stream` (host memory is pageable, so the host side returns once it is staged).
void copy_to_device(void* dst, const void* src, size_t bytes, StreamHandle stream);
void copy_to_host(void* dst, const void* src, size_t bytes, StreamHandle stream);  // synchronises
void copy_on_device(void* dst, const void* src, size_t bytes, StreamHandle stream);

// Gathers an arbitrarily strided device array (byte strides, up to 6 dims) into a packed row-major copy.
void gather_strided(void* dst, const void* src, int ndim, const int64_t* shape, const int64_t* byte_strides,
                    int itemsize, StreamHandle stream);

// ---------------------------------------------------------------- Hamming search over packed codes
// codes: device pointer to n rows of `words` uint64 (row-major), i.e. (64*words)-bit codes; words in [1, 4] (4: PDQ).
// Pairs (i < j) with distance <= max_distance, sorted by (i, j): pairs_ij holds i0, j0, i1, j1, ...
void hamming_pairs(const uint64_t* codes, int64_t n, int words, int max_distance, StreamHandle stream,
                   std::vector<int64_t>* pairs_ij, std::vector<uint8_t>* distances);

// k nearest codes of each query, ordered by (distance, index). queries == nullptr means the codes
// themselves, each excluding itself. Rows with fewer than k candidates are padded with -1 / -1.
// Outputs are host arrays of nq*k elements; the call synchronises `stream`.
void hamming_knn(const uint64_t* codes, int64_t n, const uint64_t* queries, int64_t nq, int words, int k,
                 StreamHandle stream, int32_t* out_distances, int64_t* out_indices);

// ---------------------------------------------------------------- resize and perceptual hashes
// One image in device memory: packed HWC uint8 rows.
struct DeviceImageRef {
  const uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 0;  // 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA)
};

// Pillow-exact resize of each image, as mmcurate::resize_batch: geometry from resize_geometry(mode,
// size_h, size_w); every image must have the same channel count. The integer passes run on the GPU with
// coefficient tables computed on the host by the CPU's own functions. out (device): n x oh x ow x C, where
// (oh, ow) is the common output window. Runs on `stream` and returns when done.
void resize_batch(const std::vector<DeviceImageRef>& images, ResizeMode mode, int size_h, int size_w,
                  ResampleFilter filter, uint8_t* out, StreamHandle stream);

// imagehash-exact hashes, as mmcurate::hash_batch: Pillow's L, LANCZOS resize, then the hash, the same
// integer and double operations in the same order as the CPU twin. out: host array of n codes (synchronises).
void hash_batch(const std::vector<DeviceImageRef>& images, HashKind kind, uint64_t* out, StreamHandle stream);

// pdqhash-exact PDQ-256, as mmcurate::pdq_batch (equal to the CPU twin by construction). codes: host array of
// n x (8 x) 32 bytes, quality: host array of n (synchronises).
void pdq_batch(const std::vector<DeviceImageRef>& images, bool dihedral, uint8_t* codes, int32_t* quality,
               StreamHandle stream);

// Image-quality signals, as mmcurate::quality_batch (canonical planes equal to the CPU twin's by construction,
// statistics within the device's log2 / sqrt rounding). out: host array of n (synchronises).
void quality_batch(const std::vector<DeviceImageRef>& images, QualitySignals* out, StreamHandle stream);

// ---------------------------------------------------------------- decode (nvJPEG with CPU fallback)
// An image in device memory, HWC uint8, rows packed.
struct DeviceImage {
  std::shared_ptr<DeviceBuffer> buffer;
  int height = 0;
  int width = 0;
  int channels = 0;
};

struct GpuDecodeResult {
  Status status = Status::empty;
  std::string error;
  ImageFormat format = ImageFormat::unknown;
  int source_width = 0;
  int source_height = 0;
  int exif_orientation = 1;
  bool decoded_on_gpu = false;  // false: the CPU decoder produced the pixels (fallback), then uploaded
  DeviceImage image;            // empty unless status == ok
};

// What the nvJPEG loader found: whether libnvjpeg could be opened (dlopen) and from where, or why not.
struct NvjpegInfo {
  bool compiled = false;   // built against nvjpeg.h
  bool loaded = false;
  std::string path;        // the library that was opened
  std::string error;       // why it was not
  int version = 0;         // major*1000 + minor*10 + patch (nvjpegGetProperty)
  bool hardware_backend = false;
};
// search_dirs are tried in order (e.g. the nvidia wheel's cu13/lib), then the default loader path.
NvjpegInfo nvjpeg_load(const std::vector<std::string>& search_dirs);

// Decodes a batch on the current device. JPEGs nvJPEG supports are decoded there (hardware backend when
// available, else the hybrid one); every other sample, and any sample nvJPEG fails on, goes through the CPU
// decoder (mmcurate::decode_image) and is uploaded, so one bad sample never fails the batch. Statuses and
// errors are the CPU decoder's. EXIF orientation is applied on the GPU. opts.mode gray is Pillow's L from
// RGB; gray_luma is the JPEG Y plane. min_width/min_height select a reduced output size as the CPU's
// DCT-domain scaling does (same output size; the GPU reduces a full decode by area averaging).
std::vector<GpuDecodeResult> decode_batch(const std::vector<ByteSpan>& blobs, const DecodeOptions& opts,
                                          StreamHandle stream, int num_cpu_threads = 0);

// Decode on the GPU (as decode_batch, to Pillow's L when exact, else the JPEG Y plane at the smallest DCT
// scale keeping both sides >= kPhashFastMinSide), then the GPU pHash. Failed samples get code 0 and the
// decoder's status and error. Codes of GPU-decoded JPEGs can differ from the CPU's by a few bits (nvJPEG's
// IDCT and colour conversion are not libjpeg's); CPU-decoded samples give the CPU's codes exactly.
struct GpuHashBytesResult {
  std::vector<uint64_t> codes;
  std::vector<Status> status;
  std::vector<std::string> errors;
};
GpuHashBytesResult phash_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool exif, StreamHandle stream,
                               int num_cpu_threads = 0);

}  // namespace mmcurate::cuda
