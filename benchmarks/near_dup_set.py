"""The labelled near-duplicate sets of the perceptual-dedup benchmarks, built from real photos.

One builder, deterministic under a seed, shared by ``bench_dedup.py`` (``build_set``: 64-bit pHash, the
original 400-tile set written to a folder) and ``bench_near_dup_sweep.py`` (``build_near_dup_set``: the
PDQ / verification sweep, in memory, with web-style distractors and templates).

Sources: non-overlapping square tiles of the scikit-image data photos (1/2, 1/3 and 1/4 of the short side),
scikit-image's logo, and graphics drawn here with Pillow. Nothing is downloaded.

``build_near_dup_set`` labels every image with a duplicate ``group`` (images of one group are the same
picture; every other pair is distinct) and, for template mockups, a template ``family`` (same layout,
different print or text: a *template pair*, counted apart from duplicates and from negatives):

  photo      tile bases; per base the classic edits ``jpeg`` (q30-95), ``resize`` (0.5-0.9), ``crop``
             (2-8 % of each side in total), ``colour`` (brightness / contrast / saturation), ``overlay``
             (watermark text or a small logo), and two of the 7 non-identity dihedral transforms (``flip_h``,
             ``flip_v``, ``rot90``, ``rot180``, ``rot270``, ``transpose``, ``transverse``), cycled so each
             appears equally often;
  letterbox  other tiles cut to an aspect ratio (16:9, 2:1, 3:1, 4:3 and their portraits) and padded to a
             square with black or white bars (img2dataset's resize_mode=border); each with a ``jpeg`` copy;
  flat       solid colours, two-colour gradients, a small shape / star / logo on a flat background,
             "no image" placeholder cards with text; each with a ``jpeg`` copy;
  template   families of mockups (T-shirt, mug, phone case, poster frame with a different tile printed in;
             banners with the same layout and different text); each member with a ``jpeg`` copy.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np

SOURCE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "brick.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "ihc.png",
    "moon.png",
    "page.png",
    "cell.png",
    "microaneurysms.png",
    "text.png",
    "color.png",
)

CLASSIC_KINDS = ("jpeg", "resize", "crop", "colour", "overlay")
DIHEDRAL_KINDS = ("flip_h", "flip_v", "rot90", "rot180", "rot270", "transpose", "transverse")
EDIT_KINDS = CLASSIC_KINDS + DIHEDRAL_KINDS
CATEGORIES = ("photo", "letterbox", "flat", "template")


# ---------------------------------------------------------------------------------------------------------
# pieces shared with bench_dedup.py (its set must not change: same rng draws in the same order)


def _tiles(img, base_side: int):
    """Non-overlapping square tiles at 1/2, 1/3 and 1/4 of the short side, resized to base_side."""
    from PIL import Image

    w, h = img.size
    for parts in (2, 3, 4):
        side = min(w, h) // parts
        if side < 64:
            continue
        for y in range(0, h - side + 1, side):
            for x in range(0, w - side + 1, side):
                yield (parts, x, y), img.crop((x, y, x + side, y + side)).resize((base_side, base_side), Image.BICUBIC)


def _save_jpeg(img, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _variant(img, kind: str, rng: np.random.Generator):
    """(image bytes, description) of one labelled transform."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    if kind == "jpeg":
        q = int(rng.integers(30, 96))
        return _save_jpeg(img, q), f"JPEG q{q}"
    if kind == "resize":
        f = float(rng.uniform(0.5, 0.9))
        return _save_jpeg(img.resize((round(w * f), round(h * f)), Image.BICUBIC), 90), f"resize {f:.2f}"
    if kind == "crop":
        f = float(rng.uniform(0.02, 0.08))  # fraction of each side removed in total
        dx, dy = round(w * f), round(h * f)
        x0, y0 = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
        return _save_jpeg(img.crop((x0, y0, x0 + w - dx, y0 + h - dy)), 90), f"crop {100 * f:.1f}%"
    if kind == "bright":
        f = float(rng.uniform(0.10, 0.20)) * (1 if rng.random() < 0.5 else -1)
        return _save_jpeg(ImageEnhance.Brightness(img).enhance(1 + f), 90), f"brightness {100 * f:+.0f}%"
    if kind == "rotate":
        a = float(rng.uniform(2, 5)) * (1 if rng.random() < 0.5 else -1)
        r = img.rotate(a, resample=Image.BICUBIC)
        m = int(np.ceil(w * np.sin(np.radians(abs(a))))) + 1  # cut the filled corners away
        return _save_jpeg(r.crop((m, m, w - m, h - m)), 90), f"rotate {a:+.1f} deg"
    if kind == "flip":
        return _save_jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90), "horizontal flip"
    if kind == "colour":
        which = ("brightness", "contrast", "saturation")[int(rng.integers(0, 3))]
        f = float(rng.uniform(0.10, 0.30)) * (1 if rng.random() < 0.5 else -1)
        enhancer = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast}.get(
            which, ImageEnhance.Color
        )
        return _save_jpeg(enhancer(img).enhance(1 + f), 90), f"{which} {100 * f:+.0f}%"
    if kind == "overlay":
        return _save_jpeg(_overlay(img, rng), 90), "overlay"
    if kind in DIHEDRAL_KINDS:
        return _save_jpeg(img.transpose(_PIL_DIHEDRAL[kind]), 90), kind
    raise ValueError(kind)


def _pil_dihedral():
    from PIL import Image

    t = Image.Transpose
    return {
        "flip_h": t.FLIP_LEFT_RIGHT,
        "flip_v": t.FLIP_TOP_BOTTOM,
        "rot90": t.ROTATE_90,
        "rot180": t.ROTATE_180,
        "rot270": t.ROTATE_270,
        "transpose": t.TRANSPOSE,
        "transverse": t.TRANSVERSE,
    }


class _LazyDihedral(dict):
    def __missing__(self, key):
        self.update(_pil_dihedral())
        return dict.__getitem__(self, key)


_PIL_DIHEDRAL = _LazyDihedral()

_WATERMARKS = ("(c) stock photo", "SAMPLE", "shutterstock", "@my_account", "PREVIEW", "www.example.com", "DRAFT")


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _logo(side: int):
    """scikit-image's logo (RGBA) scaled to side px on its long side."""
    import skimage
    from PIL import Image

    logo = Image.open(Path(skimage.__file__).parent / "data" / "logo.png").convert("RGBA")
    s = side / max(logo.size)
    return logo.resize((max(1, round(logo.size[0] * s)), max(1, round(logo.size[1] * s))), Image.LANCZOS)


def _overlay(img, rng: np.random.Generator):
    """A semi-transparent watermark text, or scikit-image's logo pasted small in a corner."""
    from PIL import Image, ImageDraw

    w, h = img.size
    out = img.convert("RGBA")
    if rng.random() < 0.5:
        layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
        text = _WATERMARKS[int(rng.integers(0, len(_WATERMARKS)))]
        size = int(rng.integers(max(10, h // 16), max(11, h // 9)))
        x, y = int(rng.integers(0, w // 3)), int(rng.integers(0, h - size - 1))
        alpha = int(rng.integers(110, 200))
        ImageDraw.Draw(layer).text((x, y), text, font=_font(size), fill=(255, 255, 255, alpha))
        out = Image.alpha_composite(out, layer)
    else:
        logo = _logo(int(w * rng.uniform(0.12, 0.22)))
        corner = int(rng.integers(0, 4))
        m = max(2, w // 40)
        x = m if corner % 2 == 0 else w - logo.size[0] - m
        y = m if corner < 2 else h - logo.size[1] - m
        out.alpha_composite(logo, (x, y))
    return out.convert("RGB")


def photo_tiles(base_side: int) -> list:
    """(photo stem, (parts, x, y), tile) for every tile of the source photos, in a fixed order."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    tiles = []
    for name in SOURCE_PHOTOS:
        if (data / name).exists():
            img = Image.open(data / name).convert("RGB")
            tiles += [(Path(name).stem, where, tile) for where, tile in _tiles(img, base_side)]
    return tiles


def build_set(folder: Path, n_bases: int, base_side: int, seed: int) -> list[dict]:
    """bench_dedup.py's set: write the images into folder/images and return one record per file (cached by
    parameters). Main kinds jpeg/resize/crop/bright; rotate and flip reported apart."""
    main_kinds, apart_kinds = ("jpeg", "resize", "crop", "bright"), ("rotate", "flip")
    manifest = folder / "manifest.json"
    params = {"n_bases": n_bases, "base_side": base_side, "seed": seed, "version": 2}
    if manifest.exists():
        cached = json.loads(manifest.read_text())
        if cached.get("params") == params:
            return cached["records"]
    shutil.rmtree(folder, ignore_errors=True)
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tiles = photo_tiles(base_side)
    pick = rng.permutation(len(tiles))[:n_bases]
    records = []
    for group, t in enumerate(sorted(pick)):
        photo, (parts, x, y), tile = tiles[t]
        base = f"g{group:04d}"
        files = {"base": (_save_jpeg(tile, 95), f"{photo} 1/{parts} tile at ({x},{y}), JPEG q95")}
        for kind in main_kinds + apart_kinds:
            files[kind] = _variant(tile, kind, rng)
        for kind, (blob, detail) in files.items():
            fname = f"{base}_{kind}.jpg"
            (images / fname).write_bytes(blob)
            records.append({"file": fname, "group": group, "kind": kind, "detail": detail})
    manifest.write_text(json.dumps({"params": params, "records": records}))
    return records


# ---------------------------------------------------------------------------------------------------------
# web-style distractors

_ASPECTS = ((16, 9), (2, 1), (3, 1), (4, 3), (9, 16), (1, 2), (3, 4))


def _letterbox(tile, aspect, bar, side: int):
    """Cut tile to aspect (w:h), fit it inside side x side and pad with bars (resize_mode=border)."""
    from PIL import Image

    aw, ah = aspect
    w, h = tile.size
    if aw >= ah:
        cw, ch = w, round(w * ah / aw)
    else:
        cw, ch = round(h * aw / ah), h
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    content = tile.crop((x0, y0, x0 + cw, y0 + ch))
    s = side / max(cw, ch)
    content = content.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BICUBIC)
    canvas = Image.new("RGB", (side, side), bar)
    canvas.paste(content, ((side - content.size[0]) // 2, (side - content.size[1]) // 2))
    return canvas


def _random_colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _star(cx, cy, r_out, r_in, points=5, phase=0.0):
    pts = []
    for k in range(2 * points):
        r = r_out if k % 2 == 0 else r_in
        a = phase + np.pi * k / points - np.pi / 2
        pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return pts


_PLACEHOLDER_TEXTS = (
    "No image",
    "Image not available",
    "Photo coming soon",
    "404",
    "No preview",
    "Image unavailable",
    "Not found",
    "Loading...",
    "No photo",
    "Missing image",
    "Placeholder",
    "Image removed",
)


def _flat(kind: str, i: int, rng, side: int):
    """A flat / near-uniform graphic; distinct for distinct (kind, i)."""
    from PIL import Image, ImageDraw

    if kind == "solid":
        # spread the hues and greys so no two are the same colour
        palette = [
            (0, 0, 0),
            (255, 255, 255),
            (128, 128, 128),
            (220, 30, 30),
            (30, 160, 40),
            (30, 60, 200),
            (250, 220, 20),
            (250, 140, 0),
            (140, 30, 160),
            (0, 170, 170),
            (60, 60, 60),
            (200, 200, 200),
            (250, 180, 190),
            (120, 70, 20),
            (0, 40, 90),
            (180, 230, 180),
        ]
        c = palette[i % len(palette)]
        if i >= len(palette):
            c = tuple(int(np.clip(v + rng.integers(-60, 61), 0, 255)) for v in c)
        return Image.new("RGB", (side, side), c), f"solid {c}"
    if kind == "gradient":
        a, b = np.array(_random_colour(rng), float), np.array(_random_colour(rng), float)
        angle = float(rng.uniform(0, 2 * np.pi))
        yy, xx = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
        t = np.clip(xx * np.cos(angle) + yy * np.sin(angle) + 0.5, 0, 1)[..., None]
        arr = (a * (1 - t) + b * t).round().astype(np.uint8)
        return Image.fromarray(arr), f"gradient {angle:.2f} rad"
    if kind == "shape":
        bg = ((0, 0, 0), (255, 255, 255), _random_colour(rng))[int(rng.integers(0, 3))]
        img = Image.new("RGB", (side, side), bg)
        draw = ImageDraw.Draw(img)
        shape = ("star", "circle", "square", "triangle", "logo")[i % 5]
        r = side * rng.uniform(0.06, 0.16)
        cx, cy = (float(v) for v in rng.uniform(r + 2, side - r - 2, size=2))
        fill = _random_colour(rng)
        if shape == "star":
            draw.polygon(_star(cx, cy, r, r * 0.45, phase=float(rng.uniform(0, 1))), fill=fill)
        elif shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            logo = _logo(int(2 * r))
            img.paste(logo, (int(cx - logo.size[0] / 2), int(cy - logo.size[1] / 2)), logo)
        return img, f"{shape} on {bg}"
    if kind == "placeholder":
        grey = int(rng.integers(200, 245))
        img = Image.new("RGB", (side, side), (grey, grey, grey))
        draw = ImageDraw.Draw(img)
        text = _PLACEHOLDER_TEXTS[i % len(_PLACEHOLDER_TEXTS)]
        size = int(rng.integers(side // 14, side // 8))
        font = _font(size)
        tw = draw.textlength(text, font=font)
        ink = int(rng.integers(90, 160))
        draw.text(((side - tw) / 2, side / 2 + float(rng.uniform(-0.1, 0.1)) * side), text, font=font, fill=(ink,) * 3)
        if rng.random() < 0.5:  # a picture-frame icon above the text
            m = side * 0.36
            draw.rectangle((m, m * 0.7, side - m, side / 2 - 8), outline=(ink,) * 3, width=max(2, side // 64))
        return img, f"placeholder {text!r}"
    raise ValueError(kind)


_TEMPLATE_KINDS = ("tshirt", "mug", "phone", "frame", "banner_a", "banner_b")
_BANNER_TEXTS = (
    "SUMMER SALE",
    "Free shipping",
    "New arrivals",
    "50% OFF",
    "Join us today",
    "Best sellers",
    "Limited offer",
    "Shop now",
    "Back to school",
    "Holiday deals",
)


def _template(kind: str, content, text: str, side: int, style_rng_seed: int):
    """One mockup member: the layout depends on kind (and a per-family style seed), the print on content/text."""
    from PIL import Image, ImageDraw

    srng = np.random.default_rng(style_rng_seed)  # the family's fixed style
    if kind == "banner_a":  # wide: header bar, round logo left, headline + subline, button bottom right
        w, h = side, side // 2
        img = Image.new("RGB", (w, h), _random_colour(srng))
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, w, h // 6), fill=_random_colour(srng))
        draw.ellipse((w // 20, h // 4, w // 20 + h // 3, h // 4 + h // 3), fill=_random_colour(srng))
        x = w // 20 + h // 3 + w // 30
        draw.text((x, h // 4), text, font=_font(h // 7), fill=(255, 255, 255))
        draw.text((x, h // 4 + h // 5), text.lower() + " - details inside", font=_font(h // 14), fill=(20, 20, 20))
        draw.rounded_rectangle((w * 0.65, h * 0.7, w * 0.92, h * 0.88), radius=h // 20, fill=_random_colour(srng))
        return img
    if kind == "banner_b":  # square social card: diagonal stripes on top, text band at the bottom
        img = Image.new("RGB", (side, side), _random_colour(srng))
        draw = ImageDraw.Draw(img)
        stripe = _random_colour(srng)
        for k in range(-side, side, side // 6):
            draw.polygon([(k, 0), (k + side // 12, 0), (k + side // 12 + side, side), (k + side, side)], fill=stripe)
        band = _random_colour(srng)
        draw.rectangle((0, side * 0.62, side, side), fill=band)
        font = _font(side // 10)
        tw = draw.textlength(text, font=font)
        draw.text(((side - tw) / 2, side * 0.72), text, font=font, fill=(250, 250, 250))
        return img
    bg = tuple(int(v) for v in srng.integers(200, 250, size=3))
    img = Image.new("RGB", (side, side), bg)
    draw = ImageDraw.Draw(img)
    body = _random_colour(srng)
    if kind == "tshirt":
        s = side
        draw.polygon(
            [(0.3 * s, 0.12 * s), (0.42 * s, 0.1 * s), (0.5 * s, 0.16 * s), (0.58 * s, 0.1 * s), (0.7 * s, 0.12 * s),
             (0.92 * s, 0.3 * s), (0.8 * s, 0.4 * s), (0.72 * s, 0.34 * s), (0.72 * s, 0.92 * s), (0.28 * s, 0.92 * s),
             (0.28 * s, 0.34 * s), (0.2 * s, 0.4 * s), (0.08 * s, 0.3 * s)],
            fill=body,
        )  # fmt: skip
        box = (0.38, 0.3, 0.62, 0.54)
    elif kind == "mug":
        s = side
        draw.rounded_rectangle((0.2 * s, 0.2 * s, 0.68 * s, 0.85 * s), radius=s // 30, fill=body)
        draw.ellipse((0.6 * s, 0.35 * s, 0.85 * s, 0.68 * s), outline=body, width=max(3, s // 24))
        box = (0.26, 0.32, 0.62, 0.68)
    elif kind == "phone":
        s = side
        draw.rounded_rectangle((0.28 * s, 0.06 * s, 0.72 * s, 0.94 * s), radius=s // 14, fill=body)
        draw.ellipse((0.33 * s, 0.1 * s, 0.41 * s, 0.18 * s), fill=(30, 30, 30))
        box = (0.31, 0.22, 0.69, 0.9)
    else:  # frame: a poster in a thick frame on a wall
        s = side
        draw.rectangle((0.15 * s, 0.1 * s, 0.85 * s, 0.9 * s), fill=body)
        box = (0.22, 0.17, 0.78, 0.83)
    x0, y0, x1, y1 = (round(v * side) for v in box)
    img.paste(content.resize((x1 - x0, y1 - y0)), (x0, y0))
    return img


# ---------------------------------------------------------------------------------------------------------
# the sweep set


def build_near_dup_set(
    n_bases: int = 400,
    seed: int = 0,
    base_side: int = 256,
    n_letterbox: int = 84,
    n_flat: int = 96,
    template_members: int = 8,
) -> list[dict]:
    """The labelled sweep set, in memory. One record per image:

    ``id`` (unique, sorts base first within a group), ``blob`` (encoded bytes), ``group`` (duplicate group),
    ``kind`` ("base" for a group's original, else its edit), ``category`` (CATEGORIES), ``family`` (template
    family id, -1 outside templates), ``detail``. Images of one group are duplicates; two images of
    different groups in one family are a template pair; every other pair is distinct.
    """
    rng = np.random.default_rng(seed)
    tiles = photo_tiles(base_side)
    order = rng.permutation(len(tiles))
    n_templ_tiles = 4 * template_members
    if n_bases + n_letterbox + n_templ_tiles > len(tiles):
        raise ValueError(f"{len(tiles)} tiles: too few for {n_bases} bases + {n_letterbox} letterboxed + templates")
    base_tiles = sorted(order[:n_bases])
    letter_tiles = order[n_bases : n_bases + n_letterbox]
    templ_tiles = order[n_bases + n_letterbox : n_bases + n_letterbox + n_templ_tiles]

    records: list[dict] = []
    state = {"group": 0}

    def add_group(category: str, blob: bytes, detail: str, variants, family: int = -1):
        g = state["group"]
        state["group"] += 1
        items = [("base", blob, detail)] + list(variants)
        for k, (kind, b, d) in enumerate(items):
            records.append(
                {
                    "id": f"{category[0]}{g:04d}_{k:02d}_{kind}",
                    "blob": b,
                    "group": g,
                    "kind": kind,
                    "category": category,
                    "family": family,
                    "detail": d,
                }
            )

    # photos: classic edits + two dihedral transforms per base, cycling through the 7
    for b, t in enumerate(base_tiles):
        photo, (parts, x, y), tile = tiles[t]
        kinds = list(CLASSIC_KINDS) + [DIHEDRAL_KINDS[(2 * b) % 7], DIHEDRAL_KINDS[(2 * b + 1) % 7]]
        variants = [(k, *_variant(tile, k, rng)) for k in kinds]
        add_group("photo", _save_jpeg(tile, 95), f"{photo} 1/{parts} tile at ({x},{y})", variants)

    # letterboxed tiles (distinct content), each with a re-encoded copy
    for i, t in enumerate(letter_tiles):
        photo, (parts, x, y), tile = tiles[t]
        aspect = _ASPECTS[i % len(_ASPECTS)]
        bar = (0, 0, 0) if (i // len(_ASPECTS)) % 2 == 0 else (255, 255, 255)
        img = _letterbox(tile, aspect, bar, base_side)
        detail = f"{photo} tile at ({x},{y}) letterboxed {aspect[0]}:{aspect[1]} bars {bar}"
        add_group("letterbox", _save_jpeg(img, 90), detail, [("jpeg", *_variant(img, "jpeg", rng))])

    # flat graphics, each with a re-encoded copy
    flat_kinds = ("solid", "gradient", "shape", "placeholder")
    per = [n_flat // 4 + (1 if k < n_flat % 4 else 0) for k in range(4)]
    for fk, count in zip(flat_kinds, per):
        for i in range(count):
            img, detail = _flat(fk, i, rng, base_side)
            add_group("flat", _save_jpeg(img, 90), f"{fk}: {detail}", [("jpeg", *_variant(img, "jpeg", rng))])

    # templates: each family one layout, members with different prints (tiles) or texts
    ti = 0
    for f, tk in enumerate(_TEMPLATE_KINDS):
        for m in range(template_members):
            if tk.startswith("banner"):
                content, text = None, _BANNER_TEXTS[m % len(_BANNER_TEXTS)]
                detail = f"{tk} text {text!r}"
            else:
                photo, (parts, x, y), content = tiles[templ_tiles[ti]]
                ti += 1
                text = ""
                detail = f"{tk} print {photo} tile at ({x},{y})"
            img = _template(tk, content, text, base_side, style_rng_seed=seed * 1000 + f)
            add_group("template", _save_jpeg(img, 90), detail, [("jpeg", *_variant(img, "jpeg", rng))], family=f)

    return records


def pair_label(records: list[dict], i: int, j: int) -> str:
    """'duplicate', 'template' or 'negative' for images i and j (i != j)."""
    a, b = records[i], records[j]
    if a["group"] == b["group"]:
        return "duplicate"
    if a["family"] >= 0 and a["family"] == b["family"]:
        return "template"
    return "negative"


def summary(records: list[dict]) -> dict:
    """Counts of images by category and kind, groups, and pairs by label."""
    from collections import Counter

    groups = Counter(r["group"] for r in records)
    fam_groups: dict[int, list[int]] = {}
    for r in records:
        if r["family"] >= 0:
            fam_groups.setdefault(r["family"], []).append(r["group"])
    dup_pairs = sum(c * (c - 1) // 2 for c in groups.values())
    templ_pairs = 0
    for gs in fam_groups.values():
        sizes = np.array(list(Counter(gs).values()))
        templ_pairs += int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)
    n = len(records)
    return {
        "images": n,
        "groups": len(groups),
        "by_category": dict(Counter(r["category"] for r in records)),
        "by_kind": dict(Counter(r["kind"] for r in records)),
        "by_category_kind": {
            f"{c}/{k}": v for (c, k), v in sorted(Counter((r["category"], r["kind"]) for r in records).items())
        },
        "duplicate_pairs": dup_pairs,
        "template_pairs": templ_pairs,
        "negative_pairs": n * (n - 1) // 2 - dup_pairs - templ_pairs,
    }
