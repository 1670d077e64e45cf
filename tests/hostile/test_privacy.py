"""Privacy: with the default recipe (which includes pii_redact), no planted personal value reaches any
output file, in any form: output shards (every member), samples.parquet, rejects.parquet,
duplicates.parquet, thumbs.parquet, manifest.json, report.html.

Values are planted in captions, in nested meta JSON text fields and in LLaVA conversation turns, and in
samples that are kept as well as in samples rejected for their image or their caption (whose captions
the report shows). Before pii_redact redacted meta and the report's text, the raw caption (a full card
number) stayed in the shard's .json, in samples.parquet and in report.html.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers import default_recipe_for, mmcurate_run
from tests.hostile.builders_text import PII_VALUES, pii_needles, pii_sentence
from tests.io_fixtures import write_tar


def _photo(seed: int, size: tuple[int, int]) -> bytes:
    """A distinct image (smooth random blobs, so near-duplicate detection keeps them apart)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _meta(key: str, i: int) -> dict:
    v = PII_VALUES
    return {
        "key": key,
        "status": "success",
        "url": f"https://{v['url_credentials']}example.com/{key}.jpg",
        "caption": pii_sentence(i),
        "uploader": {
            "contact": {"email": v["email"], "phone": v["phone"]},
            "notes": [f"ssn {v['ssn']}", {"ip": f"from {v['ip']}", "id": f"id {v['cn_id']}"}],
        },
        "exif": {"UserComment": f"paid with {v['card']}"},
    }


def _webdataset_input(d: Path) -> Path:
    """12 samples in 2 shards: kept ones, ones rejected for a small image (image_filter) and ones rejected
    for a too-short caption (caption_filter), each with every value planted in caption and meta."""
    for s in range(2):
        members = []
        for i in range(6):
            key = f"{s:05d}{i:04d}"
            n = s * 6 + i
            size = (24, 16) if i == 4 else (320, 240)  # i == 4: rejected by image_filter
            card = PII_VALUES["card"].replace(" ", "")
            caption = f"card {card}" if i == 5 else pii_sentence(n)  # i == 5: too few words
            members += [
                (f"{key}.jpg", _photo(n, size)),
                (f"{key}.txt", caption.encode()),
                (f"{key}.json", json.dumps(_meta(key, n)).encode()),
            ]
        write_tar(d / f"{s:05d}.tar", members)
    return d


def _llava_input(d: Path) -> Path:
    v = PII_VALUES
    records = []
    for n in range(8):
        rel = f"imgs/{n}.jpg"
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(_photo(100 + n, (24, 16) if n == 3 else (320, 240)))
        records.append(
            {
                "id": f"s{n}",
                "image": rel,
                "source_url": f"ftp://{v['url_credentials']}host.org/x",
                "conversations": [
                    {"from": "human", "value": f"<image>\nMy card is {v['card']} and my id {v['cn_id']}"},
                    {"from": "gpt", "value": pii_sentence(n)},
                    {"from": "human", "value": f"write to {v['email']} or {v['phone']}"},
                    {"from": "gpt", "value": f"ssn {v['ssn']} seen from {v['ip']}"},
                ],
            }
        )
    path = d / "llava.json"
    path.write_text(json.dumps(records))
    return path


def _curate(input_path: Path, out: Path, pii_params: dict | None = None) -> None:
    """`mmcurate run` of the default recipe (its pii_redact step given pii_params) in shards of 5 samples."""
    recipe = default_recipe_for(input_path, out)
    recipe["output"]["shard_size"] = 5
    if pii_params is not None:
        recipe["stages"] = [({"pii_redact": pii_params} if "pii_redact" in s else s) for s in recipe["stages"]]
    assert any("pii_redact" in s for s in recipe["stages"])
    mmcurate_run(recipe, check=True, timeout=600)


def _output_texts(out: Path) -> dict[str, str]:
    """Every output file as text: tar members one by one, parquet files decoded (every value) and as raw
    bytes, everything else as bytes decoded leniently."""
    texts = {}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for p in files:
        rel = str(p.relative_to(out))
        raw = p.read_bytes()
        texts[rel] = raw.decode("utf-8", "replace")
        if p.suffix == ".tar":
            with tarfile.open(p) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        texts[f"{rel}/{m.name}"] = tar.extractfile(m).read().decode("utf-8", "replace")
        elif p.suffix == ".parquet":
            table = pq.read_table(p)
            texts[f"{rel} (values)"] = json.dumps(
                table.drop_columns(
                    [c for c, t in zip(table.column_names, table.schema.types) if str(t) == "binary"]
                ).to_pylist(),
                default=str,
                ensure_ascii=False,
            )
    return texts


def _leaks(out: Path) -> list[str]:
    texts = _output_texts(out)
    found = []
    for name, value in PII_VALUES.items():
        for needle in pii_needles(value):
            for rel, text in texts.items():
                if needle in text:
                    found.append(f"{name} {needle!r} in {rel}")
    return found


@pytest.fixture(scope="module")
def webdataset_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("privacy_wds")
    inp = _webdataset_input(d / "in")
    _curate(inp, d / "out")
    return d / "out"


def test_default_recipe_leaks_no_planted_value_webdataset(webdataset_run):
    out = webdataset_run
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {r for st in manifest["stages"] for r in st.get("reasons", {})}
    # the run exercised what it should: kept samples, image and caption rejects (shown in the report)
    assert manifest["counts"]["kept"] == 8 and manifest["counts"]["rejected"] == 4
    assert {"min_side", "too_few_words"} <= reasons, reasons
    assert (out / "report.html").exists()
    assert _leaks(out) == []
    # redaction happened (not a run that dropped everything)
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    assert samples and all("<CREDIT_CARD>" in r["caption"] for r in samples)
    assert all("<EMAIL>" in r["meta"] and "<URL_CREDENTIALS>" in r["meta"] for r in samples)


def test_default_recipe_leaks_no_planted_value_llava(tmp_path):
    inp = _llava_input(tmp_path / "in")
    _curate(inp, tmp_path / "out")
    assert _leaks(tmp_path / "out") == []
    samples = pq.read_table(tmp_path / "out" / "samples.parquet").to_pylist()
    assert samples
    for r in samples:
        turns = json.loads(r["meta"])["conversations"]
        assert "<CREDIT_CARD>" in turns[0]["value"] and "<EMAIL>" in turns[2]["value"] and "<ID>" in turns[3]["value"]


def test_keep_original_text_is_the_documented_opt_out(tmp_path):
    inp = _webdataset_input(tmp_path / "in")
    _curate(inp, tmp_path / "out", {"keep_original_text": True})
    samples = pq.read_table(tmp_path / "out" / "samples.parquet").to_pylist()
    assert samples
    for r in samples:
        assert PII_VALUES["email"] not in r["caption"]  # the caption itself is still redacted
        assert PII_VALUES["card"] in r["caption_original"]  # the originals are kept on request
        assert json.loads(r["meta"])["uploader"]["contact"]["email"] == PII_VALUES["email"]


def test_report_display_text_is_redacted_and_bounded():
    from mmcurate.report.thumbnails import MAX_CAPTION_CHARS, display_text

    card = PII_VALUES["card"]
    # a value straddling the cut is recognised whole, then cut off redacted
    text = "x " * ((MAX_CAPTION_CHARS - 8) // 2) + card + " more"
    shown = display_text(text)
    assert len(shown) <= MAX_CAPTION_CHARS and not any(c.isdigit() for c in shown), shown
    for value in PII_VALUES.values():
        assert value not in display_text(pii_sentence())
    assert display_text(None) is None
    huge = display_text("a" * 10_000_000)  # bounded work, whatever the length
    assert len(huge) == MAX_CAPTION_CHARS and huge.endswith("…")
