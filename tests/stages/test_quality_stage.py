"""image_quality stage: columns from integrity's decode (no second decode), its own decode when they are absent,
report-only defaults, the threshold reasons and details, text-only rows; phash_dedup's low-information rule."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from helpers import assert_accounted, input_table
from mmcurate.ops.quality import QUALITY_COLUMNS
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.stage import registry


def jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def table() -> pa.Table:
    photo = data.astronaut()[::2, ::2]
    rows = [
        ("photo", jpeg(photo)),
        ("dark", jpeg((photo * 0.05).astype(np.uint8))),
        ("bright", jpeg((photo.astype(int) // 10 + 230).astype(np.uint8))),  # washed out
        ("blurry", jpeg(np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(12))))),
        ("blank", jpeg(np.full((200, 200, 3), 128, np.uint8))),
        ("broken", jpeg(photo)[:300]),
    ]
    return input_table(rows)


def run(name, params, batch):
    return registry.create(name, params).process(batch)


def test_report_only_by_default_and_no_second_decode(table, monkeypatch):
    integrity = run("integrity", {}, table)
    for c in QUALITY_COLUMNS:
        assert c in integrity.kept.column_names
    assert integrity.kept.schema.field("sharpness").type == pa.float32()
    assert integrity.kept.schema.field("low_information").type == pa.bool_()

    import mmcurate.ops

    def no_decode(*a, **k):
        raise AssertionError("image_quality decoded although integrity stored the columns")

    monkeypatch.setattr(mmcurate.ops, "phash_bytes", no_decode)
    result = run("image_quality", {}, integrity.kept)
    assert result.rejected.num_rows == 0 and result.kept.equals(integrity.kept)


def test_thresholds_reasons_and_details(table):
    integrity = run("integrity", {}, table).kept
    # min_sharpness above the suggested 50: the blurred 256 px photo measures ~110, the sharp one ~10,000
    params = {"min_sharpness": 500, "min_brightness": 15, "max_brightness": 240, "reject_low_information": True}
    result = run("image_quality", params, integrity)
    assert_accounted(integrity, result, "image_quality")
    got = {r["key"]: (r["reason"], r["detail"]) for r in result.rejected.to_pylist()}
    assert set(got) == {"dark", "bright", "blurry", "blank"}
    assert got["blank"][0] == "low_information" and "entropy 0.00 bits" in got["blank"][1]
    assert got["dark"][0] == "too_dark" and "< min_brightness 15" in got["dark"][1]
    assert got["bright"][0] == "too_bright" and "> max_brightness 240" in got["bright"][1]
    assert got["blurry"][0] == "blurry" and "< min_sharpness 500" in got["blurry"][1]
    assert result.kept.column("key").to_pylist() == ["photo"]


def test_decodes_itself_without_integrity_columns(table):
    """Same values as integrity's fused decode; undecodable images rejected with the decoder's status."""
    own = run("image_quality", {}, table)
    assert_accounted(table, own, "image_quality")
    assert {r["key"]: r["reason"] for r in own.rejected.to_pylist()} == {"broken": "truncated"}
    stored = run("integrity", {}, table).kept
    for c in QUALITY_COLUMNS:
        assert own.kept.column(c).equals(stored.column(c)), c
    header_only = run("integrity", {"full_decode": False}, table).kept
    assert "sharpness" not in header_only.column_names
    assert run("image_quality", {}, header_only).kept.column("sharpness").equals(stored.column("sharpness"))


def test_text_only_rows_pass_with_null_columns():
    t = input_table([("img", jpeg(data.camera()[::2, ::2])), ("text", None)], has_image=[True, False])
    for batch in (t, run("integrity", {}, t).kept):
        result = run("image_quality", {"min_sharpness": 1e9, "reject_low_information": True}, batch)
        assert {r["key"] for r in result.rejected.to_pylist()} == {"img"}
        assert result.kept.column("key").to_pylist() == ["text"]
        assert all(result.kept.column(c).null_count == 1 for c in QUALITY_COLUMNS)


def test_params_are_checked():
    with pytest.raises(ValueError, match="min_brightness"):
        registry.create("image_quality", {"min_brightness": 200, "max_brightness": 100})
    with pytest.raises(ValueError, match="min_sharpness"):
        registry.create("image_quality", {"min_sharpness": "high"})
    with pytest.raises(ValueError):
        registry.create("image_quality", {"reject_low_information": "yes"})


def placeholder() -> np.ndarray:
    img = Image.new("RGB", (300, 300), (228, 228, 228))
    draw = ImageDraw.Draw(img)
    draw.rectangle((110, 80, 190, 140), outline=(150, 150, 150), width=3)
    draw.text((70, 170), "No image available", fill=(120, 120, 120))
    return np.asarray(img)


def test_phash_dedup_never_links_low_information_images():
    """A placeholder card and its re-encoding are pHash neighbours; with the rule pHash never links them (their
    byte copies are exact_dedup's), without it it does. Photos are linked either way."""
    photo = data.coffee()[::2, ::2]
    rows = [("card", jpeg(placeholder(), 95)), ("card_q75", jpeg(placeholder(), 75))]
    rows += [("photo", jpeg(photo, 95)), ("photo_q70", jpeg(photo, 70))]
    meta = run("integrity", {}, input_table(rows)).kept
    assert meta.column("low_information").to_pylist() == [True, True, False, False]
    on = run_on_table(registry.create("phash_dedup", {}), meta)
    assert set(on.rejected.column("key").to_pylist()) == {"photo_q70"}
    off = run_on_table(registry.create("phash_dedup", {"skip_low_information": False}), meta)
    assert set(off.rejected.column("key").to_pylist()) == {"card_q75", "photo_q70"}
    # the map part measures the flag itself when integrity did not (one decode)
    part = registry.create("phash_dedup", {}).map_part.process(input_table(rows)).kept
    assert part.column("low_information").to_pylist() == [True, True, False, False]
    # exact mode reads integrity's flag and adds no second set of quality columns
    exact = registry.create("phash_dedup", {"mode": "exact"})
    assert set(run_on_table(exact, meta).rejected.column("key").to_pylist()) == {"photo_q70"}
    assert "low_information" not in exact.map_part.process(input_table(rows)).kept.column_names
    # a table without the flag (an older run) is linked as before
    legacy = run_on_table(registry.create("phash_dedup", {}), meta.drop_columns(list(QUALITY_COLUMNS)))
    assert set(legacy.rejected.column("key").to_pylist()) == {"card_q75", "photo_q70"}
