// wHash's Haar steps, replicating PyWavelets (pywt.dwt2 / idwt2 with 'haar', mode 'symmetric') to the
// last floating-point operation, so ties against the median break as imagehash's do.
//
// pywt (convolution.template.c) computes, for even-length input and the 2-tap Haar filters:
//   analysis:  out[o] = (0 + x[2o+1]*f[0]) + x[2o]*f[1]           (downsampling_convolution)
//   synthesis: y[2i]  = (0 + r_lo[0]*a[i]) + (0 + r_hi[0]*d[i])   (upsampling_convolution_valid_sf,
//              y[2i+1]= (0 + r_lo[1]*a[i]) + (0 + r_hi[1]*d[i])    approximation added first)
// with dec_lo = (s, s), dec_hi = (-s, s), rec_lo = (s, s), rec_hi = (s, -s), s = 1/sqrt(2) rounded.
// The "0 +" terms are kept: they only normalise -0 to +0 but cost nothing and keep the mirror exact.
// dwt2 transforms axis 0 (columns) first, then axis 1; idwt2 undoes axis 1 first, then axis 0.
#pragma once
#include <stdint.h>

#include "kernels/hd.h"

namespace mmcurate::kernels {

constexpr double kHaarS = 0.7071067811865476;  // 0x1.6a09e667f3bcdp-1, pywt's Haar filter tap

MMCURATE_HD inline double haar_lo(double even, double odd) { return (0.0 + odd * kHaarS) + even * kHaarS; }
MMCURATE_HD inline double haar_hi(double even, double odd) { return (0.0 + odd * -kHaarS) + even * kHaarS; }
MMCURATE_HD inline double haar_syn_even(double a, double d) { return (0.0 + kHaarS * a) + (0.0 + kHaarS * d); }
MMCURATE_HD inline double haar_syn_odd(double a, double d) { return (0.0 + kHaarS * a) + (0.0 + -kHaarS * d); }

// One dwt2 level of an n x n row-major block (n even). Outputs are (n/2) x (n/2), named by pywt's
// dwtn keys: aa (approximation), ad, da, dd. row_a / row_d: n doubles of scratch each (one row of the
// axis-0 pass at a time, so memory stays O(n)). Pass nullptr for ad, da, dd and row_d when only the
// approximation is needed.
MMCURATE_HD inline void haar_dwt2(const double* in, int n, double* row_a, double* row_d, double* aa, double* ad,
                                  double* da, double* dd) {
  const int h = n / 2;
  for (int o = 0; o < h; ++o) {
    const double* r0 = in + int64_t(2 * o) * n;
    const double* r1 = r0 + n;
    for (int x = 0; x < n; ++x) row_a[x] = haar_lo(r0[x], r1[x]);  // axis 0
    double* aa_row = aa + int64_t(o) * h;
    for (int p = 0; p < h; ++p) aa_row[p] = haar_lo(row_a[2 * p], row_a[2 * p + 1]);  // axis 1
    if (!row_d) continue;
    for (int x = 0; x < n; ++x) row_d[x] = haar_hi(r0[x], r1[x]);
    double* ad_row = ad + int64_t(o) * h;
    double* da_row = da + int64_t(o) * h;
    double* dd_row = dd + int64_t(o) * h;
    for (int p = 0; p < h; ++p) {
      ad_row[p] = haar_hi(row_a[2 * p], row_a[2 * p + 1]);
      da_row[p] = haar_lo(row_d[2 * p], row_d[2 * p + 1]);
      dd_row[p] = haar_hi(row_d[2 * p], row_d[2 * p + 1]);
    }
  }
}

// One idwt2 level: (aa, ad, da, dd), each h x h, -> out (2h x 2h). row_a / row_d: 2h doubles each.
MMCURATE_HD inline void haar_idwt2(const double* aa, const double* ad, const double* da, const double* dd, int h,
                                   double* row_a, double* row_d, double* out) {
  const int n = 2 * h;
  for (int r = 0; r < h; ++r) {
    const int64_t s = int64_t(r) * h;
    for (int i = 0; i < h; ++i) {  // axis 1 first
      row_a[2 * i] = haar_syn_even(aa[s + i], ad[s + i]);
      row_a[2 * i + 1] = haar_syn_odd(aa[s + i], ad[s + i]);
      row_d[2 * i] = haar_syn_even(da[s + i], dd[s + i]);
      row_d[2 * i + 1] = haar_syn_odd(da[s + i], dd[s + i]);
    }
    double* o0 = out + int64_t(2 * r) * n;  // then axis 0
    double* o1 = o0 + n;
    for (int x = 0; x < n; ++x) {
      o0[x] = haar_syn_even(row_a[x], row_d[x]);
      o1[x] = haar_syn_odd(row_a[x], row_d[x]);
    }
  }
}

}  // namespace mmcurate::kernels
