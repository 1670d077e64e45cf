"""Test-image generators for the decode tests.

Pillow writes most variants; the PNG layouts Pillow cannot write (16-bit RGB/RGBA/LA, Adam7 interlacing,
2/4-bit gray) come from the small reference PNG writer below, whose output Pillow and libpng both read.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------------------
# Pillow-encoded variants


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_variants(rgb: np.ndarray) -> dict[str, bytes]:
    """Baseline q75/q95, progressive, 4:4:4 / 4:2:2 / 4:2:0 subsampling, grayscale and Adobe CMYK."""
    im = Image.fromarray(rgb)
    return {
        "q75": save(im, "JPEG", quality=75),
        "q95": save(im, "JPEG", quality=95),
        "progressive": save(im, "JPEG", quality=85, progressive=True),
        "444": save(im, "JPEG", quality=90, subsampling=0),
        "422": save(im, "JPEG", quality=90, subsampling=1),
        "420": save(im, "JPEG", quality=90, subsampling=2),
        "gray": save(im.convert("L"), "JPEG", quality=90),
        "cmyk": save(im.convert("CMYK"), "JPEG", quality=90),
        "progressive_gray": save(im.convert("L"), "JPEG", quality=80, progressive=True),
    }


def png_variants(rgb: np.ndarray) -> dict[str, bytes]:
    """Every PNG color type and bit depth Pillow reads, interlaced and not, with and without tRNS."""
    h, w, _ = rgb.shape
    im = Image.fromarray(rgb)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = ((xx * 255) // max(w - 1, 1)).astype(np.uint8)
    gray = np.asarray(im.convert("L"))
    rgba = np.dstack([rgb, alpha])
    la = np.dstack([gray, alpha])
    pal_img = im.quantize(colors=200)
    pal_trns = pal_img.copy()
    pal_trns.info["transparency"] = 3
    # 16-bit samples whose low byte differs from the high byte, so taking the wrong byte shows.
    rgb16 = rgb.astype(np.uint16) * 257 + (xx % 251)[..., None].astype(np.uint16) % 200
    gray16_small = gray.astype(np.uint16) * 3 + (yy % 7).astype(np.uint16)  # mostly < 256 and > 255
    gray16_wide = gray.astype(np.uint16) * 257
    pal_idx = np.asarray(pal_img)
    palette = np.array(pal_img.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    return {
        "rgb": save(im, "PNG"),
        "rgba": save(Image.fromarray(rgba), "PNG"),
        "gray": save(Image.fromarray(gray), "PNG"),
        "gray_trns": save(Image.fromarray(gray), "PNG", transparency=17),
        "la": save(Image.fromarray(la, "LA"), "PNG"),
        "palette": save(pal_img, "PNG"),
        "palette_trns": save(pal_trns, "PNG"),
        "palette_4bit": save(im.quantize(colors=16), "PNG", bits=4),
        "bilevel": save(im.convert("1"), "PNG"),
        "gray16_small": save(Image.fromarray(gray16_small), "PNG"),
        "gray16_wide": save(Image.fromarray(gray16_wide), "PNG"),
        "rgb16": write_png(rgb16, color_type=2, bit_depth=16),
        "rgba16": write_png(np.dstack([rgb16, alpha.astype(np.uint16) * 257]), color_type=6, bit_depth=16),
        "la16": write_png(
            np.dstack([gray16_wide, (alpha.astype(np.uint32) * 300 % 65536).astype(np.uint16)]),
            color_type=4,
            bit_depth=16,
        ),
        "gray2": write_png(gray >> 6, color_type=0, bit_depth=2),
        "gray4": write_png(gray >> 4, color_type=0, bit_depth=4),
        "rgb_interlaced": write_png(rgb, color_type=2, bit_depth=8, interlace=True),
        "rgba_interlaced": write_png(rgba, color_type=6, bit_depth=8, interlace=True),
        "gray_interlaced": write_png(gray, color_type=0, bit_depth=8, interlace=True),
        "gray4_interlaced": write_png(gray >> 4, color_type=0, bit_depth=4, interlace=True),
        "palette_interlaced": write_png(
            pal_idx, color_type=3, bit_depth=8, interlace=True, palette=palette, trns=bytes([255, 0, 128])
        ),
        "rgb16_interlaced": write_png(rgb16, color_type=2, bit_depth=16, interlace=True),
    }


def webp_variants(rgb: np.ndarray) -> dict[str, bytes]:
    h, w, _ = rgb.shape
    im = Image.fromarray(rgb)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((xx + yy) * 255) // max(h + w - 2, 1)).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    return {
        "lossy": save(im, "WEBP", quality=80),
        "lossless": save(im, "WEBP", lossless=True),
        "lossy_alpha": save(rgba, "WEBP", quality=80),
        "lossless_alpha": save(rgba, "WEBP", lossless=True, exact=True),
    }


def animated_webp(frames: list[np.ndarray], **kw) -> bytes:
    ims = [Image.fromarray(f) for f in frames]
    return save(ims[0], "WEBP", save_all=True, append_images=ims[1:], duration=100, **kw)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def with_orientation(rgb: np.ndarray, fmt: str, orientation: int, **kw) -> bytes:
    return save(Image.fromarray(rgb), fmt, exif=exif_bytes(orientation), **kw)


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, at any size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / max(w, 1) * 255, yy / max(h, 1) * 255, (xx + yy) / max(h + w, 1) * 255], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# JPEG header surgery


def sof_offset(jpeg: bytes) -> int:
    """Offset of the SOFn marker (0xFFC0..0xFFCF except DHT/JPG/DAC) in a JPEG stream."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("not at a marker")
        marker = jpeg[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i
        i += 2 + struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
    raise ValueError("no SOF marker")


def with_declared_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The same stream with the SOF frame header claiming another size."""
    o = sof_offset(jpeg)
    b = bytearray(jpeg)
    b[o + 5 : o + 9] = struct.pack(">HH", height, width)
    return bytes(b)


def with_precision(jpeg: bytes, bits: int) -> bytes:
    o = sof_offset(jpeg)
    b = bytearray(jpeg)
    b[o + 4] = bits
    return bytes(b)


# ---------------------------------------------------------------------------------------------------------
# A reference PNG writer (filter type 0 everywhere) for layouts Pillow does not write.

_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _raw_rows(img: np.ndarray, bit_depth: int) -> bytes:
    """Scanlines of an (h, w[, c]) sample array, each prefixed with filter byte 0."""
    h = img.shape[0]
    if bit_depth == 16:
        body = img.astype(">u2").reshape(h, -1).tobytes()
        stride = len(body) // h if h else 0
        rows = [body[i * stride : (i + 1) * stride] for i in range(h)]
    elif bit_depth == 8:
        rows = [img[i].astype(np.uint8).tobytes() for i in range(h)]
    else:
        rows = [
            np.packbits(
                np.unpackbits(img[i].reshape(-1).astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth :].ravel()
            ).tobytes()
            for i in range(h)
        ]
    return b"".join(b"\x00" + r for r in rows)


def write_png(
    img: np.ndarray,
    color_type: int,
    bit_depth: int,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
) -> bytes:
    h, w = img.shape[:2]
    if img.ndim == 2:
        img = img[..., None]
    assert img.shape[2] == _CHANNELS[color_type]
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    if interlace:
        raw = b"".join(
            _raw_rows(img[y0::dy, x0::dx], bit_depth)
            for x0, y0, dx, dy in _ADAM7
            if img[y0::dy, x0::dx].shape[0] and img[y0::dy, x0::dx].shape[1]
        )
    else:
        raw = _raw_rows(img, bit_depth)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if palette is not None:
        out += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def fix_png_crcs(png: bytes) -> bytes:
    """Recomputes every chunk CRC, so that a mutated PNG reaches libpng's chunk decoders (deeper fuzzing)."""
    b = bytearray(png)
    off = 8
    while off + 12 <= len(b):
        n = struct.unpack(">I", b[off : off + 4])[0]
        if off + 12 + n > len(b):
            break
        b[off + 8 + n : off + 12 + n] = struct.pack(">I", zlib.crc32(bytes(b[off + 4 : off + 8 + n])) & 0xFFFFFFFF)
        off += 12 + n
    return bytes(b)
