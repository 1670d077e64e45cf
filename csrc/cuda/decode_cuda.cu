// Batched image decode to device memory: nvJPEG for the JPEGs it supports, the CPU decoder for the rest.
//
// Routing (per sample, so one bad image never fails the batch):
//   1. the CPU header probe (format, size, EXIF orientation) and nvjpegGetImageInfo run first;
//   2. JPEGs nvJPEG can take (1 or 3 components, known subsampling, within max_pixels, ending in EOI) are
//      decoded on the GPU: hardware backend for the samples it supports, the hybrid backend otherwise;
//   3. everything else, and any sample nvJPEG fails on, is decoded by mmcurate::decode_image on the CPU
//      and uploaded; its status and error are therefore exactly the CPU decoder's.
// After the GPU decode one fused kernel applies what the CPU decoder does after its IDCT: the reduced
// output size (DCT-domain scaling, approximated by area averaging), Pillow's L from RGB, EXIF orientation.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/nvjpeg_loader.h"
#include "mmcurate/cuda_api.h"
#include "mmcurate/decode.h"
#include "mmcurate/parallel.h"

namespace mmcurate::cuda {

void set_nvjpeg_hardware_backend(bool available);  // nvjpeg_loader.cpp

namespace {

// ------------------------------------------------------------------ geometry shared with the CPU decoder
struct Size2 {
  int w, h;
};

// libjpeg's scaled output: the smallest M/8 whose output still covers the requested size. The request is
// in displayed orientation, so for orientations 5..8 (transposed) it is matched against swapped sides.
Size2 scaled_size(int w, int h, const DecodeOptions& opts, int orientation) {
  if (opts.min_width <= 0 && opts.min_height <= 0) return {w, h};
  int tw = opts.min_width, th = opts.min_height;
  if (opts.apply_exif_orientation && orientation >= 5) std::swap(tw, th);
  for (int m = 1; m <= 8; ++m) {
    int sw = int((int64_t(w) * m + 7) / 8), sh = int((int64_t(h) * m + 7) / 8);
    if (sw >= tw && sh >= th) return {sw, sh};
  }
  return {w, h};
}

// Source pixel (in the un-rotated image of size w x h) shown at displayed pixel (x, y), as Pillow's
// ImageOps.exif_transpose maps orientations 2..8.
__device__ __forceinline__ void oriented_source(int orientation, int x, int y, int w, int h, int* sx, int* sy) {
  // clang-format off
  switch (orientation) {
    case 2: *sx = w - 1 - x; *sy = y; break;              // mirror horizontal
    case 3: *sx = w - 1 - x; *sy = h - 1 - y; break;      // rotate 180
    case 4: *sx = x; *sy = h - 1 - y; break;              // mirror vertical
    case 5: *sx = y; *sy = x; break;                      // transpose
    case 6: *sx = y; *sy = h - 1 - x; break;              // rotate 90 clockwise
    case 7: *sx = w - 1 - y; *sy = h - 1 - x; break;      // transverse
    case 8: *sx = w - 1 - y; *sy = x; break;              // rotate 90 counter-clockwise
    default: *sx = x; *sy = y; break;
  }
  // clang-format on
}

// One pass from the raw nvJPEG output (h x w x c) to the final image: reduce to rw x rh by box averaging,
// convert to L (Pillow's integer weights) when asked, and orient. dst is dh x dw x dc.
__global__ void finish_kernel(const uint8_t* __restrict__ src, int h, int w, int c, int rh, int rw, bool to_gray,
                              int orientation, uint8_t* __restrict__ dst, int dh, int dw, int dc) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= dw || y >= dh) return;
  int rx, ry;
  oriented_source(orientation, x, y, rw, rh, &rx, &ry);
  const int y0 = int(int64_t(ry) * h / rh), y1 = max(y0 + 1, int(int64_t(ry + 1) * h / rh));
  const int x0 = int(int64_t(rx) * w / rw), x1 = max(x0 + 1, int(int64_t(rx + 1) * w / rw));
  const unsigned count = unsigned((y1 - y0) * (x1 - x0));
  unsigned px[3] = {0, 0, 0};
  for (int yy = y0; yy < y1; ++yy) {
    const uint8_t* row = src + (size_t(yy) * w + x0) * c;
    for (int xx = 0; xx < x1 - x0; ++xx)
      for (int k = 0; k < c; ++k) px[k] += row[xx * c + k];
  }
  for (int k = 0; k < c; ++k) px[k] = (px[k] + count / 2) / count;
  uint8_t* out = dst + (size_t(y) * dw + x) * dc;
  if (to_gray && c == 3) {
    out[0] = uint8_t((px[0] * 19595u + px[1] * 38470u + px[2] * 7471u + 0x8000u) >> 16);
  } else {
    for (int k = 0; k < dc; ++k) out[k] = uint8_t(px[k]);
  }
}

// Real encoders write about 10 scans (libjpeg's simple progression), mozjpeg and jpegtran scripts a few more.
constexpr int kMaxGpuJpegScans = 32;

bool ends_with_eoi(const ByteSpan& b) {
  return b.size >= 4 && b.data[b.size - 2] == 0xFF && b.data[b.size - 1] == 0xD9;
}

#ifdef MMCURATE_WITH_NVJPEG

#define NVJPEG_OK(expr) ((expr) == NVJPEG_STATUS_SUCCESS)

// nvJPEG handles and decode states for one device. nvJPEG states are not thread-safe: `mutex` serialises
// decodes on this device (the CPU fallback runs outside it).
struct NvjpegDevice {
  const NvjpegApi* api = nullptr;
  nvjpegHandle_t hybrid = nullptr;
  nvjpegJpegState_t hybrid_state = nullptr;
  nvjpegHandle_t hardware = nullptr;
  nvjpegJpegState_t hardware_state = nullptr;
  nvjpegJpegStream_t parser = nullptr;
  std::mutex mutex;

  ~NvjpegDevice() {
    if (!api) return;
    if (parser) api->JpegStreamDestroy(parser);
    if (hardware_state) api->JpegStateDestroy(hardware_state);
    if (hardware) api->Destroy(hardware);
    if (hybrid_state) api->JpegStateDestroy(hybrid_state);
    if (hybrid) api->Destroy(hybrid);
  }
};

// Chroma upsampling by interpolation, as libjpeg's "fancy" upsampling that Pillow uses, keeps 4:2:0 and
// 4:2:2 output close to the CPU decode; library versions without the flag get the default handle.
bool create_handle(const NvjpegApi& api, nvjpegBackend_t backend, nvjpegHandle_t* handle) {
  *handle = nullptr;
  if (NVJPEG_OK(api.CreateEx(backend, nullptr, nullptr, NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION, handle)))
    return true;
  *handle = nullptr;
  if (NVJPEG_OK(api.CreateEx(backend, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT, handle))) return true;
  *handle = nullptr;
  return false;
}

// One NvjpegDevice per CUDA device, created on first use. The registry is leaked on purpose: tearing
// nvJPEG down from a static destructor could run after the CUDA runtime has shut down.
NvjpegDevice* nvjpeg_device(int device) {
  static std::mutex registry_mutex;
  static auto* registry = new std::map<int, std::unique_ptr<NvjpegDevice>>();
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto [it, inserted] = registry->try_emplace(device);
  if (!inserted) return it->second.get();
  const NvjpegApi* api = nvjpeg_api();
  if (!api) return nullptr;
  auto d = std::make_unique<NvjpegDevice>();
  d->api = api;  // from here on, d's destructor releases whatever was created
  if (!create_handle(*api, NVJPEG_BACKEND_DEFAULT, &d->hybrid)) return nullptr;
  if (!NVJPEG_OK(api->JpegStateCreate(d->hybrid, &d->hybrid_state))) {
    d->hybrid_state = nullptr;
    return nullptr;
  }
  // The hardware JPEG engine (A100, H100, ...) is optional: without it every sample takes the hybrid path.
  if (!create_handle(*api, NVJPEG_BACKEND_HARDWARE, &d->hardware)) {
    d->hardware = nullptr;
  } else if (!NVJPEG_OK(api->JpegStateCreate(d->hardware, &d->hardware_state)) ||
             !NVJPEG_OK(api->JpegStreamCreate(d->hardware, &d->parser))) {
    if (d->hardware_state) api->JpegStateDestroy(d->hardware_state);
    api->Destroy(d->hardware);
    d->hardware = nullptr;
    d->hardware_state = nullptr;
    d->parser = nullptr;
  }
  set_nvjpeg_hardware_backend(d->hardware != nullptr);
  it->second = std::move(d);
  return it->second.get();
}

struct GpuJob {
  size_t index;
  int width, height;        // full decoded size (nvjpegGetImageInfo)
  int channels;             // of the raw nvJPEG output: 3 (RGBI) or 1 (Y)
  std::shared_ptr<DeviceBuffer> raw;
  bool decoded = false;
};

// Decodes the jobs it can, marking each job.decoded; the rest go back to the CPU.
void run_nvjpeg(NvjpegDevice& dev, const std::vector<ByteSpan>& blobs, std::vector<GpuJob>& jobs,
                nvjpegOutputFormat_t format, cudaStream_t stream) {
  const NvjpegApi& api = *dev.api;
  auto dest_of = [](GpuJob& j) {
    nvjpegImage_t img{};
    img.channel[0] = j.raw->as<unsigned char>();
    img.pitch[0] = size_t(j.width) * j.channels;
    return img;
  };
  std::vector<GpuJob*> hybrid_jobs;
  if (dev.hardware) {
    std::vector<GpuJob*> hw_jobs;
    for (auto& j : jobs) {
      const ByteSpan& b = blobs[j.index];
      int supported = -1;  // nvJPEG reports 0 for "supported"
      if (NVJPEG_OK(api.JpegStreamParse(dev.hardware, b.data, b.size, 0, 0, dev.parser)) &&
          NVJPEG_OK(api.DecodeBatchedSupported(dev.hardware, dev.parser, &supported)) && supported == 0) {
        hw_jobs.push_back(&j);
      } else {
        hybrid_jobs.push_back(&j);
      }
    }
    if (!hw_jobs.empty()) {
      std::vector<const unsigned char*> data;
      std::vector<size_t> lengths;
      std::vector<nvjpegImage_t> dests;
      for (GpuJob* j : hw_jobs) {
        data.push_back(blobs[j->index].data);
        lengths.push_back(blobs[j->index].size);
        dests.push_back(dest_of(*j));
      }
      bool ok =
          NVJPEG_OK(api.DecodeBatchedInitialize(dev.hardware, dev.hardware_state, int(hw_jobs.size()), 1, format)) &&
          NVJPEG_OK(
              api.DecodeBatched(dev.hardware, dev.hardware_state, data.data(), lengths.data(), dests.data(), stream));
      if (ok) ok = cudaStreamSynchronize(stream) == cudaSuccess;
      if (ok) {
        for (GpuJob* j : hw_jobs) j->decoded = true;
      } else {
        cudaGetLastError();
        hybrid_jobs.insert(hybrid_jobs.end(), hw_jobs.begin(), hw_jobs.end());  // retry one by one
      }
    }
  } else {
    for (auto& j : jobs) hybrid_jobs.push_back(&j);
  }
  for (GpuJob* j : hybrid_jobs) {
    const ByteSpan& b = blobs[j->index];
    nvjpegImage_t dest = dest_of(*j);
    j->decoded = NVJPEG_OK(api.Decode(dev.hybrid, dev.hybrid_state, b.data, b.size, format, &dest, stream));
  }
  MMCURATE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

#endif  // MMCURATE_WITH_NVJPEG

}  // namespace

std::vector<GpuDecodeResult> decode_batch(const std::vector<ByteSpan>& blobs, const DecodeOptions& opts,
                                          StreamHandle stream_handle, int num_cpu_threads) {
  const int device = require_device();
  cudaStream_t stream = to_cuda(stream_handle);
  const size_t n = blobs.size();
  std::vector<GpuDecodeResult> results(n);
  std::vector<DecodeResult> probes(n);
  std::vector<char> on_cpu(n, 1);

  // Header probes on the CPU: format, size and orientation come from here for GPU-decoded samples.
  parallel_for(int64_t(n), num_cpu_threads, [&](int64_t i) { probes[i] = probe_image(blobs[i].data, blobs[i].size); });

#ifdef MMCURATE_WITH_NVJPEG
  NvjpegDevice* dev = nvjpeg_api() ? nvjpeg_device(device) : nullptr;
  if (dev) {
    const bool luma = opts.mode == ColorMode::gray_luma;
    const nvjpegOutputFormat_t format = luma ? NVJPEG_OUTPUT_Y : NVJPEG_OUTPUT_RGBI;
    std::vector<GpuJob> jobs;
    for (size_t i = 0; i < n; ++i) {
      const DecodeResult& p = probes[i];
      if (p.status != Status::ok || p.format != ImageFormat::jpeg || !ends_with_eoi(blobs[i])) continue;
      // nvJPEG has no scan limit: a scan flood (thousands of repeated progressive scans) would hold its
      // CPU-side Huffman decode for minutes. Streams with more scans than any encoder writes go to the CPU
      // decoder, which decodes them or refuses the flood (corrupt) within its work bound.
      if (jpeg_scan_count(blobs[i].data, blobs[i].size, kMaxGpuJpegScans + 1) > kMaxGpuJpegScans) continue;
      if (opts.max_pixels > 0 && int64_t(p.source_width) * p.source_height > opts.max_pixels)
        continue;  // the CPU decoder reports too_large, with its message
      int components = 0;
      nvjpegChromaSubsampling_t subsampling = NVJPEG_CSS_UNKNOWN;
      int widths[NVJPEG_MAX_COMPONENT] = {0}, heights[NVJPEG_MAX_COMPONENT] = {0};
      if (!NVJPEG_OK(dev->api->GetImageInfo(dev->hybrid, blobs[i].data, blobs[i].size, &components, &subsampling,
                                            widths, heights)))
        continue;
      // CMYK/YCCK (4 components) and exotic samplings take the CPU path, which converts them as Pillow does.
      if ((components != 1 && components != 3) || subsampling == NVJPEG_CSS_UNKNOWN) continue;
      if (widths[0] != p.source_width || heights[0] != p.source_height) continue;
      GpuJob job;
      job.index = i;
      job.width = widths[0];
      job.height = heights[0];
      job.channels = luma ? 1 : 3;
      job.raw = std::make_shared<DeviceBuffer>(size_t(job.width) * job.height * job.channels);
      jobs.push_back(std::move(job));
    }
    if (!jobs.empty()) {
      std::lock_guard<std::mutex> lock(dev->mutex);
      run_nvjpeg(*dev, blobs, jobs, format, stream);
    }
    for (auto& job : jobs) {
      if (!job.decoded) continue;
      const size_t i = job.index;
      const DecodeResult& p = probes[i];
      const int orientation = opts.apply_exif_orientation ? p.exif_orientation : 1;
      const Size2 reduced = scaled_size(job.width, job.height, opts, p.exif_orientation);
      const bool transposed = orientation >= 5 && orientation <= 8;
      const int out_c = opts.mode == ColorMode::rgb ? 3 : 1;
      const int dw = transposed ? reduced.h : reduced.w, dh = transposed ? reduced.w : reduced.h;
      GpuDecodeResult& r = results[i];
      if (orientation == 1 && reduced.w == job.width && reduced.h == job.height && out_c == job.channels) {
        r.image.buffer = job.raw;  // nothing left to do: hand the nvJPEG output over as it is
      } else {
        r.image.buffer = std::make_shared<DeviceBuffer>(size_t(dw) * dh * out_c);
        dim3 block(32, 8), grid(ceil_div(dw, 32), ceil_div(dh, 8));
        finish_kernel<<<grid, block, 0, stream>>>(job.raw->as<uint8_t>(), job.height, job.width, job.channels,
                                                  reduced.h, reduced.w, opts.mode == ColorMode::gray, orientation,
                                                  r.image.buffer->as<uint8_t>(), dh, dw, out_c);
        MMCURATE_CUDA_CHECK_LAUNCH("finish_kernel");
      }
      r.image.height = dh;
      r.image.width = dw;
      r.image.channels = out_c;
      r.status = Status::ok;
      r.format = ImageFormat::jpeg;
      r.source_width = p.source_width;
      r.source_height = p.source_height;
      r.exif_orientation = p.exif_orientation;
      r.decoded_on_gpu = true;
      on_cpu[i] = 0;
    }
  }
#else
  (void)device;
#endif

  // CPU fallback: exact statuses and errors, pixels uploaded.
  std::vector<size_t> cpu_index;
  for (size_t i = 0; i < n; ++i)
    if (on_cpu[i]) cpu_index.push_back(i);
  std::vector<DecodeResult> cpu(cpu_index.size());
  parallel_for(int64_t(cpu_index.size()), num_cpu_threads, [&](int64_t k) {
    const ByteSpan& b = blobs[cpu_index[k]];
    cpu[k] = decode_image(b.data, b.size, opts);
  });
  for (size_t k = 0; k < cpu_index.size(); ++k) {
    DecodeResult& c = cpu[k];
    GpuDecodeResult& r = results[cpu_index[k]];
    r.status = c.status;
    r.error = std::move(c.error);
    r.format = c.format;
    r.source_width = c.source_width;
    r.source_height = c.source_height;
    r.exif_orientation = c.exif_orientation;
    if (c.status == Status::ok && !c.image.empty()) {
      r.image.buffer = std::make_shared<DeviceBuffer>(c.image.data.size());
      copy_to_device(r.image.buffer->data(), c.image.data.data(), c.image.data.size(), stream_handle);
      r.image.height = c.image.height;
      r.image.width = c.image.width;
      r.image.channels = c.image.channels;
    }
  }
  // The host-side inputs (blobs, CPU images) must outlive every queued copy and kernel.
  MMCURATE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return results;
}

}  // namespace mmcurate::cuda
