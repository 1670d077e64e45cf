// imagehash-exact perceptual hashes on the GPU: L conversion + LANCZOS resize (resample_cuda.cu), then
// the hash from the same header functions as the CPU twin (csrc/kernels/), built with --fmad=false so the
// double arithmetic rounds exactly as the host's. pHash takes its cosine table from the host
// (phash_dct_basis), because device cos() is not glibc's.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/resample_cuda.cuh"
#include "kernels/dct.h"
#include "kernels/haar.h"
#include "kernels/hash_bits.h"
#include "kernels/whash.h"

namespace mmcurate::cuda {
namespace {

// pHash / dHash / aHash: one thread per image on its small L image (side_h x side_w, packed).
__global__ void small_hash_kernel(const uint8_t* __restrict__ small, int n, int kind, int pixels,
                                  const double* __restrict__ basis, uint64_t* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint8_t* px = small + size_t(i) * pixels;
  switch (HashKind(kind)) {
    case HashKind::phash: {
      double scratch[kernels::kPhashLow * kernels::kPhashSide + 128];
      out[i] = kernels::phash_from_32x32(px, basis, scratch);
      break;
    }
    case HashKind::dhash: out[i] = kernels::dhash_from_9x8(px); break;
    case HashKind::ahash: out[i] = kernels::ahash_from_8x8(px); break;
    default: out[i] = 0; break;
  }
}

struct WhashJob {
  const uint8_t* px;  // n x n L image
  int n;
  double* scratch;    // whash_scratch_doubles(n)
};

// wHash: one block per image. Every coefficient of a Haar level is computed by the same expression, in the
// same order, as kernels::haar_dwt2 / haar_idwt2 do row by row (see haar.h), so the block-parallel version
// gives the CPU's doubles exactly; levels are separated by barriers.
__global__ void whash_kernel(const WhashJob* __restrict__ jobs, uint64_t* __restrict__ out) {
  using namespace kernels;
  const WhashJob j = jobs[blockIdx.x];
  const int n = j.n;
  const long long nn = (long long)n * n;
  double* pix = j.scratch;
  double* det = pix + nn;
  double* ping[2] = {det + nn, det + nn + nn / 4};
  const int levels = log2_exact(n);

  for (long long e = threadIdx.x; e < nn; e += blockDim.x) pix[e] = j.px[e] / 255.;
  __syncthreads();

  // wavedec2(pixels, 'haar', level=log2(n)), keeping every detail band.
  const double* in = pix;
  int m = n;
  long long off = 0;
  for (int l = 1; l <= levels; ++l) {
    const int h = m / 2;
    const long long hh = (long long)h * h;
    double* aa = ping[(l - 1) & 1];
    for (long long e = threadIdx.x; e < hh; e += blockDim.x) {
      const int o = int(e / h), p = int(e % h);
      const double* r0 = in + (long long)(2 * o) * m;
      const double* r1 = r0 + m;
      const double ra0 = haar_lo(r0[2 * p], r1[2 * p]), ra1 = haar_lo(r0[2 * p + 1], r1[2 * p + 1]);
      const double rd0 = haar_hi(r0[2 * p], r1[2 * p]), rd1 = haar_hi(r0[2 * p + 1], r1[2 * p + 1]);
      aa[e] = haar_lo(ra0, ra1);
      det[off + e] = haar_hi(ra0, ra1);
      det[off + hh + e] = haar_lo(rd0, rd1);
      det[off + 2 * hh + e] = haar_hi(rd0, rd1);
    }
    __syncthreads();
    off += 3 * hh;
    in = aa;
    m = h;
  }
  // coeffs[0] *= 0, then waverec2 down to the full size (the last level into pix).
  double* a = ping[levels & 1];
  if (threadIdx.x == 0) a[0] = in[0] * 0;
  __syncthreads();
  for (int l = levels; l >= 1; --l) {
    const int h = n >> l;
    const long long hh = (long long)h * h;
    off -= 3 * hh;
    double* o = (l == 1) ? pix : (a == ping[0] ? ping[1] : ping[0]);
    const int w2 = 2 * h;
    for (long long e = threadIdx.x; e < 4 * hh; e += blockDim.x) {
      const int row = int(e / w2), x = int(e % w2);
      const long long idx = (long long)(row / 2) * h + x / 2;
      const double A = a[idx], AD = det[off + idx], DA = det[off + hh + idx], DD = det[off + 2 * hh + idx];
      const double ra = (x & 1) ? haar_syn_odd(A, AD) : haar_syn_even(A, AD);
      const double rd = (x & 1) ? haar_syn_odd(DA, DD) : haar_syn_even(DA, DD);
      o[e] = (row & 1) ? haar_syn_odd(ra, rd) : haar_syn_even(ra, rd);
    }
    __syncthreads();
    a = o;
  }
  // wavedec2(pixels, 'haar', level=log2(n) - 3): the 8x8 approximation.
  in = pix;
  m = n;
  for (int l = 1; l <= levels - 3; ++l) {
    const int h = m / 2;
    double* aa = ping[(l - 1) & 1];
    for (long long e = threadIdx.x; e < (long long)h * h; e += blockDim.x) {
      const int o = int(e / h), p = int(e % h);
      const double* r0 = in + (long long)(2 * o) * m;
      const double* r1 = r0 + m;
      aa[e] = haar_lo(haar_lo(r0[2 * p], r1[2 * p]), haar_lo(r0[2 * p + 1], r1[2 * p + 1]));
    }
    __syncthreads();
    in = aa;
    m = h;
  }
  if (threadIdx.x == 0) {
    double sorted[64];
    out[blockIdx.x] = pack_greater(in, 64, median64(in, sorted));
  }
}

// Side (h, w) of the small L image each hash works on.
void small_size(HashKind kind, const DeviceImageRef& im, int* h, int* w) {
  // clang-format off
  switch (kind) {
    case HashKind::phash: *h = *w = kernels::kPhashSide; return;
    case HashKind::dhash: *h = 8; *w = 9; return;
    case HashKind::ahash: *h = *w = 8; return;
    case HashKind::whash: *h = *w = kernels::whash_image_scale(im.width, im.height); return;
  }
  // clang-format on
  throw std::invalid_argument("hash: unknown kind");
}

// wHash scratch is O(n^2) doubles per image (85 MB for n = 2048); images are processed in groups
// that stay under this budget.
constexpr size_t kWhashScratchBudget = size_t(1) << 30;

}  // namespace

void hash_batch(const std::vector<DeviceImageRef>& images, HashKind kind, uint64_t* out, StreamHandle stream) {
  const size_t n = images.size();
  if (n == 0) return;
  cudaStream_t s = to_cuda(stream);
  std::vector<size_t> offset(1, 0);
  std::vector<int> side;
  std::vector<ResampleJob> jobs(images.size());
  for (size_t i = 0; i < n; ++i) {
    const DeviceImageRef& im = images[i];
    if (im.height < 1 || im.width < 1 || im.channels < 1 || im.channels > 4)
      throw std::invalid_argument("hash: image " + std::to_string(i) + " is empty or has 0 or >4 channels");
    int h = 0, w = 0;
    small_size(kind, im, &h, &w);
    side.push_back(h);
    offset.push_back(offset[i] + size_t(h) * w);
    jobs[i].src = im;
    jobs[i].out_h = h;
    jobs[i].out_w = w;
    jobs[i].window = ResizeWindow{0, 0, h, w};
    jobs[i].to_gray = true;
  }
  DeviceBuffer small(offset[n]);
  for (size_t i = 0; i < n; ++i) jobs[i].dst = small.as<uint8_t>() + offset[i];
  resample_jobs(jobs, ResampleFilter::lanczos, stream);

  DeviceBuffer codes(n * sizeof(uint64_t));
  if (kind != HashKind::whash) {
    DeviceBuffer basis(kernels::kPhashLow * kernels::kPhashSide * sizeof(double));
    copy_to_device(basis.data(), phash_dct_basis(), basis.size(), stream);
    const int pixels = int(offset[1]);
    small_hash_kernel<<<ceil_div(int64_t(n), 128), 128, 0, s>>>(small.as<uint8_t>(), int(n), int(kind), pixels,
                                                                basis.as<double>(), codes.as<uint64_t>());
    MMCURATE_CUDA_CHECK_LAUNCH("small_hash_kernel");
    copy_to_host(out, codes.data(), n * sizeof(uint64_t), stream);
    return;
  }
  for (size_t begin = 0; begin < n;) {
    size_t end = begin, scratch_doubles = 0;
    while (end < n) {
      const size_t need = size_t(kernels::whash_scratch_doubles(side[end]));
      if (end > begin && (scratch_doubles + need) * sizeof(double) > kWhashScratchBudget) break;
      scratch_doubles += need;
      ++end;
    }
    DeviceBuffer scratch(scratch_doubles * sizeof(double));
    std::vector<WhashJob> wjobs;
    size_t at = 0;
    for (size_t i = begin; i < end; ++i) {
      wjobs.push_back(WhashJob{small.as<uint8_t>() + offset[i], side[i], scratch.as<double>() + at});
      at += size_t(kernels::whash_scratch_doubles(side[i]));
    }
    DeviceBuffer d_jobs(wjobs.size() * sizeof(WhashJob));
    copy_to_device(d_jobs.data(), wjobs.data(), d_jobs.size(), stream);
    whash_kernel<<<unsigned(end - begin), 256, 0, s>>>(d_jobs.as<WhashJob>(), codes.as<uint64_t>() + begin);
    MMCURATE_CUDA_CHECK_LAUNCH("whash_kernel");
    stream_synchronize(stream);  // the scratch of this group is freed next
    begin = end;
  }
  copy_to_host(out, codes.data(), n * sizeof(uint64_t), stream);
}

}  // namespace mmcurate::cuda
