// Fused decode -> pHash: the decoded L image goes straight into the hash pipeline, never to Python.
#include <stdexcept>

#include "mmcurate/decode.h"
#include "mmcurate/hashes.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

HashBytesResult phash_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool exif, int num_threads,
                            int fast_min_side, int64_t max_pixels) {
  if (fast_min_side < 32) throw std::invalid_argument("phash_bytes: fast_min_side must be >= 32 (the hash side)");
  DecodeOptions opts;
  opts.apply_exif_orientation = exif;
  opts.max_pixels = max_pixels;
  if (exact) {
    opts.mode = ColorMode::gray;
  } else {
    opts.mode = ColorMode::gray_luma;
    opts.min_width = opts.min_height = fast_min_side;
    opts.fast_dct = true;
  }
  const size_t n = blobs.size();
  HashBytesResult r;
  r.codes.assign(n, 0);
  r.status.assign(n, Status::ok);
  r.errors.assign(n, std::string());
  parallel_for(int64_t(n), num_threads, [&](int64_t i) {
    DecodeResult d = decode_image(blobs[i].data, blobs[i].size, opts);
    r.status[i] = d.status;
    if (d.status != Status::ok) {
      r.errors[i] = std::move(d.error);
      return;
    }
    r.codes[i] = hash_image(view_of(d.image), HashKind::phash);
  });
  return r;
}

}  // namespace mmcurate
