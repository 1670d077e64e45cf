// libFuzzer target for the native image decoders: the same entry points mmcurate._C binds
// (decode_images -> decode_batch/decode_image, probe_images -> probe_image, phash_bytes).
//
// Input layout: byte 0 selects the options (so the fuzzer explores every decode path), the rest is the
// image file. A result must be a status, never a crash, a sanitizer report or an exception.
//   bits 0-1  mode: rgb / gray / gray_luma (3 -> rgb)
//   bit  2    apply EXIF orientation
//   bit  3    fast DCT
//   bit  4    DCT-scaled decode (min side 32..), as the fast pHash path does
//   bit  5    also run phash_bytes (exact when bit 6 is clear, fast otherwise)
// Build and run: scripts/fuzz.sh decode [seconds]
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mmcurate/decode.h"
#include "mmcurate/hashes.h"

using namespace mmcurate;

namespace {

// Bounded so one input cannot exhaust the fuzzer's memory limit; the pixel limit itself is exercised.
constexpr int64_t kFuzzMaxPixels = 1024 * 1024;

void check(const DecodeResult& r, bool decoded) {
  if (r.status == Status::ok) {
    if (r.error.size() != 0) std::abort();
    if (decoded) {
      if (r.image.empty() || r.image.data.size() != size_t(r.image.height) * r.image.width * r.image.channels)
        std::abort();
    }
  } else {
    if (!r.image.empty()) std::abort();
    if (r.error.empty()) std::abort();  // every failure says why
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  const uint8_t* img = data + 1;
  const size_t n = size - 1;

  DecodeOptions opts;
  const int mode = sel & 3;
  opts.mode = mode == 1 ? ColorMode::gray : mode == 2 ? ColorMode::gray_luma : ColorMode::rgb;
  opts.apply_exif_orientation = (sel >> 2) & 1;
  opts.fast_dct = (sel >> 3) & 1;
  if ((sel >> 4) & 1) opts.min_width = opts.min_height = 32 + (sel >> 6) * 16;
  opts.max_pixels = kFuzzMaxPixels;

  check(probe_image(img, n), false);
  if (n >= 2 && img[0] == 0xFF && img[1] == 0xD8) {  // the nvJPEG routing screen
    const int scans = jpeg_scan_count(img, n, 33);
    if (scans < 0 || scans > 33) std::abort();
  }
  // decode_batch is what the binding calls (one thread: the fuzzer is single-process, single-input).
  std::vector<ByteSpan> spans{{img, n}};
  std::vector<DecodeResult> rs = decode_batch(spans, opts, 1);
  if (rs.size() != 1) std::abort();
  check(rs[0], true);

  if ((sel >> 5) & 1) {
    const bool exact = !((sel >> 6) & 1);
    HashBytesResult h = phash_bytes(spans, exact, opts.apply_exif_orientation, 1, kPhashFastMinSide, kFuzzMaxPixels);
    if (h.codes.size() != 1 || h.status.size() != 1 || h.errors.size() != 1) std::abort();
    if ((h.status[0] == Status::ok) != h.errors[0].empty()) std::abort();
  }
  return 0;
}
