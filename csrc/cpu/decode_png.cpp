// PNG decode through libpng's sequential read API, reproducing what Pillow's PngImagePlugin + convert()
// produce: palette -> palette RGB (tRNS ignored), gray 1/2/4-bit scaled to 8, 16-bit RGB(A)/LA -> high
// byte, 16-bit gray ("I;16") clipped to 255, alpha dropped, interlacing undone.
//
// libpng reports fatal errors by longjmp to png_jmpbuf: everything with a destructor lives in
// PngSession, which outlives the jump (only libpng's C frames lie between the jump and the setjmp).
#include <png.h>

#include <algorithm>
#include <array>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu/decode_internal.h"

namespace mmcurate::detail {

namespace {

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

struct PngSession {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  bool short_read = false;
  char message[256] = {0};
  std::vector<uint8_t> buffer;  // decoded rows in libpng's layout when they need converting
  std::vector<png_bytep> rows;
  ImageU8 image;

  ~PngSession() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

void on_png_error(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngSession*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof(s->message), "%s", msg != nullptr ? msg : "libpng error");
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}  // benign: libpng carries on

void on_png_read(png_structp png, png_bytep dst, size_t length) {
  auto* s = static_cast<PngSession*>(png_get_io_ptr(png));
  if (length > s->size - s->pos) {
    s->short_read = true;
    png_error(png, "read past the end of the data");
  }
  std::memcpy(dst, s->data + s->pos, length);
  s->pos += length;
}

// eXIf orientation: walks the chunk list (headers only) up to IEND, like Pillow which also sees an
// eXIf stored after IDAT once the image is loaded.
int png_orientation(const uint8_t* data, size_t size) {
  size_t off = 8;
  while (off + 12 <= size) {
    const uint32_t len = be32(data + off);
    const uint8_t* type = data + off + 4;
    if (len > size - off - 12) break;
    if (std::memcmp(type, "eXIf", 4) == 0) return normalize_orientation(exif_orientation_tag(data + off + 8, len));
    if (std::memcmp(type, "IEND", 4) == 0) break;
    off += size_t(len) + 12;
  }
  return 1;
}

// How a row in libpng's output layout becomes an output row.
enum class RowKind { direct, channels, palette, gray16 };

void convert_png_row(RowKind kind, const uint8_t* src, int src_channels, uint8_t* dst, int dst_channels, int width,
                     const std::array<uint8_t, 256 * 3>& palette_rgb) {
  switch (kind) {
    case RowKind::direct: std::memcpy(dst, src, size_t(width) * dst_channels); return;
    case RowKind::channels: convert_row(src, src_channels, dst, dst_channels, width); return;
    case RowKind::palette:
      for (int x = 0; x < width; ++x) {
        const uint8_t* c = &palette_rgb[size_t(src[x]) * 3];
        if (dst_channels == 3) {
          std::memcpy(dst + 3 * size_t(x), c, 3);
        } else {
          dst[x] = pillow_luma(c[0], c[1], c[2]);  // Pillow's P -> L applies the same weights to the palette
        }
      }
      return;
    case RowKind::gray16:
      // Pillow opens 16-bit gray as "I;16" and its I;16 -> L/RGB conversion clips at 255.
      for (int x = 0; x < width; ++x) {
        const uint32_t v = uint32_t(src[2 * x]) << 8 | src[2 * x + 1];  // PNG samples are big-endian
        const uint8_t c = uint8_t(std::min<uint32_t>(v, 255));
        if (dst_channels == 3) {
          dst[3 * size_t(x)] = dst[3 * size_t(x) + 1] = dst[3 * size_t(x) + 2] = c;
        } else {
          dst[x] = c;
        }
      }
      return;
  }
}

// No locals with destructors: a libpng error longjmps back into decode_png's setjmp frame.
void decode_steps(PngSession& s, const DecodeOptions& opts, DecodeResult& out) {
  png_structp png = s.png;
  png_infop info = s.info;
  png_set_read_fn(png, &s, on_png_read);
  // Our own max_pixels check decides the size limit, not libpng's default 1e6-per-side limits.
  png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
  png_read_info(png, info);

  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  out.source_width = int(width);
  out.source_height = int(height);
  if (!check_pixel_limit(width, height, opts, out)) return;

  const int out_channels = mode_channels(opts.mode);
  std::array<uint8_t, 256 * 3> palette_rgb{};  // trivially destructible; entries past PLTE stay black
  RowKind kind = RowKind::channels;
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp plte = nullptr;
    int num_palette = 0;
    if (png_get_PLTE(png, info, &plte, &num_palette) != 0 && plte != nullptr) {
      for (int i = 0; i < std::min(num_palette, 256); ++i) {
        palette_rgb[3 * i] = plte[i].red;
        palette_rgb[3 * i + 1] = plte[i].green;
        palette_rgb[3 * i + 2] = plte[i].blue;
      }
    }
    if (bit_depth < 8) png_set_packing(png);  // one index per byte
    kind = RowKind::palette;
  } else if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16) {
    kind = RowKind::gray16;
  } else {
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_strip_16(png);  // keeps the high byte, as Pillow's ";16B" unpackers do
  }
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int src_channels = png_get_channels(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  if (kind == RowKind::channels && src_channels == out_channels) kind = RowKind::direct;

  s.image = ImageU8(int(height), int(width), out_channels);
  if (passes > 1) {
    // Interlaced: libpng fills whole rows over several passes, so the image must be in memory at once.
    if (kind == RowKind::direct) {
      s.rows.resize(height);
      for (png_uint_32 y = 0; y < height; ++y) s.rows[y] = s.image.row(int(y));
      png_read_image(png, s.rows.data());
    } else {
      s.buffer.resize(rowbytes * height);
      s.rows.resize(height);
      for (png_uint_32 y = 0; y < height; ++y) s.rows[y] = s.buffer.data() + rowbytes * y;
      png_read_image(png, s.rows.data());
      for (png_uint_32 y = 0; y < height; ++y)
        convert_png_row(kind, s.rows[y], src_channels, s.image.row(int(y)), out_channels, int(width), palette_rgb);
    }
  } else if (kind == RowKind::direct) {
    for (png_uint_32 y = 0; y < height; ++y) png_read_row(png, s.image.row(int(y)), nullptr);
  } else {
    s.buffer.resize(rowbytes);
    for (png_uint_32 y = 0; y < height; ++y) {
      png_read_row(png, s.buffer.data(), nullptr);
      convert_png_row(kind, s.buffer.data(), src_channels, s.image.row(int(y)), out_channels, int(width), palette_rgb);
    }
  }
  // No png_read_end: chunks after the image data (even a missing IEND) do not affect the pixels,
  // and Pillow accepts such files too.
  out.status = Status::ok;
  out.error.clear();
  out.image = std::move(s.image);
}

// The setjmp lives here, apart from the frame that owns the session, so no automatic object of this
// frame is modified between setjmp and longjmp.
void run_guarded(PngSession& s, const DecodeOptions& opts, DecodeResult& out) {
  if (setjmp(png_jmpbuf(s.png))) {
    if (s.short_read) {
      fail(out, Status::truncated, "PNG stream is truncated (read past the end of the data)");
    } else {
      fail(out, Status::corrupt, std::string("PNG: ") + s.message);
    }
    return;
  }
  decode_steps(s, opts, out);
}

}  // namespace

void decode_png(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out) {
  out.exif_orientation = png_orientation(data, size);
  PngSession s;
  s.data = data;
  s.size = size;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, on_png_error, on_png_warning);
  if (s.png != nullptr) s.info = png_create_info_struct(s.png);
  if (s.png == nullptr || s.info == nullptr) {
    fail(out, Status::too_large, "libpng could not allocate its decoder state");
    return;
  }
  run_guarded(s, opts, out);
}

void probe_png(const uint8_t* data, size_t size, DecodeResult& out) {
  // Signature, then IHDR must come first: 8 + 4 (length) + 4 ("IHDR") + 13 (payload).
  if (size < 8 + 8 + 13 || std::memcmp(data, kPngSignature, std::min<size_t>(size, 8)) != 0) {
    fail(out, size < 29 ? Status::truncated : Status::corrupt, "PNG header is incomplete");
    return;
  }
  if (std::memcmp(data + 12, "IHDR", 4) != 0 || be32(data + 8) != 13) {
    fail(out, Status::corrupt, "PNG: first chunk is not a valid IHDR");
    return;
  }
  const uint32_t w = be32(data + 16), h = be32(data + 20);
  if (w == 0 || h == 0 || w > PNG_UINT_31_MAX || h > PNG_UINT_31_MAX) {
    fail(out, Status::corrupt, "PNG: IHDR declares an invalid size");
    return;
  }
  out.source_width = int(w);
  out.source_height = int(h);
  out.exif_orientation = png_orientation(data, size);
  out.status = Status::ok;
}

}  // namespace mmcurate::detail
