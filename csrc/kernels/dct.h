// pHash's transform: the top-left 8x8 of the unnormalised 2-D DCT-II of a 32x32 L image, in the
// axis order imagehash uses (scipy.fftpack.dct along axis 0, then along axis 1).
//
// scipy computes the DCT with pocketfft (an FFT factorisation); this is the direct sum over a
// cosine basis. Both are accurate to ~1e-13 relative, but not bit-identical, so a hash bit can
// differ from imagehash only where a coefficient equals the median in exact arithmetic (flat or
// exactly symmetric images). The result here is deterministic, and identical on CPU and GPU as long
// as both use the basis table built on the host by dct_basis (device cos() differs from glibc's).
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/hash_bits.h"
#include "kernels/hd.h"

namespace mmcurate::kernels {

constexpr int kPhashSide = 32;  // hash_size 8 * highfreq_factor 4
constexpr int kPhashLow = 8;

// basis[k * n + i] = 2 cos(pi k (2i + 1) / (2n)) for k < rows: scipy's unnormalised type-II kernel.
inline void dct_basis(int n, int rows, double* basis) {
  const double pi = 3.14159265358979323846;
  for (int k = 0; k < rows; ++k)
    for (int i = 0; i < n; ++i) basis[k * n + i] = 2.0 * cos(pi * k * (2 * i + 1) / (2.0 * n));
}

// Low-frequency 8x8 block of the 2-D DCT of a 32x32 uint8 image (row-major, packed).
// basis: 8 x 32 from dct_basis(32, 8, basis). tmp: 8 x 32 doubles. out: 8 x 8 doubles.
MMCURATE_HD inline void dct32_lowfreq8(const uint8_t* px, const double* basis, double* tmp, double* out) {
  // Axis 0: tmp[k][j] = sum_i basis[k][i] * px[i][j]
  for (int k = 0; k < kPhashLow; ++k) {
    double* t = tmp + k * kPhashSide;
    for (int j = 0; j < kPhashSide; ++j) t[j] = 0.0;
    for (int i = 0; i < kPhashSide; ++i) {
      const double b = basis[k * kPhashSide + i];
      const uint8_t* row = px + i * kPhashSide;
      for (int j = 0; j < kPhashSide; ++j) t[j] += b * double(row[j]);
    }
  }
  // Axis 1: out[k][l] = sum_j tmp[k][j] * basis[l][j]
  for (int k = 0; k < kPhashLow; ++k)
    for (int l = 0; l < kPhashLow; ++l) {
      double s = 0.0;
      for (int j = 0; j < kPhashSide; ++j) s += tmp[k * kPhashSide + j] * basis[l * kPhashSide + j];
      out[k * kPhashLow + l] = s;
    }
}

// pHash code of a 32x32 L image: bit = coefficient > median of the 64 low-frequency coefficients.
// scratch: at least 8*32 + 64 + 64 doubles.
MMCURATE_HD inline uint64_t phash_from_32x32(const uint8_t* px, const double* basis, double* scratch) {
  double* tmp = scratch;
  double* low = scratch + kPhashLow * kPhashSide;
  double* sorted = low + 64;
  dct32_lowfreq8(px, basis, tmp, low);
  return pack_greater(low, 64, median64(low, sorted));
}

}  // namespace mmcurate::kernels
