"""Builders of hostile image files for the native decoder tests (and the fuzz regression tests).

progressive_scan_flood: a valid progressive JPEG whose last AC scan is repeated thousands of times.
libjpeg accepts a repeated scan with a warning (JWRN_BOGUS_PROGRESSION) and decodes it again, and each
scan of a large flat image costs a pass over every block while taking only a few dozen bytes (one EOB
run covers 32,767 blocks), so a few hundred KB buy minutes of decode.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8), SOI, EOI}  # markers without a length field


def jpeg_segments(blob: bytes) -> list[tuple[int, bytes]]:
    """(marker, raw bytes from the 0xFF through the end of the segment, and for SOS its entropy data)."""
    out, pos = [], 0
    while pos < len(blob):
        if blob[pos] != 0xFF:
            raise ValueError(f"no marker at offset {pos}")
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            out.append((marker, blob[pos : pos + 2]))
            pos += 2
            continue
        (length,) = struct.unpack(">H", blob[pos + 2 : pos + 4])
        end = pos + 2 + length
        if marker == SOS:  # entropy-coded data runs to the next marker that is not a stuffed 0 or an RST
            while end < len(blob) and not (blob[end] == 0xFF and blob[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, blob[pos:end]))
        pos = end
    return out


def progressive_scan_flood(n_scans: int, side: int = 4096, color: bool = False, quality: int = 75) -> bytes:
    """A flat side x side progressive JPEG (grey, or 4:4:4 YCbCr with color=True) carrying n_scans more
    scans than its own: the last AC scan (with the Huffman table defined just before it) is repeated
    n_scans times before EOI. side=4096 with ~6,600 extra scans is a 436 KB file (the issue's size)."""
    if color:
        im = Image.fromarray(np.full((side, side, 3), (90, 140, 200), np.uint8), "RGB")
    else:
        im = Image.fromarray(np.full((side, side), 128, np.uint8), "L")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, progressive=True, optimize=True, subsampling=0)
    segs = jpeg_segments(buf.getvalue())
    last_sos = max(i for i, (m, _) in enumerate(segs) if m == SOS)
    unit_start = last_sos
    while unit_start > 0 and segs[unit_start - 1][0] == 0xC4:  # DHT right before the scan belongs to it
        unit_start -= 1
    unit = b"".join(s for _, s in segs[unit_start : last_sos + 1])
    head = b"".join(s for _, s in segs[: last_sos + 1])
    tail = b"".join(s for _, s in segs[last_sos + 1 :])
    return head + unit * n_scans + tail


def count_scans(blob: bytes) -> int:
    return sum(1 for m, _ in jpeg_segments(blob) if m == SOS)


def scan_flood_of_size(n_bytes: int, side: int = 4096, color: bool = False) -> bytes:
    """The largest progressive_scan_flood(side, color) not over n_bytes."""
    base = progressive_scan_flood(0, side, color)
    unit = len(progressive_scan_flood(1, side, color)) - len(base)
    return progressive_scan_flood(max(0, (n_bytes - len(base)) // unit), side, color)
