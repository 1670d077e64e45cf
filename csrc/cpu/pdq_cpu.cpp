// PDQ-256 on decoded pixels and fused from bytes. The float work is kernels/pdq.h's; this file runs its
// lockstep helpers over many lanes (columns side by side; rows kRowLanes at a time, transposed) so the
// float divides vectorise, without changing any lane's sequence of operations.
#include "mmcurate/pdq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "cpu/luma_simd.h"
#include "cpu/resample_engine.h"
#include "kernels/pdq.h"
#include "mmcurate/hashes.h"
#include "mmcurate/parallel.h"

namespace mmcurate {

namespace {

using namespace kernels;

struct PdqScratch {
  std::vector<float> full1, full2;         // H x W: the first row pass's output, then the first column pass's
  std::vector<float> cols1, cols2;         // H x 64: the second row pass at the 64 sampled columns
  std::vector<float> block_in, block_out;  // kRowLanes rows, transposed (x * kRowLanes + lane)
  std::vector<float> rows, sums;            // kRowLanes luma rows; running sums
};

PdqScratch& pdq_scratch() {
  thread_local PdqScratch s;
  return s;
}

// Rows processed in lockstep by the row passes.
constexpr int kRowLanes = 32;

#if defined(__AVX2__)
// 8 packed RGB pixels -> 8 lumas with pdq_luma's double products and sums, 4 lanes at a time: decoded
// rows are RGB, and the compiler's own vectorisation of the 3-byte stride is poor.
inline void luma8_rgb(const uint8_t* q, float* o) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));       // bytes 0..15
  const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 16));  // bytes 16..23
  constexpr char Z = -128;  // a shuffle index that zeroes its byte
  auto gather = [&](__m128i from_lo, __m128i from_hi) {
    return _mm_or_si128(_mm_shuffle_epi8(lo, from_lo), _mm_shuffle_epi8(hi, from_hi));
  };
  const __m128i ch[3] = {gather(_mm_setr_epi8(0, 3, 6, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
                                _mm_setr_epi8(Z, Z, Z, Z, Z, Z, 2, 5, Z, Z, Z, Z, Z, Z, Z, Z)),
                         gather(_mm_setr_epi8(1, 4, 7, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
                                _mm_setr_epi8(Z, Z, Z, Z, Z, 0, 3, 6, Z, Z, Z, Z, Z, Z, Z, Z)),
                         gather(_mm_setr_epi8(2, 5, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
                                _mm_setr_epi8(Z, Z, Z, Z, Z, 1, 4, 7, Z, Z, Z, Z, Z, Z, Z, Z))};
  const double k[3] = {kPdqLumaR, kPdqLumaG, kPdqLumaB};
  for (int part = 0; part < 2; ++part) {  // pixels 0..3, then 4..7
    __m256d term[3];
    for (int c = 0; c < 3; ++c) {
      const __m128i bytes = part ? _mm_srli_si128(ch[c], 4) : ch[c];
      term[c] = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm_cvtepu8_epi32(bytes)), _mm256_set1_pd(k[c]));
    }
    _mm_storeu_ps(o + 4 * part, _mm256_cvtpd_ps(_mm256_add_pd(_mm256_add_pd(term[0], term[1]), term[2])));
  }
}
#endif

// pdq_luma of a row of packed pixels; a compile-time channel count lets the double math vectorise.
template <int C>
void luma_packed(const uint8_t* p, int w, float* o) {
  int x = 0;
#if defined(__AVX2__)
  if (C == 3)
    for (; x + 8 <= w; x += 8) luma8_rgb(p + 3 * x, o + x);
#endif
  for (; x < w; ++x) {
    const uint8_t* q = p + x * C;
    o[x] = C >= 3 ? pdq_luma(q[0], q[1], q[2]) : pdq_luma(q[0], q[0], q[0]);
  }
}

void luma_row(const ImageViewU8& im, int y, float* o) {
  const uint8_t* p = im.row(y);
  const int64_t ps = im.pixel_stride;
  if (ps == im.channels) {
    switch (im.channels) {
      case 1: return luma_packed<1>(p, im.width, o);
      case 2: return luma_packed<2>(p, im.width, o);
      case 3: return luma_packed<3>(p, im.width, o);
      default: return luma_packed<4>(p, im.width, o);
    }
  }
  for (int x = 0; x < im.width; ++x) {
    const uint8_t* q = p + x * ps;
    o[x] = im.channels >= 3 ? pdq_luma(q[0], q[1], q[2]) : pdq_luma(q[0], q[0], q[0]);
  }
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols: plain data movement, so
// exactness does not depend on it; 8 x 8 tiles in AVX registers where available.
void transpose(const float* src, int64_t src_stride, int rows, int cols, float* dst, int64_t dst_stride) {
  int r0 = 0;
#if defined(__AVX__)
  for (; r0 + 8 <= rows; r0 += 8) {
    int c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) {
      __m256 v[8], t[8];
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + (r0 + i) * src_stride + c0);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        v[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + (c0 + i) * dst_stride + r0, _mm256_permute2f128_ps(v[i], v[i + 4], 0x20));
        _mm256_storeu_ps(dst + (c0 + i + 4) * dst_stride + r0, _mm256_permute2f128_ps(v[i], v[i + 4], 0x31));
      }
    }
    for (int r = r0; r < r0 + 8; ++r)
      for (int c = c0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
  }
#endif
  for (int r = r0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
}

// A box pass along `lanes` (<= kRowLanes) rows of `src` (row stride w): the rows are transposed so the
// lanes sit side by side (the float divides vectorise; each row's sequence of operations is unchanged).
// Returns the filtered rows, still transposed (x * kRowLanes + lane).
const float* box_row_block(const float* src, int lanes, int w, int window, PdqScratch& s) {
  float* tin = cpu::grow(s.block_in, size_t(w) * kRowLanes);
  float* tout = cpu::grow(s.block_out, size_t(w) * kRowLanes);
  transpose(src, w, lanes, w, tin, kRowLanes);
  pdq_box_lanes(tin, tout, w, kRowLanes, lanes, 1, window, cpu::grow(s.sums, size_t(kRowLanes)));
  return tout;
}

// jaroszFilterFloat (rows, columns, rows, columns), then decimateFloat, into A (64 x 64). Luma is made
// block by block inside the first row pass (luma_of(y, out) writes row y's w lumas); the second row pass keeps
// only the 64 columns the decimation reads, and the last column pass runs on those: every column's running sum
// is independent of the others.
template <class LumaRow>
void downsample(int h, int w, LumaRow&& luma_of, float* A) {
  auto& s = pdq_scratch();
  const int wr = pdq_window(w), wc = pdq_window(h);
  float* b1 = cpu::grow(s.full1, size_t(h) * w);
  float* b2 = cpu::grow(s.full2, size_t(h) * w);
  float* c1 = cpu::grow(s.cols1, size_t(h) * kPdqSide);
  float* c2 = cpu::grow(s.cols2, size_t(h) * kPdqSide);
  float* luma = cpu::grow(s.rows, size_t(w) * kRowLanes);
  int xs[kPdqSide];
  for (int j = 0; j < kPdqSide; ++j) xs[j] = pdq_decimate_index(j, w);
  for (int r = 0; r < h; r += kRowLanes) {
    const int lanes = std::min(kRowLanes, h - r);
    for (int l = 0; l < lanes; ++l) luma_of(r + l, luma + int64_t(l) * w);
    transpose(box_row_block(luma, lanes, w, wr, s), kRowLanes, w, lanes, b1 + int64_t(r) * w, w);
  }
  pdq_box_lanes(b1, b2, h, w, w, 1, wc, cpu::grow(s.sums, size_t(w)));
  for (int r = 0; r < h; r += kRowLanes) {
    const int lanes = std::min(kRowLanes, h - r);
    const float* t = box_row_block(b2 + int64_t(r) * w, lanes, w, wr, s);
    for (int l = 0; l < lanes; ++l)
      for (int j = 0; j < kPdqSide; ++j) c1[int64_t(r + l) * kPdqSide + j] = t[xs[j] * kRowLanes + l];
  }
  pdq_box_lanes(c1, c2, h, kPdqSide, kPdqSide, 1, wc, cpu::grow(s.sums, size_t(kPdqSide)));
  for (int i = 0; i < kPdqSide; ++i)
    std::memcpy(A + i * kPdqSide, c2 + int64_t(pdq_decimate_index(i, h)) * kPdqSide, kPdqSide * sizeof(float));
}

}  // namespace

const float* pdq_dct_matrix() {
  static const std::vector<float> D = [] {
    std::vector<float> d(kPdqDct * kPdqSide);
    kernels::pdq_dct_matrix(d.data());
    return d;
  }();
  return D.data();
}

namespace {

// pdq_image over an h x w image given by its luma rows (luma_of(y, out)).
template <class LumaRow>
int pdq_of_rows(int h, int w, LumaRow&& luma_of, bool dihedral, uint8_t* codes) {
  const int variants = dihedral ? kPdqVariants : 1;
  if (h < kPdqMinSide || w < kPdqMinSide) {
    std::memset(codes, 0, size_t(variants) * kPdqBytes);
    return 0;
  }
  float A[kPdqSide * kPdqSide], t[kPdqDct * kPdqSide], b[kPdqDct * kPdqDct], aux[kPdqDct * kPdqDct];
  if (h == kPdqSide && w == kPdqSide && !dihedral) {
    // pdqhash.compute takes an exactly 64 x 64 image unfiltered (compute_dihedral filters it)
    for (int y = 0; y < kPdqSide; ++y) luma_of(y, A + y * kPdqSide);
  } else {
    downsample(h, w, luma_of, A);
  }
  return pdq_finish(A, pdq_dct_matrix(), variants, t, b, aux, codes);
}

}  // namespace

int pdq_image(const ImageViewU8& im, bool dihedral, uint8_t* codes) {
  return pdq_of_rows(im.height, im.width, [&](int y, float* o) { luma_row(im, y, o); }, dihedral, codes);
}

void pdq_batch(const std::vector<ImageViewU8>& images, bool dihedral, uint8_t* codes, int32_t* quality,
               int num_threads) {
  const size_t stride = size_t(dihedral ? kPdqVariants : 1) * kPdqBytes;
  parallel_for(int64_t(images.size()), num_threads,
               [&](int64_t i) { quality[i] = pdq_image(images[i], dihedral, codes + i * stride); });
}

namespace {

// The 8 transforms of an image (mmcurate.reference.TRANSFORMS: identity, rot90, rot180, rot270 as np.rot90;
// flip x = rows reversed, flip y = columns reversed, transpose, anti-transpose), hashed as pdqhash.compute and
// imagehash.phash hash each transformed pixel array. Luma (PDQ's, float) and gray (Pillow's L, uint8) are per
// pixel, so a transform's luma is the transformed luma: both planes are made once, with their transposes, and
// every transform's row y is a row of the plane or of its transpose, read forwards or backwards:
//   k  0 id: P[y]  1 rot90: T[w-1-y]  2 rot180: rev P[h-1-y]  3 rot270: rev T[y]  4 flip x: P[h-1-y]
//      5 flip y: rev P[y]  6 transpose: T[y]  7 anti-transpose: rev T[w-1-y]
struct TransformRows {
  bool transposed, reverse_rows, reverse_x;
};

constexpr TransformRows kTransformRows[kPdqVariants] = {
    {false, false, false}, {true, true, false},  {false, true, true},  {true, false, true},
    {false, true, false},  {false, false, true}, {true, false, false}, {true, true, true}};

struct VariantScratch {
  std::vector<float> luma, luma_t;                 // h x w, w x h
  std::vector<uint8_t> gray, gray_t, rev, rev_t;  // the same in L, and each row reversed
};

void hash_pixel_variants(const ImageViewU8& im, uint8_t* codes, int32_t* quality, uint64_t* phash) {
  thread_local VariantScratch v;
  const int h = im.height, w = im.width;
  float* L = cpu::grow(v.luma, size_t(h) * w);
  float* Lt = cpu::grow(v.luma_t, size_t(h) * w);
  for (int y = 0; y < h; ++y) luma_row(im, y, L + int64_t(y) * w);
  transpose(L, w, h, w, Lt, h);
  for (int k = 0; k < kPdqVariants; ++k) {
    const TransformRows t = kTransformRows[k];
    const int oh = t.transposed ? w : h, ow = t.transposed ? h : w;
    const float* plane = t.transposed ? Lt : L;
    const int q = pdq_of_rows(
        oh, ow,
        [&](int y, float* o) {
          const float* row = plane + int64_t(t.reverse_rows ? oh - 1 - y : y) * ow;
          if (t.reverse_x)
            std::reverse_copy(row, row + ow, o);
          else
            std::memcpy(o, row, size_t(ow) * sizeof(float));
        },
        false, codes + size_t(k) * kPdqBytes);
    if (k == 0) *quality = q;
  }
  if (!phash) return;
  uint8_t* G = cpu::grow(v.gray, size_t(h) * w);
  uint8_t* Gt = cpu::grow(v.gray_t, size_t(h) * w);
  uint8_t* R = cpu::grow(v.rev, size_t(h) * w);
  uint8_t* Rt = cpu::grow(v.rev_t, size_t(h) * w);
  for (int y = 0; y < h; ++y) cpu::gray_to_row(im.row(y), im.channels, im.pixel_stride, w, G + int64_t(y) * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) Gt[int64_t(x) * h + y] = G[int64_t(y) * w + x];
  for (int y = 0; y < h; ++y) std::reverse_copy(G + int64_t(y) * w, G + int64_t(y + 1) * w, R + int64_t(y) * w);
  for (int x = 0; x < w; ++x) std::reverse_copy(Gt + int64_t(x) * h, Gt + int64_t(x + 1) * h, Rt + int64_t(x) * h);
  uint8_t px[32 * 32];
  const ResizeWindow win{0, 0, 32, 32};
  for (int k = 0; k < kPdqVariants; ++k) {
    const TransformRows t = kTransformRows[k];
    const int oh = t.transposed ? w : h, ow = t.transposed ? h : w;
    const uint8_t* plane = t.transposed ? (t.reverse_x ? Rt : Gt) : (t.reverse_x ? R : G);
    // hash_image's pHash of a 1-channel (L) image: the Pillow-exact LANCZOS resize to 32 x 32, then the DCT
    cpu::resample_two_pass<1>(
        oh, ow, 1, [&](int y) { return plane + int64_t(t.reverse_rows ? oh - 1 - y : y) * ow; }, 32, 32,
        ResampleFilter::lanczos, win, px, cpu::thread_scratch());
    phash[k] = phash_from_32x32(px);
  }
}

// Exact area weights of `n` unit pixels in `cells` equal cells: pixel p covers [p, p + 1) and cell g
// [g n / G, (g + 1) n / G); its share of the cell is the overlap / (n / G). A pixel meets at most
// ceil(G / n) + 1 cells; (cell, pixel, weight) triples by cell, pixels ascending (so non-decreasing overall).
struct CellWeight {
  int cell, pixel;
  double weight;
};

void area_weights(int n, int cells, std::vector<CellWeight>& out) {
  out.clear();
  const double size = double(n) / cells;
  for (int g = 0; g < cells; ++g) {
    const double lo = g * size, hi = (g + 1) * size;
    for (int p = int(lo); p < n && p < hi; ++p) {
      const double overlap = std::min(hi, double(p + 1)) - std::max(lo, double(p));
      if (overlap > 0) out.push_back(CellWeight{g, p, overlap / size});
    }
  }
}

}  // namespace

void detail_grid(const ImageViewU8& im, uint8_t* out) {
  constexpr int G = kDetailGrid;
  std::vector<CellWeight> rows, cols;
  area_weights(im.height, G, rows);
  area_weights(im.width, G, cols);
  std::vector<float> luma(size_t(im.width));
  std::vector<double> r1(size_t(G) * im.width, 0.0), r2(size_t(G) * im.width, 0.0);  // rows reduced to cells
  int last = -1;
  for (const auto& rw : rows) {
    if (rw.pixel != last) {
      luma_row(im, rw.pixel, luma.data());
      last = rw.pixel;
    }
    double* a = r1.data() + int64_t(rw.cell) * im.width;
    double* b = r2.data() + int64_t(rw.cell) * im.width;
    for (int x = 0; x < im.width; ++x) {
      const double v = luma[x];
      a[x] += rw.weight * v;
      b[x] += rw.weight * (v * v);
    }
  }
  for (int g = 0; g < G; ++g) {
    double mean[G] = {}, sq[G] = {};
    for (const auto& cw : cols) {
      mean[cw.cell] += cw.weight * r1[int64_t(g) * im.width + cw.pixel];
      sq[cw.cell] += cw.weight * r2[int64_t(g) * im.width + cw.pixel];
    }
    for (int c = 0; c < G; ++c) {
      const double sd = std::sqrt(std::max(sq[c] - mean[c] * mean[c], 0.0));
      out[g * G + c] = uint8_t(std::clamp(std::nearbyint(mean[c]), 0.0, 255.0));
      out[G * G + g * G + c] = uint8_t(std::clamp(std::nearbyint(sd), 0.0, 255.0));
    }
  }
}

static void luma_thumbnail(const ImageViewU8& im, int side, std::vector<uint8_t>& out, int32_t& th, int32_t& tw) {
  const double f = std::min(1.0, double(side) / std::max(im.height, im.width));
  th = std::max(1, int(std::nearbyint(im.height * f)));  // half to even, as Python's round
  tw = std::max(1, int(std::nearbyint(im.width * f)));
  std::vector<CellWeight> rows, cols;
  area_weights(im.height, th, rows);
  area_weights(im.width, tw, cols);
  std::vector<float> luma(size_t(im.width));
  std::vector<double> acc(size_t(im.width), 0.0), cell(size_t(tw), 0.0);
  out.assign(size_t(th) * tw, 0);
  auto flush = [&](int g) {  // one output row: its source rows' weighted sum, reduced over the column cells
    std::fill(cell.begin(), cell.end(), 0.0);
    for (const auto& cw : cols) cell[cw.cell] += cw.weight * acc[cw.pixel];
    for (int x = 0; x < tw; ++x) out[size_t(g) * tw + x] = uint8_t(std::clamp(std::nearbyint(cell[x]), 0.0, 255.0));
    std::fill(acc.begin(), acc.end(), 0.0);
  };
  int last = -1, current = 0;
  for (const auto& rw : rows) {  // by output row: one row of accumulators, not th of them
    if (rw.cell != current) {
      flush(current);
      current = rw.cell;
    }
    if (rw.pixel != last) {
      luma_row(im, rw.pixel, luma.data());
      last = rw.pixel;
    }
    for (int x = 0; x < im.width; ++x) acc[x] += rw.weight * luma[x];
  }
  flush(current);
}

PdqBytesResult pdq_bytes(const std::vector<ByteSpan>& blobs, bool exact, bool dihedral, bool exif, int num_threads,
                         int fast_min_side, int64_t max_pixels, bool with_phash, bool pixel_variants, bool with_detail,
                         int luma_side) {
  if (fast_min_side < kPdqSide) throw std::invalid_argument("pdq_bytes: fast_min_side must be >= 64");
  if (pixel_variants && !dihedral) throw std::invalid_argument("pdq_bytes: pixel_variants needs dihedral");
  DecodeOptions full;  // Pillow-exact RGB, as pdqhash sees the image
  full.mode = ColorMode::rgb;
  full.apply_exif_orientation = exif;
  full.max_pixels = max_pixels;
  DecodeOptions fast = full;  // JPEG only: the Y plane at a reduced DCT scale
  fast.mode = ColorMode::gray_luma;
  fast.min_width = fast.min_height = fast_min_side;
  fast.fast_dct = true;
  const size_t n = blobs.size(), stride = size_t(dihedral ? kPdqVariants : 1) * kPdqBytes;
  PdqBytesResult r;
  r.codes.assign(n * stride, 0);
  r.quality.assign(n, 0);
  const int hashes = pixel_variants ? kPdqVariants : 1;
  if (with_phash) r.phash.assign(n * hashes, 0);
  if (with_detail) r.detail.assign(n * kDetailBytes, 0);
  if (luma_side < 0) throw std::invalid_argument("pdq_bytes: luma_side must be >= 0");
  if (luma_side > 0) {
    r.luma.assign(n, {});
    r.luma_height.assign(n, 0);
    r.luma_width.assign(n, 0);
  }
  r.status.assign(n, Status::ok);
  r.errors.assign(n, std::string());
  parallel_for(int64_t(n), num_threads, [&](int64_t i) {
    const ByteSpan& b = blobs[i];
    const bool jpeg = sniff_format(b.data, b.size) == ImageFormat::jpeg;
    DecodeResult d = decode_image(b.data, b.size, !exact && jpeg ? fast : full);
    r.status[i] = d.status;
    if (d.status != Status::ok) {
      r.errors[i] = std::move(d.error);
      return;
    }
    const ImageViewU8 view = view_of(d.image);
    if (with_detail) detail_grid(view, r.detail.data() + i * kDetailBytes);
    if (luma_side > 0) luma_thumbnail(view, luma_side, r.luma[i], r.luma_height[i], r.luma_width[i]);
    if (!pixel_variants) {
      r.quality[i] = pdq_image(view, dihedral, r.codes.data() + i * stride);
      if (with_phash) r.phash[i] = hash_image(view, HashKind::phash);
      return;
    }
    hash_pixel_variants(view, r.codes.data() + i * stride, &r.quality[i],
                        with_phash ? r.phash.data() + i * hashes : nullptr);
  });
  return r;
}

}  // namespace mmcurate
