"""phash_dedup's keypoint pass (hash: pdq, keypoints: true; issue 16): crops that PDQ misses are linked after the PDQ
pass, verified by keypoints (kind keypoints, reason duplicate_keypoints), in memory and sharded mode alike; unrelated
photos stay; the map part stores the keypoint column only when asked; the option needs hash: pdq."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from helpers import assert_accounted, input_table
from mmcurate.curate import keypoints
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.global_sharded import SAMPLE_ID, ShardedGlobalContext, make_ids
from mmcurate.pipeline.stage import registry

pytest.importorskip("cv2")


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))


@pytest.fixture(scope="module")
def batch():
    photos = {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
        "camera": skimage.data.camera(),
        "hubble": skimage.data.hubble_deep_field(),
    }
    rows = []
    for name, pixels in photos.items():
        img = Image.fromarray(pixels).resize((320, 320 * pixels.shape[0] // pixels.shape[1]), Image.BICUBIC)
        rows.append((name, _jpeg(img, 95)))
        if name in ("astronaut", "coffee", "chelsea"):
            rows.append((f"{name}_crop", _jpeg(_crop(img, 0.05, 0.01, 0.02, 0.06))))  # 7 % wide, 7 % high
        if name == "rocket":
            rows.append(("rocket_small", _jpeg(img.resize((200, 200 * img.height // img.width)), 80)))
    # images too small or too thin for keypoints pass through the map part (null-free, empty) and stay
    rng = np.random.default_rng(0)
    rows.append(("tiny", _jpeg(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))))
    rows.append(("strip", _jpeg(Image.fromarray(rng.integers(0, 256, (4, 3000, 3), dtype=np.uint8)))))
    return input_table(rows)


def _meta(stage, batch) -> pa.Table:
    result = stage.map_part.process(batch)
    assert_accounted(batch, result, stage.name)
    meta = result.kept.drop_columns(["image"])
    return meta.append_column(SAMPLE_ID, pa.array(make_ids(0, np.arange(meta.num_rows))))


def _outcome(res) -> dict:
    links = res.duplicates.to_pylist()
    return {lk["key"]: (lk["duplicate_of"], lk["kind"]) for lk in links}


def test_the_map_part_stores_keypoints_only_when_asked(batch):
    plain = _meta(registry.create("phash_dedup", {"hash": "pdq"}), batch)
    assert "pdq_keypoints" not in plain.column_names
    meta = _meta(registry.create("phash_dedup", {"hash": "pdq", "keypoints": True}), batch)
    blobs = meta.column("pdq_keypoints").to_pylist()
    assert all(b is not None and len(b) <= keypoints.MAX_BYTES for b in blobs)
    counts = dict(zip(meta.column("key").to_pylist(), (len(keypoints.unpack(b)[1]) for b in blobs)))
    assert counts.pop("tiny") == counts.pop("strip") == 0
    assert min(counts.values()) > 50


def test_crops_pdq_misses_are_linked_by_the_keypoint_pass(batch, tmp_path):
    stage = registry.create("phash_dedup", {"hash": "pdq", "keypoints": True})
    meta = _meta(stage, batch)
    table = meta.select([*stage.requires, SAMPLE_ID])

    without = run_on_table(registry.create("phash_dedup", {"hash": "pdq"}), table)
    assert _outcome(without) == {"rocket_small": ("rocket", "pdq")}  # PDQ moves too far under a 7 % crop

    mem = run_on_table(stage, table)
    want = {
        "rocket_small": ("rocket", "pdq"),
        **{f"{n}_crop": (n, "keypoints") for n in ("astronaut", "coffee", "chelsea")},
    }
    assert _outcome(mem) == want
    reasons = dict(zip(mem.rejected.column("key").to_pylist(), mem.rejected.column("reason").to_pylist()))
    assert reasons == {k: f"duplicate_{kind}" for k, (_, kind) in want.items()}
    assert mem.stats.keypoint_duplicates == 3 and mem.stats.duplicates == 4

    (tmp_path / "meta").mkdir()
    half = meta.num_rows // 2
    shards = [meta.slice(0, half), meta.slice(half)]
    for i, t in enumerate(shards):
        pq.write_table(t.drop_columns([SAMPLE_ID]), tmp_path / "meta" / f"{i:05d}.parquet")
    sharded = stage.run(ShardedGlobalContext(tmp_path, len(shards), map_fn=map, parallelism=2))
    assert _outcome(sharded) == want
    assert sharded.stats.keypoint_duplicates == 3


def test_fewer_inliers_than_required_link_nothing(batch):
    stage = registry.create("phash_dedup", {"hash": "pdq", "keypoints": True, "keypoint_inliers": keypoints.FEATURES})
    res = run_on_table(stage, _meta(stage, batch).select([*stage.requires, SAMPLE_ID]))
    assert res.stats.keypoint_duplicates == 0


def test_keypoints_need_pdq():
    with pytest.raises(ValueError, match="needs hash: pdq"):
        registry.create("phash_dedup", {"keypoints": True})
    with pytest.raises(ValueError, match="keypoint_inliers"):
        registry.create("phash_dedup", {"hash": "pdq", "keypoints": True, "keypoint_inliers": 2})


@pytest.mark.parametrize("print_side", [40, 80])
def test_a_crop_of_one_print_does_not_remove_the_other_print(print_side):
    """Two prints on one mockup (template variants) and a crop of the second. Keypoints see the mockup in all three,
    and the crop's frame does not line up with the grids, so the template rule cannot judge the crop's pairs: the crop
    matches both prints. A group may not hold a template pair (with 40 px prints the PDQ pass names them templates;
    with 80 px PDQ does not link them and the keypoint pass finds them among the group's members), so the print with
    fewer inliers leaves the crop's group: the second print goes as a copy of its crop, the first stays."""
    mockup = Image.fromarray(skimage.data.astronaut()).resize((320, 320), Image.BICUBIC)

    def variant(pixels):
        img = mockup.copy()
        img.paste(Image.fromarray(pixels).resize((print_side, print_side)), (200, 200))
        return img

    a, b = variant(skimage.data.coffee()), variant(skimage.data.chelsea())
    # the crop ranks first (keep: first, by key), so a link from it would reject both prints
    rows = [("a_print", _jpeg(a)), ("b_print", _jpeg(b)), ("0_crop_of_b", _jpeg(_crop(b, 0.04, 0.01, 0.02, 0.06)))]
    batch = input_table(rows)
    stage = registry.create("phash_dedup", {"hash": "pdq", "keypoints": True})
    table = _meta(stage, batch).select([*stage.requires, SAMPLE_ID])
    res = run_on_table(stage, table)
    assert {lk["key"]: lk["duplicate_of"] for lk in res.duplicates.to_pylist() if lk["kind"] == "keypoints"} == {
        "b_print": "0_crop_of_b"
    }
    assert res.rejected.column("key").to_pylist() == ["b_print"]
    # without the template policy the keypoint pass links all three: the case is one the policy must handle
    off = registry.create("phash_dedup", {"hash": "pdq", "keypoints": True, "templates": "off"})
    assert run_on_table(off, _meta(off, batch).select([*off.requires, SAMPLE_ID])).rejected.num_rows == 2


def test_without_opencv_the_recipe_fails_before_any_work(monkeypatch):
    def missing():
        raise ImportError("keypoint verification needs OpenCV: pip install 'mmcurate[keypoints]'")

    monkeypatch.setattr(keypoints, "cv2", missing)
    with pytest.raises(ValueError, match=r"keypoints: true: .*mmcurate\[keypoints\]"):
        registry.create("phash_dedup", {"hash": "pdq", "keypoints": True})
    registry.create("phash_dedup", {"hash": "pdq"})  # the option alone needs it
