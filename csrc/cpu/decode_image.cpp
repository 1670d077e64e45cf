// Single-image entry points: format sniffing by magic bytes, dispatch to the per-format decoder,
// EXIF orientation, and the header-only probe. Data errors become statuses; nothing here throws
// for bad bytes.
#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>

#include "cpu/decode_internal.h"

namespace mmcurate {

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "jpeg";
    case ImageFormat::png: return "png";
    case ImageFormat::webp: return "webp";
    case ImageFormat::unknown: break;
  }
  return "unknown";
}

namespace {

// Matches `magic` at `offset`; a stream shorter than the magic matches on the bytes it has, so that a
// file cut inside its signature is reported as a truncated file of that format, not as garbage.
bool magic_at(const uint8_t* data, size_t size, size_t offset, const char* magic, size_t len) {
  if (size <= offset) return true;
  const size_t n = std::min(len, size - offset);
  return std::memcmp(data + offset, magic, n) == 0;
}

void validate(const DecodeOptions& opts) {
  if (opts.mode != ColorMode::rgb && opts.mode != ColorMode::gray && opts.mode != ColorMode::gray_luma)
    throw std::invalid_argument("DecodeOptions.mode must be rgb, gray or gray_luma");
  if (opts.min_width < 0 || opts.min_height < 0)
    throw std::invalid_argument("DecodeOptions.min_width/min_height must be >= 0");
  if (opts.keep_chroma && opts.mode != ColorMode::gray_luma)
    throw std::invalid_argument("DecodeOptions.keep_chroma needs mode gray_luma");
}

}  // namespace

ImageFormat sniff_format(const uint8_t* data, size_t size) {
  if (data == nullptr || size < 2) return ImageFormat::unknown;
  if (magic_at(data, size, 0, "\xff\xd8\xff", 3)) return ImageFormat::jpeg;
  if (magic_at(data, size, 0, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::png;
  if (size >= 4 && magic_at(data, size, 0, "RIFF", 4) && magic_at(data, size, 8, "WEBP", 4)) return ImageFormat::webp;
  return ImageFormat::unknown;
}

namespace {

// Shared by decode and probe: empty / unknown-format handling and exception containment.
template <typename Fn>
DecodeResult run_format(const uint8_t* data, size_t size, Fn&& fn) {
  DecodeResult out;
  if (data == nullptr || size == 0) {
    out.status = Status::empty;
    out.error = "zero-length input";
    return out;
  }
  out.format = sniff_format(data, size);
  if (out.format == ImageFormat::unknown) {
    out.status = Status::unsupported;
    out.error = "unrecognised image format (not JPEG, PNG or WebP by its magic bytes)";
    return out;
  }
  out.status = Status::corrupt;  // until a decoder says otherwise
  try {
    fn(out);
  } catch (const std::bad_alloc&) {
    detail::fail(out, Status::too_large, "out of memory while decoding");
  } catch (const std::exception& e) {
    detail::fail(out, Status::corrupt, e.what());
  }
  return out;
}

}  // namespace

DecodeResult decode_image(const uint8_t* data, size_t size, const DecodeOptions& opts) {
  validate(opts);
  DecodeOptions colour = opts;  // keep_chroma outside JPEG: RGB, whose Pillow L is what gray would give
  if (opts.keep_chroma) colour.mode = ColorMode::rgb;
  DecodeResult out = run_format(data, size, [&](DecodeResult& r) {
    switch (r.format) {
      case ImageFormat::jpeg: detail::decode_jpeg(data, size, opts, r); break;
      case ImageFormat::png: detail::decode_png(data, size, colour, r); break;
      case ImageFormat::webp: detail::decode_webp(data, size, colour, r); break;
      case ImageFormat::unknown: break;
    }
    if (r.status == Status::ok && opts.apply_exif_orientation)
      r.image = detail::apply_orientation(std::move(r.image), r.exif_orientation);
  });
  if (out.status != Status::ok) out.image = ImageU8();
  return out;
}

DecodeResult probe_image(const uint8_t* data, size_t size) {
  return run_format(data, size, [&](DecodeResult& r) {
    switch (r.format) {
      case ImageFormat::jpeg: detail::probe_jpeg(data, size, r); break;
      case ImageFormat::png: detail::probe_png(data, size, r); break;
      case ImageFormat::webp: detail::probe_webp(data, size, r); break;
      case ImageFormat::unknown: break;
    }
  });
}

}  // namespace mmcurate
