// Fused decode -> pHash (and the quality signals): the decoded image goes straight into the hash pipeline,
// never to Python.
#include <stdexcept>

#include "mmcurate/decode.h"
#include "mmcurate/hashes.h"
#include "mmcurate/parallel.h"
#include "mmcurate/quality.h"

namespace mmcurate {

HashBytesResult phash_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool exif, int num_threads,
                            int fast_min_side, int64_t max_pixels, bool quality) {
  if (fast_min_side < 32) throw std::invalid_argument("phash_bytes: fast_min_side must be >= 32 (the hash side)");
  DecodeOptions opts;
  opts.apply_exif_orientation = exif;
  opts.max_pixels = max_pixels;
  if (exact) {
    // With quality, Pillow's RGB: the hash takes its L, which is what mode gray decodes to.
    opts.mode = quality ? ColorMode::rgb : ColorMode::gray;
  } else {
    opts.mode = ColorMode::gray_luma;
    opts.min_width = opts.min_height = fast_min_side;
    opts.fast_dct = true;
    opts.keep_chroma = quality;  // the same Y plane for the hash, plus chroma at the same DCT scale
  }
  const size_t n = blobs.size();
  HashBytesResult r;
  r.codes.assign(n, 0);
  r.status.assign(n, Status::ok);
  r.errors.assign(n, std::string());
  if (quality) r.quality.assign(n, QualitySignals());
  parallel_for(int64_t(n), num_threads, [&](int64_t i) {
    DecodeResult d = decode_image(blobs[i].data, blobs[i].size, opts);
    r.status[i] = d.status;
    if (d.status != Status::ok) {
      r.errors[i] = std::move(d.error);
      return;
    }
    const ImageViewU8 view = view_of(d.image);
    r.codes[i] = hash_image(luma_view(view, d.ycbcr), HashKind::phash);
    if (quality) r.quality[i] = image_quality(view, d.ycbcr);
  });
  return r;
}

}  // namespace mmcurate
