"""phash_dedup with hash: pdq (issue 16): the map part's columns, re-encoded/resized copies linked, flat images
never linked, the exact-pHash verification, params and reuse fingerprints."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from helpers import assert_accounted, input_table
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA
from mmcurate.pipeline.stage import MapStage, StageError, registry


def _photo(seed: int, side: int = 256) -> Image.Image:
    """A smooth random image (bilinear upsampling of 16x16 noise): structure at several scales, PDQ quality high."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.BICUBIC)


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    rows = []
    for s in range(4):
        img = _photo(s)
        rows += [
            (f"p{s}", _encode(img, quality=95)),
            (f"p{s}_q40", _encode(img, quality=40)),  # re-encoded
            (f"p{s}_small", _encode(img.resize((160, 160), Image.LANCZOS), quality=90)),  # resized
            (f"p{s}_png", _encode(img, "PNG")),  # another format
        ]
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (240, 240, 240)]):  # solid colours: quality 0
        rows += [(f"flat{i}", _encode(Image.new("RGB", (200, 200), colour), quality=90))]
        rows += [(f"flat{i}_copy", _encode(Image.new("RGB", (120, 120), colour), "PNG"))]
    grad = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    rows += [("grad", _encode(Image.fromarray(grad), quality=90)), ("grad_copy", _encode(Image.fromarray(grad), "PNG"))]
    rows += [("broken", b"\xff\xd8\xff\xe0 not a jpeg"), ("missing", None)]
    return input_table(rows)


#: identity codes only, no template labels: the columns the synthetic tables here have
PLAIN = {"hash": "pdq", "dihedral": False, "templates": "off"}


def _meta(stage, batch):
    part = stage if isinstance(stage, MapStage) else stage.map_part
    assert isinstance(part, MapStage) and part.name == "phash_dedup"
    result = part.process(batch)
    assert_accounted(batch, result, part.name)
    return result.kept.drop_columns(["image"]), result


def test_pdq_map_part_columns(images):
    from mmcurate.ops import pdq_bytes, phash_bytes

    stage = registry.create("phash_dedup", {"hash": "pdq"})
    assert {"pdq", "pdq_quality", "pdq_phash"} <= set(stage.requires) and "phash" not in stage.requires
    meta, result = _meta(stage, images)
    rejected = {r["key"]: r["reason"] for r in result.rejected.to_pylist()}
    assert set(rejected) == {"broken", "missing"} and rejected["missing"] == "missing_image"
    assert meta.schema.field("pdq").type == pa.binary(32)
    assert meta.schema.field("pdq_quality").type == pa.int16()
    assert meta.schema.field("pdq_phash").type == pa.uint64()
    keys = meta.column("key").to_pylist()
    blobs = dict(zip(images.column("key").to_pylist(), images.column("image").to_pylist()))
    ref = pdq_bytes([blobs[k] for k in keys], exact=True, phash=True)
    assert meta.column("pdq").to_pylist() == [bytes(c) for c in np.asarray(ref.codes, np.uint8)]
    assert meta.column("pdq_quality").to_pylist() == np.asarray(ref.quality).tolist()
    # pdq_phash is the exact pHash (imagehash.phash), not integrity's fast one
    exact = phash_bytes([blobs[k] for k in keys], exact=True).codes
    np.testing.assert_array_equal(meta.column("pdq_phash").to_numpy(), exact)
    q = dict(zip(keys, meta.column("pdq_quality").to_pylist()))
    assert all(q[k] == 0 for k in keys if k.startswith("flat"))
    assert all(q[k] >= 50 for k in keys if k.startswith("p"))
    fps = stage.map_part.column_fingerprints()
    assert set(fps) == {"pdq", "pdq_quality", "pdq_phash", "pdq_dihedral", "pdq_dihedral_phash", "pdq_detail"}
    plain = registry.create("phash_dedup", PLAIN).map_part
    assert set(plain.column_fingerprints()) == {"pdq", "pdq_quality", "pdq_phash"}
    assert _meta(plain, images)[0].equals(meta.select(_meta(plain, images)[0].column_names))
    assert fps["pdq_phash"] == registry.create("phash_dedup", {"mode": "exact"}).map_part.column_fingerprints()["phash"]


def test_pdq_dedup_links_copies_never_flat_images(images):
    stage = registry.create("phash_dedup", {"hash": "pdq"})
    meta, _ = _meta(stage, images)
    result = run_on_table(stage, meta)
    assert result.duplicates.schema.equals(DUPLICATES_SCHEMA)
    dups = {d["key"]: d for d in result.duplicates.to_pylist()}
    # every copy of each photo links to the photo (keep first: "p0" sorts first), the gradient (quality 44) to
    # its PNG copy, nothing else links
    want = {f"p{s}{v}": f"p{s}" for s in range(4) for v in ("_q40", "_small", "_png")} | {"grad_copy": "grad"}
    assert {k: d["duplicate_of"] for k, d in dups.items()} == want
    for d in dups.values():
        assert d["kind"] == "pdq" and d["distance"] <= 22 and d["verify_distance"] <= 12
    for r in result.rejected.to_pylist():
        d = dups[r["key"]]
        assert r["reason"] == "duplicate_pdq"
        assert r["detail"] == (
            f"duplicate of {d['duplicate_of']} (pdq distance {int(d['distance'])}, "
            f"phash distance {int(d['verify_distance'])})"
        )
    assert result.stats.without_hash == 6  # the solid colours (quality 0): never candidates
    # min_quality 0: the solid colours (PDQ all zeros) and their copies link
    loose = run_on_table(registry.create("phash_dedup", {"hash": "pdq", "min_quality": 0}), meta)
    assert {"flat0_copy", "flat2_copy"} <= set(loose.duplicates.column("key").to_pylist())


def _pdq_meta(codes, phashes, quality=None):
    n = len(codes)
    raw = np.zeros((n, 32), np.uint8)
    for i, c in enumerate(codes):
        raw[i] = np.frombuffer(int(c).to_bytes(32, "big"), np.uint8)
    return pa.table(
        {
            "key": [f"k{i}" for i in range(n)],
            "source": ["s"] * n,
            "pdq": pa.array([bytes(r) for r in raw], pa.binary(32)),
            "pdq_quality": pa.array(quality or [80] * n, pa.int16()),
            "pdq_phash": pa.array(phashes, pa.uint64()),
        }
    )


def test_verification_drops_a_pair_pdq_alone_links():
    base = (1 << 255) | 12345
    near = base ^ ((1 << 20) - 1)  # 20 bits away: within the PDQ threshold
    meta = _pdq_meta([base, near, near ^ (1 << 100)], [0, 2**64 - 1, 0b111])  # k1's pHash disagrees (64 bits)
    verified = run_on_table(registry.create("phash_dedup", PLAIN), meta)
    got = {d["key"]: (d["duplicate_of"], d["distance"], d["verify_distance"]) for d in verified.duplicates.to_pylist()}
    assert got == {"k2": ("k0", 21.0, 3.0)}
    unverified = run_on_table(registry.create("phash_dedup", {**PLAIN, "verify_phash": None}), meta)
    assert set(unverified.duplicates.column("key").to_pylist()) == {"k1", "k2"}
    strict = run_on_table(registry.create("phash_dedup", {**PLAIN, "pdq_threshold": 19}), meta)
    assert strict.duplicates.num_rows == 0
    low = run_on_table(registry.create("phash_dedup", PLAIN), _pdq_meta([base, base], [0, 0], [80, 0]))
    assert low.duplicates.num_rows == 0 and low.stats.without_hash == 1


def test_pdq_params_errors():
    for params, pattern in (
        ({"hash": "dhash"}, "hash must be 'phash' or 'pdq'"),
        ({"hash": "pdq", "pdq_threshold": 200}, "pdq_threshold"),
        ({"hash": "pdq", "verify_phash": 65}, "verify_phash"),
        ({"hash": "pdq", "min_quality": -1}, "min_quality"),
        ({"hash": "pdq", "templates": "delete"}, "templates"),
        ({"hash": "pdq", "dihedral": "yes"}, "dihedral"),
    ):
        with pytest.raises(StageError, match=pattern):
            registry.create("phash_dedup", params)
    assert registry.create("phash_dedup", {}).requires == ("key", "source", "phash")  # the default is unchanged
