// Owning HWC uint8 image; row-major, rows packed (stride == width * channels).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mmcurate {

struct ImageU8 {
  int height = 0;
  int width = 0;
  int channels = 0;  // 1 (L) or 3 (RGB)
  std::vector<uint8_t> data;

  ImageU8() = default;
  ImageU8(int h, int w, int c) : height(h), width(w), channels(c), data(size_t(h) * w * c) {}
  bool empty() const { return data.empty(); }
  uint8_t* row(int y) { return data.data() + size_t(y) * width * channels; }
  const uint8_t* row(int y) const { return data.data() + size_t(y) * width * channels; }
};

// Non-owning view of a HWC uint8 image with an explicit row stride in bytes.
struct ImageViewU8 {
  const uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 0;       // 1, 2 (LA), 3 (RGB) or 4 (RGBA)
  int64_t row_stride = 0; // bytes between rows
  int64_t pixel_stride = 0; // bytes between pixels in a row (== channels when packed)
  const uint8_t* row(int y) const { return data + y * row_stride; }
};

inline ImageViewU8 view_of(const ImageU8& im) {
  return ImageViewU8{im.data.data(),      im.height, im.width, im.channels, int64_t(im.width) * im.channels,
                     int64_t(im.channels)};
}

}  // namespace mmcurate
