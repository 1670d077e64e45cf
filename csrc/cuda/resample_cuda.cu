// Pillow-exact resampling on the GPU, for any number of images of any sizes in one pair of launches.
//
// Exactness: Pillow's coefficients involve sin/cos, whose device versions differ from glibc's, so every
// table is computed on the host by the CPU's own functions (resample_precompute / resample_normalize /
// nearest_table) and uploaded. The device only runs integer arithmetic: the int32 fixed-point dot products
// (exact in any order), clip8 after each pass, Pillow's pass order (resample_horizontal_first), the L24
// gray conversion and the alpha premultiplication, all from the same headers as the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/resample_cuda.cuh"
#include "kernels/luma.h"
#include "kernels/resample.h"

namespace mmcurate::cuda {
namespace {

enum SourceKind : int { kPlain = 0, kGray = 1, kPremultiplied = 2 };

// Everything one job needs on the device; table pointers point into the shared uploads.
struct JobDesc {
  const uint8_t* src;
  uint8_t* dst;
  uint8_t* mid;  // the image between the two passes
  int in_h, in_w, in_c, out_c;
  int source_kind;
  int win_top, win_left, win_h, win_w;
  int need_h, need_v, horizontal_first, nearest;
  int r0, r1, c0, c1;  // source rows / columns the first pass reads
  int ksize_x, ksize_y;
  const int32_t* kx;
  const int* bx;
  const int32_t* ky;
  const int* by;
  const int* nearest_x;  // out_w entries (full axis), -1 outside
  const int* nearest_y;
  long long pass1_pixels, pass2_pixels;
};

__device__ __forceinline__ int32_t source_value(const JobDesc& j, int y, int x, int c) {
  const uint8_t* p = j.src + (size_t(y) * j.in_w + x) * j.in_c;
  if (j.source_kind == kGray) return j.in_c >= 3 ? kernels::luma_l24(p[0], p[1], p[2]) : p[0];
  if (j.source_kind == kPremultiplied) {
    const uint8_t a = p[j.in_c - 1];
    return c == j.in_c - 1 ? a : kernels::premultiply(p[c], a);
  }
  return p[c];
}

// Final store of one pixel: undo the premultiplication (Pillow's RGBa -> RGBA) when it was applied.
__device__ __forceinline__ void store_pixel(const JobDesc& j, uint8_t* out, const uint8_t* v) {
  if (j.source_kind == kPremultiplied) {
    const uint8_t a = v[j.out_c - 1];
    for (int c = 0; c < j.out_c - 1; ++c) out[c] = kernels::unpremultiply(v[c], a);
    out[j.out_c - 1] = a;
  } else {
    for (int c = 0; c < j.out_c; ++c) out[c] = v[c];
  }
}

// Pass 1: NEAREST output, or the first filter pass (horizontal over rows [r0, r1), or vertical over
// columns [c0, c1)), or a plain window copy when no axis changes size. Writes dst directly when it is the
// only pass. blockIdx.y (+ job_base) selects the job.
__global__ void first_pass_kernel(const JobDesc* __restrict__ jobs, int job_base) {
  const JobDesc& j = jobs[job_base + blockIdx.y];
  const int oc = j.out_c;
  for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < j.pass1_pixels;
       p += (long long)gridDim.x * blockDim.x) {
    uint8_t v[4];
    if (j.nearest) {
      const int yy = int(p / j.win_w), xx = int(p % j.win_w);
      const int sy = j.nearest_y[j.win_top + yy], sx = j.nearest_x[j.win_left + xx];
      uint8_t* out = j.dst + p * oc;
      for (int c = 0; c < oc; ++c) out[c] = (sy < 0 || sx < 0) ? 0 : uint8_t(source_value(j, sy, sx, c));
      continue;
    }
    if (j.horizontal_first) {
      const int y = j.r0 + int(p / j.win_w), x = int(p % j.win_w);
      if (j.need_h) {
        const int xmin = j.bx[2 * x], taps = j.bx[2 * x + 1];
        const int32_t* k = j.kx + (long long)x * j.ksize_x;
        for (int c = 0; c < oc; ++c) {
          int32_t acc = kernels::kResampleRoundHalf;
          for (int t = 0; t < taps; ++t) acc += source_value(j, y, xmin + t, c) * k[t];
          v[c] = kernels::resample_clip8(acc);
        }
      } else {
        for (int c = 0; c < oc; ++c) v[c] = uint8_t(source_value(j, y, j.win_left + x, c));
      }
      if (j.need_v) {
        for (int c = 0; c < oc; ++c) j.mid[p * oc + c] = v[c];
      } else {
        store_pixel(j, j.dst + p * oc, v);
      }
    } else {
      const int width = j.c1 - j.c0;
      const int yy = int(p / width), x = j.c0 + int(p % width);
      const int ymin = j.by[2 * yy], taps = j.by[2 * yy + 1];
      const int32_t* k = j.ky + (long long)yy * j.ksize_y;
      for (int c = 0; c < oc; ++c) {
        int32_t acc = kernels::kResampleRoundHalf;
        for (int t = 0; t < taps; ++t) acc += source_value(j, ymin + t, x, c) * k[t];
        j.mid[p * oc + c] = kernels::resample_clip8(acc);
      }
    }
  }
}

// Pass 2: the other axis, from the intermediate image into dst.
__global__ void second_pass_kernel(const JobDesc* __restrict__ jobs, int job_base) {
  const JobDesc& j = jobs[job_base + blockIdx.y];
  const int oc = j.out_c;
  for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < j.pass2_pixels;
       p += (long long)gridDim.x * blockDim.x) {
    const int yy = int(p / j.win_w), x = int(p % j.win_w);
    uint8_t v[4];
    if (j.horizontal_first) {  // vertical over the staged rows
      const int ymin = j.by[2 * yy], taps = j.by[2 * yy + 1];
      const int32_t* k = j.ky + (long long)yy * j.ksize_y;
      const uint8_t* col = j.mid + ((long long)(ymin - j.r0) * j.win_w + x) * oc;
      const long long row_len = (long long)j.win_w * oc;
      for (int c = 0; c < oc; ++c) {
        int32_t acc = kernels::kResampleRoundHalf;
        for (int t = 0; t < taps; ++t) acc += int32_t(col[t * row_len + c]) * k[t];
        v[c] = kernels::resample_clip8(acc);
      }
    } else {  // horizontal over the vertically filtered block
      const int width = j.c1 - j.c0;
      const int xmin = j.bx[2 * x] - j.c0, taps = j.bx[2 * x + 1];
      const int32_t* k = j.kx + (long long)x * j.ksize_x;
      const uint8_t* row = j.mid + ((long long)yy * width + xmin) * oc;
      for (int c = 0; c < oc; ++c) {
        int32_t acc = kernels::kResampleRoundHalf;
        for (int t = 0; t < taps; ++t) acc += int32_t(row[t * oc + c]) * k[t];
        v[c] = kernels::resample_clip8(acc);
      }
    }
    store_pixel(j, j.dst + p * oc, v);
  }
}

// Host-side tables, deduplicated by axis geometry (a same-size batch shares one set).
struct TableBuilder {
  std::vector<int32_t> coeffs;
  std::vector<int> ints;  // bounds and nearest index tables
  std::map<std::tuple<int, int, int, int>, std::pair<size_t, size_t>> axes;  // -> (coeff offset, bounds offset)
  std::map<std::pair<int, int>, size_t> nearest;

  // Coefficients for outputs [begin, end) of an in -> out axis; returns ksize.
  int axis(int in_size, int out_size, ResampleFilter f, int begin, int end, size_t* k_off, size_t* b_off) {
    const int ksize = kernels::resample_ksize(in_size, out_size, f);
    auto key = std::make_tuple(in_size, out_size, begin, end);
    auto it = axes.find(key);
    if (it == axes.end()) {
      const size_t n = size_t(end - begin) * ksize;
      std::vector<double> kd(n);
      std::vector<int> bounds(size_t(end - begin) * 2);
      kernels::resample_precompute(in_size, out_size, f, begin, end, ksize, bounds.data(), kd.data());
      const size_t ko = coeffs.size(), bo = ints.size();
      coeffs.resize(ko + n);
      kernels::resample_normalize(kd.data(), int64_t(n), coeffs.data() + ko);
      ints.insert(ints.end(), bounds.begin(), bounds.end());
      it = axes.emplace(key, std::make_pair(ko, bo)).first;
    }
    *k_off = it->second.first;
    *b_off = it->second.second;
    return ksize;
  }

  size_t nearest_axis(int in_size, int out_size) {
    auto key = std::make_pair(in_size, out_size);
    auto it = nearest.find(key);
    if (it != nearest.end()) return it->second;
    const size_t off = ints.size();
    ints.resize(off + out_size);
    kernels::nearest_table(in_size, out_size, ints.data() + off);
    nearest.emplace(key, off);
    return off;
  }
};

// Offsets into the table uploads, turned into device pointers once they exist.
struct JobOffsets {
  size_t kx = 0, bx = 0, ky = 0, by = 0, nx = 0, ny = 0;
  size_t mid = 0;
};

}  // namespace

void resample_jobs(const std::vector<ResampleJob>& jobs, ResampleFilter filter, StreamHandle stream) {
  if (jobs.empty()) return;
  const bool nearest = filter == ResampleFilter::nearest;
  if (!nearest && kernels::filter_support(filter) == 0.0) throw std::invalid_argument("resize: unknown filter");
  TableBuilder tables;
  std::vector<JobDesc> desc(jobs.size());
  std::vector<JobOffsets> offs(jobs.size());
  size_t mid_bytes = 0;
  long long max1 = 0, max2 = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const ResampleJob& job = jobs[i];
    const ResizeWindow& w = job.window;
    if (job.src.height < 1 || job.src.width < 1 || job.src.channels < 1 || job.src.channels > 4)
      throw std::invalid_argument("resize: image " + std::to_string(i) + " is empty or has 0 or >4 channels");
    if (job.out_h < 1 || job.out_w < 1 || w.top < 0 || w.left < 0 || w.height < 1 || w.width < 1 ||
        w.top + w.height > job.out_h || w.left + w.width > job.out_w)
      throw std::invalid_argument("resize: bad output size or window");
    JobDesc& d = desc[i];
    d = JobDesc{};
    d.src = job.src.data;
    d.dst = job.dst;
    d.in_h = job.src.height;
    d.in_w = job.src.width;
    d.in_c = job.src.channels;
    d.out_c = job.to_gray ? 1 : d.in_c;
    d.source_kind = job.to_gray ? kGray : (!nearest && (d.in_c == 2 || d.in_c == 4)) ? kPremultiplied : kPlain;
    d.win_top = w.top;
    d.win_left = w.left;
    d.win_h = w.height;
    d.win_w = w.width;
    d.nearest = nearest;
    JobOffsets& o = offs[i];
    if (nearest) {
      o.nx = tables.nearest_axis(d.in_w, job.out_w);
      o.ny = tables.nearest_axis(d.in_h, job.out_h);
      d.pass1_pixels = (long long)w.height * w.width;
      d.pass2_pixels = 0;
      max1 = std::max(max1, d.pass1_pixels);
      continue;
    }
    d.need_h = job.out_w != d.in_w;
    d.need_v = job.out_h != d.in_h;
    d.r0 = w.top;
    d.r1 = w.top + w.height;
    d.c0 = w.left;
    d.c1 = w.left + w.width;
    std::vector<int> bounds;
    if (d.need_v) {
      d.ksize_y = tables.axis(d.in_h, job.out_h, filter, w.top, w.top + w.height, &o.ky, &o.by);
      const int* b = tables.ints.data() + o.by;
      d.r0 = b[0];
      d.r1 = 0;
      for (int r = 0; r < w.height; ++r) d.r1 = std::max(d.r1, b[2 * r] + b[2 * r + 1]);
    }
    if (d.need_h) {
      d.ksize_x = tables.axis(d.in_w, job.out_w, filter, w.left, w.left + w.width, &o.kx, &o.bx);
      const int* b = tables.ints.data() + o.bx;
      d.c0 = b[0];
      d.c1 = 0;
      for (int c = 0; c < w.width; ++c) d.c1 = std::max(d.c1, b[2 * c] + b[2 * c + 1]);
    }
    d.horizontal_first =
        !(d.need_h && d.need_v) || kernels::resample_horizontal_first(d.in_h, d.in_w, job.out_h, job.out_w);
    if (d.horizontal_first) {
      d.pass1_pixels = (long long)(d.r1 - d.r0) * w.width;
      d.pass2_pixels = d.need_v ? (long long)w.height * w.width : 0;
    } else {
      d.pass1_pixels = (long long)w.height * (d.c1 - d.c0);
      d.pass2_pixels = (long long)w.height * w.width;
    }
    if (d.pass2_pixels) {
      o.mid = mid_bytes;
      mid_bytes += size_t(d.pass1_pixels) * d.out_c;
    }
    max1 = std::max(max1, d.pass1_pixels);
    max2 = std::max(max2, d.pass2_pixels);
  }

  DeviceBuffer d_coeffs(tables.coeffs.size() * sizeof(int32_t));
  DeviceBuffer d_ints(tables.ints.size() * sizeof(int));
  DeviceBuffer d_mid(mid_bytes);
  copy_to_device(d_coeffs.data(), tables.coeffs.data(), d_coeffs.size(), stream);
  copy_to_device(d_ints.data(), tables.ints.data(), d_ints.size(), stream);
  for (size_t i = 0; i < desc.size(); ++i) {
    JobDesc& d = desc[i];
    const JobOffsets& o = offs[i];
    d.kx = d_coeffs.as<int32_t>() + o.kx;
    d.ky = d_coeffs.as<int32_t>() + o.ky;
    d.bx = d_ints.as<int>() + o.bx;
    d.by = d_ints.as<int>() + o.by;
    d.nearest_x = d_ints.as<int>() + o.nx;
    d.nearest_y = d_ints.as<int>() + o.ny;
    d.mid = d.pass2_pixels ? d_mid.as<uint8_t>() + o.mid : nullptr;
  }
  DeviceBuffer d_desc(desc.size() * sizeof(JobDesc));
  copy_to_device(d_desc.data(), desc.data(), d_desc.size(), stream);

  cudaStream_t s = to_cuda(stream);
  constexpr int kThreads = 256;
  constexpr int kMaxJobsPerLaunch = 65535;  // gridDim.y
  for (size_t base = 0; base < desc.size(); base += kMaxJobsPerLaunch) {
    const unsigned count = unsigned(std::min<size_t>(kMaxJobsPerLaunch, desc.size() - base));
    dim3 grid1(unsigned(std::min<long long>(std::max<long long>((max1 + kThreads - 1) / kThreads, 1), 4096)), count);
    first_pass_kernel<<<grid1, kThreads, 0, s>>>(d_desc.as<JobDesc>(), int(base));
    MMCURATE_CUDA_CHECK_LAUNCH("first_pass_kernel");
    if (max2 > 0) {
      dim3 grid2(unsigned(std::min<long long>((max2 + kThreads - 1) / kThreads, 4096)), count);
      second_pass_kernel<<<grid2, kThreads, 0, s>>>(d_desc.as<JobDesc>(), int(base));
      MMCURATE_CUDA_CHECK_LAUNCH("second_pass_kernel");
    }
  }
  // The tables, the intermediate image and the job list are freed when this returns; cudaFree waits for
  // the kernels that use them, but synchronising the stream states it plainly.
  stream_synchronize(stream);
}

void resize_batch(const std::vector<DeviceImageRef>& images, ResizeMode mode, int size_h, int size_w,
                  ResampleFilter filter, uint8_t* out, StreamHandle stream) {
  if (images.empty()) return;
  const int C = images[0].channels;
  std::vector<ResampleJob> jobs(images.size());
  int64_t per_image = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i].channels != C)
      throw std::invalid_argument("resize: all images must have the same channel count (image " + std::to_string(i) +
                                  " has " + std::to_string(images[i].channels) + ", image 0 has " + std::to_string(C) +
                                  ")");
    const ResizeGeometry g = resize_geometry(images[i].height, images[i].width, mode, size_h, size_w);
    if (i == 0) per_image = int64_t(g.window.height) * g.window.width * C;
    jobs[i].src = images[i];
    jobs[i].out_h = g.resized_h;
    jobs[i].out_w = g.resized_w;
    jobs[i].window = g.window;
    jobs[i].dst = out + int64_t(i) * per_image;
  }
  resample_jobs(jobs, filter, stream);
}

}  // namespace mmcurate::cuda
