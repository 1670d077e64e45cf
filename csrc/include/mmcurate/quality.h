// Image-quality signals (sharpness, brightness, contrast, colourfulness, border and flat fractions, luma
// entropy, a low-information flag) on a canonical 64 x 64 area-averaged image: csrc/kernels/quality.h states
// the definitions. They come out of the fused decode (phash_bytes with quality) or from decoded pixels.
#pragma once
#include <cstdint>
#include <vector>

#include "mmcurate/image.h"

namespace mmcurate {

struct QualitySignals {
  float sharpness = 0, brightness = 0, contrast = 0, colourfulness = 0, border_fraction = 0, flat_fraction = 0,
        entropy = 0;
  bool low_information = false;
};

// One decoded image: 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels, alpha ignored; with ycbcr, 3 channels that
// hold the JPEG decoder's Y, Cb, Cr (DecodeOptions::keep_chroma). Uses per-thread scratch.
QualitySignals image_quality(const ImageViewU8& image, bool ycbcr = false);

// A batch of decoded images (none YCbCr), parallel over images.
std::vector<QualitySignals> quality_batch(const std::vector<ImageViewU8>& images, int num_threads = 0);

// The luma plane the pHash reads from a decode with keep_chroma: channel 0 of a YCbCr image, else the image.
ImageViewU8 luma_view(const ImageViewU8& image, bool ycbcr);

}  // namespace mmcurate
