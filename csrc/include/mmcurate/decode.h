// CPU image decode: JPEG (libjpeg-turbo), PNG (libpng), WebP (libwebp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mmcurate/image.h"
#include "mmcurate/status.h"

namespace mmcurate {

enum class ImageFormat : int8_t { unknown = 0, jpeg = 1, png = 2, webp = 3 };
const char* format_name(ImageFormat f);
ImageFormat sniff_format(const uint8_t* data, size_t size);  // by magic bytes, never by extension

enum class ColorMode : int8_t {
  rgb = 0,        // 3 channels; gray sources replicated, CMYK converted as Pillow does, alpha dropped
  gray = 1,       // 1 channel, Pillow's "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 from RGB,
             // gray sources as stored (16-bit gray PNGs are clipped to 255, as Pillow's I;16 -> L does)
  gray_luma = 2,  // 1 channel; for YCbCr JPEGs the decoder's Y plane (no chroma decode: fast, not Pillow-exact);
                  // for every other source the same as gray
};

// Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS = 89478485): above it Pillow warns,
// above twice it Pillow refuses. We refuse above max_pixels, read from the header before allocating.
constexpr int64_t kDefaultMaxPixels = 89478485;

struct DecodeOptions {
  ColorMode mode = ColorMode::rgb;
  int64_t max_pixels = kDefaultMaxPixels;  // <= 0: no limit
  // DCT-domain scaled JPEG decode: when min_width/min_height > 0, a JPEG is decoded at the smallest
  // libjpeg scale M/8 whose output is still >= (min_width, min_height) (before EXIF rotation is
  // applied, sides are matched to the rotated orientation). Other formats decode at full size.
  int min_width = 0;
  int min_height = 0;
  bool apply_exif_orientation = true;  // JPEG APP1 / PNG eXIf / WebP EXIF orientation tag
  // JPEG only: JDCT_IFAST and plain (non-fancy) chroma upsampling. Faster, no longer Pillow-exact;
  // used by the throughput ("fast") hashing path.
  bool fast_dct = false;
  // gray_luma only: keep the colour too, for the quality signals. A YCbCr JPEG then decodes to 3 channels
  // holding the decoder's Y, Cb, Cr at the same DCT scale (DecodeResult::ycbcr; Y is the plane gray_luma
  // gives, the chroma costs its IDCT); every other source decodes as mode rgb (its Pillow L is gray's).
  bool keep_chroma = false;
};

struct DecodeResult {
  Status status = Status::empty;
  std::string error;  // empty when ok
  ImageFormat format = ImageFormat::unknown;
  int source_width = 0;  // as stored in the file header (0 if unreadable)
  int source_height = 0;
  int exif_orientation = 1;  // 1..8, 1 when absent (reported whether or not it was applied)
  int dct_scale = 8;  // JPEG decoded at dct_scale/8 of the source size (8: full size)
  bool ycbcr = false;  // keep_chroma: the 3 channels are Y, Cb, Cr (not R, G, B)
  ImageU8 image;  // empty unless status == ok
};

// One image. Never throws on bad data: the status and error say what went wrong (truncated: the stream
// ran out of bytes, as Pillow's "image file is truncated"; corrupt: the library's message). Throws
// std::invalid_argument only for invalid options. Thread-safe: each call owns its decoder state.
DecodeResult decode_image(const uint8_t* data, size_t size, const DecodeOptions& opts);

struct ByteSpan {
  const uint8_t* data;
  size_t size;
};

// A batch, decoded in parallel. One bad sample never affects the others.
std::vector<DecodeResult> decode_batch(const std::vector<ByteSpan>& blobs, const DecodeOptions& opts,
                                       int num_threads = 0);

// Header-only probe: format, size, orientation; status ok when the header parses.
DecodeResult probe_image(const uint8_t* data, size_t size);

// Number of scans (SOS markers) in a JPEG stream, by walking its markers without decoding; stops counting
// at `stop_after` (> 0). Linear in the size, bounds-checked. Routing aid for decoders without a scan limit
// (nvJPEG): a stream with many scans goes to decode_image, which refuses scan floods.
int jpeg_scan_count(const uint8_t* data, size_t size, int stop_after);

// Library versions for build_info().
std::string jpeg_library_version();
std::string png_library_version();
std::string webp_library_version();

}  // namespace mmcurate
