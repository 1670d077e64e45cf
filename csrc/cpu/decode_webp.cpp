// WebP decode through libwebp (lossy, lossless, alpha). Pillow decodes every WebP through
// WebPAnimDecoder as RGBA and convert("RGB") drops the alpha: for a still image that equals a direct
// RGB decode. For an animated file Pillow's first frame is the first ANMF frame decoded onto a canvas
// cleared to transparent black (the first frame is always a key frame, so nothing is blended); we do the
// same with a small bounds-checked RIFF walk, so libwebpdemux is not needed.
#include <webp/decode.h>

#include <cstring>
#include <vector>

#include "cpu/decode_internal.h"

namespace mmcurate::detail {

namespace {

uint32_t le24(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16; }
uint32_t le32(const uint8_t* p) { return le24(p) | uint32_t(p[3]) << 24; }

struct Chunk {
  const uint8_t* tag;
  const uint8_t* payload;
  size_t size;
};

// Iterates the chunks of a RIFF/WEBP container; stops at the first chunk that does not fit.
template <typename Fn>
void for_each_chunk(const uint8_t* data, size_t size, Fn&& fn) {
  if (size < 12) return;
  size_t end = size;
  const uint64_t riff_end = uint64_t(le32(data + 4)) + 8;
  if (riff_end < end) end = size_t(riff_end);  // ignore trailing bytes after the RIFF payload
  size_t off = 12;
  while (off + 8 <= end) {
    const uint32_t len = le32(data + off + 4);
    if (len > end - off - 8) break;
    if (!fn(Chunk{data + off, data + off + 8, len})) return;
    off += 8 + size_t(len) + (len & 1);  // chunks are padded to an even size
  }
}

int webp_orientation(const uint8_t* data, size_t size) {
  int exif = -1, xmp = -1;
  for_each_chunk(data, size, [&](const Chunk& c) {
    if (std::memcmp(c.tag, "EXIF", 4) == 0 && exif < 0) exif = exif_orientation_tag(c.payload, c.size);
    if (std::memcmp(c.tag, "XMP ", 4) == 0 && xmp < 0) xmp = xmp_orientation_tag(c.payload, c.size);
    return true;
  });
  return normalize_orientation(exif >= 0 ? exif : xmp);
}

Status status_for(VP8StatusCode code) {
  switch (code) {
    case VP8_STATUS_OK: return Status::ok;
    case VP8_STATUS_NOT_ENOUGH_DATA: return Status::truncated;
    case VP8_STATUS_UNSUPPORTED_FEATURE: return Status::unsupported;
    case VP8_STATUS_OUT_OF_MEMORY: return Status::too_large;
    default: return Status::corrupt;
  }
}

const char* describe(VP8StatusCode code) {
  switch (code) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "user abort";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data (truncated)";
  }
  return "unknown error";
}

void fail_webp(DecodeResult& out, VP8StatusCode code, const char* what) {
  fail(out, status_for(code), std::string("WebP: ") + what + ": " + describe(code));
}

// Decodes one bitstream (a whole file, or an ANMF frame's ALPH+VP8/VP8L payload) as RGB into
// `dst` with the given row stride. The bitstream must be exactly width x height.
VP8StatusCode decode_rgb_into(const uint8_t* bits, size_t n, int width, int height, uint8_t* dst, size_t stride) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) return VP8_STATUS_INVALID_PARAM;
  VP8StatusCode st = WebPGetFeatures(bits, n, &config.input);
  if (st != VP8_STATUS_OK) return st;
  if (config.input.width != width || config.input.height != height) return VP8_STATUS_BITSTREAM_ERROR;
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = dst;
  config.output.u.RGBA.stride = int(stride);
  config.output.u.RGBA.size = stride * size_t(height - 1) + size_t(width) * 3;
  st = WebPDecode(bits, n, &config);
  WebPFreeDecBuffer(&config.output);  // no-op for external memory; releases anything libwebp kept
  return st;
}

struct FirstFrame {
  const uint8_t* bits = nullptr;  // ALPH and/or VP8/VP8L sub-chunks of the first ANMF
  size_t size = 0;
  int x = 0, y = 0, width = 0, height = 0;
};

// Canvas size from VP8X and the first ANMF frame; false (with a reason) when the container is malformed.
bool find_first_frame(const uint8_t* data, size_t size, int canvas_w, int canvas_h, FirstFrame& frame,
                      const char*& why) {
  bool found = false;
  why = "animated WebP has no ANMF frame";
  for_each_chunk(data, size, [&](const Chunk& c) {
    if (std::memcmp(c.tag, "ANMF", 4) != 0) return true;
    if (c.size < 16 + 8) {
      why = "ANMF chunk too small";
      return false;
    }
    frame.x = int(le24(c.payload)) * 2;
    frame.y = int(le24(c.payload + 3)) * 2;
    frame.width = int(le24(c.payload + 6)) + 1;
    frame.height = int(le24(c.payload + 9)) + 1;
    // Frame data: optional ALPH, then VP8/VP8L; libwebp's decoder accepts that sequence as it is.
    const uint8_t* p = c.payload + 16;
    const uint8_t* end = c.payload + c.size;
    while (p + 8 <= end && std::memcmp(p, "ALPH", 4) != 0 && std::memcmp(p, "VP8 ", 4) != 0 &&
           std::memcmp(p, "VP8L", 4) != 0) {
      const uint32_t len = le32(p + 4);
      if (len > size_t(end - p) - 8) break;
      p += 8 + size_t(len) + (len & 1);  // skip unknown sub-chunks
    }
    if (p + 8 > end) {
      why = "ANMF frame has no image bitstream";
      return false;
    }
    if (int64_t(frame.x) + frame.width > canvas_w || int64_t(frame.y) + frame.height > canvas_h) {
      why = "first animation frame lies outside the canvas";
      return false;
    }
    frame.bits = p;
    frame.size = size_t(end - p);
    found = true;
    return false;
  });
  return found;
}

}  // namespace

void decode_webp(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out) {
  WebPBitstreamFeatures features;
  VP8StatusCode st = WebPGetFeatures(data, size, &features);
  if (st != VP8_STATUS_OK) {
    fail_webp(out, st, "cannot read the header");
    return;
  }
  out.source_width = features.width;  // the canvas size for animations
  out.source_height = features.height;
  out.exif_orientation = webp_orientation(data, size);
  if (!check_pixel_limit(features.width, features.height, opts, out)) return;

  const int out_channels = mode_channels(opts.mode);
  const int w = features.width, h = features.height;
  // RGB decodes straight into the output; gray goes through an RGB image and Pillow's weights.
  ImageU8 rgb(h, w, 3);
  if (features.has_animation) {
    FirstFrame frame;
    const char* why = nullptr;
    if (!find_first_frame(data, size, w, h, frame, why)) {
      fail(out, Status::corrupt, std::string("WebP: ") + why);
      return;
    }
    // The canvas starts transparent black (zeros); the frame lands at its offset.
    st = decode_rgb_into(frame.bits, frame.size, frame.width, frame.height, rgb.row(frame.y) + size_t(frame.x) * 3,
                         size_t(w) * 3);
    if (st != VP8_STATUS_OK) {
      fail_webp(out, st, "cannot decode the first animation frame");
      return;
    }
  } else {
    st = decode_rgb_into(data, size, w, h, rgb.data.data(), size_t(w) * 3);
    if (st != VP8_STATUS_OK) {
      fail_webp(out, st, "decode failed");
      return;
    }
  }
  if (out_channels == 3) {
    out.image = std::move(rgb);
  } else {
    out.image = ImageU8(h, w, 1);
    for (int y = 0; y < h; ++y) convert_row(rgb.row(y), 3, out.image.row(y), 1, w);
  }
  out.status = Status::ok;
  out.error.clear();
}

void probe_webp(const uint8_t* data, size_t size, DecodeResult& out) {
  WebPBitstreamFeatures features;
  const VP8StatusCode st = WebPGetFeatures(data, size, &features);
  if (st != VP8_STATUS_OK) {
    fail_webp(out, st, "cannot read the header");
    return;
  }
  out.source_width = features.width;
  out.source_height = features.height;
  out.exif_orientation = webp_orientation(data, size);
  out.status = Status::ok;
}

}  // namespace mmcurate::detail
