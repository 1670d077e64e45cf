// Image-quality signals on the CPU: kernels/quality.h's helpers over the 64 x 64 canonical cells, then its
// statistics. The CUDA twin (csrc/cuda/quality_cuda.cu) runs the same helpers, one thread per cell.
#include "mmcurate/quality.h"

#include "kernels/quality.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

namespace {

struct QualityScratch {
  float planes[3 * kernels::kQualityCells];
  int hist[256];
  float binned[kernels::kQualityCells / 4];
};

QualityScratch& quality_scratch() {
  thread_local QualityScratch s;
  return s;
}

QualitySignals to_signals(const kernels::QualityValues& v) {
  QualitySignals q;
  q.sharpness = v.sharpness;
  q.brightness = v.brightness;
  q.contrast = v.contrast;
  q.colourfulness = v.colourfulness;
  q.border_fraction = v.border_fraction;
  q.flat_fraction = v.flat_fraction;
  q.entropy = v.entropy;
  q.low_information = v.low_information != 0;
  return q;
}

}  // namespace

ImageViewU8 luma_view(const ImageViewU8& image, bool ycbcr) {
  if (!ycbcr) return image;
  ImageViewU8 y = image;
  y.channels = 1;  // the Y byte of each pixel, pixel_stride unchanged
  return y;
}

QualitySignals image_quality(const ImageViewU8& im, bool ycbcr) {
  using namespace kernels;
  QualityScratch& s = quality_scratch();
  float* L = s.planes;
  float* RG = L + kQualityCells;
  float* YB = RG + kQualityCells;
  for (int oy = 0; oy < kQualitySide; ++oy)
    for (int ox = 0; ox < kQualitySide; ++ox) {
      float v[3];
      quality_cell(im.data, im.row_stride, im.pixel_stride, im.height, im.width, im.channels, ycbcr, oy, ox, v);
      const int i = oy * kQualitySide + ox;
      L[i] = v[0];
      RG[i] = v[1];
      YB[i] = v[2];
    }
  return to_signals(quality_stats(L, RG, YB, s.hist, s.binned));
}

std::vector<QualitySignals> quality_batch(const std::vector<ImageViewU8>& images, int num_threads) {
  std::vector<QualitySignals> out(images.size());
  parallel_for(int64_t(images.size()), num_threads, [&](int64_t i) { out[i] = image_quality(images[i]); });
  return out;
}

}  // namespace mmcurate
