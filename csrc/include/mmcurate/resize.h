// Image resize, bit-exact with Pillow's Image.resize for 8-bit images, and Pillow's convert("L").
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/resample.h"  // ResampleFilter (Pillow's filter ids)
#include "mmcurate/image.h"

namespace mmcurate {

// Which part of the (resized_h x resized_w) result to produce. Every output pixel depends only on
// its own position, so computing a window is exactly a crop of the full resize, minus the work.
struct ResizeWindow {
  int top = 0;
  int left = 0;
  int height = 0;
  int width = 0;
};

enum class ResizeMode : int8_t {
  shortest = 0,  // shorter side -> size, then center crop to size x size (torchvision Resize + CenterCrop)
  squash = 1,    // straight to (height, width)
};

struct ResizeGeometry {
  int resized_h = 0;
  int resized_w = 0;
  ResizeWindow window;  // the crop taken from the resized image: the output
};

// Sizes and crop of one image. shortest: torchvision's Resize(size) on a PIL image (long side =
// int(size * long / short)) and CenterCrop(size) offsets (int(round((h - size) / 2.0)), round half to
// even as Python's round). squash: (size_h, size_w), no crop. Throws std::invalid_argument on sizes < 1,
// or on shortest with size_h != size_w.
ResizeGeometry resize_geometry(int height, int width, ResizeMode mode, int size_h, int size_w);

// Pillow's Image.resize((out_w, out_h), filter) of `src` (1, 2, 3 or 4 channels), restricted to `window`,
// written packed (window.height x window.width x src.channels) to dst. 2- and 4-channel images are
// treated as LA / RGBA: Pillow premultiplies alpha before filtering and divides it out afterwards
// (NEAREST excepted); the same is done here. Throws std::invalid_argument on bad sizes or channels.
void resize_u8(const ImageViewU8& src, int out_h, int out_w, ResampleFilter filter, const ResizeWindow& window,
               uint8_t* dst);

inline void resize_u8(const ImageViewU8& src, int out_h, int out_w, ResampleFilter filter, uint8_t* dst) {
  resize_u8(src, out_h, out_w, filter, ResizeWindow{0, 0, out_h, out_w}, dst);
}

// Pillow's convert("L"): RGB/RGBA -> L24 luma, LA -> L, L -> copy. dst: height x width, packed.
void to_gray_u8(const ImageViewU8& src, uint8_t* dst);

// Pillow's convert("L") followed by resize((out_w, out_h), filter), fused row by row (the gray row is
// rounded to uint8 before filtering, exactly as Pillow's two steps). dst: out_h x out_w, packed.
void gray_resize_u8(const ImageViewU8& src, int out_h, int out_w, ResampleFilter filter, uint8_t* dst);

// A batch with one geometry rule; every image must have `channels` channels. dst holds
// n x out_h x out_w x channels where (out_h, out_w) is the common window size. Parallel over images.
void resize_batch(const std::vector<ImageViewU8>& images, ResizeMode mode, int size_h, int size_w,
                  ResampleFilter filter, uint8_t* dst, int num_threads = 0);

// The resampling passes have an AVX2 form (built when the compiler targets AVX2) and a scalar
// reference form; both give Pillow's result. resample_simd_built() says whether the AVX2 form exists;
// set_resample_simd(false) makes every thread use the scalar form (for tests), returning the previous
// setting.
bool resample_simd_built();
bool set_resample_simd(bool enabled);

}  // namespace mmcurate
