// Perceptual hashes on decoded pixels: gray rows -> LANCZOS resize (Pillow-exact) -> hash.
#include <stdexcept>
#include <vector>

#include "cpu/resample_engine.h"
#include "kernels/dct.h"
#include "kernels/hash_bits.h"
#include "kernels/whash.h"
#include "mmcurate/hashes.h"
#include "mmcurate/parallel.h"
#include "mmcurate/resize.h"

namespace mmcurate {

namespace {

struct HashScratch {
  std::vector<uint8_t> small;   // the resized L image
  std::vector<double> f64;      // DCT / Haar work
};

HashScratch& hash_scratch() {
  thread_local HashScratch s;
  return s;
}

// wHash of a big image needs O(n^2) doubles (n = 2048 for a 12 MP photo: ~70 MB); that much is not
// kept per thread between images.
constexpr int64_t kKeepWhashScratchDoubles = int64_t(1) << 22;

}  // namespace

HashKind parse_hash_kind(const std::string& name) {
  if (name == "phash") return HashKind::phash;
  if (name == "dhash") return HashKind::dhash;
  if (name == "ahash") return HashKind::ahash;
  if (name == "whash") return HashKind::whash;
  throw std::invalid_argument("unknown hash kind '" + name + "' (expected phash, dhash, ahash or whash)");
}

const double* phash_dct_basis() {
  static const std::vector<double> basis = [] {
    std::vector<double> b(kernels::kPhashLow * kernels::kPhashSide);
    kernels::dct_basis(kernels::kPhashSide, kernels::kPhashLow, b.data());
    return b;
  }();
  return basis.data();
}

uint64_t phash_from_32x32(const uint8_t* px) {
  double scratch[kernels::kPhashLow * kernels::kPhashSide + 128];
  return kernels::phash_from_32x32(px, phash_dct_basis(), scratch);
}

uint64_t dhash_from_9x8(const uint8_t* px) { return kernels::dhash_from_9x8(px); }
uint64_t ahash_from_8x8(const uint8_t* px) { return kernels::ahash_from_8x8(px); }

uint64_t whash_from_square(const uint8_t* px, int n) {
  if (n < 8 || (n & (n - 1)) != 0) throw std::invalid_argument("whash: side must be a power of two >= 8");
  auto& s = hash_scratch();
  const int64_t need = kernels::whash_scratch_doubles(n);
  if (need > kKeepWhashScratchDoubles) {
    std::vector<double> big(size_t(need), 0.0);
    return kernels::whash_from_gray(px, n, big.data());
  }
  return kernels::whash_from_gray(px, n, cpu::grow(s.f64, size_t(need)));
}

uint64_t hash_image(const ImageViewU8& image, HashKind kind) {
  auto& s = hash_scratch();
  const auto lanczos = ResampleFilter::lanczos;
  switch (kind) {
    case HashKind::phash: {
      uint8_t* px = cpu::grow(s.small, 32 * 32);
      gray_resize_u8(image, 32, 32, lanczos, px);
      return phash_from_32x32(px);
    }
    case HashKind::dhash: {
      uint8_t* px = cpu::grow(s.small, 9 * 8);
      gray_resize_u8(image, 8, 9, lanczos, px);
      return dhash_from_9x8(px);
    }
    case HashKind::ahash: {
      uint8_t* px = cpu::grow(s.small, 8 * 8);
      gray_resize_u8(image, 8, 8, lanczos, px);
      return ahash_from_8x8(px);
    }
    case HashKind::whash: {
      const int n = kernels::whash_image_scale(image.width, image.height);
      uint8_t* px = cpu::grow(s.small, size_t(n) * n);
      gray_resize_u8(image, n, n, lanczos, px);
      return whash_from_square(px, n);
    }
  }
  throw std::invalid_argument("hash_image: unknown hash kind");
}

void hash_batch(const std::vector<ImageViewU8>& images, HashKind kind, uint64_t* out, int num_threads) {
  parallel_for(int64_t(images.size()), num_threads, [&](int64_t i) { out[i] = hash_image(images[i], kind); });
}

}  // namespace mmcurate
