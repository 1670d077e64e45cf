// Fused encoded bytes -> pHash on the GPU: batched decode (nvJPEG, CPU fallback per sample) straight into
// the GPU pHash, pixels never leaving the device.
#include <utility>

#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {

GpuHashBytesResult phash_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool exif, StreamHandle stream,
                               int num_cpu_threads) {
  DecodeOptions opts;
  opts.apply_exif_orientation = exif;
  if (exact) {
    opts.mode = ColorMode::gray;  // Pillow's L, as imagehash sees the image
  } else {
    // The CPU's fast path: the JPEG Y plane at the smallest DCT scale keeping both sides >= 64.
    opts.mode = ColorMode::gray_luma;
    opts.min_width = opts.min_height = kPhashFastMinSide;
    opts.fast_dct = true;
  }
  std::vector<GpuDecodeResult> decoded = decode_batch(blobs, opts, stream, num_cpu_threads);
  GpuHashBytesResult r;
  const size_t n = decoded.size();
  r.codes.assign(n, 0);
  r.status.resize(n);
  r.errors.resize(n);
  std::vector<DeviceImageRef> refs;
  std::vector<size_t> where;
  for (size_t i = 0; i < n; ++i) {
    r.status[i] = decoded[i].status;
    r.errors[i] = std::move(decoded[i].error);
    const DeviceImage& im = decoded[i].image;
    if (decoded[i].status == Status::ok && im.buffer) {
      refs.push_back(DeviceImageRef{im.buffer->as<uint8_t>(), im.height, im.width, im.channels});
      where.push_back(i);
    }
  }
  std::vector<uint64_t> codes(refs.size());
  hash_batch(refs, HashKind::phash, codes.data(), stream);
  for (size_t k = 0; k < where.size(); ++k) r.codes[where[k]] = codes[k];
  return r;
}

}  // namespace mmcurate::cuda
