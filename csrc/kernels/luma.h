// Pillow's "L" conversion (ITU-R 601-2 luma, 16-bit fixed point), bit-exact with convert("L").
#pragma once
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate::kernels {

// RGB(A) -> L as Pillow's rgb2l / rgba2l: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. Alpha is ignored.
MMCURATE_HD inline uint8_t luma_l24(uint8_t r, uint8_t g, uint8_t b) {
  return uint8_t((uint32_t(r) * 19595u + uint32_t(g) * 38470u + uint32_t(b) * 7471u + 0x8000u) >> 16);
}

// One row of `width` pixels with `channels` interleaved bytes per pixel (pixel_stride bytes apart) to L.
// channels: 1 (L: copied), 2 (LA: the L byte), 3 (RGB), 4 (RGBA: alpha ignored, as Pillow).
MMCURATE_HD inline void row_to_gray(const uint8_t* src, int width, int channels, int64_t pixel_stride, uint8_t* dst) {
  if (channels >= 3) {
    for (int x = 0; x < width; ++x) {
      const uint8_t* p = src + x * pixel_stride;
      dst[x] = luma_l24(p[0], p[1], p[2]);
    }
  } else {
    for (int x = 0; x < width; ++x) dst[x] = src[x * pixel_stride];
  }
}

// The same for packed pixels with a compile-time channel count: constant strides let the compiler
// vectorise the interleaved loads on the host.
template <int C>
MMCURATE_HD inline void packed_row_to_gray(const uint8_t* src, int width, uint8_t* dst) {
  for (int x = 0; x < width; ++x) {
    if (C >= 3) {
      const uint32_t l24 = uint32_t(src[x * C]) * 19595u + uint32_t(src[x * C + 1]) * 38470u +
                           uint32_t(src[x * C + 2]) * 7471u + 0x8000u;
      dst[x] = uint8_t(l24 >> 16);
    } else {
      dst[x] = src[x * C];
    }
  }
}

// Pillow's premultiplication (RGBA -> RGBa, LA -> La): MULDIV255, a rounded c*a/255.
MMCURATE_HD inline uint8_t premultiply(uint8_t c, uint8_t a) {
  uint32_t t = uint32_t(c) * a + 128u;
  return uint8_t(((t >> 8) + t) >> 8);
}

// Pillow's un-premultiplication (RGBa -> RGBA): alpha 0 and 255 pass through, else min(255, 255*c/a).
MMCURATE_HD inline uint8_t unpremultiply(uint8_t c, uint8_t a) {
  if (a == 0 || a == 255) return c;
  uint32_t v = (255u * c) / a;
  return uint8_t(v > 255u ? 255u : v);
}

}  // namespace mmcurate::kernels
