// Pixel-level steps shared by the decoders: channel-layout conversion (Pillow's convert("RGB"/"L")
// semantics), Adobe CMYK -> RGB, and the EXIF orientation transpose.
#include <algorithm>
#include <cstring>

#include "cpu/decode_internal.h"

namespace mmcurate::detail {

bool check_pixel_limit(int64_t width, int64_t height, const DecodeOptions& opts, DecodeResult& out) {
  if (width <= 0 || height <= 0) {
    fail(out, Status::corrupt,
         "header declares an empty image (" + std::to_string(width) + "x" + std::to_string(height) + ")");
    return false;
  }
  if (opts.max_pixels > 0 && width * height > opts.max_pixels) {
    fail(out, Status::too_large,
         "image of " + std::to_string(width) + "x" + std::to_string(height) + " = " + std::to_string(width * height) +
             " pixels exceeds max_pixels=" + std::to_string(opts.max_pixels));
    return false;
  }
  return true;
}

void convert_row(const uint8_t* src, int src_channels, uint8_t* dst, int dst_channels, int width) {
  const size_t n = size_t(width);
  if (src_channels == dst_channels && (src_channels == 1 || src_channels == 3)) {
    std::memcpy(dst, src, n * src_channels);
    return;
  }
  if (dst_channels == 3) {
    switch (src_channels) {
      case 1:  // L -> RGB: replicate
      case 2:  // LA -> RGB: replicate L, drop alpha
        for (size_t x = 0; x < n; ++x) {
          const uint8_t v = src[x * src_channels];
          dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = v;
        }
        return;
      case 4:  // RGBA -> RGB: drop alpha (Pillow's convert("RGB") does not composite)
        for (size_t x = 0; x < n; ++x) {
          dst[3 * x] = src[4 * x];
          dst[3 * x + 1] = src[4 * x + 1];
          dst[3 * x + 2] = src[4 * x + 2];
        }
        return;
    }
  } else {
    switch (src_channels) {
      case 2:  // LA -> L
        for (size_t x = 0; x < n; ++x) dst[x] = src[2 * x];
        return;
      case 3:
      case 4:  // RGB(A) -> L with Pillow's integer weights
        for (size_t x = 0; x < n; ++x) {
          const uint8_t* p = src + x * src_channels;
          dst[x] = pillow_luma(p[0], p[1], p[2]);
        }
        return;
    }
  }
}

void cmyk_inverted_row_to(const uint8_t* src, uint8_t* dst, int dst_channels, int width) {
  // Pillow unpacks Adobe JPEG CMYK as "CMYK;I" (c = 255 - stored) and converts with
  // nk = 255 - k; out = nk - muldiv255(c, nk). With stored values s: nk = s_k, c = 255 - s_c.
  auto channel = [](uint32_t stored_c, uint32_t nk) -> uint8_t {
    const uint32_t c = 255u - stored_c;
    const uint32_t t = c * nk + 128u;
    const uint32_t mul = ((t >> 8) + t) >> 8;  // Pillow's MULDIV255
    return uint8_t(nk - mul);                  // mul <= nk, so never negative
  };
  for (int x = 0; x < width; ++x) {
    const uint8_t* p = src + 4 * size_t(x);
    const uint32_t nk = p[3];
    const uint8_t r = channel(p[0], nk), g = channel(p[1], nk), b = channel(p[2], nk);
    if (dst_channels == 3) {
      dst[3 * size_t(x)] = r;
      dst[3 * size_t(x) + 1] = g;
      dst[3 * size_t(x) + 2] = b;
    } else {
      dst[x] = pillow_luma(r, g, b);  // Pillow has no CMYK -> L converter: it goes through RGB
    }
  }
}

namespace {

// Output pixel (y, x) of an image transposed for orientation O reads source pixel (sy, sx).
// Pillow's names: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270,
// 7 TRANSVERSE, 8 ROTATE_90 (counter-clockwise).
template <int O>
inline void source_of(int y, int x, int H, int W, int& sy, int& sx) {
  // clang-format off
  if constexpr (O == 2) { sy = y; sx = W - 1 - x; }
  else if constexpr (O == 3) { sy = H - 1 - y; sx = W - 1 - x; }
  else if constexpr (O == 4) { sy = H - 1 - y; sx = x; }
  else if constexpr (O == 5) { sy = x; sx = y; }
  else if constexpr (O == 6) { sy = H - 1 - x; sx = y; }
  else if constexpr (O == 7) { sy = H - 1 - x; sx = W - 1 - y; }
  else { sy = x; sx = W - 1 - y; }  // 8
  // clang-format on
}

template <int C, int O>
void transpose_pixels(const ImageU8& src, ImageU8& dst) {
  const int H = src.height, W = src.width;
  const int oh = dst.height, ow = dst.width;
  constexpr int kTile = 32;  // tiles keep the column-wise reads of the side-swapping cases in cache
  for (int ty = 0; ty < oh; ty += kTile) {
    for (int tx = 0; tx < ow; tx += kTile) {
      const int ye = std::min(oh, ty + kTile), xe = std::min(ow, tx + kTile);
      for (int y = ty; y < ye; ++y) {
        uint8_t* drow = dst.row(y);
        for (int x = tx; x < xe; ++x) {
          int sy, sx;
          source_of<O>(y, x, H, W, sy, sx);
          const uint8_t* s = src.row(sy) + size_t(sx) * C;
          for (int c = 0; c < C; ++c) drow[size_t(x) * C + c] = s[c];
        }
      }
    }
  }
}

template <int C>
void transpose_for(const ImageU8& src, ImageU8& dst, int orientation) {
  switch (orientation) {
    case 2: transpose_pixels<C, 2>(src, dst); break;
    case 3: transpose_pixels<C, 3>(src, dst); break;
    case 4: transpose_pixels<C, 4>(src, dst); break;
    case 5: transpose_pixels<C, 5>(src, dst); break;
    case 6: transpose_pixels<C, 6>(src, dst); break;
    case 7: transpose_pixels<C, 7>(src, dst); break;
    default: transpose_pixels<C, 8>(src, dst); break;
  }
}

}  // namespace

ImageU8 apply_orientation(ImageU8&& image, int orientation) {
  if (orientation < 2 || orientation > 8 || image.empty()) return std::move(image);
  const bool swap = orientation_swaps_sides(orientation);
  ImageU8 out(swap ? image.width : image.height, swap ? image.height : image.width, image.channels);
  if (image.channels == 3) {
    transpose_for<3>(image, out, orientation);
  } else {
    transpose_for<1>(image, out, orientation);
  }
  return out;
}

}  // namespace mmcurate::detail
