"""The report's image-quality, CLIP, splits and provenance views, on a real run
(tests/report_runs.py: semantic_run, quality_run).

Each view is checked against the run's own files: what it shows is what samples.parquet, rejects.parquet,
thumbs.parquet and the manifest hold. Absent for a run without the stage; hostile values escaped; PII masked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_report import Node, parse

from mmcurate.pipeline.provenance import input_fingerprint, model_provenance, recipe_sha256
from mmcurate.report.clip_section import MAP_POINTS, pca_2d
from mmcurate.report.html_report import render_report
from mmcurate.report.quality_section import MAX_TILES, QUALITY_SIGNALS
from mmcurate.report.run_data import RunData, load_run
from mmcurate.stages.clip import reject_scores
from report_runs import MIN_BRIGHTNESS, N_BLURRY, kept_images

HOSTILE = "<img src=x onerror=alert('v')></td><script>alert(1)</script>"


def _dom(out: Path) -> tuple[str, Node]:
    html = render_report(load_run(out))
    return html, parse(html).root


def _section(dom: Node, sid: str) -> Node:
    found = [n for n in dom.find_all("section") if n.attrs.get("id") == sid]
    assert len(found) == 1, sid
    return found[0]


def _with(node: Node, attr: str, value: str | None = None) -> list[Node]:
    return [n for n in node.iter() if attr in n.attrs and (value is None or n.attrs[attr] == value)]


def _tile_keys(node: Node) -> list[str]:
    return [n.attrs["data-key"] for n in node.iter() if n.tag == "figure"]


def _tile_image(tile: Node) -> np.ndarray:
    from PIL import Image

    img = next(n for n in tile.iter() if n.tag == "img")
    data = base64.b64decode(img.attrs["src"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def _mean_rgb(image: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))


# ------------------------------------------------------------------------------------------------
# image quality


def test_quality_section_charts_every_signal_with_the_thresholds(quality_run):
    _, dom = _dom(quality_run)
    section = _section(dom, "quality")
    samples = pq.read_table(quality_run / "samples.parquet")
    cards = {n.attrs["data-hist"]: n for n in _with(section, "data-hist")}
    assert set(cards) == set(QUALITY_SIGNALS)
    assert all(int(c.attrs["data-n"]) == samples.num_rows for c in cards.values())
    manifest = json.loads((quality_run / "manifest.json").read_text())
    params = manifest["run"]["recipe"]["stages"][-1]["image_quality"]
    marks = {c: [m.attrs["data-marker"] for m in _with(card, "data-marker")] for c, card in cards.items()}
    assert marks["sharpness"] == [f"min_sharpness {params['min_sharpness']:.0f}"]
    assert marks["brightness"] == [f"min {MIN_BRIGHTNESS:.0f}"]  # max_brightness: null draws nothing
    assert not any(marks[c] for c in QUALITY_SIGNALS if c not in ("sharpness", "brightness"))
    chip = _with(section, "data-reason", "blurry")
    assert chip and chip[0].all_text().endswith(str(N_BLURRY))
    low = _with(section, "data-low-information")
    assert int(low[0].attrs["data-low-information"]) == sum(samples.column("low_information").to_pylist())
    assert '<a href="#quality">' in render_report(load_run(quality_run))  # listed in the nav


def test_quality_galleries_show_the_extremes_read_back_from_the_output_shards(quality_run):
    _, dom = _dom(quality_run)
    section = _section(dom, "quality")
    rows = pq.read_table(quality_run / "samples.parquet").to_pylist()
    images = kept_images(quality_run)
    galleries = {g.attrs["data-gallery"]: g for g in _with(section, "data-gallery")}
    assert set(galleries) == {"blurriest", "darkest", "brightest", "low_information"}

    def lowest(column, reverse=False, where=lambda r: True):
        chosen = sorted((r for r in rows if where(r)), key=lambda r: r["key"])
        return [r["key"] for r in sorted(chosen, key=lambda r: r[column], reverse=reverse)][:MAX_TILES]

    blurriest = galleries["blurriest"]
    rejected = json.loads((quality_run / "manifest.json").read_text())["stages"][-1]
    assert rejected["reasons"] == {"blurry": N_BLURRY}
    blurry_keys = set(
        pq.read_table(quality_run / "rejects.parquet").filter(pc.field("reason") == "blurry")["key"].to_pylist()
    )
    shown = _tile_keys(blurriest)
    assert set(shown[:N_BLURRY]) == blurry_keys  # the stage's rejects first, then the kept
    assert shown[N_BLURRY:] == lowest("sharpness")
    assert _tile_keys(galleries["darkest"]) == lowest("brightness")
    assert _tile_keys(galleries["brightest"]) == lowest("brightness", reverse=True)
    assert _tile_keys(galleries["low_information"]) == lowest("entropy", where=lambda r: r["low_information"])
    # each kept tile is its own image, from the output tar (not a placeholder, not another sample's picture)
    for tile in (n for n in blurriest.iter() if n.tag == "figure" and n.attrs["data-key"] not in blurry_keys):
        assert "placeholder" not in tile.attrs["class"]
        diff = np.abs(_tile_image(tile).mean(axis=(0, 1)) - _mean_rgb(images[tile.attrs["data-key"]]))
        assert diff.max() < 8, (tile.attrs["data-key"], diff)


# ------------------------------------------------------------------------------------------------
# CLIP


def test_clip_section_charts_the_scores_around_the_cut(semantic_run):
    _, dom = _dom(semantic_run)
    section = _section(dom, "clip")
    samples = pq.read_table(semantic_run / "samples.parquet").to_pylist()
    rejects = pq.read_table(semantic_run / "rejects.parquet")
    below = rejects.filter(pc.field("reason") == "clip_score")
    stats = next(
        s
        for s in json.loads((semantic_run / "manifest.json").read_text())["stages"]
        if s["name"] == "clip_score_filter"
    )
    hist = _with(section, "data-hist", "clip_score")[0]
    assert int(hist.attrs["data-n"]) == len(samples) + below.num_rows > len(samples)
    assert [m.attrs["data-marker"] for m in _with(hist, "data-marker")] == [f"cut {stats['stats']['cut']:.3f}"]
    above = _with(section, "data-side", "above")[0]
    lowest = sorted(sorted(samples, key=lambda r: r["key"]), key=lambda r: r["clip_score"])
    assert _tile_keys(above) == [r["key"] for r in lowest[:7]]
    shown_below = _tile_keys(_with(section, "data-side", "below")[0])
    scores = dict(zip(below["key"].to_pylist(), reject_scores(below["detail"]).tolist()))
    assert shown_below and all(k in scores for k in shown_below)
    assert [scores[k] for k in shown_below] == sorted((scores[k] for k in shown_below), reverse=True)
    # the rejects nearest the cut: the highest scores among all of clip_score_filter's rejects
    assert [scores[k] for k in shown_below] == sorted(scores.values(), reverse=True)[: len(shown_below)]
    assert max(scores[k] for k in shown_below) < stats["stats"]["cut"] <= lowest[0]["clip_score"] + 1e-6


def test_clip_score_rejects_give_their_score_back():
    from mmcurate.stages.clip import clip_score_rejects

    t = clip_score_rejects("f", ["a", "b", "c"], ["s"] * 3, np.array([0.21349, np.nan, -0.5]), 0.28, None)
    assert np.allclose(reject_scores(t["detail"]), [0.213, np.nan, -0.5], equal_nan=True)
    t = clip_score_rejects("f", ["a"], ["s"], np.array([0.1]), 0.2, "top-30%")
    assert reject_scores(t["detail"]).tolist() == [0.1]


def test_cluster_grid_and_embedding_map(semantic_run):
    _, dom = _dom(semantic_run)
    section = _section(dom, "clip")
    samples = pq.read_table(semantic_run / "samples.parquet")
    sizes = dict(
        zip(*(pc.value_counts(samples["semantic_cluster"].combine_chunks()).flatten()[i].to_pylist() for i in (0, 1)))
    )
    groups = _with(section, "data-cluster")
    assert {int(g.attrs["data-cluster"]): int(g.attrs["data-size"]) for g in groups} == sizes  # <= 8: all shown
    assert [int(g.attrs["data-size"]) for g in groups] == sorted(sizes.values(), reverse=True)
    for g in groups:
        keys = _tile_keys(g)
        cid = int(g.attrs["data-cluster"])
        assert keys and set(keys) <= {r["key"] for r in samples.to_pylist() if r["semantic_cluster"] == cid}
        assert all(n.attrs.get("src", "").startswith("data:image/jpeg") for n in g.iter() if n.tag == "img")
    [card] = _with(section, "data-map", "pca")
    assert int(card.attrs["data-n"]) == min(samples.num_rows, MAP_POINTS)
    drawn = {n.attrs["data-group"]: int(n.attrs["data-n"]) for n in _with(card, "data-group")}
    assert sum(drawn.values()) == samples.num_rows
    assert sum(1 for n in card.iter() if n.tag == "circle") == samples.num_rows
    for cid, n in sizes.items():  # 4 clusters: each has its colour and its size in the legend
        assert drawn[f"cluster {cid} ({n})"] == n


def test_pca_2d_projects_on_the_leading_eigenvectors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)) * np.array([5.0, 2.0, 0.5, 0.2, 0.1, 0.1]) + 3.0
    proj, share = pca_2d(x)
    cov = np.cov(x, rowvar=False)
    eigval = np.linalg.eigvalsh(cov)[::-1]
    assert np.allclose(proj.var(axis=0, ddof=1), eigval[:2], rtol=1e-6)
    assert np.allclose(share, eigval[:2] / eigval.sum(), rtol=1e-6)
    assert np.allclose(proj.mean(axis=0), 0, atol=1e-9)
    assert np.array_equal(pca_2d(x)[0], proj)  # deterministic, signs fixed


# ------------------------------------------------------------------------------------------------
# splits


def test_splits_section_shows_sizes_strata_and_no_leakage(semantic_run):
    _, dom = _dom(semantic_run)
    section = _section(dom, "splits")
    samples = pq.read_table(semantic_run / "samples.parquet").to_pylist()
    counts = {s: sum(r["split"] == s for r in samples) for s in ("train", "val", "test")}
    rows = {n.attrs["data-split"]: n for n in _with(section, "data-split")}
    assert {k: int(v.attrs["data-count"]) for k, v in rows.items()} == counts
    assert [td.all_text() for td in rows["val"].find_all("td")][3] == "0.2000"  # the recipe's target ratio
    strata = {n.attrs["data-stratum"]: n for n in _with(section, "data-stratum")}
    assert set(strata) == {str(r["semantic_cluster"]) for r in samples}
    for value, row in strata.items():
        members = [r for r in samples if str(r["semantic_cluster"]) == value]
        assert row.find_all("td")[1].all_text() == f"{len(members):,}"
    [card] = _with(section, "data-leakage")
    assert card.attrs["data-leakage"] == "none" and _with(card, "data-check", "no-leakage")
    assert {n.attrs["data-signal"]: n.attrs["data-shared"] for n in _with(card, "data-signal")} == {
        "sha256": "0",
        "phash": "0",
    }


def test_leakage_check_finds_a_copy_in_two_splits(semantic_run, tmp_path):
    out = tmp_path / "leaky"
    shutil.copytree(semantic_run, out)
    t = pq.read_table(out / "samples.parquet")
    splits = t["split"].to_pylist()
    a, b = next((i, j) for i in range(len(splits)) for j in range(len(splits)) if splits[i] != splits[j])
    sha = t["sha256"].to_pylist()
    sha[b] = sha[a]  # sample b is a byte copy of a, in another split
    t = t.set_column(t.column_names.index("sha256"), "sha256", pa.array(sha, pa.string()))
    pq.write_table(t, out / "samples.parquet")
    _, dom = _dom(out)
    [card] = _with(_section(dom, "splits"), "data-leakage")
    assert card.attrs["data-leakage"] == "found"
    [row] = _with(card, "data-signal", "sha256")
    assert row.attrs["data-shared"] == "1" and sha[a] in row.all_text()


# ------------------------------------------------------------------------------------------------
# provenance


def test_manifest_records_provenance_and_the_header_shows_it(semantic_run):
    manifest = json.loads((semantic_run / "manifest.json").read_text())
    prov = manifest["provenance"]
    assert prov["recipe_sha256"] == recipe_sha256(manifest["run"]["recipe"])
    assert prov["input_fingerprint"] == input_fingerprint(manifest["inputs"])
    assert prov["models"] == [
        {"stage": "clip_embed", "model": "mmcurate-tiny", "weights": "random", "weights_sha256": "random"}
    ]
    _, dom = _dom(semantic_run)
    header = next(n for n in dom.iter() if n.tag == "header")
    [model] = _with(header, "data-provenance", "model")
    assert _with(model, "data-weights", "random")[0].attrs["class"] == "random"  # red
    [recipe] = _with(header, "data-provenance", "recipe")
    code = next(n for n in recipe.iter() if n.tag == "code")
    assert code.all_text() == prov["recipe_sha256"][:12] and code.attrs["title"] == prov["recipe_sha256"]
    [inp] = _with(header, "data-provenance", "input")
    assert prov["input_fingerprint"][:12] in inp.all_text()


def test_weights_of_a_checkpoint_file_are_hashed_and_shown(semantic_run, tmp_path):
    ckpt = tmp_path / "open_clip_model.safetensors"
    ckpt.write_bytes(b"not really a checkpoint, but a file like one" * 1000)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    [entry] = model_provenance([("integrity", {}), ("clip_embed", {"model": "mmcurate-tiny", "weights": str(ckpt)})])
    assert entry == {"stage": "clip_embed", "model": "mmcurate-tiny", "weights": str(ckpt), "weights_sha256": digest}
    out = tmp_path / "run"
    shutil.copytree(semantic_run, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["provenance"]["models"] = [entry]
    manifest["run"]["recipe"]["stages"][5]["clip_embed"]["weights"] = str(ckpt)
    (out / "manifest.json").write_text(json.dumps(manifest))
    _, dom = _dom(out)
    [model] = _with(next(n for n in dom.iter() if n.tag == "header"), "data-provenance", "model")
    assert digest[:12] in model.all_text() and not _with(model, "data-weights", "random")


# ------------------------------------------------------------------------------------------------
# absence, hostile values, privacy


def test_views_are_absent_for_a_run_without_their_stages(tmp_path):
    out = tmp_path / "plain"
    out.mkdir()
    recipe = {"input": {"path": "x"}, "stages": [{"integrity": {}}]}
    manifest = {"run": {"recipe": recipe}, "counts": {"read": 2, "kept": 2, "rejected": 0}, "inputs": ["a.tar"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    pq.write_table(
        pa.table({"key": ["a", "b"], "width": [10, 20], "height": [10, 20], "caption": ["x", "y"]}),
        out / "samples.parquet",
    )
    html, dom = _dom(out)
    sections = [n.attrs["id"] for n in dom.find_all("section")]
    assert not {"quality", "clip", "splits"} & set(sections)
    assert not any(f'href="#{s}"' in html for s in ("quality", "clip", "splits"))
    [model] = _with(dom, "data-provenance", "model")
    assert "none" in model.all_text()
    assert recipe_sha256(recipe)[:12] in html  # an older manifest: the hash computed from its recipe


def test_views_escape_hostile_values_and_mask_personal_data(quality_run, tmp_path):
    out = tmp_path / "hostile"
    shutil.copytree(quality_run, out)
    t = pq.read_table(out / "samples.parquet")
    darkest = t["key"][pc.index(t["brightness"], pc.min(t["brightness"])).as_py()].as_py()
    email = "alice.private@example.com"
    captions = [
        f"mail {email} {HOSTILE}" if k == darkest else c for k, c in zip(t["key"].to_pylist(), t["caption"].to_pylist())
    ]
    t = t.set_column(t.column_names.index("caption"), "caption", pa.array(captions, pa.string()))
    pq.write_table(t, out / "samples.parquet")
    m = json.loads((out / "manifest.json").read_text())
    m["provenance"]["models"][0]["model"] = HOSTILE
    m["provenance"]["recipe_sha256"] = HOSTILE
    m["run"]["recipe"]["stages"][-1]["image_quality"]["min_sharpness"] = HOSTILE  # not a number: no line drawn
    split = next(s for s in m["stages"] if s["name"] == "split")
    split["stats"]["warning"] = HOSTILE
    split["stats"]["counts"][HOSTILE] = 3
    clip = next(s for s in m["stages"] if s["name"] == "clip_score_filter")
    clip["stats"]["mode"] = HOSTILE
    clip["stats"]["scores"] = {HOSTILE: HOSTILE}
    (out / "manifest.json").write_text(json.dumps(m))
    html, dom = _dom(out)
    assert "<script" not in html.lower() and HOSTILE not in html
    assert email not in html  # redacted under the darkest tile, as every caption the report shows
    assert "script" not in parse(html).tags
    text = dom.all_text()
    assert text.count(HOSTILE) >= 4  # shown as text: model, recipe hash tooltip aside, warning, split name, ...
    assert not _with(_section(dom, "quality"), "data-marker", "min_sharpness " + HOSTILE)
    assert all(n.attrs["src"].startswith("data:image/jpeg;base64,") for n in dom.iter() if n.tag == "img")


@pytest.mark.parametrize("view", ["quality", "clip", "splits"])
def test_views_reference_nothing_outside_the_page(quality_run, view):
    html, dom = _dom(quality_run)
    section = _section(dom, view)
    for n in section.iter():
        for attr in ("src", "href"):
            if attr in n.attrs:
                assert n.attrs[attr].startswith(("#", "data:image/jpeg;base64,")), (view, n.tag, n.attrs[attr][:60])
    assert "http://" not in html and "https://" not in html


def test_kept_thumbnails_are_read_back_by_key_and_only_from_the_shards(tmp_path):
    """Long, non-ASCII and dotted keys (pax headers, escaped member names) are found; a shard that is missing or
    outside the output directory gives a placeholder."""
    from PIL import Image

    from mmcurate.io import ShardWriter
    from mmcurate.report.kept_images import kept_thumbnails

    keys = ["plain", "x" * 150, "café/ünï", "dir/sub/a.b.c"]
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    blobs = []
    for c in colours:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), c).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    w = ShardWriter(tmp_path, 100, subdir="shards")
    w.write(pa.table({"key": keys, "image": blobs, "image_ext": ["jpg"] * 4, "caption": ["c"] * 4, "meta": ["{}"] * 4}))
    w.close()
    outside = tmp_path / "elsewhere.tar"
    shutil.copy(tmp_path / "shards" / "00000.tar", outside)

    def thumbnails(rows: list[dict], ask: list[str]) -> dict:
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "samples.parquet")
        return kept_thumbnails(RunData(tmp_path, {}), ask)

    rows = [{"key": k, "shard": "00000.tar", "image_ext": "jpg", "caption": f"caption of {k}"} for k in keys]
    rows.append({"key": "gone", "shard": "00001.tar", "image_ext": "jpg", "caption": None})
    ask = [*reversed(keys), "gone", "not in samples.parquet"]
    thumbs = thumbnails(rows, ask)
    assert list(thumbs) == ask
    for key, colour in zip(keys, colours):
        t = thumbs[key]
        assert t.decoded and t.caption == f"caption of {key}"
        assert np.abs(_mean_rgb(t.jpeg) - colour).max() < 10
    assert not thumbs["gone"].decoded and not thumbs["not in samples.parquet"].decoded
    for shard in ("../elsewhere.tar", str(outside)):  # samples.parquet is data: it names no path outside shards/
        row = {"key": "plain", "shard": shard, "image_ext": "jpg", "caption": None}
        assert not thumbnails([row], ["plain"])["plain"].decoded


def test_footer_states_the_pages_size_and_build_time(quality_run, tmp_path):
    from mmcurate.report.html_report import write_report

    path = write_report(quality_run, tmp_path / "report.html")
    dom = parse(path.read_text(encoding="utf-8")).root
    [note] = _with(dom, "data-built-bytes")
    size = int(note.attrs["data-built-bytes"])
    assert 0 < path.stat().st_size - size < 2000  # all but the footer itself
    assert 0 < float(note.attrs["data-built-seconds"]) < 120
    assert f"{size / 1e6:.2f} MB" in note.all_text() and "bounded" in note.all_text()
