"""phash_dedup with hash: pdq (issue 16), dihedral matching and the template link kind: the map part's columns equal
the PDQ / pHash of the transformed pixels and the local-detail grid; flipped and rotated copies link under the
transform that maps them onto their representative; template variants are kept, dropped or not looked for."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from helpers import assert_accounted
from mmcurate.curate import local_detail
from mmcurate.pipeline.global_phase import resolve_representatives, run_on_table
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, INPUT_SCHEMA
from mmcurate.pipeline.stage import registry


def _photo(seed: int, side: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)).resize((side, side * 3 // 4), 3)


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _input(rows) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "key": [k for k, _ in rows],
            "source": ["s"] * n,
            "image": [b for _, b in rows],
            "image_ext": ["jpg"] * n,
            "caption": [None] * n,
            "meta": ["{}"] * n,
        },
        schema=INPUT_SCHEMA,
    )


def _map(stage, batch) -> pa.Table:
    result = stage.map_part.process(batch)
    assert_accounted(batch, result, stage.name)
    return result.kept.drop_columns(["image"])


T = Image.Transpose


@pytest.fixture(scope="module")
def photos():
    rows = []
    for s in range(3):
        img = _photo(s)
        rows += [
            (f"p{s}", _jpeg(img, 95)),
            (f"p{s}_mirror", _jpeg(img.transpose(T.FLIP_LEFT_RIGHT))),
            (f"p{s}_rot90", _jpeg(img.transpose(T.ROTATE_90))),  # PIL: counter-clockwise, as np.rot90
            (f"p{s}_upside", _jpeg(img.transpose(T.FLIP_TOP_BOTTOM))),
            (f"p{s}_transposed", _jpeg(img.transpose(T.TRANSPOSE))),
        ]
    return _input(rows)


def test_dihedral_map_part_columns(photos):
    from mmcurate.ops import decode_images, pdq, phash
    from mmcurate.reference import dihedral

    stage = registry.create("phash_dedup", {"hash": "pdq"})
    meta = _map(stage, photos)
    assert meta.schema.field("pdq_dihedral").type == pa.binary(7 * 32)
    assert meta.schema.field("pdq_dihedral_phash").type == pa.binary(7 * 8)
    assert meta.schema.field("pdq_detail").type == pa.binary(local_detail.DETAIL_BYTES)
    blobs = photos.column("image").to_pylist()
    for i in (0, 7):  # a photo and a rotated copy (another shape)
        pixels = decode_images([blobs[i]], mode="RGB").images[0]
        variants = dihedral(pixels)
        codes = np.asarray(pdq(variants).codes, np.uint8)
        assert meta.column("pdq")[i].as_py() == codes[0].tobytes()
        assert meta.column("pdq_dihedral")[i].as_py() == codes[1:].tobytes()
        hashes = np.asarray(phash(variants), np.uint64)
        assert meta.column("pdq_phash")[i].as_py() == int(hashes[0])
        assert meta.column("pdq_dihedral_phash")[i].as_py() == hashes[1:].astype("<u8").tobytes()
        assert meta.column("pdq_detail")[i].as_py() == local_detail.detail_grid(pixels).tobytes()


def test_flips_and_rotations_link_under_their_transform(photos):
    stage = registry.create("phash_dedup", {"hash": "pdq", "templates": "off"})
    meta = _map(stage, photos)
    result = run_on_table(stage, meta)
    assert result.duplicates.schema.equals(DUPLICATES_SCHEMA)
    got = {d["key"]: (d["duplicate_of"], d["transform"]) for d in result.duplicates.to_pylist()}
    # the transform maps the duplicate onto its representative: a copy rotated by 90 degrees goes back by 270
    want = {"_mirror": "flip_y", "_rot90": "rot270", "_upside": "flip_x", "_transposed": "transpose"}
    assert got == {f"p{s}{v}": (f"p{s}", t) for s in range(3) for v, t in want.items()}
    for d in result.duplicates.to_pylist():
        assert d["kind"] == "pdq" and d["distance"] <= 22 and d["verify_distance"] <= 12
    details = dict(zip(result.rejected.column("key").to_pylist(), result.rejected.column("detail").to_pylist()))
    assert "under rot270" in details["p0_rot90"] and result.stats.dihedral is True
    # identity codes only: a mirrored photo is another image to PDQ
    plain = registry.create("phash_dedup", {"hash": "pdq", "templates": "off", "dihedral": False})
    flat = run_on_table(plain, meta.select(list(plain.requires)))
    assert not set(flat.duplicates.column("key").to_pylist()) & set(got)
    assert flat.duplicates.column("transform").null_count == flat.duplicates.num_rows


def _mockup(print_img: Image.Image) -> Image.Image:
    """A T-shirt mockup: a fixed layout (wall, shirt) with a print in its chest box."""
    from PIL import ImageDraw

    img = Image.new("RGB", (256, 256), (228, 222, 214))
    draw = ImageDraw.Draw(img)
    draw.polygon([(70, 30), (186, 30), (236, 80), (206, 110), (190, 96), (190, 236), (66, 236), (66, 96), (50, 110),
                  (20, 80)], fill=(40, 70, 140))  # fmt: skip
    img.paste(print_img.resize((80, 80)), (88, 70))
    return img


def test_local_detail_tells_templates_from_edits():
    """Another print in one layout changes cells both ways (a template); a JPEG copy, a small logo overlay or a
    brightness shift do not; a mirrored copy compared under its transform is no template."""
    base = _mockup(_photo(1, 128))
    grid = local_detail.detail_grid(np.asarray(base))
    assert grid.dtype == np.uint8 and grid.shape == (local_detail.DETAIL_BYTES,)

    def g(img):
        return local_detail.detail_grid(np.asarray(Image.open(io.BytesIO(_jpeg(img)))))

    other = g(_mockup(_photo(2, 128)))
    overlay = base.copy()
    overlay.paste((255, 255, 255), (196, 200, 236, 232))  # a small opaque logo in a corner
    brighter = Image.eval(base, lambda v: min(255, int(v * 1.15)))
    pairs = [(other, True), (g(base), False), (g(overlay), False), (g(brighter), False)]
    got = local_detail.template_pairs(np.stack([grid] * len(pairs)), np.stack([p for p, _ in pairs]))
    assert got.tolist() == [t for _, t in pairs]
    mirrored = g(base.transpose(T.FLIP_LEFT_RIGHT))
    assert local_detail.template_pairs(grid[None], mirrored[None], [5]).tolist() == [False]  # flip_y
    assert local_detail.template_pairs(grid[None], other[None], [5]).tolist() == [True]


def _template_meta():
    """k0, k1: one mockup with two prints (PDQ and pHash close, as they are for mockups with small prints); k2: a
    re-encode of k1; k3: a third print. Codes are planted, the grids are the images' own."""
    imgs = [_mockup(_photo(1, 128)), _mockup(_photo(2, 128))]
    imgs += [Image.open(io.BytesIO(_jpeg(imgs[1], 60))), _mockup(_photo(3, 128))]
    grids = [local_detail.detail_grid(np.asarray(i)) for i in imgs]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = [base.copy() for _ in imgs]
    codes[1][:2] ^= 0xFF  # 16 bits away
    codes[2][:2] ^= 0xFF
    codes[2][5] ^= 0x01
    codes[3][3:5] ^= 0xF0
    n = len(imgs)
    return pa.table(
        {
            "key": [f"k{i}" for i in range(n)],
            "source": ["s"] * n,
            "pdq": pa.array([c.tobytes() for c in codes], pa.binary(32)),
            "pdq_quality": pa.array([90] * n, pa.int16()),
            "pdq_phash": pa.array([7, 7, 7, 6], pa.uint64()),
            "pdq_detail": pa.array([x.tobytes() for x in grids], pa.binary(local_detail.DETAIL_BYTES)),
        }
    )


def test_template_policies():
    meta = _template_meta()
    params = {"hash": "pdq", "dihedral": False}

    def run(templates):
        res = run_on_table(registry.create("phash_dedup", {**params, "templates": templates}), meta)
        links = {d["key"]: (d["duplicate_of"], d["kind"]) for d in res.duplicates.to_pylist()}
        return links, dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist())), res

    links, rejected, res = run("keep")
    # the re-encode goes as k1's duplicate; k1 and k3 are kept, each named a template of k0
    assert links == {"k2": ("k1", "pdq"), "k1": ("k0", "template"), "k3": ("k0", "template")}
    assert rejected == {"k2": "duplicate_pdq"} and res.stats.templates == 2 and res.stats.duplicates == 1
    links, rejected, res = run("drop")
    assert links == {"k1": ("k0", "template"), "k2": ("k0", "template"), "k3": ("k0", "template")}
    assert rejected == dict.fromkeys(("k1", "k2", "k3"), "duplicate_template")
    links, rejected, _ = run("off")
    assert links == dict.fromkeys(("k1", "k2", "k3"), ("k0", "pdq")) and set(rejected) == {"k1", "k2", "k3"}
    with pytest.raises(Exception, match="pdq_detail"):
        run_on_table(registry.create("phash_dedup", {**params, "templates": "keep"}), meta.drop_columns(["pdq_detail"]))


def test_kept_template_is_not_followed_as_a_representative():
    """duplicates.parquet: a later step's duplicate of a kept template variant stays pointed at that variant."""
    dups = pa.table(
        {
            "key": ["t", "d", "x"],
            "duplicate_of": ["r", "t", "d"],
            "kind": ["template", "semantic", "pdq"],
            "distance": [10.0, 0.1, 3.0],
            "verify_distance": [2.0, None, 1.0],
            "transform": ["identity", None, "rot90"],
        },
        schema=DUPLICATES_SCHEMA,
    )
    out = resolve_representatives(dups, gone_keys=pa.chunked_array([pa.array(["d", "x"])]))
    assert out.column("duplicate_of").to_pylist() == ["r", "t", "t"]
    assert out.column("via").to_pylist() == [None, None, "d"]
    assert out.column("transform").to_pylist() == ["identity", None, "rot90"]


def test_kept_templates_are_named_in_a_dense_cluster_of_prints(monkeypatch):
    """One mockup, 6 prints x 100 near-copies, all within the PDQ threshold of one another, grouped as implicit
    balls (the template rule sees members against anchors, not every pair): templates: keep still keeps one sample
    per print and names each kept print a template of the first-ranked kept print ranked before it, as the
    pairwise definition does (every kept pair is a template pair here)."""
    from mmcurate.curate import dedup

    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 256)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 1000)
    rng = np.random.default_rng(4)
    n, prints = 600, 6
    head = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.tile(head, (n, 1))
    for row in codes:
        for bit in rng.choice(256, int(rng.integers(3, 8)), replace=False):
            row[bit // 8] ^= np.uint8(1 << (bit % 8))
    assert len(np.unique(codes, axis=0)) == n  # (samples sharing a code and pHash are linked as one)
    base = rng.integers(0, 256, (2, local_detail.GRID, local_detail.GRID), np.uint8)
    art = rng.integers(0, 256, (prints, 2, 6, 6), np.uint8)
    label = np.arange(n) % prints
    grids = np.tile(base, (n, 1, 1, 1))
    grids[:, :, 5:11, 5:11] = art[label]
    meta = pa.table(
        {
            "key": [f"k{i:04d}" for i in range(n)],
            "source": ["s"] * n,
            "pdq": pa.array([c.tobytes() for c in codes], pa.binary(32)),
            "pdq_quality": pa.array([90] * n, pa.int16()),
            "pdq_phash": pa.array([7] * n, pa.uint64()),
            "pdq_detail": pa.array([g.tobytes() for g in grids], pa.binary(local_detail.DETAIL_BYTES)),
        }
    )
    res = run_on_table(registry.create("phash_dedup", {"hash": "pdq", "dihedral": False}), meta)
    links = {d["key"]: (d["duplicate_of"], d["kind"]) for d in res.duplicates.to_pylist()}
    rejected = set(res.rejected.column("key").to_pylist())
    kept = [f"k{i:04d}" for i in range(n) if f"k{i:04d}" not in rejected]
    assert sorted(int(k[1:]) % prints for k in kept) == list(range(prints))  # one sample per print
    assert all(links[k][1] == "pdq" and int(links[k][0][1:]) % prints == int(k[1:]) % prints for k in rejected)
    first = min(kept)  # ranked by key
    assert {k: links.get(k) for k in kept} == {k: None if k == first else (first, "template") for k in kept}
