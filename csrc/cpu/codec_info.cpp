// Codec library versions for build_info(): what the decoders were compiled against / run with.
#include <cstdio>
#include <string>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "mmcurate/decode.h"

#define MMCURATE_STR2(x) #x
#define MMCURATE_STR(x) MMCURATE_STR2(x)

namespace mmcurate {

std::string jpeg_library_version() {
#ifdef LIBJPEG_TURBO_VERSION
  return std::string("libjpeg-turbo ") + MMCURATE_STR(LIBJPEG_TURBO_VERSION) + " (jpeglib API " +
         std::to_string(JPEG_LIB_VERSION) + ")";
#else
  return "libjpeg (jpeglib API " + std::to_string(JPEG_LIB_VERSION) + ")";
#endif
}

std::string png_library_version() { return std::string("libpng ") + png_get_libpng_ver(nullptr); }

std::string webp_library_version() {
  int v = WebPGetDecoderVersion();
  char buf[32];
  std::snprintf(buf, sizeof(buf), "libwebp %d.%d.%d", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
  return buf;
}

}  // namespace mmcurate
