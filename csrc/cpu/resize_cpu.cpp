// Pillow-exact resize (Image.resize for 8-bit modes L, LA, RGB, RGBA) and convert("L").
#include <stdexcept>
#include <string>

#include "cpu/luma_simd.h"
#include "cpu/resample_engine.h"
#include "kernels/luma.h"
#include "mmcurate/parallel.h"
#include "mmcurate/resize.h"

namespace mmcurate {
namespace cpu {

ResampleScratch& thread_scratch() {
  thread_local ResampleScratch scratch;
  return scratch;
}

namespace {

void check_view(const ImageViewU8& src) {
  if (src.height < 1 || src.width < 1) throw std::invalid_argument("resize: empty image");
  if (src.channels < 1 || src.channels > 4)
    throw std::invalid_argument("resize: channels must be 1..4, got " + std::to_string(src.channels));
  if (src.pixel_stride < src.channels) throw std::invalid_argument("resize: pixel_stride smaller than channels");
}

// Pillow resizes NEAREST through ImagingScaleAffine: per-axis index tables, out-of-range samples 0.
void resize_nearest(const ImageViewU8& src, int out_h, int out_w, const ResizeWindow& win, uint8_t* dst,
                    ResampleScratch& s) {
  int* xi = grow(s.nearest_x, size_t(out_w));
  int* yi = grow(s.nearest_y, size_t(out_h));
  kernels::nearest_table(src.width, out_w, xi);
  kernels::nearest_table(src.height, out_h, yi);
  const int C = src.channels;
  for (int i = 0; i < win.height; ++i) {
    uint8_t* out = dst + int64_t(i) * win.width * C;
    const int y = yi[win.top + i];
    for (int j = 0; j < win.width; ++j) {
      const int x = xi[win.left + j];
      for (int c = 0; c < C; ++c) out[j * C + c] = (y < 0 || x < 0) ? 0 : src.row(y)[x * src.pixel_stride + c];
    }
  }
}

template <int C>
void resize_channels(const ImageViewU8& src, int out_h, int out_w, ResampleFilter f, const ResizeWindow& win,
                     uint8_t* dst, ResampleScratch& s) {
  constexpr bool has_alpha = (C == 2 || C == 4);
  if constexpr (!has_alpha) {
    resample_two_pass<C>(
        src.height, src.width, src.pixel_stride, [&](int y) { return src.row(y); }, out_h, out_w, f, win, dst, s);
  } else {
    // Pillow converts RGBA -> RGBa (LA -> La) before filtering, so colour does not bleed out of
    // transparent pixels, and converts back afterwards.
    const ImageViewU8 v = src;
    auto premultiplied_row = [&](int y) {
      uint8_t* row = grow(s.row_in, size_t(v.width) * C);
      const uint8_t* in = v.row(y);
      for (int x = 0; x < v.width; ++x) {
        const uint8_t* p = in + x * v.pixel_stride;
        const uint8_t a = p[C - 1];
        for (int c = 0; c < C - 1; ++c) row[x * C + c] = kernels::premultiply(p[c], a);
        row[x * C + C - 1] = a;
      }
      return static_cast<const uint8_t*>(row);
    };
    resample_two_pass<C>(v.height, v.width, C, premultiplied_row, out_h, out_w, f, win, dst, s);
    const int64_t n = int64_t(win.height) * win.width;
    for (int64_t i = 0; i < n; ++i) {
      uint8_t* p = dst + i * C;
      for (int c = 0; c < C - 1; ++c) p[c] = kernels::unpremultiply(p[c], p[C - 1]);
    }
  }
}

}  // namespace
}  // namespace cpu

ResizeGeometry resize_geometry(int height, int width, ResizeMode mode, int size_h, int size_w) {
  if (size_h < 1 || size_w < 1) throw std::invalid_argument("resize: size must be >= 1");
  if (height < 1 || width < 1) throw std::invalid_argument("resize: empty image");
  ResizeGeometry g;
  if (mode == ResizeMode::squash) {
    g.resized_h = size_h;
    g.resized_w = size_w;
    g.window = ResizeWindow{0, 0, size_h, size_w};
    return g;
  }
  if (size_h != size_w) throw std::invalid_argument("resize: mode 'shortest' needs a square size");
  const int s = size_h;
  const bool portrait = width <= height;
  const int64_t shorter = portrait ? width : height, longer = portrait ? height : width;
  // Python's int(s * long / short): exact product, one correctly rounded division, truncation.
  const int new_long = int(double(int64_t(s) * longer) / double(shorter));
  g.resized_w = portrait ? s : new_long;
  g.resized_h = portrait ? new_long : s;
  // torchvision CenterCrop: int(round((H - s) / 2.0)); Python rounds halves to even.
  auto center = [](int excess) {
    int q = excess / 2;
    if ((excess & 1) && (q & 1)) ++q;
    return q;
  };
  g.window = ResizeWindow{center(g.resized_h - s), center(g.resized_w - s), s, s};
  return g;
}

void resize_u8(const ImageViewU8& src, int out_h, int out_w, ResampleFilter filter, const ResizeWindow& win,
               uint8_t* dst) {
  cpu::check_view(src);
  if (out_h < 1 || out_w < 1) throw std::invalid_argument("resize: output size must be >= 1");
  if (win.top < 0 || win.left < 0 || win.height < 1 || win.width < 1 || win.top + win.height > out_h ||
      win.left + win.width > out_w)
    throw std::invalid_argument("resize: window outside the resized image");
  auto& s = cpu::thread_scratch();
  if (filter == ResampleFilter::nearest) return cpu::resize_nearest(src, out_h, out_w, win, dst, s);
  if (kernels::filter_support(filter) == 0.0) throw std::invalid_argument("resize: unknown filter");
  switch (src.channels) {
    case 1: return cpu::resize_channels<1>(src, out_h, out_w, filter, win, dst, s);
    case 2: return cpu::resize_channels<2>(src, out_h, out_w, filter, win, dst, s);
    case 3: return cpu::resize_channels<3>(src, out_h, out_w, filter, win, dst, s);
    default: return cpu::resize_channels<4>(src, out_h, out_w, filter, win, dst, s);
  }
}

void to_gray_u8(const ImageViewU8& src, uint8_t* dst) {
  cpu::check_view(src);
  for (int y = 0; y < src.height; ++y)
    cpu::gray_to_row(src.row(y), src.channels, src.pixel_stride, src.width, dst + int64_t(y) * src.width);
}

void gray_resize_u8(const ImageViewU8& src, int out_h, int out_w, ResampleFilter filter, uint8_t* dst) {
  cpu::check_view(src);
  if (out_h < 1 || out_w < 1) throw std::invalid_argument("resize: output size must be >= 1");
  if (filter == ResampleFilter::nearest || kernels::filter_support(filter) == 0.0)
    throw std::invalid_argument("gray_resize_u8: needs a resampling filter other than nearest");
  auto& s = cpu::thread_scratch();
  const ResizeWindow win{0, 0, out_h, out_w};
  if (src.channels == 1) {
    cpu::resample_two_pass<1>(
        src.height, src.width, src.pixel_stride, [&](int y) { return src.row(y); }, out_h, out_w, filter, win, dst, s);
    return;
  }
  auto gray_row = [&](int y) {
    uint8_t* row = cpu::grow(s.row_in, size_t(src.width));
    cpu::gray_to_row(src.row(y), src.channels, src.pixel_stride, src.width, row);
    return static_cast<const uint8_t*>(row);
  };
  // The horizontal pass converts straight into its int16 plane (the L value still rounded to uint8
  // first, as convert("L") stores it), so the gray row is never written out as bytes.
  auto gray_plane = [&](int y, int x0, int n, int16_t* const* planes) {
    cpu::gray_to_plane(src.row(y), src.channels, src.pixel_stride, x0, n, planes[0]);
  };
  cpu::resample_two_pass<1>(src.height, src.width, 1, gray_row, gray_plane, out_h, out_w, filter, win, dst, s);
}

bool resample_simd_built() { return cpu::resample_simd_compiled(); }

bool set_resample_simd(bool enabled) { return cpu::resample_simd_enabled().exchange(enabled); }

void resize_batch(const std::vector<ImageViewU8>& images, ResizeMode mode, int size_h, int size_w,
                  ResampleFilter filter, uint8_t* dst, int num_threads) {
  if (images.empty()) return;
  const int C = images[0].channels;
  std::vector<ResizeGeometry> geo(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    if (images[i].channels != C)
      throw std::invalid_argument("resize: all images must have the same channel count (image " + std::to_string(i) +
                                  " has " + std::to_string(images[i].channels) + ", image 0 has " + std::to_string(C) +
                                  ")");
    geo[i] = resize_geometry(images[i].height, images[i].width, mode, size_h, size_w);
  }
  const int64_t per_image = int64_t(geo[0].window.height) * geo[0].window.width * C;
  parallel_for(int64_t(images.size()), num_threads, [&](int64_t i) {
    resize_u8(images[i], geo[i].resized_h, geo[i].resized_w, filter, geo[i].window, dst + i * per_image);
  });
}

}  // namespace mmcurate
