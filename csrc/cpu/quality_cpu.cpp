// Image-quality signals on the CPU: kernels/quality.h's helpers over the 64 x 64 canonical cells, then its
// statistics. The CUDA twin (csrc/cuda/quality_cuda.cu) runs the same helpers, one thread per cell.
#include "mmcurate/quality.h"

#include <vector>

#include "kernels/quality.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

namespace {

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

// quality_span / quality_overlap of every output index of one axis, computed once per image: taps[o] are the
// overlaps of samples first[o] .. first[o] + count[o] - 1, in order.
struct AxisTaps {
  int first[kernels::kQualitySide], count[kernels::kQualitySide], offset[kernels::kQualitySide];
  float area_side[kernels::kQualitySide];  // hi - lo
  std::vector<float> taps;

  void build(int n) {
    using namespace kernels;
    taps.clear();
    for (int o = 0; o < kQualitySide; ++o) {
      const QualitySpan s = quality_span(o, n);
      first[o] = s.first;
      count[o] = s.end - s.first;
      offset[o] = int(taps.size());
      area_side[o] = s.hi - s.lo;
      for (int k = s.first; k < s.end; ++k) taps.push_back(quality_overlap(s, k));
    }
  }
};

// quality_row_sum of one row for the 64 output columns (the same products and sums, in the same order), the
// channel count fixed at compile time. out: 64 x 3.
template <int C>
void row_sums(const uint8_t* row, int64_t ps, const AxisTaps& tx, float* out) {
  for (int ox = 0; ox < kernels::kQualitySide; ++ox) {
    const uint8_t* p = row + tx.first[ox] * ps;
    const float* w = tx.taps.data() + tx.offset[ox];
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
    for (int j = 0; j < tx.count[ox]; ++j, p += ps) {
      a0 += w[j] * float(p[0]);
      if (C == 3) {
        a1 += w[j] * float(p[1]);
        a2 += w[j] * float(p[2]);
      }
    }
    out[3 * ox] = a0;
    out[3 * ox + 1] = a1;
    out[3 * ox + 2] = a2;
  }
}

struct QualityScratch {
  float planes[3 * kernels::kQualityCells];
  int hist[256];
  float binned[kernels::kQualityCells / 4];
  AxisTaps tx, ty;
  std::vector<float> row_sums;  // height x 64 x 3
};

QualityScratch& quality_scratch() {
  thread_local QualityScratch s;
  return s;
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
  // quality_cell, with each source row's horizontal sums computed once for the cells above and below it (the same
  // float operations in the same order as the GPU's per-cell quality_cell).
  s.tx.build(im.width);
  s.ty.build(im.height);
  s.row_sums.resize(size_t(im.height) * kQualitySide * 3);
  for (int y = 0; y < im.height; ++y) {
    float* out = s.row_sums.data() + size_t(y) * kQualitySide * 3;
    if (im.channels >= 3)
      row_sums<3>(im.row(y), im.pixel_stride, s.tx, out);
    else
      row_sums<1>(im.row(y), im.pixel_stride, s.tx, out);
  }
  for (int oy = 0; oy < kQualitySide; ++oy) {
    const float* wy = s.ty.taps.data() + s.ty.offset[oy];
    for (int ox = 0; ox < kQualitySide; ++ox) {
      float acc[3] = {0.0f, 0.0f, 0.0f};
      for (int j = 0; j < s.ty.count[oy]; ++j) {
        const float* r = s.row_sums.data() + (size_t(s.ty.first[oy] + j) * kQualitySide + ox) * 3;
        for (int c = 0; c < 3; ++c) acc[c] += wy[j] * r[c];
      }
      const float area = s.ty.area_side[oy] * s.tx.area_side[ox];
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
