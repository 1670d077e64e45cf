// Turning a 64-value feature into imagehash's 64-bit code.
#pragma once
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate::kernels {

// imagehash packs the boolean matrix row-major with the first element as the most significant bit
// (str(hash) is that integer in hex), so element i maps to bit 63 - i.
template <typename T>
MMCURATE_HD inline uint64_t pack_greater(const T* v, int n, T threshold) {
  uint64_t code = 0;
  for (int i = 0; i < n; ++i) code = (code << 1) | uint64_t(v[i] > threshold ? 1 : 0);
  return code;
}

// numpy.median of 64 doubles: the mean of the two middle order statistics, (lo + hi) / 2.
// `scratch` (64 doubles) receives a sorted copy; insertion sort keeps it device-friendly.
MMCURATE_HD inline double median64(const double* v, double* scratch) {
  for (int i = 0; i < 64; ++i) {
    double x = v[i];
    int j = i;
    while (j > 0 && scratch[j - 1] > x) {
      scratch[j] = scratch[j - 1];
      --j;
    }
    scratch[j] = x;
  }
  return (scratch[31] + scratch[32]) / 2;
}

// aHash on an 8x8 L image: bit = pixel > mean. numpy.mean of 64 uint8 is exactly sum/64 in double,
// so the comparison is done in integers: 64 * p > sum.
MMCURATE_HD inline uint64_t ahash_from_8x8(const uint8_t* px) {
  int sum = 0;
  for (int i = 0; i < 64; ++i) sum += px[i];
  uint64_t code = 0;
  for (int i = 0; i < 64; ++i) code = (code << 1) | uint64_t(64 * int(px[i]) > sum ? 1 : 0);
  return code;
}

// dHash on a 9-wide, 8-high L image (row-major, stride 9): bit = right neighbour > left.
MMCURATE_HD inline uint64_t dhash_from_9x8(const uint8_t* px) {
  uint64_t code = 0;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) code = (code << 1) | uint64_t(px[y * 9 + x + 1] > px[y * 9 + x] ? 1 : 0);
  return code;
}

}  // namespace mmcurate::kernels
