// Population count and 64-bit Hamming distance, shared by the CPU and CUDA kernels.
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

}  // namespace mmcurate::kernels
