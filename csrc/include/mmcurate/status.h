// Per-sample status: data errors are values, misuse is an exception.
#pragma once
#include <cstdint>
#include <string>

namespace mmcurate {

// Stable numeric codes: Python exposes them as mmcurate.ops.Status (IntEnum) and as int8 arrays.
enum class Status : int8_t {
  ok = 0,
  truncated = 1,    // stream ended early (decoder saw premature end of data)
  corrupt = 2,      // malformed stream, bad markers, CRC/Huffman errors
  unsupported = 3,  // unknown format or a feature we do not decode (e.g. 12-bit JPEG, animated WebP)
  too_large = 4,    // header declares more pixels than max_pixels (checked before any allocation)
  empty = 5,        // zero-length input
};

inline const char* status_name(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::truncated: return "truncated";
    case Status::corrupt: return "corrupt";
    case Status::unsupported: return "unsupported";
    case Status::too_large: return "too_large";
    case Status::empty: return "empty";
  }
  return "unknown";
}

}  // namespace mmcurate
