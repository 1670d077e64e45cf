// 64-bit perceptual hashes, bit-exact with imagehash 4.3.2 (hash_size 8) on the same decoded pixels:
// each takes Pillow's convert("L") of the image, resizes it with LANCZOS, and thresholds.
//   phash: 32x32, DCT-II (axis 0 then 1), top-left 8x8 > median
//   dhash: 9 wide x 8 high, right > left
//   ahash: 8x8, > mean
//   whash: s x s with s = max(2**floor(log2(min(w, h))), 8); Haar wavedec2 to 1x1, LL zeroed,
//          waverec2, wavedec2 down to 8x8, > median
// Codes read like str(imagehash.xhash(img)): the first matrix element is the most significant bit.
// pHash caveat: scipy's DCT (pocketfft) and ours differ by ~1e-13, so a bit can differ only where a
// coefficient ties the median in exact arithmetic (flat or exactly symmetric images); our output is
// deterministic there.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mmcurate/decode.h"
#include "mmcurate/image.h"
#include "mmcurate/quality.h"
#include "mmcurate/status.h"

namespace mmcurate {

enum class HashKind : int8_t { phash = 0, dhash = 1, ahash = 2, whash = 3 };

// Parses "phash" | "dhash" | "ahash" | "whash"; throws std::invalid_argument otherwise.
HashKind parse_hash_kind(const std::string& name);

// One image (1 L, 2 LA, 3 RGB or 4 RGBA channels). Uses per-thread scratch: no heap work once warm.
uint64_t hash_image(const ImageViewU8& image, HashKind kind);

// A batch, parallel over images.
void hash_batch(const std::vector<ImageViewU8>& images, HashKind kind, uint64_t* out, int num_threads = 0);

// Fused decode -> pHash of encoded images (JPEG, PNG, WebP), parallel over blobs. A failed sample gets
// code 0, its decode status and the decoder's error message; the others are unaffected.
//   exact: Pillow-exact decode to L (decode mode gray), so the code equals imagehash.phash of the image
//          Pillow opens (after ImageOps.exif_transpose when exif is set).
//   fast:  JPEGs decoded from the Y plane only, with the fast IDCT, at the smallest DCT scale that keeps
//          both sides >= fast_min_side; other formats as exact. Close to, not equal to, the exact code.
constexpr int kPhashFastMinSide = 64;

struct HashBytesResult {
  std::vector<uint64_t> codes;
  std::vector<Status> status;
  std::vector<std::string> errors;  // empty where ok
  std::vector<QualitySignals> quality;  // n with quality (zeros where decoding failed), else empty
};

// max_pixels as in DecodeOptions (checked from the header before any allocation; <= 0: no limit).
// quality: also the quality signals of the same decode (mmcurate/quality.h), codes unchanged: fast mode keeps
// the JPEG chroma at the same DCT scale (DecodeOptions::keep_chroma), exact mode decodes RGB and hashes its L.
HashBytesResult phash_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool exif, int num_threads = 0,
                            int fast_min_side = kPhashFastMinSide, int64_t max_pixels = kDefaultMaxPixels,
                            bool quality = false);

// The hash step alone, on an already resized L image (row-major, packed):
uint64_t phash_from_32x32(const uint8_t* px);          // 32 x 32
uint64_t dhash_from_9x8(const uint8_t* px);            // 8 rows of 9
uint64_t ahash_from_8x8(const uint8_t* px);            // 8 x 8
uint64_t whash_from_square(const uint8_t* px, int n);  // n x n, n a power of two >= 8

// The 8 x 32 cosine basis phash uses (2 cos(pi k (2i+1) / 64)), built once on the host; a GPU twin
// copies this table instead of calling its own cos().
const double* phash_dct_basis();

}  // namespace mmcurate
