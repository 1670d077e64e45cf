"""The labelled near-duplicate set of the perceptual-dedup benchmarks (benchmarks/near_dup_set.py)."""

from __future__ import annotations

import hashlib
import io
import sys
from itertools import combinations
from pathlib import Path

import pytest

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import near_dup_set as nds

SMALL = {"n_bases": 14, "seed": 3, "base_side": 96, "n_letterbox": 7, "n_flat": 8, "template_members": 2}


@pytest.fixture(scope="module")
def records():
    return nds.build_near_dup_set(**SMALL)


def test_deterministic(records):
    again = nds.build_near_dup_set(**SMALL)
    digest = lambda recs: [(r["id"], hashlib.sha1(r["blob"]).hexdigest()) for r in recs]  # noqa: E731
    assert digest(again) == digest(records)
    other = nds.build_near_dup_set(**{**SMALL, "seed": 4})
    assert digest(other) != digest(records)


def test_every_kind_and_category_present(records):
    kinds = {r["kind"] for r in records if r["category"] == "photo"}
    assert kinds == {"base", *nds.EDIT_KINDS}
    assert {r["category"] for r in records} == set(nds.CATEGORIES)
    assert len({r["family"] for r in records if r["category"] == "template"}) == 6


def test_labels_consistent(records):
    from PIL import Image

    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    groups: dict[int, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
        Image.open(io.BytesIO(r["blob"])).verify()  # every blob is a readable image
    for members in groups.values():
        assert [m["kind"] for m in members].count("base") == 1
        assert len({m["category"] for m in members}) == 1 and len({m["family"] for m in members}) == 1
        base = next(m for m in members if m["kind"] == "base")
        assert base["id"] == min(m["id"] for m in members)  # the base sorts first: star keeps it
    assert all((r["family"] >= 0) == (r["category"] == "template") for r in records)
    # distinct images have distinct bytes; pair labels agree with the summary's counts
    bases = [r["blob"] for r in records if r["kind"] == "base"]
    assert len(set(bases)) == len(bases)
    counts = {"duplicate": 0, "template": 0, "negative": 0}
    for i, j in combinations(range(len(records)), 2):
        counts[nds.pair_label(records, i, j)] += 1
    s = nds.summary(records)
    assert (s["duplicate_pairs"], s["template_pairs"], s["negative_pairs"]) == (
        counts["duplicate"],
        counts["template"],
        counts["negative"],
    )
    assert s["images"] == len(records) and s["template_pairs"] == 6 * 4  # 2 members x 2 images each


def test_dihedral_variants_are_the_transforms(records):
    """A dihedral variant is its base transformed (up to JPEG): compare 16x16 thumbnails."""
    import numpy as np
    from PIL import Image

    def thumb(blob, transpose=None):
        im = Image.open(io.BytesIO(blob)).convert("L")
        if transpose is not None:
            im = im.transpose(transpose)
        return np.asarray(im.resize((16, 16), Image.BOX), dtype=float)

    by_group = {}
    for r in records:
        by_group.setdefault(r["group"], {})[r["kind"]] = r
    pil = nds._pil_dihedral()
    for g in by_group.values():
        for kind in nds.DIHEDRAL_KINDS:
            if kind in g:
                diff = np.abs(thumb(g["base"]["blob"], pil[kind]) - thumb(g[kind]["blob"])).mean()
                assert diff < 4, (kind, diff)
