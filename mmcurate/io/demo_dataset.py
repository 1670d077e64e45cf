"""A demo / benchmark dataset in img2dataset's layout, with the truth about every sample.

`build_demo_dataset(out_dir)` writes `out_dir/00000.tar, 00000_stats.json, ...` (members `KEY.jpg|png`,
`KEY.txt`, `KEY.json`, keys like img2dataset's `000000001`) and `out_dir/truth.jsonl` (key -> label,
group, defect details). The samples:

- the built-in sample (mmcurate.sample_data.build_sample): real photos, their near-duplicates
  (re-encode, resize, crop, brightness, EXIF rotation), exact byte copies, broken files;
- one sample per defect a web crawl has, each on its own distinct image (quadrant tiles of the photos):
  tiny images (< 200 px), extreme aspect ratios (1000x100, ...), captions with HTML tags and entities,
  mojibake, PII (e-mail, phone, an 18-digit Chinese ID with a valid checksum, a Luhn-valid card number,
  an IP address, a URL with credentials), boilerplate, too-short captions, German and Chinese captions;
- with `n_samples` above that: generated images, each distinct from all others (smooth random colour
  fields with random shapes: their pHashes are as far apart as unrelated photos'), with
  `duplicate_rate` of them exact or near copies of an earlier one and `defect_rate` carrying one of
  the defects above, so a 10k or 100k benchmark has known, realistic duplicate and defect rates.

Everything is a function of `seed`: the same call writes byte-identical shards. Shards are rendered in
parallel processes for large sets.

Truth labels: original, distinct, near_duplicate, exact_duplicate (group = key of the image it copies),
corrupt, truncated, empty, unsupported (broken files), tiny, extreme_aspect, caption_html,
caption_mojibake, caption_pii (field "pii": the kind), caption_boilerplate, caption_short, caption_lang
(field "lang"). For a distinct image, group = its own key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmcurate.io.atomic import atomic_write_text

# Captions of the built-in photos (by file stem).
PHOTO_CAPTIONS = {
    "astronaut": "An astronaut in a white spacesuit posing in front of an American flag",
    "chelsea": "A tabby cat looking to the side with green eyes",
    "coffee": "A cup of coffee on a saucer with a spoon on a wooden table",
    "rocket": "A rocket on the launch pad with a clear blue sky",
    "hubble_deep_field": "Hubble deep field image showing thousands of distant galaxies",
    "retina": "A fundus photograph of a human retina with blood vessels",
    "camera": "A black and white photo of a man with a camera on a tripod",
    "motorcycle_left": "A red sports motorcycle seen from the left side",
    "brick": "Close-up of a grey brick wall texture",
    "coins": "Old coins arranged in rows on a dark background",
    "grass": "Close-up of green grass blades",
    "gravel": "A patch of grey gravel stones seen from above",
    "ihc": "Microscope image of tissue stained for immunohistochemistry",
    "moon": "A black and white photo of the surface of the moon",
}
# Photos whose quadrants are distinct enough from each other to serve as unrelated images (textures
# like brick or grass look the same in every quadrant, so they are left out).
TILE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "motorcycle_left",
    "hubble_deep_field",
    "retina",
    "ihc",
    "coins",
    "moon",
)


def chinese_id(first17: str) -> str:
    """The 18-digit Chinese resident ID number with its ISO 7064 MOD 11-2 check character."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def luhn_number(prefix: str) -> str:
    """`prefix` plus the Luhn check digit."""
    total = 0
    for i, d in enumerate(reversed(prefix)):
        v = int(d) * (2 if i % 2 == 0 else 1)
        total += v - 9 if v > 9 else v
    return prefix + str((10 - total % 10) % 10)


_CARD = luhn_number("453914880343646")
# (label, caption, extra truth fields). Each goes on its own distinct, valid image.
CAPTION_DEFECTS = [
    ("caption_html", "<b>Cat</b> &amp; dog sleeping on a <i>sofa</i>", {}),
    ("caption_html", "<p>A red car&nbsp;parked outside the &quot;old&quot; station</p>", {}),
    ("caption_mojibake", "A cafÃ© with tables on the sidewalk in Paris", {}),
    ("caption_mojibake", "Fresh crÃ¨me brÃ»lÃ©e served on a white plate", {}),
    ("caption_pii", "Beach at sunset, prints available, email jane.doe@example.com", {"pii": "email"}),
    ("caption_pii", "Vintage bicycle for sale, call +1 (415) 555-0132 after 6pm", {"pii": "phone"}),
    ("caption_pii", f"Scan of an ID card, number {chinese_id('11010519491231002')}", {"pii": "cn_id"}),
    (
        "caption_pii",
        f"Receipt for a new lamp paid with card {_CARD[:4]} {_CARD[4:8]} {_CARD[8:12]} {_CARD[12:]}",
        {"pii": "credit_card"},
    ),
    ("caption_pii", "Screenshot of the router page at 192.168.1.20 showing settings", {"pii": "ip"}),
    (
        "caption_pii",
        "Mountain lake photo mirrored at https://admin:hunter2@files.example.com/lake.jpg",
        {"pii": "url_credentials"},
    ),
    ("caption_boilerplate", "image not available", {}),
    ("caption_boilerplate", "No image available", {}),
    ("caption_short", "cat", {}),
    ("caption_short", "img 1", {}),
    ("caption_lang", "Ein kleiner Hund spielt im Garten mit einem roten Ball", {"lang": "de"}),
    ("caption_lang", "一只猫坐在窗台上晒太阳，看着外面的小鸟", {"lang": "zh"}),
]
TINY_SIZES = [(64, 64), (150, 120), (199, 320)]
EXTREME_SIZES = [(1000, 100), (100, 1000), (840, 210)]
BROKEN_KINDS = ("truncated", "corrupt", "empty", "unsupported")

_ADJ = ("abstract", "colorful", "blurry", "bright", "dark", "soft", "vivid", "muted", "geometric", "pastel")
_NOUN = ("painting", "pattern", "illustration", "poster", "design", "artwork", "composition", "wallpaper")
_COLOR = ("red", "teal", "orange", "purple", "green", "yellow", "blue", "pink", "brown", "grey")
_SHAPE = ("circles", "stripes", "rectangles", "ellipses", "lines", "blobs", "waves")


@dataclass
class _Item:
    """One sample to render: either fixed bytes, or a generated image (by seed) with a transform."""

    label: str
    caption: str
    name: str
    data: bytes | None = None  # fixed bytes (built-in sample, tiles)
    gen_seed: int | None = None  # generated image
    transform: str = "none"  # none | requal | small | bright | crop | tiny | extreme | <broken kind>
    size: tuple[int, int] | None = None  # target size for tiny / extreme
    group: int | None = None  # index of the item this one copies
    extra: dict = field(default_factory=dict)


def _encode(img, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def generated_image(seed: int):
    """A distinct synthetic picture, 224-320 px: three octaves of random colour noise (summed at 48x48,
    then upscaled: cheap, and the low frequencies pHash looks at are random) plus a few random shapes.
    Measured on 5000 of them: pHash distances <= 10 between two images occur about as often as between
    unrelated photos (3 pairs in 12.5M), so distinct generated images do not pose as near-duplicates."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(224, 321, size=2))
    acc = np.zeros((48, 48, 3), np.float32)
    for cells, amplitude in (
        (int(rng.integers(2, 5)), 1.0),
        (int(rng.integers(6, 12)), 0.6),
        (int(rng.integers(16, 32)), 0.3),
    ):
        noise = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        acc += amplitude * np.asarray(Image.fromarray(noise).resize((48, 48), Image.BICUBIC), np.float32)
    acc *= 255.0 / max(float(acc.max()), 1.0)
    img = Image.fromarray(acc.astype(np.uint8)).resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, size=2))
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1 + 8, y1 + 8), fill=color)
        elif kind == 1:
            draw.rectangle((x0, y0, x1 + 8, y1 + 8), fill=color)
        else:
            draw.line((x0, y0, x1, y1), fill=color, width=int(rng.integers(3, 16)))
    return img


def _caption_for(rng) -> str:
    return (
        f"A {rng.choice(_ADJ)} {rng.choice(_NOUN)} of {rng.choice(_COLOR)} {rng.choice(_SHAPE)} "
        f"on a {rng.choice(_COLOR)} background"
    )


def _break(data: bytes, kind: str, seed: int) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "corrupt":
        rng = np.random.default_rng(seed)
        out = bytearray(data)
        mid = len(out) // 2
        n = min(1024, len(out) - mid - 2)
        out[mid : mid + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        return bytes(out)
    if kind == "empty":
        return b""
    if kind == "unsupported":
        return b"<html><body>403 Forbidden</body></html>"
    raise ValueError(kind)


def _apply(img, transform: str, size, seed: int) -> bytes:
    """Encode a generated image after its transform (near-duplicate variants, size defects)."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    if transform in ("none", "exact"):
        return _encode(img, "JPEG", quality=85)
    if transform == "requal":
        return _encode(img, "JPEG", quality=50)
    if transform == "small":
        # Down to ~65-90%, never below 208 px: a near-duplicate the size filter removes first tests nothing.
        s = max(0.6, 208 / min(w, h))
        return _encode(img.resize((round(w * s), round(h * s)), Image.BICUBIC), "JPEG", quality=85)
    if transform == "bright":
        return _encode(ImageEnhance.Brightness(img).enhance(1.15), "JPEG", quality=85)
    if transform == "crop":
        c = max(1, int(0.03 * min(w, h)))
        return _encode(img.crop((c, c, w - c, h - c)), "JPEG", quality=85)
    if transform in ("tiny", "extreme"):
        return _encode(img.resize(size, Image.BICUBIC), "JPEG", quality=85)
    if transform in BROKEN_KINDS:
        return _break(_encode(img, "JPEG", quality=85), transform, seed)
    raise ValueError(f"unknown transform {transform!r}")


def _render(item: _Item) -> bytes:
    if item.data is not None:
        return item.data
    return _apply(generated_image(item.gen_seed), item.transform, item.size, item.gen_seed)


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - broken on purpose; img2dataset would not know the size either
        return None, None


def _tiles(seed: int) -> list[tuple[str, bytes]]:
    """Quadrant tiles of the photos, scaled to a 256 px short side, in a seeded order: distinct images."""
    from PIL import Image

    from mmcurate.sample_data import load_photos

    photos = load_photos()
    tiles = []
    for stem in TILE_PHOTOS:
        if stem not in photos:
            continue
        img = photos[stem]
        w, h = img.size
        for q, (x, y) in enumerate([(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)]):
            tile = img.crop((x, y, x + w // 2, y + h // 2))
            s = 256 / min(tile.size)
            tile = tile.resize((round(tile.size[0] * s), round(tile.size[1] * s)), Image.BICUBIC)
            tiles.append((f"{stem}_q{q}", tile))
    order = np.random.default_rng(seed).permutation(len(tiles))
    return [tiles[i] for i in order]


def _base_items(seed: int) -> list[_Item]:
    """The built-in sample plus one sample per defect."""
    from PIL import Image

    from mmcurate.sample_data import build_sample

    items: list[_Item] = []
    index_of: dict[str, int] = {}
    for s in build_sample(seed=seed):
        stem = s.source or s.key
        caption = PHOTO_CAPTIONS.get(stem, "A photo") if not s.key.startswith("broken_") else "A photo of a street"
        label = s.label if s.label != "rotated" else "near_duplicate"
        items.append(
            _Item(
                label,
                caption,
                s.key,
                data=s.data,
                group=index_of.get(s.source) if s.source else None,
                extra={"detail": s.detail, **s.meta},
            )
        )
        index_of.setdefault(s.key, len(items) - 1)
    tiles = iter(_tiles(seed))
    for size in TINY_SIZES:
        name, tile = next(tiles)
        items.append(
            _Item(
                "tiny",
                f"A small thumbnail of {name.split('_q')[0]}",
                f"tiny_{size[0]}x{size[1]}",
                data=_encode(tile.resize(size, Image.BICUBIC), "JPEG", quality=90),
                extra={"detail": f"{size[0]}x{size[1]}"},
            )
        )
    for size in EXTREME_SIZES:
        name, tile = next(tiles)
        items.append(
            _Item(
                "extreme_aspect",
                f"A panoramic banner made from {name.split('_q')[0]}",
                f"extreme_{size[0]}x{size[1]}",
                data=_encode(tile.resize(size, Image.BICUBIC), "JPEG", quality=90),
                extra={"detail": f"{size[0]}x{size[1]}"},
            )
        )
    for i, (label, caption, extra) in enumerate(CAPTION_DEFECTS):
        name, tile = next(tiles)
        items.append(_Item(label, caption, f"{label}_{i}", data=_encode(tile, "JPEG", quality=90), extra=dict(extra)))
    return items


def _fill_items(n: int, first_index: int, seed: int, duplicate_rate: float, defect_rate: float) -> list[_Item]:
    """n generated samples; copies point at earlier generated distinct ones (by global item index)."""
    rng = np.random.default_rng([seed, 1])
    items: list[_Item] = []
    distinct: list[int] = []
    defect_kinds = ["tiny", "extreme"] + list(BROKEN_KINDS) + [f"caption:{i}" for i in range(len(CAPTION_DEFECTS))]
    for j in range(n):
        r = rng.random()
        gen_seed = int(seed) * 1_000_003 + j + 1
        if distinct and r < duplicate_rate:
            src = distinct[int(rng.integers(0, len(distinct)))]
            src_item = items[src - first_index]
            if rng.random() < 0.5:
                items.append(
                    _Item(
                        "exact_duplicate",
                        src_item.caption,
                        f"gen_{j}",
                        gen_seed=src_item.gen_seed,
                        transform="exact",
                        group=src,
                    )
                )
            else:
                transform = str(rng.choice(["requal", "small", "bright", "crop"]))
                items.append(
                    _Item(
                        "near_duplicate",
                        src_item.caption,
                        f"gen_{j}",
                        gen_seed=src_item.gen_seed,
                        transform=transform,
                        group=src,
                        extra={"detail": transform, "hard_for_phash": transform == "crop"},
                    )
                )
            continue
        caption = _caption_for(rng)
        if r < duplicate_rate + defect_rate:
            kind = defect_kinds[int(rng.integers(0, len(defect_kinds)))]
            if kind == "tiny":
                size = TINY_SIZES[int(rng.integers(0, len(TINY_SIZES)))]
                items.append(
                    _Item(
                        "tiny",
                        caption,
                        f"gen_{j}",
                        gen_seed=gen_seed,
                        transform="tiny",
                        size=size,
                        extra={"detail": f"{size[0]}x{size[1]}"},
                    )
                )
            elif kind == "extreme":
                size = EXTREME_SIZES[int(rng.integers(0, len(EXTREME_SIZES)))]
                items.append(
                    _Item(
                        "extreme_aspect",
                        caption,
                        f"gen_{j}",
                        gen_seed=gen_seed,
                        transform="extreme",
                        size=size,
                        extra={"detail": f"{size[0]}x{size[1]}"},
                    )
                )
            elif kind in BROKEN_KINDS:
                items.append(_Item(kind, caption, f"gen_{j}", gen_seed=gen_seed, transform=kind))
            else:
                label, defect_caption, extra = CAPTION_DEFECTS[int(kind.split(":")[1])]
                items.append(_Item(label, defect_caption, f"gen_{j}", gen_seed=gen_seed, extra=dict(extra)))
                distinct.append(first_index + j)
            continue
        items.append(_Item("distinct", caption, f"gen_{j}", gen_seed=gen_seed))
        distinct.append(first_index + j)
    return items


def _key(shard: int, i: int, digits: int) -> str:
    return f"{shard:05d}{i:0{digits}d}"


def _write_shard(out_dir: str, shard: int, shard_size: int, entries: list[tuple[str, _Item]]) -> dict:
    """Render and write one shard (runs in a worker process for large sets)."""
    import pyarrow as pa

    from mmcurate.io.shard_writer import ShardWriter
    from mmcurate.pipeline.schema import SAMPLE_SCHEMA

    rows, truth = [], []
    for key, item in entries:
        data = _render(item)
        width, height = _image_size(data)
        ext = "png" if data.startswith(b"\x89PNG") else "jpg"
        meta = {
            "url": f"https://images.example.com/{item.name}.{ext}",
            "key": key,
            "status": "success",
            "caption": item.caption,
            "width": width,
            "height": height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        rows.append(
            {
                "key": key,
                "source": "",
                "image": data,
                "image_ext": ext,
                "caption": item.caption,
                "meta": json.dumps(meta, ensure_ascii=False),
            }
        )
        truth.append(
            {
                "key": key,
                "label": item.label,
                "name": item.name,
                "width": width,
                "height": height,
                "caption": item.caption,
                **item.extra,
            }
        )
    with ShardWriter(out_dir, shard_size, start_index=shard, subdir="") as writer:
        writer.write(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
    ((path, n, digest),) = writer.written
    atomic_write_text(
        Path(out_dir) / f"{shard:05d}_stats.json",
        json.dumps({"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0}, indent=2),
    )
    return {"path": path, "n": n, "sha256": digest, "truth": truth}


def build_demo_dataset(
    out_dir,
    n_samples: int | None = None,
    shard_size: int = 100,
    seed: int = 0,
    *,
    duplicate_rate: float = 0.1,
    defect_rate: float = 0.05,
    workers: int | None = None,
) -> dict:
    """Write the dataset (see the module docstring) and return a summary: path, shards, n_samples,
    label counts, truth path, seconds.

    n_samples None: the built-in sample plus one sample per defect (about 120). Smaller than that: the
    first n_samples of those, before shuffling. Larger: generated samples fill the rest.
    """
    if n_samples is not None and (not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"n_samples must be a positive integer or None, got {n_samples!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not (0 <= duplicate_rate and 0 <= defect_rate and duplicate_rate + defect_rate < 1):
        raise ValueError("duplicate_rate and defect_rate must be >= 0 and sum to less than 1")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = _base_items(seed)
    if n_samples is not None and n_samples <= len(items):
        items = items[:n_samples]
        items = [
            it if it.group is None or it.group < n_samples else _Item(**{**it.__dict__, "group": None}) for it in items
        ]
    elif n_samples is not None:
        items += _fill_items(n_samples - len(items), len(items), seed, duplicate_rate, defect_rate)

    # Shuffle so copies land in other shards than their originals, as in crawled data; keys follow the order.
    order = np.random.default_rng([seed, 2]).permutation(len(items))
    digits = max(4, len(str(shard_size - 1)))
    key_of = {}
    for pos, idx in enumerate(order):
        key_of[int(idx)] = _key(pos // shard_size, pos % shard_size, digits)
    shards: list[list[tuple[str, _Item]]] = [[] for _ in range(-(-len(items) // shard_size))]
    for pos, idx in enumerate(order):
        item = items[int(idx)]
        shards[pos // shard_size].append((key_of[int(idx)], item))

    jobs = [(str(out), s, shard_size, entries) for s, entries in enumerate(shards)]
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, len(jobs))
    if n_workers > 1 and len(items) >= 2000:
        with ProcessPoolExecutor(n_workers) as pool:
            results = list(pool.map(_write_shard, *zip(*jobs), chunksize=max(1, len(jobs) // (8 * n_workers))))
    else:
        results = [_write_shard(*job) for job in jobs]

    index_key = dict(key_of.items())
    lines = []
    for entries, result in zip(shards, results):
        for (key, item), record in zip(entries, result["truth"]):
            record["group"] = index_key[item.group] if item.group is not None else key
            lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(out / "truth.jsonl", "\n".join(lines) + "\n")
    labels = Counter(json.loads(line)["label"] for line in lines)
    return {
        "path": str(out),
        "shards": [r["path"] for r in results],
        "n_samples": len(items),
        "labels": dict(sorted(labels.items())),
        "truth": str(out / "truth.jsonl"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def load_truth(out_dir) -> dict[str, dict]:
    """truth.jsonl as {key: record}."""
    with open(Path(out_dir) / "truth.jsonl", encoding="utf-8") as f:
        return {r["key"]: r for r in map(json.loads, filter(str.strip, f))}
