"""decontaminate: training samples that copy a benchmark's images (same bytes, re-encoded, resized) are removed with
reason benchmark_overlap and the matched set and id; nothing else is; the reference index is built once
(`mmcurate reference build`) and reused."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import mmcurate_cli, run_local
from io_fixtures import write_tar


def _tiles(n: int, size: int = 160) -> list[Image.Image]:
    """n distinct photo tiles from the scikit-image photos."""
    from skimage import data

    out = []
    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "coins",
        "brick",
    ):
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = img.size
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                out.append(img.crop((x, y, x + size, y + size)).resize((224, 224)))
    rng = np.random.default_rng(0)
    return [out[i] for i in rng.permutation(len(out))[:n]]


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """refs/ (8 benchmark images), an index of them, and training shards holding 2 byte copies, 2 re-encodes, 2
    resizes, a mirrored and a rotated (and re-encoded) copy of reference images among 24 unrelated images."""
    d = tmp_path_factory.mktemp("decon")
    tiles = _tiles(32)
    refs, others = tiles[:8], tiles[8:]
    (d / "refs").mkdir()
    ref_bytes = {}
    for i, img in enumerate(refs):
        ref_bytes[f"bench{i}"] = _jpeg(img)
        (d / "refs" / f"bench{i}.jpg").write_bytes(ref_bytes[f"bench{i}"])
    planted = {
        "copy0": ref_bytes["bench0"],
        "copy1": ref_bytes["bench1"],
        "reenc2": _jpeg(refs[2], 60),
        "reenc3": _jpeg(refs[3], 75),
        "resize4": _jpeg(refs[4].resize((160, 160))),
        "resize5": _jpeg(refs[5].resize((300, 300))),
        "flip6": _jpeg(refs[6].transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "rot7": _jpeg(refs[7].transpose(Image.Transpose.ROTATE_90), 80),
    }
    members = []
    for k, data in planted.items():
        members += [(f"{k}.jpg", data), (f"{k}.txt", b"a photo of something nice")]
    for i, img in enumerate(others):
        members += [(f"other{i:02d}.jpg", _jpeg(img)), (f"other{i:02d}.txt", b"a photo of something nice")]
    (d / "train").mkdir()
    write_tar(d / "train" / "00000.tar", members)
    proc = mmcurate_cli("reference", "build", "--set", f"bench={d / 'refs'}", "--out", d / "index")
    assert proc.returncode == 0, proc.stderr
    return d, planted


def _recipe(d, out, **params):
    return {
        "input": {"path": str(d / "train")},
        "output": {"path": str(out), "shard_size": 100},
        "stages": [{"integrity": {}}, {"decontaminate": {"references": [str(d / "index")], **params}}],
    }


def test_planted_copies_are_removed_and_nothing_else(planted, tmp_path):
    d, copies = planted
    m = run_local(_recipe(d, tmp_path / "out"))
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    removed = {r["key"]: r for r in rejects if r["reason"] == "benchmark_overlap"}
    assert set(removed) == set(copies)  # recall 1 on copies, re-encodes and resizes; precision 1
    assert removed["copy0"]["detail"] == "matches bench:bench0 (same bytes)"
    assert removed["reenc2"]["detail"].startswith("matches bench:bench2 (PDQ distance ")
    assert removed["flip6"]["detail"].endswith("to its flip_y)") and "bench:bench6" in removed["flip6"]["detail"]
    assert "bench:bench7" in removed["rot7"]["detail"] and "rot" in removed["rot7"]["detail"]
    st = next(s for s in m["stages"] if s["name"] == "decontaminate")
    assert st["stats"]["by_set"] == {"bench": 8} and st["stats"]["references"] == {"bench": 8}
    assert st["stats"]["by_kind"] == {"exact": 2, "pdq": 6}
    assert m["counts"]["kept"] == 24 and m["counts"]["accounting_ok"]


def test_pdq_off_leaves_flips_to_the_phash_which_misses_them(planted, tmp_path):
    d, _ = planted
    run_local(_recipe(d, tmp_path / "out", pdq_threshold=None))
    removed = {r["key"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()}
    assert {"copy0", "copy1", "reenc2", "reenc3", "resize4", "resize5"} <= removed
    assert "flip6" not in removed and "rot7" not in removed


def test_sharded_mode_gives_the_same_rejects(planted, tmp_path):
    d, _ = planted
    run_local(_recipe(d, tmp_path / "mem"))
    r = _recipe(d, tmp_path / "sharded")
    r["run"] = {"global_mode": "sharded"}
    run_local(r)
    a, b = (pq.read_table(tmp_path / x / "rejects.parquet").to_pylist() for x in ("mem", "sharded"))
    assert a == b


def test_no_perceptual_matching_keeps_the_edited_copies(planted, tmp_path):
    d, _ = planted
    run_local(_recipe(d, tmp_path / "out", max_distance=None, pdq_threshold=None))
    removed = {r["key"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()}
    assert removed == {"copy0", "copy1"}


def test_bad_references_fail_before_the_run_with_one_line(planted, tmp_path):
    d, _ = planted
    r = _recipe(d, tmp_path / "out")
    r["stages"][1]["decontaminate"]["references"] = [str(tmp_path / "nowhere")]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(r))
    proc = mmcurate_cli("run", path)
    assert proc.returncode == 2 and "is not a reference index" in proc.stderr and "reference build" in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = mmcurate_cli("reference", "build", "--set", f"bench={d / 'refs'}", "--out", d / "index")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_semantic_matching_uses_the_cosine():
    import pyarrow as pa

    from mmcurate.reference import ReferenceIndex

    rng = np.random.default_rng(1)
    refs = rng.normal(size=(5, 8)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    table = pa.table(
        {
            "set": ["s"] * 5,
            "id": [f"r{i}" for i in range(5)],
            "sha256": [hashlib.sha256(b"h%d" % i).hexdigest() for i in range(5)],
            "phash": pa.array([0] * 5, pa.uint64()),
            "pdq": pa.array([bytes(256)] * 5, pa.binary(256)),
            "pdq_quality": pa.array([0] * 5, pa.int16()),
            "pdq_phash": pa.array([bytes(64)] * 5, pa.binary(64)),
            "embedding": pa.array(refs.tolist(), pa.list_(pa.float32())),
        }
    )
    index = ReferenceIndex("mem", {"sets": {}}, table)
    q = np.stack([refs[3], -refs[0], np.zeros(8, np.float32)])
    out = index.match(["x", "y", hashlib.sha256(b"h1").hexdigest()], None, None, q, None, 0.99)
    assert out[0].via == "semantic" and out[0].row == 3 and out[0].value >= 0.99
    assert out[1] is None  # opposite direction
    assert out[2].via == "exact" and out[2].row == 1  # exact first; a zero row is never a semantic match


def test_without_integrity_the_phash_comes_from_the_pdq_decode(planted, tmp_path):
    """No `phash` column (no integrity before it): the exact pHash of the PDQ decode is matched against the
    references' exact pHash, with no second decode; PDQ held to 0 bits leaves the edited copies to it."""
    d, _ = planted
    r = _recipe(d, tmp_path / "out", pdq_threshold=0, max_distance=8)
    r["stages"] = r["stages"][1:]
    run_local(r)
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    kinds = {x["key"]: x["detail"] for x in rejects}
    assert {"reenc2", "reenc3", "resize4", "resize5"} <= set(kinds)
    via_phash = [k for k in ("reenc2", "reenc3", "resize4", "resize5") if "(pHash distance" in kinds[k]]
    assert via_phash and all(f"bench:bench{k[-1]}" in kinds[k] for k in via_phash)  # resizes: PDQ > 0 bits
    assert not any(k.startswith("other") for k in kinds)


def _synthetic_index(pdq: np.ndarray, pdq_phash: np.ndarray, phash: np.ndarray, quality=None):
    """A ReferenceIndex over given codes: pdq uint8[n, 8, 32], pdq_phash uint64[n, 8], phash uint64[n]."""
    import pyarrow as pa

    from mmcurate.reference import ReferenceIndex

    n = len(pdq)
    table = pa.table(
        {
            "set": ["s"] * n,
            "id": [f"r{i}" for i in range(n)],
            "sha256": [hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)],
            "phash": pa.array(phash, pa.uint64()),
            "pdq": pa.array([r.tobytes() for r in pdq], pa.binary(256)),
            "pdq_quality": pa.array(np.full(n, 50) if quality is None else quality, pa.int16()),
            "pdq_phash": pa.array([r.astype("<u8").tobytes() for r in pdq_phash], pa.binary(64)),
        }
    )
    return ReferenceIndex("mem", {"sets": {}}, table)


def _flip(code: np.ndarray, bits) -> np.ndarray:
    out = np.unpackbits(code)
    out[list(bits)] ^= 1
    return np.packbits(out)


def test_pdq_reports_the_best_candidate_that_passes_verification():
    """The nearest transform fails the pHash check, a farther one within the threshold passes: the farther one is
    the match (brute-force nearest-then-verify would miss the copy); without verification the nearest wins."""
    from mmcurate.reference import PdqQuery

    rng = np.random.default_rng(5)
    pdq = rng.integers(0, 256, (3, 8, 32), dtype=np.uint8)
    pdq_phash = rng.integers(0, 2**64, (3, 8), dtype=np.uint64)
    sample = rng.integers(0, 256, 32, dtype=np.uint8)
    sample_phash = np.uint64(0x0123456789ABCDEF)
    pdq[0, 2] = _flip(sample, range(3))  # nearest, unrelated pHash
    pdq[1, 5] = _flip(sample, range(40, 50))  # farther, same pHash
    pdq_phash[1, 5] = sample_phash ^ np.uint64(1)
    index = _synthetic_index(pdq, pdq_phash, rng.integers(0, 2**64, 3, dtype=np.uint64))

    def query(verify):
        q = PdqQuery(sample[None], np.array([50]), np.array([sample_phash]), np.array([True]), 31, 1, verify)
        return index.match([None], None, None, None, None, None, pdq=q)[0]

    m = query(4)
    assert (m.row, m.via, m.value, m.transform) == (1, "pdq", 10.0, "flip_y")
    m = query(None)
    assert (m.row, m.value, m.transform) == (0, 3.0, "rot180")
    assert query(0) is None  # row 1's pHash is 1 bit off


def test_range_search_matches_are_the_brute_force_nearest():
    """Without verification, the PDQ and pHash matches are hamming_knn(k=1)'s nearest within the radius (ties to
    the smaller row), over clustered codes with many candidates per sample; low-quality references never match."""
    from mmcurate.ops import hamming_knn
    from mmcurate.reference import PdqQuery

    rng = np.random.default_rng(6)
    seeds = rng.integers(0, 256, (6, 32), dtype=np.uint8)
    n = 150
    pdq = np.stack([_flip(seeds[rng.integers(0, 6)], rng.choice(256, rng.integers(0, 30))) for _ in range(8 * n)])
    pdq = pdq.reshape(n, 8, 32)
    pdq[7] = pdq[3]  # ties between rows
    phash = rng.integers(0, 2**64, n, dtype=np.uint64) & np.uint64(0xFFFF00000000FFFF)  # near 64-bit codes
    quality = np.where(np.arange(n) % 10 == 0, 0, 60)
    index = _synthetic_index(pdq, rng.integers(0, 2**64, (n, 8), dtype=np.uint64), phash, quality)
    codes = np.stack([_flip(seeds[rng.integers(0, 6)], rng.choice(256, rng.integers(0, 30))) for _ in range(80)])
    q = PdqQuery(codes, np.full(80, 60), np.zeros(80, np.uint64), np.ones(80, bool), 22, 1, None)
    got = index.match([None] * 80, None, None, None, None, None, pdq=q)
    rows = np.flatnonzero(np.repeat(quality >= 1, 8))
    dist, idx = hamming_knn(pdq.reshape(-1, 32)[rows], 1, queries=codes, device="cpu")
    want = [(rows[j] // 8, float(d)) if d <= 22 else None for d, j in zip(dist[:, 0], idx[:, 0])]
    assert [(m.row, m.value) if m else None for m in got] == want
    assert sum(w is not None for w in want) > 40 and sum(w is None for w in want) > 0
    sample_phash = phash[rng.integers(0, n, 60)] ^ rng.integers(0, 2**64, 60, dtype=np.uint64) & np.uint64(0x1F00)
    got = index.match([None] * 60, sample_phash, np.ones(60, bool), None, 4, None)
    dist, idx = hamming_knn(phash, 1, queries=sample_phash, device="cpu")
    assert [(m.row, m.value) if m else None for m in got] == [
        (int(j), float(d)) if d <= 4 else None for d, j in zip(dist[:, 0], idx[:, 0])
    ]


def test_build_streams_row_groups_with_progress_and_hashes_each_transform(tmp_path, monkeypatch):
    """The build writes row groups as it reads (memory bounded at any size), logs progress, counts a corrupt file
    as unreadable, and each row holds the PDQ and exact pHash of its image's 8 transformed pixel arrays."""
    from mmcurate import reference
    from mmcurate.ops import decode_images, pdq, phash

    monkeypatch.setattr(reference, "ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(reference, "TRANSFORM_BYTES", 1)  # one image per hashing call
    (tmp_path / "refs").mkdir()
    blobs = {f"im{i}": _jpeg(img) for i, img in enumerate(_tiles(5))}
    for k, b in blobs.items():
        (tmp_path / "refs" / f"{k}.jpg").write_bytes(b)
    (tmp_path / "refs" / "broken.jpg").write_bytes(blobs["im0"][:200])
    lines: list[str] = []
    info = reference.build_reference(
        tmp_path / "index", {"b": str(tmp_path / "refs")}, batch_size=2, log=lines.append, progress_seconds=0
    )
    assert info["sets"]["b"]["images"] == 5 and info["sets"]["b"]["unreadable"] == 1
    assert any("images indexed (" in x for x in lines) and "5 images indexed, 1 unreadable" in lines[-1]
    meta = pq.ParquetFile(tmp_path / "index" / "codes.parquet").metadata
    assert meta.num_rows == 5 and meta.num_row_groups >= 3
    index = reference.ReferenceIndex.load(tmp_path / "index")
    for row in range(len(index)):
        pixels = decode_images([blobs[index.id(row)]], mode="RGB").images[0]
        variants = reference.dihedral(pixels)
        np.testing.assert_array_equal(index.pdq[8 * row : 8 * row + 8], np.asarray(pdq(variants).codes, np.uint8))
        np.testing.assert_array_equal(index.pdq_phash[8 * row : 8 * row + 8], np.asarray(phash(variants), np.uint64))
        assert index.label(row) == f"b:{index.id(row)}"
