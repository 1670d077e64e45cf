// Population count and Hamming distance of 64-bit and multi-word codes, shared by the CPU and CUDA kernels.
// A W-word code is W uint64 in a row; bit b of the code is bit b % 64 of word b / 64.
// Header-only; every function is callable from host and device code.
#pragma once
#include <cstdint>

// hd.h (resize/hash kernels) defines the same macro; whichever header comes first wins, and both
// spell it so that `static MMCURATE_HD` below stays a valid declaration either way.
#ifndef MMCURATE_HD
#if defined(__CUDACC__)
#define MMCURATE_HD __host__ __device__ __forceinline__
#else
#define MMCURATE_HD inline
#endif
#endif

namespace mmcurate::kernels {

static MMCURATE_HD int popcount64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __popcll(static_cast<unsigned long long>(x));
#else
  return __builtin_popcountll(static_cast<unsigned long long>(x));  // one POPCNT with -mpopcnt/-march=native
#endif
}

static MMCURATE_HD int hamming64(uint64_t a, uint64_t b) { return popcount64(a ^ b); }

// Width-w field of `code` starting at bit `offset` (w in 1..64): the bucket key of one MIH substring.
static MMCURATE_HD uint64_t bit_field(uint64_t code, int offset, int width) {
  const uint64_t mask = width >= 64 ? ~uint64_t(0) : ((uint64_t(1) << width) - 1);
  return (code >> offset) & mask;
}

template <int W>
MMCURATE_HD int hamming(const uint64_t* a, const uint64_t* b) {
  int d = 0;
  for (int k = 0; k < W; ++k) d += popcount64(a[k] ^ b[k]);
  return d;
}

// bit_field of a W-word code; a field may straddle two words (width <= 64).
static MMCURATE_HD uint64_t bit_field(const uint64_t* code, int offset, int width) {
  const int word = offset >> 6, shift = offset & 63;
  uint64_t v = code[word] >> shift;
  if (shift + width > 64) v |= code[word + 1] << (64 - shift);
  return bit_field(v, 0, width);
}

// The same field of a ^ b: the substring distance of a pair is popcount of this.
static MMCURATE_HD uint64_t xor_field(const uint64_t* a, const uint64_t* b, int offset, int width) {
  return bit_field(a, offset, width) ^ bit_field(b, offset, width);
}

}  // namespace mmcurate::kernels
