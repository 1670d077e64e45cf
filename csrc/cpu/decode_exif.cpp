// EXIF (TIFF IFD0) and XMP orientation parsing. Inputs are untrusted: every offset is checked
// against the block size before it is read.
#include <cstring>

#include "cpu/decode_internal.h"

namespace mmcurate::detail {

namespace {

struct TiffReader {
  const uint8_t* d;
  size_t n;
  bool little_endian;
  bool has(size_t off, size_t len) const { return off <= n && len <= n - off; }
  uint32_t u16(size_t off) const {
    return little_endian ? uint32_t(d[off]) | uint32_t(d[off + 1]) << 8 : uint32_t(d[off]) << 8 | uint32_t(d[off + 1]);
  }
  uint32_t u32(size_t off) const {
    return little_endian ? u16(off) | u16(off + 2) << 16 : u16(off) << 16 | u16(off + 2);
  }
};

constexpr uint32_t kOrientationTag = 0x0112;

}  // namespace

int exif_orientation_tag(const uint8_t* data, size_t size) {
  if (data == nullptr) return -1;
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8) return -1;
  TiffReader r{data, size, true};
  if (data[0] == 'I' && data[1] == 'I') {
    r.little_endian = true;
  } else if (data[0] == 'M' && data[1] == 'M') {
    r.little_endian = false;
  } else {
    return -1;
  }
  if (r.u16(2) != 42) return -1;
  const size_t ifd = r.u32(4);
  if (!r.has(ifd, 2)) return -1;
  const uint32_t entries = r.u16(ifd);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t e = ifd + 2 + size_t(i) * 12;
    if (!r.has(e, 12)) break;
    if (r.u16(e) != kOrientationTag) continue;
    const uint32_t type = r.u16(e + 2), count = r.u32(e + 4);
    if (count != 1) return -1;  // Pillow reads a multi-valued tag as a tuple, which exif_transpose ignores
    switch (type) {
      case 1:  // BYTE
      case 6:  // SBYTE
        return data[e + 8];
      case 3:  // SHORT
      case 8:  // SSHORT
        return int(r.u16(e + 8));
      case 4:  // LONG
      case 9:  // SLONG
        return int(r.u32(e + 8) & 0x7fffffff);
      default: return -1;
    }
  }
  return -1;
}

int xmp_orientation_tag(const uint8_t* data, size_t size) {
  static constexpr char kKey[] = "tiff:Orientation";
  constexpr size_t kLen = sizeof(kKey) - 1;
  if (data == nullptr || size < kLen + 2) return -1;
  for (size_t i = 0; i + kLen + 2 <= size; ++i) {
    if (data[i] != 't' || std::memcmp(data + i, kKey, kLen) != 0) continue;
    size_t j = i + kLen;
    if (data[j] == '>') {
      j += 1;
    } else if (data[j] == '=' && j + 1 < size && data[j + 1] == '"') {
      j += 2;
    } else {
      continue;
    }
    if (j < size && data[j] >= '0' && data[j] <= '9') return data[j] - '0';
  }
  return -1;
}

}  // namespace mmcurate::detail
