// Image-quality signals on the CPU: kernels/quality.h's helpers over the 64 x 64 canonical cells, then its
// statistics. The CUDA twin (csrc/cuda/quality_cuda.cu) runs the same helpers, one thread per cell.
#include "mmcurate/quality.h"

#include <vector>

#include "kernels/quality.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

namespace {

struct QualityScratch {
  float planes[3 * kernels::kQualityCells];
  int hist[256];
  float binned[kernels::kQualityCells / 4];
  std::vector<float> row_sums;  // height x 64 x 3
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
  // quality_cell, with each source row's horizontal sums computed once (3 floats per row and output column)
  // instead of once per cell that overlaps the row: the same float operations in the same order.
  QualitySpan sx[kQualitySide];
  for (int ox = 0; ox < kQualitySide; ++ox) sx[ox] = quality_span(ox, im.width);
  s.row_sums.resize(size_t(im.height) * kQualitySide * 3);
  for (int y = 0; y < im.height; ++y)
    for (int ox = 0; ox < kQualitySide; ++ox)
      quality_row_sum(im.row(y), im.pixel_stride, im.channels, sx[ox], &s.row_sums[(size_t(y) * kQualitySide + ox) * 3]);
  for (int oy = 0; oy < kQualitySide; ++oy) {
    const QualitySpan sy = quality_span(oy, im.height);
    for (int ox = 0; ox < kQualitySide; ++ox) {
      float acc[3] = {0.0f, 0.0f, 0.0f};
      for (int y = sy.first; y < sy.end; ++y) {
        const float* r = &s.row_sums[(size_t(y) * kQualitySide + ox) * 3];
        const float wy = quality_overlap(sy, y);
        for (int c = 0; c < 3; ++c) acc[c] += wy * r[c];
      }
      const float area = (sy.hi - sy.lo) * (sx[ox].hi - sx[ox].lo);
      float m[3];
      for (int c = 0; c < 3; ++c) m[c] = acc[c] / area;
      const int i = oy * kQualitySide + ox;
      quality_convert(m, im.channels, ycbcr, L + i, RG + i, YB + i);
    }
  }
  return to_signals(quality_stats(L, RG, YB, s.hist, s.binned));
}

std::vector<QualitySignals> quality_batch(const std::vector<ImageViewU8>& images, int num_threads) {
  std::vector<QualitySignals> out(images.size());
  parallel_for(int64_t(images.size()), num_threads, [&](int64_t i) { out[i] = image_quality(images[i]); });
  return out;
}

}  // namespace mmcurate
