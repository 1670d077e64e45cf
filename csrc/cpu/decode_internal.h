// Internal pieces shared by the per-format decoders (decode_jpeg/png/webp.cpp) and the dispatcher.
// Not part of the public API.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "mmcurate/decode.h"

namespace mmcurate::detail {

// ---- per-format decoders: fill `out` (format and source size already set by the caller) ----
void decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out);
void decode_png(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out);
void decode_webp(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out);

// ---- header-only probes: status ok plus size and orientation, or an error status ----
void probe_jpeg(const uint8_t* data, size_t size, DecodeResult& out);
void probe_png(const uint8_t* data, size_t size, DecodeResult& out);
void probe_webp(const uint8_t* data, size_t size, DecodeResult& out);

// ---- results ----
inline void fail(DecodeResult& out, Status s, std::string msg) {
  out.status = s;
  out.error = std::move(msg);
  out.image = ImageU8();
}

// Refuses (too_large) when width*height exceeds max_pixels; call before any pixel allocation.
bool check_pixel_limit(int64_t width, int64_t height, const DecodeOptions& opts, DecodeResult& out);

// ---- EXIF / XMP orientation (decode_exif.cpp) ----
// The IFD0 Orientation tag (0x0112) of a TIFF-structured EXIF block, with or without the "Exif\0\0"
// prefix, as stored (any value). -1 when the block is unparseable or has no such single-valued tag.
// Every read is bounds-checked.
int exif_orientation_tag(const uint8_t* data, size_t size);
// Pillow's XMP fallback (used only when EXIF has no Orientation tag): the digit after the first
// `tiff:Orientation="` or `tiff:Orientation>` in an XMP packet; -1 if none.
int xmp_orientation_tag(const uint8_t* data, size_t size);
// What exif_transpose acts on: 2..8 transpose, anything else (absent, 1, out of range) is 1.
inline int normalize_orientation(int tag) { return tag >= 1 && tag <= 8 ? tag : 1; }
// Orientations 5..8 swap width and height.
inline bool orientation_swaps_sides(int orientation) { return orientation >= 5 && orientation <= 8; }

// ---- pixel transforms (decode_pixels.cpp) ----
// Pillow's "L" from RGB: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
inline uint8_t pillow_luma(uint8_t r, uint8_t g, uint8_t b) {
  return uint8_t((uint32_t(r) * 19595u + uint32_t(g) * 38470u + uint32_t(b) * 7471u + 0x8000u) >> 16);
}
// Converts one row of `src_channels` interleaved 8-bit samples to the output mode's channels
// (1 or 3). Source layouts: 1 = L, 2 = LA, 3 = RGB, 4 = RGBA. Alpha is dropped, gray replicated.
void convert_row(const uint8_t* src, int src_channels, uint8_t* dst, int dst_channels, int width);
// Adobe (inverted) CMYK as libjpeg outputs it -> RGB or L, exactly as Pillow's "CMYK;I" unpack + cmyk2rgb.
void cmyk_inverted_row_to(const uint8_t* src, uint8_t* dst, int dst_channels, int width);
// ImageOps.exif_transpose: returns the image transposed for orientation 2..8 (1 and others: unchanged).
ImageU8 apply_orientation(ImageU8&& image, int orientation);

// Channels the output mode produces.
inline int mode_channels(ColorMode m) { return m == ColorMode::rgb ? 3 : 1; }

}  // namespace mmcurate::detail
