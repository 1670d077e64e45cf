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

  void build(int length) {
    using namespace kernels;
    if (length == n) return;
    n = length;
    taps.clear();
    itaps.clear();
    for (int o = 0; o < kQualitySide; ++o) {
      const QualitySpan s = quality_span(o, n);
      first[o] = s.first;
      count[o] = s.end - s.first;
      offset[o] = int(taps.size());
      area_side[o] = s.hi - s.lo;
      for (int k = s.first; k < s.end; ++k) {
        taps.push_back(quality_overlap(s, k));
        itaps.push_back(int32_t(quality_overlap(s, k) * float(kQualitySide)));
      }
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
  int hist[kernels::kQualityHistSize];
  float binned[kernels::kQualityCells / 4];
  AxisTaps tx, ty;
  std::vector<float> row_sums;  // height x 64 x 3
  std::vector<int32_t> column_sums;  // (width + 1) x channels: one cell row's weighted sum of source rows
  std::vector<int32_t> prefix;  // (width + 1) x channels: their running sums along the row
  float means[3 * kernels::kQualityCells];  // cell means, 64 x 64 x 3 (the integer path)
};

// Cell means through integer sums (integer_sums_exact). Per cell row: the weighted sum of its source rows
// (contiguous, so vectorised), then the cells along it as differences of that sum's integral: with P the running
// sum of the columns, the integral up to x = k + f / 64 is 64 P[k] + f v[k] (in 64ths), and a cell from lo to hi
// is I(hi) - I(lo), the same integer as its weighted columns (the span bounds are b * width / 64). means: 64 x 64 x 3.
template <int C>
void cell_means_integer(const ImageViewU8& im, QualityScratch& s, float* means) {
  using namespace kernels;
  const int w = im.width, row_len = w * C;
  s.column_sums.assign(size_t(row_len + C), 0);  // one pixel of zeros past the end: the last boundary reads it
  s.prefix.resize(size_t(row_len + C));
  int32_t* v = s.column_sums.data();
  int32_t* P = s.prefix.data();
  constexpr int c3 = C >= 3 ? 3 : 1;
  int bound_k[kQualitySide + 1], bound_f[kQualitySide + 1];  // boundary b at b * w / 64 = k + f / 64
  for (int b = 0; b <= kQualitySide; ++b) {
    bound_k[b] = (b * w) / kQualitySide;
    bound_f[b] = (b * w) % kQualitySide;
  }
  float area_x[kQualitySide * 3];
  for (int ox = 0; ox < kQualitySide; ++ox)
    for (int c = 0; c < 3; ++c) area_x[3 * ox + c] = s.tx.area_side[ox];
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
    {  // running sums in registers: a loop over P[i - C] would stall on store-to-load forwarding
      int32_t run[C] = {};
      for (int i = 0; i < row_len + C; i += C)
        for (int c = 0; c < C; ++c) {
          P[i + c] = run[c];
          run[c] += v[i + c];
        }
    }
    // Each cell's integer sum, divided by 4096 (exact in float): the cell's numerator, in place in means. Scalar, the
    // previous boundary's integral in registers (a vectorised version reads back its own fresh stores and stalls).
    float* m = means + oy * kQualitySide * 3;
    int32_t prev[3] = {0, 0, 0};  // the integral at boundary 0
    for (int ox = 0; ox < kQualitySide; ++ox) {
      const int at = bound_k[ox + 1] * C, f = bound_f[ox + 1];  // bound_k == w only with f == 0 (v's zero pixel)
      for (int c = 0; c < 3; ++c) {
        const int32_t integral = c < c3 ? kQualitySide * P[at + c] + f * v[at + c] : 0;
        m[3 * ox + c] = float(integral - prev[c]) * (1.0f / 4096.0f);
        prev[c] = integral;
      }
    }
  }
  // quality_cell's acc / area for every cell (vectorised divisions, each correctly rounded), after all the
  // numerators are stored
  for (int oy = 0; oy < kQualitySide; ++oy) {
    float* m = means + oy * kQualitySide * 3;
    const float area_y = s.ty.area_side[oy];
    for (int i = 0; i < kQualitySide * 3; ++i) m[i] = m[i] / (area_y * area_x[i]);
  }
}

// quality_convert of every cell, the source kind fixed at compile time (the same operations, without a branch per
// cell).
template <int Channels, bool YCbCr>
void convert_cells(const float* means, float* L, float* RG, float* YB) {
  for (int i = 0; i < kernels::kQualityCells; ++i)
    kernels::quality_convert(means + 3 * i, Channels, YCbCr, L + i, RG + i, YB + i);
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
    if (im.channels < 3)
      convert_cells<1, false>(s.means, L, RG, YB);
    else if (ycbcr)
      convert_cells<3, true>(s.means, L, RG, YB);
    else
      convert_cells<3, false>(s.means, L, RG, YB);
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
