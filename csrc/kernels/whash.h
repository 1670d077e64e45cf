// imagehash.whash (hash_size 8, mode 'haar', remove_max_haar_ll=True) on an n x n L image, composed
// from the pywt-exact Haar steps in haar.h. n is a power of two >= 8.
#pragma once
#include <stdint.h>

#include "kernels/haar.h"
#include "kernels/hash_bits.h"
#include "kernels/hd.h"

namespace mmcurate::kernels {

// imagehash: image_scale = max(2**int(log2(min(w, h))), hash_size).
MMCURATE_HD inline int whash_image_scale(int width, int height) {
  int m = width < height ? width : height;
  int p = 1;
  while (p * 2 <= m) p *= 2;
  return p < 8 ? 8 : p;
}

MMCURATE_HD inline int log2_exact(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

// Doubles of scratch whash_from_gray needs for side n.
MMCURATE_HD inline int64_t whash_scratch_doubles(int n) {
  const int64_t nn = int64_t(n) * n;
  return nn /*pixels*/ + nn /*details*/ + nn / 2 /*ping-pong*/ + 2 * int64_t(n) /*rows*/ + 128 /*8x8 + sort*/;
}

MMCURATE_HD inline uint64_t whash_from_gray(const uint8_t* px, int n, double* scratch) {
  const int64_t nn = int64_t(n) * n;
  double* pix = scratch;
  double* det = pix + nn;
  double* ping[2] = {det + nn, det + nn + nn / 4};
  double* row_a = ping[1] + nn / 4;
  double* row_d = row_a + n;
  double* sorted = row_d + n;
  const int levels = log2_exact(n);

  for (int64_t i = 0; i < nn; ++i) pix[i] = px[i] / 255.;  // numpy.asarray(image) / 255.

  // wavedec2(pixels, 'haar', level=log2(n)): keep every detail band, the approximation ends 1x1.
  const double* in = pix;
  int m = n;
  int64_t off = 0;
  for (int l = 1; l <= levels; ++l) {
    const int h = m / 2;
    const int64_t hh = int64_t(h) * h;
    double* aa = ping[(l - 1) & 1];
    haar_dwt2(in, m, row_a, row_d, aa, det + off, det + off + hh, det + off + 2 * hh);
    off += 3 * hh;
    in = aa;
    m = h;
  }
  // coeffs[0] *= 0, then waverec2: rebuild from the top level down, the last level into pix.
  double* a = ping[levels & 1];
  a[0] = in[0] * 0;
  for (int l = levels; l >= 1; --l) {
    const int h = n >> l;
    const int64_t hh = int64_t(h) * h;
    off -= 3 * hh;
    double* out = (l == 1) ? pix : ping[(levels - l + 1 + (levels & 1)) & 1];
    haar_idwt2(a, det + off, det + off + hh, det + off + 2 * hh, h, row_a, row_d, out);
    a = out;
  }
  // wavedec2(pixels, 'haar', level=log2(n) - 3): only the approximation is used.
  in = pix;
  m = n;
  for (int l = 1; l <= levels - 3; ++l) {
    double* aa = ping[(l - 1) & 1];
    haar_dwt2(in, m, row_a, nullptr, aa, nullptr, nullptr, nullptr);
    in = aa;
    m /= 2;
  }
  return pack_greater(in, 64, median64(in, sorted));
}

}  // namespace mmcurate::kernels
