// PDQ-256 perceptual hash, bit-exact with the `pdqhash` package on the same RGB pixels (see
// csrc/kernels/pdq.h for the algorithm and the one documented reference quirk at 64 x 64).
// Code layout: 32 bytes per code, the 256-bit big-endian integer whose bit k is DCT coefficient k, i.e.
// code.hex() is Meta's hex string and np.unpackbits(code) is pdqhash.compute's bit vector.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mmcurate/decode.h"
#include "mmcurate/image.h"
#include "mmcurate/status.h"

namespace mmcurate {

constexpr int kPdqCodeBytes = 32;
constexpr int kPdqDihedralVariants = 8;

// One image (1 L, 2 LA, 3 RGB or 4 RGBA channels; gray is taken as R = G = B, alpha is ignored).
// codes: 32 bytes, or 8 x 32 with dihedral (original, rot90, rot180, rot270, flip x, flip y, flip +1,
// flip -1, as pdqhash.compute_dihedral). Returns the quality, 0..100.
int pdq_image(const ImageViewU8& image, bool dihedral, uint8_t* codes);

// A batch, parallel over images. codes: n x (8 x) 32 bytes; quality: n.
void pdq_batch(const std::vector<ImageViewU8>& images, bool dihedral, uint8_t* codes, int32_t* quality,
               int num_threads = 0);

// Fused decode -> PDQ of encoded images (JPEG, PNG, WebP), parallel over blobs: each image is decoded once.
//   exact: Pillow-exact RGB decode at full size, so codes equal pdqhash.compute(np.asarray(im.convert("RGB")))
//          of the image Pillow opens (after ImageOps.exif_transpose when exif is set).
//   fast:  JPEGs decoded from the Y plane only (JPEG's Y is PDQ's luma up to rounding), with the fast IDCT,
//          at the smallest DCT scale keeping both sides >= fast_min_side; other formats as exact.
// with_phash: also the 64-bit pHash of the same decoded pixels (one decode for integrity, pHash and PDQ); in
// exact mode it equals phash_bytes' exact code (imagehash.phash of the image Pillow opens).
// A failed sample gets zero codes, quality 0, its decode status and the decoder's error message.
constexpr int kPdqFastMinSide = 128;

// pixel_variants (with dihedral): the 8 codes are the PDQ of the 8 transformed pixel arrays (pdqhash.compute of
// each rotation / flip, mmcurate.reference.TRANSFORMS' order), not compute_dihedral's DCT sign flips, which land
// 14-16 bits from a flipped copy's own code; with_phash then gives the pHash of each transform too (n x 8).
// with_detail: the local-detail grid of the same decode (detail_grid).
struct PdqBytesResult {
  std::vector<uint8_t> codes;  // n x (8 x) 32
  std::vector<int32_t> quality;
  std::vector<uint64_t> phash;  // n (n x 8 with pixel variants) when with_phash, else empty
  std::vector<uint8_t> detail;  // n x kDetailBytes when with_detail, else empty
  // with luma_side > 0: each image's luma (PDQ's weights) area-averaged so its longer side is at most luma_side
  // (never enlarged; sides rounded half to even, at least 1), row-major, with its height and width; empty where
  // decoding failed
  std::vector<std::vector<uint8_t>> luma;
  std::vector<int32_t> luma_height, luma_width;
  std::vector<Status> status;
  std::vector<std::string> errors;  // empty where ok
};

PdqBytesResult pdq_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool dihedral, bool exif, int num_threads = 0,
                         int fast_min_side = kPdqFastMinSide, int64_t max_pixels = kDefaultMaxPixels,
                         bool with_phash = false, bool pixel_variants = false, bool with_detail = false,
                         int luma_side = 0);

// The local-detail grid (mmcurate.curate.local_detail, its oracle): kDetailGrid x kDetailGrid cells, each the
// exact area average (a pixel a cell boundary cuts counts by its covered fraction) of PDQ's luma, in double; the
// cell means (row-major), then the cell standard deviations, rounded to uint8.
constexpr int kDetailGrid = 16;
constexpr int kDetailBytes = 2 * kDetailGrid * kDetailGrid;
void detail_grid(const ImageViewU8& image, uint8_t* out);

// The reference's 16 x 64 DCT matrix, built once on the host; a GPU twin copies this table.
const float* pdq_dct_matrix();

}  // namespace mmcurate
