// JPEG decode through libjpeg-turbo's libjpeg API, matching Pillow's JpegDecode defaults
// (JDCT_ISLOW, fancy upsampling, block smoothing) so that mode rgb equals Image.convert("RGB").
//
// libjpeg reports fatal errors through error_exit, which must not return: we longjmp back to the
// setjmp in run_guarded(). Everything with a destructor lives in JpegSession, which outlives the jump,
// so nothing leaks and no C++ frame is skipped (only libjpeg's C frames lie between).
#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include <jerror.h>
#include <jpeglib.h>  // after <cstdio>: jpeglib.h needs FILE and size_t

#include "cpu/decode_internal.h"

namespace mmcurate::detail {

namespace {

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  bool saw_premature_eof = false;  // JWRN_JPEG_EOF: the source ran dry and a fake EOI was inserted
  int error_code = 0;
  char message[JMSG_LENGTH_MAX] = {0};
};

// Scan floods (libjpeg-turbo's "LJT-01-003"): a progressive JPEG may repeat scans, and one EOB run
// covers 32,767 blocks, so each scan of a large image costs a pass over every block for a few dozen
// bytes: a 436 KB file held libjpeg for 51 s. Real encoders write ~10 scans (libjpeg's simple
// progression: 10 for color, 6 for gray; mozjpeg about as many), each component in a few of them.
// We refuse a file with more than kMaxJpegScans scans (libjpeg-turbo's TJPARAM_SCANLIMIT value in
// its fuzzers and DALI's default), and one whose scans together cover the image more than
// kMaxJpegScanPasses times (counted in blocks, so the work stays linear in the pixels, whatever the
// scan count); below kFreeJpegScanBlocks block decodes (~0.1 s) only the scan count applies.
constexpr int kMaxJpegScans = 500;
constexpr int64_t kMaxJpegScanPasses = 16;
constexpr int64_t kFreeJpegScanBlocks = int64_t(1) << 22;
// Our own error code for a refused scan flood (libjpeg's codes are small positive ints).
constexpr int kScanFloodError = -1000;

struct JpegScanGuard {
  jpeg_progress_mgr pub;  // first member: libjpeg sees a jpeg_progress_mgr*
  int last_scan = 0;
  int64_t frame_blocks = 0;    // blocks of all components, one full pass over the image
  int64_t scanned_blocks = 0;  // blocks covered by the scans started so far
};

void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  err->error_code = err->pub.msg_code;
  (*err->pub.format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void on_emit_message(j_common_ptr cinfo, int msg_level) {
  // Warnings (level -1) are counted, never printed. Corrupt-entropy warnings leave a usable image
  // (Pillow returns it too); running out of data does not, so that one is remembered.
  if (msg_level >= 0) return;
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (err->pub.msg_code == JWRN_JPEG_EOF) err->saw_premature_eof = true;
  err->pub.num_warnings++;
}

void on_output_message(j_common_ptr) {}

[[noreturn]] void scan_flood_exit(j_common_ptr cinfo, const char* what) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  err->error_code = kScanFloodError;
  std::snprintf(err->message, sizeof(err->message), "%s", what);
  std::longjmp(err->jump, 1);
}

// Called by libjpeg before each unit of input work (a marker segment or an iMCU row of a scan), so a
// new scan is seen before any of its data is decoded.
void on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  auto* guard = reinterpret_cast<JpegScanGuard*>(cinfo->progress);
  if (d->input_scan_number == guard->last_scan) return;
  guard->last_scan = d->input_scan_number;
  if (d->input_scan_number > kMaxJpegScans) {
    char msg[JMSG_LENGTH_MAX];
    std::snprintf(msg, sizeof(msg), "progressive JPEG has more than %d scans (a scan flood)", kMaxJpegScans);
    scan_flood_exit(cinfo, msg);
  }
  if (guard->frame_blocks == 0) {
    for (int c = 0; c < d->num_components; ++c)
      guard->frame_blocks += int64_t(d->comp_info[c].width_in_blocks) * d->comp_info[c].height_in_blocks;
  }
  for (int i = 0; i < d->comps_in_scan; ++i)
    guard->scanned_blocks += int64_t(d->cur_comp_info[i]->width_in_blocks) * d->cur_comp_info[i]->height_in_blocks;
  if (guard->scanned_blocks > std::max(kMaxJpegScanPasses * guard->frame_blocks, kFreeJpegScanBlocks)) {
    char msg[JMSG_LENGTH_MAX];
    std::snprintf(msg, sizeof(msg),
                  "progressive JPEG scans cover the image more than %d times (%d scans so far; a scan flood)",
                  int(kMaxJpegScanPasses), d->input_scan_number);
    scan_flood_exit(cinfo, msg);
  }
}

struct JpegSession {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  JpegScanGuard scans;
  std::vector<uint8_t> row_buffer;      // decoder-layout row when the output needs converting
  std::vector<JSAMPROW> row_pointers;
  ImageU8 image;
  bool created = false;

  JpegSession() {
    std::memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error_exit;
    err.pub.emit_message = on_emit_message;
    err.pub.output_message = on_output_message;
    std::memset(&scans.pub, 0, sizeof(scans.pub));
    scans.pub.progress_monitor = on_progress;
  }
  ~JpegSession() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  JpegSession(const JpegSession&) = delete;
  JpegSession& operator=(const JpegSession&) = delete;
};

constexpr char kExifPrefix[] = "Exif\0\0";                       // 6 bytes
constexpr char kXmpPrefix[] = "http://ns.adobe.com/xap/1.0/";   // then a NUL

// How the decoder's output is turned into the requested mode.
enum class Conversion { none, rgb_to_luma, cmyk_inverted };

int orientation_from_markers(const jpeg_decompress_struct& cinfo) {
  int exif = -1, xmp = -1;
  bool have_exif = false;
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    if (!have_exif && m->data_length >= 6 && std::memcmp(m->data, kExifPrefix, 6) == 0) {
      have_exif = true;  // Pillow parses IFD0 from the first Exif segment
      exif = exif_orientation_tag(m->data, m->data_length);
    } else if (m->data_length > sizeof(kXmpPrefix) &&
               std::memcmp(m->data, kXmpPrefix, sizeof(kXmpPrefix)) == 0) {  // includes the NUL
      xmp = xmp_orientation_tag(m->data, m->data_length);  // Pillow keeps the last XMP segment
    }
  }
  return normalize_orientation(exif >= 0 ? exif : xmp);
}

// Smallest M in 1..8 such that the M/8-scaled output still covers (need_w, need_h).
int choose_dct_scale(int64_t width, int64_t height, int64_t need_w, int64_t need_h) {
  for (int m = 1; m < 8; ++m) {
    const int64_t w = (width * m + 7) / 8, h = (height * m + 7) / 8;  // libjpeg rounds up
    if (w >= need_w && h >= need_h) return m;
  }
  return 8;
}

Status status_for_error(const JpegErrorManager& err) {
  if (err.saw_premature_eof) return Status::truncated;
  switch (err.error_code) {
    case JERR_BAD_PRECISION:
    case JERR_SOF_UNSUPPORTED:
    case JERR_NOT_COMPILED:
    case JERR_ARITH_NOTIMPL:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_COMPONENT_COUNT: return Status::unsupported;
    case JERR_OUT_OF_MEMORY:
    case JERR_IMAGE_TOO_BIG: return Status::too_large;
    default: return Status::corrupt;
  }
}

// Reads the header; fills size/orientation. Must be called from inside the guarded region.
bool read_header(JpegSession& s, const uint8_t* data, size_t size, DecodeResult& out) {
  jpeg_create_decompress(&s.cinfo);
  s.created = true;
  s.cinfo.progress = &s.scans.pub;  // after create: jpeg_create_decompress zeroes the struct
  jpeg_mem_src(&s.cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&s.cinfo, JPEG_APP0 + 1, 0xffff);
  if (jpeg_read_header(&s.cinfo, TRUE) != JPEG_HEADER_OK) {
    fail(out, Status::corrupt, "JPEG stream holds tables only, no image");
    return false;
  }
  out.source_width = int(s.cinfo.image_width);
  out.source_height = int(s.cinfo.image_height);
  out.exif_orientation = orientation_from_markers(s.cinfo);
  return true;
}

// The whole decode; returns normally on success or a handled failure, longjmps to the caller's
// setjmp on a libjpeg error. No locals with destructors: they would be skipped by the jump.
void decode_steps(JpegSession& s, const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out) {
  if (!read_header(s, data, size, out)) return;
  jpeg_decompress_struct& ci = s.cinfo;
  if (!check_pixel_limit(ci.image_width, ci.image_height, opts, out)) return;

  // keep_chroma: colour sources keep 3 channels (YCbCr as the decoder holds it, others RGB); gray stays 1.
  const bool chroma = opts.keep_chroma && ci.jpeg_color_space != JCS_GRAYSCALE;
  const int out_channels = chroma ? 3 : mode_channels(opts.mode);
  Conversion conversion = Conversion::none;
  switch (ci.jpeg_color_space) {
    case JCS_GRAYSCALE:
      ci.out_color_space = out_channels == 3 ? JCS_RGB : JCS_GRAYSCALE;  // gray -> RGB replicates
      break;
    case JCS_YCbCr:
    case JCS_RGB:
      if (chroma && ci.jpeg_color_space == JCS_YCbCr) {
        ci.out_color_space = JCS_YCbCr;  // Y exactly as gray_luma's plane; Cb, Cr IDCT'd at the same scale
        out.ycbcr = true;
      } else if (out_channels == 3) {
        ci.out_color_space = JCS_RGB;
      } else if (opts.mode == ColorMode::gray_luma) {
        ci.out_color_space = JCS_GRAYSCALE;  // the Y plane: chroma is entropy-decoded but never IDCT'd
      } else {
        ci.out_color_space = JCS_RGB;  // Pillow's "L" is computed from the decoded RGB
        conversion = Conversion::rgb_to_luma;
      }
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      ci.out_color_space = JCS_CMYK;  // libjpeg undoes YCCK; Pillow then assumes Adobe-inverted CMYK
      conversion = Conversion::cmyk_inverted;
      break;
    default:
      fail(out, Status::unsupported,
           "JPEG with " + std::to_string(ci.num_components) + " components in an unknown color space");
      return;
  }

  if (opts.min_width > 0 || opts.min_height > 0) {
    // Sides are matched in the orientation the caller will see.
    const bool swap = opts.apply_exif_orientation && orientation_swaps_sides(out.exif_orientation);
    const int64_t need_w = swap ? opts.min_height : opts.min_width;
    const int64_t need_h = swap ? opts.min_width : opts.min_height;
    const int m = choose_dct_scale(ci.image_width, ci.image_height, need_w, need_h);
    ci.scale_num = unsigned(m);
    ci.scale_denom = 8;
    out.dct_scale = m;
  }
  if (opts.fast_dct) {
    ci.dct_method = JDCT_IFAST;
    ci.do_fancy_upsampling = FALSE;
  } else {
    ci.dct_method = JDCT_ISLOW;
    ci.do_fancy_upsampling = TRUE;
  }

  jpeg_start_decompress(&ci);
  const int width = int(ci.output_width), height = int(ci.output_height);
  const int decoded_channels = ci.output_components;
  s.image = ImageU8(height, width, out_channels);
  if (conversion == Conversion::none) {
    // Decode straight into the output, several rows per call.
    constexpr int kRowsPerCall = 16;
    s.row_pointers.resize(kRowsPerCall);
    while (ci.output_scanline < ci.output_height) {
      const int y0 = int(ci.output_scanline);
      const int n = std::min(kRowsPerCall, height - y0);
      for (int i = 0; i < n; ++i) s.row_pointers[i] = s.image.row(y0 + i);
      jpeg_read_scanlines(&ci, s.row_pointers.data(), JDIMENSION(n));
    }
  } else {
    s.row_buffer.resize(size_t(width) * decoded_channels);
    s.row_pointers.assign(1, s.row_buffer.data());
    while (ci.output_scanline < ci.output_height) {
      const int y = int(ci.output_scanline);
      if (jpeg_read_scanlines(&ci, s.row_pointers.data(), 1) != 1) break;
      if (conversion == Conversion::cmyk_inverted) {
        cmyk_inverted_row_to(s.row_buffer.data(), s.image.row(y), out_channels, width);
      } else {
        convert_row(s.row_buffer.data(), decoded_channels, s.image.row(y), out_channels, width);
      }
    }
  }
  // Reads up to EOI: a stream cut anywhere, even just before EOI, is reported as truncated (as Pillow does).
  jpeg_finish_decompress(&ci);
  if (s.err.saw_premature_eof) {
    fail(out, Status::truncated, "JPEG stream is truncated (premature end of data)");
    return;
  }
  out.status = Status::ok;
  out.error.clear();
  out.image = std::move(s.image);
}

void probe_steps(JpegSession& s, const uint8_t* data, size_t size, DecodeResult& out) {
  if (!read_header(s, data, size, out)) return;
  out.status = Status::ok;
}

template <typename Steps>
void run_guarded(JpegSession& s, DecodeResult& out, Steps&& steps) {
  if (setjmp(s.err.jump)) {
    std::string msg = s.err.message;
    if (s.err.saw_premature_eof) msg = "JPEG stream is truncated: " + msg;
    fail(out, status_for_error(s.err), std::move(msg));
    return;
  }
  steps();
}

}  // namespace

void decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& opts, DecodeResult& out) {
  JpegSession session;
  run_guarded(session, out, [&] { decode_steps(session, data, size, opts, out); });
}

void probe_jpeg(const uint8_t* data, size_t size, DecodeResult& out) {
  JpegSession session;
  run_guarded(session, out, [&] { probe_steps(session, data, size, out); });
}

}  // namespace mmcurate::detail

namespace mmcurate {

int jpeg_scan_count(const uint8_t* data, size_t size, int stop_after) {
  if (data == nullptr) return 0;
  int scans = 0;
  size_t pos = 2;  // after SOI
  while (pos + 1 < size && scans < stop_after) {
    if (data[pos] != 0xFF) {  // entropy-coded data (or garbage): skip to the next 0xFF
      const void* next = std::memchr(data + pos, 0xFF, size - pos);
      if (next == nullptr) break;
      pos = size_t(static_cast<const uint8_t*>(next) - data);
      continue;
    }
    const uint8_t m = data[pos + 1];
    if (m == 0xFF) {  // fill byte
      pos += 1;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // stuffed 0xFF, TEM, RSTn: no length
      pos += 2;
      continue;
    }
    if (m == 0xD9) break;  // EOI
    if (m == 0xD8) {       // a second SOI: no length field
      pos += 2;
      continue;
    }
    if (pos + 4 > size) break;
    const size_t length = (size_t(data[pos + 2]) << 8) | data[pos + 3];
    if (m == 0xDA) ++scans;
    pos += 2 + std::max<size_t>(length, 2);
  }
  return scans;
}

}  // namespace mmcurate
