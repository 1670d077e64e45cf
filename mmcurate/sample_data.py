"""The built-in sample: real photos that scikit-image ships, plus the defects a web crawl contains.

Each sample carries the label of what it is (`original`, `near_duplicate`, `exact_duplicate`,
`corrupt`, ...) and, for derived samples, the key of the photo it came from, so a demo or a test can
check what the curation found against the truth.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Photographs (not synthetic test patterns) in scikit-image's data folder; no download needed.
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
    "motorcycle_left.png",
    "brick.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "ihc.png",
    "moon.png",
)


@dataclass
class Sample:
    key: str
    data: bytes
    label: str  # original | near_duplicate | exact_duplicate | corrupt | truncated | empty | rotated
    source: str | None = None  # key of the original a derived sample was made from
    detail: str = ""
    meta: dict = field(default_factory=dict)


def _skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:
        raise RuntimeError("the built-in sample needs scikit-image (pip install scikit-image)") from exc
    return Path(skimage.__file__).parent / "data"


def _encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def load_photos(max_photos: int | None = None):
    """The sample photos as RGB PIL images, keyed by file stem."""
    from PIL import Image

    d = _skimage_data_dir()
    out = {}
    for name in PHOTOS[:max_photos]:
        p = d / name
        if p.exists():
            out[p.stem] = Image.open(p).convert("RGB")
    if not out:
        raise RuntimeError(f"no sample photos found under {d}")
    return out


def build_sample(max_photos: int | None = None, seed: int = 0) -> list[Sample]:
    """Originals as JPEG, four near-duplicate variants of each, exact byte duplicates, an EXIF-rotated
    copy, and broken files (truncated, corrupt, empty, not an image)."""
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    photos = load_photos(max_photos)
    for stem, img in photos.items():
        original = _encode(img, "JPEG", quality=90)
        samples.append(Sample(f"{stem}", original, "original", detail="JPEG q90"))
        w, h = img.size
        c = max(1, int(0.03 * min(w, h)))
        variants = {
            "requal": (_encode(img, "JPEG", quality=55), "re-encoded JPEG q55"),
            "small": (
                _encode(img.resize((max(1, int(w * 0.6)), max(1, int(h * 0.6))), Image.BICUBIC), "JPEG", quality=85),
                "resized to 60%",
            ),
            "crop": (_encode(img.crop((c, c, w - c, h - c)), "JPEG", quality=90), "cropped 3% each side"),
            "bright": (_encode(ImageEnhance.Brightness(img).enhance(1.1), "PNG"), "brightness +10%, PNG"),
        }
        for suffix, (data, detail) in variants.items():
            # A crop shifts the whole frequency picture: pHash often moves > 10 bits (textures most),
            # which is what semantic (embedding) dedup is for. Marked so reports can tell them apart.
            meta = {"hard_for_phash": suffix == "crop"}
            samples.append(Sample(f"{stem}_{suffix}", data, "near_duplicate", source=stem, detail=detail, meta=meta))
        samples.append(Sample(f"{stem}_copy", original, "exact_duplicate", source=stem, detail="same bytes"))
    # EXIF orientation 6 (rotate 90 CW on display): stored sideways, shown upright.
    first_stem, first = next(iter(photos.items()))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = first.transpose(Image.Transpose.ROTATE_90)
    samples.append(
        Sample(
            f"{first_stem}_exif6",
            _encode(sideways, "JPEG", quality=90, exif=exif.tobytes()),
            "near_duplicate",
            source=first_stem,
            detail="stored rotated, EXIF orientation 6",
        )
    )
    # Broken inputs a crawl always has.
    base = samples[0].data
    corrupt = bytearray(base)
    pos = rng.integers(len(base) // 3, len(base) - 16, size=64)
    corrupt[len(base) // 2 : len(base) // 2 + 2048] = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()
    for p in pos:
        corrupt[p] ^= 0xFF
    samples += [
        Sample("broken_truncated", base[: len(base) // 2], "truncated", detail="first half of a JPEG"),
        Sample("broken_corrupt", bytes(corrupt), "corrupt", detail="JPEG with scrambled entropy data"),
        Sample("broken_empty", b"", "empty", detail="zero bytes"),
        Sample(
            "broken_html",
            b"<html><body>404 Not Found</body></html>",
            "unsupported",
            detail="an HTML error page saved as .jpg",
        ),
    ]
    return samples
