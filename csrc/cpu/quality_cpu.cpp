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

// quality_span / quality_overlap of every output index of one axis, computed once per axis length: taps[o] are
// the overlaps of samples first[o] .. first[o] + count[o] - 1, in order; itaps the same overlaps times 64 (the
// span bounds are multiples of 1/64, so these are exact integers 0..64).
struct AxisTaps {
  int n = -1;  // the axis length the taps are for
  int first[kernels::kQualitySide], count[kernels::kQualitySide], offset[kernels::kQualitySide];
  float area_side[kernels::kQualitySide];  // hi - lo
  std::vector<float> taps;
  std::vector<int32_t> itaps;
  std::vector<int32_t> itaps4;  // itaps padded with zeros to 4 per output index (when max_count <= 4)
  int max_count = 0;

  void build(int length) {
    using namespace kernels;
    if (length == n) return;
    n = length;
    taps.clear();
    itaps.clear();
    itaps4.assign(4 * kQualitySide, 0);
    max_count = 0;
    for (int o = 0; o < kQualitySide; ++o) {
      const QualitySpan s = quality_span(o, n);
      first[o] = s.first;
      count[o] = s.end - s.first;
      offset[o] = int(taps.size());
      area_side[o] = s.hi - s.lo;
      for (int k = s.first; k < s.end; ++k) {
        taps.push_back(quality_overlap(s, k));
        itaps.push_back(int32_t(quality_overlap(s, k) * float(kQualitySide)));
        if (k - s.first < 4) itaps4[4 * o + k - s.first] = itaps.back();
      }
      max_count = count[o] > max_count ? count[o] : max_count;
    }
  }
};

// The cell sums in integers, when that is exact for quality_cell's float arithmetic. Every overlap is a multiple
// of 1/64, so each product, row sum, weighted row and running total of quality_cell is an integer over 64 or 4096;
// all of them are at most 255 * width * height / 4096, so with 255 * width * height <= 2^24 (about 256 x 256
// pixels: a JPEG at its reduced DCT scale, unless its aspect ratio is extreme) float holds every one exactly,
// whatever the order of the additions.
// The integer sums below are then the float sums times 4096, and the cell means agree bit for bit.
bool integer_sums_exact(const ImageViewU8& im) {
  return im.pixel_stride == im.channels && int64_t(255) * im.width * im.height <= (int64_t(1) << 24);
}

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
  std::vector<int32_t> column_sums;  // width x channels: one cell row's weighted sum of source rows
  float means[3 * kernels::kQualityCells];  // cell means, 64 x 64 x 3 (the integer path)
};

// Cell means through integer sums (integer_sums_exact): the weighted rows of each cell row first (contiguous, so
// vectorised), then the weighted columns of that sum. means: 64 x 64 x 3.
template <int C>
void cell_means_integer(const ImageViewU8& im, QualityScratch& s, float* means) {
  using namespace kernels;
  const int w = im.width, row_len = w * C;
  s.column_sums.assign(size_t(row_len + 4 * C), 0);  // 4 pixels of zeros past the end for the 4-tap reads
  int32_t* v = s.column_sums.data();
  constexpr int c3 = C >= 3 ? 3 : 1;
  for (int oy = 0; oy < kQualitySide; ++oy) {
    const int32_t* wy = s.ty.itaps.data() + s.ty.offset[oy];
    {
      const uint8_t* r = im.row(s.ty.first[oy]);
      const int32_t b = wy[0];
      for (int i = 0; i < row_len; ++i) v[i] = b * int32_t(r[i]);
    }
    for (int j = 1; j < s.ty.count[oy]; ++j) {
      const uint8_t* r = im.row(s.ty.first[oy] + j);
      const int32_t b = wy[j];
      for (int i = 0; i < row_len; ++i) v[i] += b * int32_t(r[i]);
    }
    int32_t acc[kQualitySide * 3];
    float area[kQualitySide * 3];
    for (int ox = 0; ox < kQualitySide; ++ox) {
      const int32_t* p = v + s.tx.first[ox] * C;
      int32_t a[3] = {0, 0, 0};
      if (s.tx.max_count <= 4) {  // the usual case (a side under 4 x 64): 4 taps, zero-weighted past the span
        const int32_t* wx = s.tx.itaps4.data() + 4 * ox;
        for (int j = 0; j < 4; ++j)
          for (int c = 0; c < c3; ++c) a[c] += wx[j] * p[j * C + c];
      } else {
        const int32_t* wx = s.tx.itaps.data() + s.tx.offset[ox];
        for (int j = 0; j < s.tx.count[ox]; ++j, p += C)
          for (int c = 0; c < c3; ++c) a[c] += wx[j] * p[c];
      }
      for (int c = 0; c < 3; ++c) {
        acc[3 * ox + c] = a[c];
        area[3 * ox + c] = s.ty.area_side[oy] * s.tx.area_side[ox];
      }
    }
    // quality_cell's acc / area, a whole cell row at a time (vectorised divisions, each correctly rounded)
    float* m = means + oy * kQualitySide * 3;
    for (int i = 0; i < kQualitySide * 3; ++i) m[i] = (float(acc[i]) * (1.0f / 4096.0f)) / area[i];
  }
}

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
  s.tx.build(im.width);
  s.ty.build(im.height);
  if (integer_sums_exact(im)) {
    switch (im.channels) {
      case 1: cell_means_integer<1>(im, s, s.means); break;
      case 2: cell_means_integer<2>(im, s, s.means); break;
      case 3: cell_means_integer<3>(im, s, s.means); break;
      default: cell_means_integer<4>(im, s, s.means); break;
    }
    for (int i = 0; i < kQualityCells; ++i) quality_convert(s.means + 3 * i, im.channels, ycbcr, L + i, RG + i, YB + i);
    return to_signals(quality_stats(L, RG, YB, s.hist, s.binned));
  }
  // Larger images: quality_cell, with each source row's horizontal sums computed once for the cells above and below
  // it (the same float operations in the same order as the GPU's per-cell quality_cell).
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
