// PDQ-256 (Meta's perceptual hash), bit-exact with the `pdqhash` package (Meta's C++ reference behind a
// Cython binding) on the same RGB pixels. Every step repeats the reference's float operations in its
// order; the CPU kernel runs the lockstep helpers over many lanes, the CUDA twin over one lane per thread,
// so both compute each value by the same sequence of IEEE operations (no FMA contraction on either side).
//
//   luma     float32(R*0.299 + G*0.587 + B*0.114) evaluated in double: pdqhash computes it with numpy in
//            float64 and casts (Meta's C++ CLI uses float coefficients instead, which can round differently)
//   filter   two passes of (box along rows, box along columns), float running sums, window
//            ceil(side / 128) per axis (Jarosz: two box passes ~ a tent over side / 64)
//   decimate the centre sample of each of the 64 x 64 cells; a 64 x 64 input is taken as is by
//            pdqhash.compute, while compute_dihedral filters it anyway (we follow both)
//   quality  sum over neighbours of int(|u - v| * 100 / 255) (float), / 90, clamped to 100
//   DCT      16 x 64 float matrix D (rows 1..16 of the DCT-II basis), B = (D A) D^T, float sums in k order
//   bits     coefficient k = 16 i + j is 1 when B[i][j] > Torben's median of the 256 coefficients
// Images with a side < 5 get the zero hash and quality 0, as in the reference.
#pragma once
#include <math.h>
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate::kernels {

constexpr int kPdqSide = 64;    // the downsampled image
constexpr int kPdqDct = 16;     // the 16 x 16 coefficients kept
constexpr int kPdqBytes = 32;   // 256 bits
constexpr int kPdqVariants = 8; // dihedral variants
constexpr int kPdqMinSide = 5;  // reference's MIN_HASHABLE_DIM

// pdqhash's numpy luma: (R * 0.299 + G * 0.587) + B * 0.114 in float64, cast to float32.
constexpr double kPdqLumaR = 0.299, kPdqLumaG = 0.587, kPdqLumaB = 0.114;
MMCURATE_HD inline float pdq_luma(uint8_t r, uint8_t g, uint8_t b) {
  return float(double(r) * kPdqLumaR + double(g) * kPdqLumaG + double(b) * kPdqLumaB);
}

// computeJaroszFilterWindowSize(side, 64): half of a 64th of the side, rounded up (two passes per axis).
MMCURATE_HD inline int pdq_window(int side) { return (side + 2 * kPdqSide - 1) / (2 * kPdqSide); }

// decimateFloat's source index of output cell `o` (0..63) on an axis of `side` samples.
MMCURATE_HD inline int pdq_decimate_index(int o, int side) { return int(((o + 0.5) * side) / kPdqSide); }

// box1DFloat on `lanes` independent vectors in lockstep: element e of lane l is at l * lane_stride +
// e * stride in `in` and `out`. Each lane sees exactly the reference's sequence of float adds, subtracts
// and divides. sums: `lanes` floats of scratch.
MMCURATE_HD inline void pdq_box_lanes(const float* __restrict__ in, float* __restrict__ out, int length, int64_t stride,
                                      int lanes, int64_t lane_stride, int window, float* __restrict__ sums) {
  const int half = (window + 2) / 2;
  const int phase1 = half - 1, phase2 = window - half + 1, phase3 = length - window, phase4 = half - 1;
  for (int l = 0; l < lanes; ++l) sums[l] = 0.0f;
  int64_t li = 0, ri = 0, oi = 0;
  int count = 0;
  for (int i = 0; i < phase1; ++i, ++count, ri += stride)
    for (int l = 0; l < lanes; ++l) sums[l] += in[l * lane_stride + ri];
  for (int i = 0; i < phase2; ++i, ri += stride, oi += stride) {
    ++count;
    for (int l = 0; l < lanes; ++l) {
      sums[l] += in[l * lane_stride + ri];
      out[l * lane_stride + oi] = sums[l] / float(count);
    }
  }
  for (int i = 0; i < phase3; ++i, li += stride, ri += stride, oi += stride)
    for (int l = 0; l < lanes; ++l) {
      sums[l] += in[l * lane_stride + ri];
      sums[l] -= in[l * lane_stride + li];
      out[l * lane_stride + oi] = sums[l] / float(count);
    }
  for (int i = 0; i < phase4; ++i, li += stride, oi += stride) {
    --count;
    for (int l = 0; l < lanes; ++l) {
      sums[l] -= in[l * lane_stride + li];
      out[l * lane_stride + oi] = sums[l] / float(count);
    }
  }
}

// Row i of T = D A (T[i][j0 .. j0 + nj)), A 64 x 64 row-major, D 16 x 64: float sums over k in order.
MMCURATE_HD inline void pdq_dct_first(const float* D, const float* A, int i, int j0, int nj, float* t_row) {
  for (int j = j0; j < j0 + nj; ++j) t_row[j] = 0.0f;
  for (int k = 0; k < kPdqSide; ++k) {
    const float d = D[i * kPdqSide + k];
    const float* a = A + k * kPdqSide;
    for (int j = j0; j < j0 + nj; ++j) t_row[j] += d * a[j];
  }
}

// Row i of B = T D^T (B[i][j0 .. j0 + nj)): float sums of T[i][k] * D[j][k] over k in order.
MMCURATE_HD inline void pdq_dct_second(const float* D, const float* t_row, int j0, int nj, float* b_row) {
  for (int j = j0; j < j0 + nj; ++j) b_row[j] = 0.0f;
  for (int k = 0; k < kPdqSide; ++k) {
    const float t = t_row[k];
    for (int j = j0; j < j0 + nj; ++j) b_row[j] += t * D[j * kPdqSide + k];
  }
}

// pdqImageDomainQualityMetric's contribution of one pair of neighbours.
MMCURATE_HD inline int pdq_gradient(float u, float v) {
  const int d = int(((u - v) * 100) / 255);
  return d < 0 ? -d : d;
}

// The quality metric of the 64 x 64 image: vertical then horizontal neighbours, / 90, clamped to 100.
MMCURATE_HD inline int pdq_quality(const float* A) {
  int sum = 0;
  for (int i = 0; i < kPdqSide - 1; ++i)
    for (int j = 0; j < kPdqSide; ++j) sum += pdq_gradient(A[i * kPdqSide + j], A[(i + 1) * kPdqSide + j]);
  for (int i = 0; i < kPdqSide; ++i)
    for (int j = 0; j < kPdqSide - 1; ++j) sum += pdq_gradient(A[i * kPdqSide + j], A[i * kPdqSide + j + 1]);
  const int q = sum / 90;
  return q > 100 ? 100 : q;
}

// Torben Mogensen's median (N. Devillard's implementation, as the reference): for an even n the lower of
// the two middle values, found without sorting.
MMCURATE_HD inline float pdq_torben(const float* m, int n) {
  float mn = m[0], mx = m[0];
  for (int i = 1; i < n; ++i) {
    if (m[i] < mn) mn = m[i];
    if (m[i] > mx) mx = m[i];
  }
  int less, greater, equal;
  float guess, maxlt, mingt;
  while (true) {
    guess = (mn + mx) / 2;
    less = greater = equal = 0;
    maxlt = mn;
    mingt = mx;
    for (int i = 0; i < n; ++i) {
      if (m[i] < guess) {
        ++less;
        if (m[i] > maxlt) maxlt = m[i];
      } else if (m[i] > guess) {
        ++greater;
        if (m[i] < mingt) mingt = m[i];
      } else {
        ++equal;
      }
    }
    if (less <= (n + 1) / 2 && greater <= (n + 1) / 2) break;
    if (less > greater)
      mx = maxlt;
    else
      mn = mingt;
  }
  if (less >= (n + 1) / 2) return maxlt;
  if (less + equal >= (n + 1) / 2) return guess;
  return mingt;
}

// The reference's dct16OriginalTo* rules: variant v (0 original, 1 rotate 90, 2 rotate 180, 3 rotate 270,
// 4 flip x, 5 flip y, 6 flip about the main diagonal, 7 about the anti-diagonal) of the coefficients,
// derived in the DCT domain (sign changes of odd frequencies, transposition).
MMCURATE_HD inline void pdq_dihedral(const float* A, int v, float* B) {
  for (int i = 0; i < kPdqDct; ++i)
    for (int j = 0; j < kPdqDct; ++j) {
      const float a = A[i * kPdqDct + j];
      const bool odd_sum = (i + j) & 1;
      float x = a;
      bool transpose = false;
      switch (v) {
        case 1:
          x = (j & 1) ? a : -a;
          transpose = true;
          break;
        case 2: x = odd_sum ? -a : a; break;
        case 3:
          x = (i & 1) ? a : -a;
          transpose = true;
          break;
        case 4: x = (i & 1) ? a : -a; break;
        case 5: x = (j & 1) ? a : -a; break;
        case 6: transpose = true; break;
        case 7:
          x = odd_sum ? -a : a;
          transpose = true;
          break;
        default: break;
      }
      B[transpose ? j * kPdqDct + i : i * kPdqDct + j] = x;
    }
}

// 256 bits of 16 x 16 coefficients into 32 bytes. Layout: the 256-bit big-endian integer whose bit k is
// coefficient k (= Meta's Hash256 words w[15] .. w[0], its hex string), i.e. byte b holds coefficients
// 8 (31 - b) + 7 .. 8 (31 - b), most significant first. np.unpackbits(code) equals pdqhash's bit vector.
MMCURATE_HD inline void pdq_bits(const float* B, uint8_t* out) {
  const float median = pdq_torben(B, kPdqDct * kPdqDct);
  for (int b = 0; b < kPdqBytes; ++b) {
    uint8_t byte = 0;
    for (int p = 7; p >= 0; --p) byte = uint8_t((byte << 1) | (B[8 * (kPdqBytes - 1 - b) + p] > median ? 1 : 0));
    out[b] = byte;
  }
}

// From the 64 x 64 image to quality and codes: one code (variants = 1) or the 8 dihedral codes, each
// kPdqBytes, in pdq_dihedral's order. t, b, aux: 16 x 64, 16 x 16, 16 x 16 floats of scratch.
MMCURATE_HD inline int pdq_finish(const float* A, const float* D, int variants, float* t, float* b, float* aux,
                                  uint8_t* codes) {
  for (int i = 0; i < kPdqDct; ++i) pdq_dct_first(D, A, i, 0, kPdqSide, t + i * kPdqSide);
  for (int i = 0; i < kPdqDct; ++i) pdq_dct_second(D, t + i * kPdqSide, 0, kPdqDct, b + i * kPdqDct);
  pdq_bits(b, codes);
  for (int v = 1; v < variants; ++v) {
    pdq_dihedral(b, v, aux);
    pdq_bits(aux, codes + v * kPdqBytes);
  }
  return pdq_quality(A);
}

// The reference's DCT matrix: float(float(sqrt(2 / 64)) * cos(pi / 2 / 64 * (i + 1) * (2 j + 1))), the
// product in double. Built on the host (glibc cos); a GPU twin copies the table.
inline void pdq_dct_matrix(float* D) {
  const double pi = 3.14159265358979323846;
  const float scale = float(sqrt(2.0 / double(kPdqSide)));
  for (int i = 0; i < kPdqDct; ++i)
    for (int j = 0; j < kPdqSide; ++j)
      D[i * kPdqSide + j] = float(scale * cos((pi / 2.0 / double(kPdqSide)) * double(i + 1) * double(2 * j + 1)));
}

}  // namespace mmcurate::kernels
