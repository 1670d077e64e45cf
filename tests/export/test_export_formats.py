"""`mmcurate export --format jsonl|hf|webdataset`: real runs of mixed JPEG/PNG/WebP images (with a split step and
without), each export loaded by the libraries that read its format (pandas, Hugging Face `datasets`, `webdataset`),
every image present, decodable and byte-equal to the input; the dataset cards' YAML; the export directory's rules
(--overwrite, refusals) and --link for every format."""

from __future__ import annotations

import glob
import io
import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

import io_fixtures as fx
from helpers import mmcurate_cli, run_local
from llava_fixtures import build_llava_mix
from mmcurate.export import FORMATS, export_run
from mmcurate.export.common import MARKER
from mmcurate.export.hf import export_hf
from mmcurate.export.jsonl import export_jsonl
from mmcurate.export.webdataset import export_webdataset

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")
pd = pytest.importorskip("pandas")
PIL_Image = pytest.importorskip("PIL.Image")

FMTS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
N = 36
NEW_FORMATS = ("jsonl", "hf", "webdataset")
EXPORT = {"jsonl": export_jsonl, "hf": export_hf, "webdataset": export_webdataset}


def _recipe(path, out, stages, fmt="auto", options=None) -> dict:
    return {
        "input": {"path": str(path), "format": fmt, "options": options or {}},
        "output": {"path": str(out), "shard_size": 10, "report": False},
        "stages": stages,
    }


def _input_tars(d) -> dict[str, bytes]:
    """Two tar shards of N samples cycling JPEG, PNG and WebP (distinct noise images); key -> image bytes."""
    originals = {}
    for s in range(2):
        members = []
        for i in range(N // 2):
            k = s * (N // 2) + i
            fmt = list(FMTS)[k % 3]
            key = f"{k:06d}"
            data = fx.image_bytes(k, fmt, size=(40 + k % 7, 32))
            originals[key] = data
            meta = {"key": key, "n": k, **({"extra": {"a": k}} if k % 4 == 0 else {})}
            members += [(f"{key}.{FMTS[fmt]}", data), (f"{key}.txt", f"a photo number {k}".encode())]
            members.append((f"{key}.json", json.dumps(meta).encode()))
        fx.write_tar(d / f"{s:05d}.tar", members)
    return originals


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The mixed-format input curated with a split step ("split") and without ("plain"); and an image folder
    input ("folder", for --link) whose sidecar metadata differ in type."""
    d = tmp_path_factory.mktemp("export_formats")
    originals = _input_tars(d / "in")
    run_local(_recipe(d / "in", d / "split", [{"integrity": {}}, {"split": {"ratios": [0.6, 0.2, 0.2]}}]))
    run_local(_recipe(d / "in", d / "plain", [{"integrity": {}}, {"exact_dedup": {}}]))
    folder = d / "folder_in"
    folder.mkdir()
    for k in range(6):
        fmt = list(FMTS)[k % 3]
        data = fx.image_bytes(100 + k, fmt, size=(36, 30))
        (folder / f"img{k}.{FMTS[fmt]}").write_bytes(data)
        (folder / f"img{k}.txt").write_text(f"folder photo {k}")
        (folder / f"img{k}.json").write_text(json.dumps({"tags": "one" if k % 2 else ["a", "b"]}))
    run_local(_recipe(folder, d / "folder", [{"integrity": {}}], fmt="folder"))
    return {"dir": d, "originals": originals, "folder_in": folder}


def _samples(run) -> dict[str, dict]:
    return {s["key"]: s for s in pq.read_table(run / "samples.parquet").to_pylist()}


def _card_yaml(out) -> dict:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _expected_splits(run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in _samples(run).values():
        counts[s.get("split") or "train"] = counts.get(s.get("split") or "train", 0) + 1
    return counts


def _load(*args, tmp_path, **kw):
    return datasets.load_dataset(*args, cache_dir=str(tmp_path / "hf_cache"), **kw)


# ---------------------------------------------------------------------------------------------------------
# jsonl


@pytest.mark.parametrize("name", ["split", "plain"])
def test_jsonl_loads_with_pandas_and_datasets(runs, tmp_path, name):
    run, out = runs["dir"] / name, tmp_path / "exp"
    res = export_jsonl(run, out)
    samples = _samples(run)
    splits = _expected_splits(run)
    assert res.splits == splits and res.images == len(samples)
    assert {os.path.splitext(samples[k]["image_ext"])[0] for k in samples} >= {"jpg", "png", "webp"}
    files = {s: (f"{s}.jsonl" if name == "split" else "data.jsonl") for s in splits}
    assert sorted(res.files) == sorted(files.values())
    seen = set()
    for split, fname in files.items():
        df = pd.read_json(out / fname, lines=True, dtype=False)
        ds = _load("json", data_files={split: str(out / fname)}, tmp_path=tmp_path)[split]
        assert len(df) == len(ds) == splits[split]
        assert list(ds["key"]) == list(df["key"])
        for rec in ds:
            s = samples[rec["key"]]
            assert rec["caption"] == s["caption"] and json.loads(rec["meta"]) == json.loads(s["meta"])
            assert rec["width"] == s["width"] and rec["file_size"] == s["file_size"]
            path = out / rec["image"]
            assert rec["image"] == (
                f"images/{split}/{rec['key']}.{s['image_ext']}"
                if name == "split"
                else f"images/{rec['key']}.{s['image_ext']}"
            )
            assert path.read_bytes() == runs["originals"][rec["key"]]  # the original bytes
            PIL_Image.open(path).load()
            seen.add(rec["key"])
    assert seen == set(samples)
    card = _card_yaml(out)
    assert card["configs"][0]["data_files"] == [{"split": s, "path": f} for s, f in files.items()]
    assert _load(str(out), tmp_path=tmp_path).num_rows == splits  # the card's configs


# ---------------------------------------------------------------------------------------------------------
# hf


def _check_hf(ds_dict, runs, samples):
    seen = set()
    for split, ds in ds_dict.items():
        assert isinstance(ds.features["image"], datasets.Image)
        raw = ds.cast_column("image", datasets.Image(decode=False))
        for rec, img in zip(raw, ds["image"]):
            s = samples[rec["key"]]
            assert (s.get("split") or "train") == split
            assert rec["image"]["bytes"] == runs["originals"][rec["key"]]  # never re-encoded
            assert rec["image"]["path"] == f"{rec['key']}.{s['image_ext']}"
            assert img.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[s["image_ext"]]
            img.load()
            assert rec["caption"] == s["caption"] and rec["meta"] == s["meta"] and rec["phash"] == s.get("phash")
            seen.add(rec["key"])
    assert seen == set(samples)


@pytest.mark.parametrize("name", ["split", "plain"])
def test_hf_loads_as_parquet_and_as_a_directory(runs, tmp_path, name):
    run, out = runs["dir"] / name, tmp_path / "exp"
    res = export_hf(run, out, max_file_bytes=6000, row_group_rows=4)
    samples = _samples(run)
    splits = _expected_splits(run)
    assert res.splits == splits and res.images == len(samples)
    data = sorted(p.name for p in (out / "data").iterdir())
    assert data == sorted(os.path.basename(f) for f in res.files)
    for split in splits:
        mine = [f for f in data if f.startswith(f"{split}-")]
        assert len(mine) > 1  # a big split is several files
        assert mine == [f"{split}-{i:05d}-of-{len(mine):05d}.parquet" for i in range(len(mine))]
        for f in mine:
            pf = pq.ParquetFile(out / "data" / f)
            assert all(pf.metadata.row_group(i).num_rows <= 4 for i in range(pf.num_row_groups))
            hf_meta = json.loads(pf.schema_arrow.metadata[b"huggingface"])
            assert hf_meta["info"]["features"]["image"] == {"_type": "Image"}
    files = {s: sorted(glob.glob(str(out / "data" / f"{s}-*.parquet"))) for s in splits}
    as_parquet = _load("parquet", data_files=files, tmp_path=tmp_path)
    as_dir = _load(str(out), tmp_path=tmp_path)
    for ds_dict in (as_parquet, as_dir):
        assert ds_dict.num_rows == splits
        _check_hf(ds_dict, runs, samples)
    card = _card_yaml(out)
    assert card["license"] == "unknown"
    info = card["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == splits
    assert datasets.Features._from_yaml_list(info["features"]) == as_dir[next(iter(splits))].features
    assert card["configs"][0]["data_files"] == [{"split": s, "path": f"data/{s}-*"} for s in splits]
    text = (out / "README.md").read_text()
    assert ("The run assigned no splits" in text) == (name == "plain")
    assert "## Recipe" in text and "## Counts" in text and '"integrity"' in text


def test_hf_license_and_one_file_by_default(runs, tmp_path):
    res = export_hf(runs["dir"] / "plain", tmp_path / "exp", license="cc-by-4.0")
    assert res.files == ["data/train-00000-of-00001.parquet"]
    assert _card_yaml(tmp_path / "exp")["license"] == "cc-by-4.0"
    proc = mmcurate_cli(
        "export", runs["dir"] / "plain", "--format", "hf", "--out", tmp_path / "cli", "--license", "mit"
    )
    assert proc.returncode == 0, proc.stderr
    assert _card_yaml(tmp_path / "cli")["license"] == "mit"
    proc = mmcurate_cli(
        "export", runs["dir"] / "plain", "--format", "jsonl", "--out", tmp_path / "j", "--license", "mit"
    )
    assert proc.returncode == 2 and "--license is for --format hf" in proc.stderr


def test_hf_and_jsonl_of_a_llava_run(tmp_path):
    """Instruction data: text-only records have no image; multi-image records carry their first image."""
    path, _ = build_llava_mix(tmp_path / "in")
    images = tmp_path / "in" / "images"
    recipe = _recipe(path, tmp_path / "run", [{"integrity": {}}], fmt="llava", options={"image_root": str(images)})
    run_local(recipe)
    samples = _samples(tmp_path / "run")
    export_hf(tmp_path / "run", tmp_path / "hf")
    ds = _load(str(tmp_path / "hf"), tmp_path=tmp_path)["train"]
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert len(ds) == len(samples)
    for rec in raw:
        s = samples[rec["key"]]
        if not s["image_paths"]:
            assert rec["image"] is None
        else:
            assert rec["image"]["bytes"] == (images / s["image_paths"][0]).read_bytes()
    res = export_jsonl(tmp_path / "run", tmp_path / "jsonl")
    df = pd.read_json(tmp_path / "jsonl" / "data.jsonl", lines=True, dtype=False)
    assert len(df) == len(samples) and df["image"].isna().sum() == sum(not s["image_paths"] for s in samples.values())
    firsts = {s["image_paths"][0] for s in samples.values() if s["image_paths"]}
    assert res.images == len(firsts) < len(df) - df["image"].isna().sum()  # one file per image, not per sample
    for key, image in zip(df["key"], df["image"]):
        if isinstance(image, str):
            assert (tmp_path / "jsonl" / image).read_bytes() == (images / samples[key]["image_paths"][0]).read_bytes()
    export_webdataset(tmp_path / "run", tmp_path / "wds")
    wds_ds = _load(str(tmp_path / "wds"), tmp_path=tmp_path)["train"]
    assert len(wds_ds) == len(samples)


# ---------------------------------------------------------------------------------------------------------
# webdataset


@pytest.mark.parametrize("name", ["split", "plain"])
def test_webdataset_loads_with_webdataset_and_datasets(runs, tmp_path, name):
    run, out = runs["dir"] / name, tmp_path / "exp"
    res = export_webdataset(run, out)
    samples = _samples(run)
    splits = _expected_splits(run)
    assert res.splits == splits and res.images == len(samples)
    # the run's shards, byte for byte (deterministic), in the layout asked for
    run_tars = sorted(str(p.relative_to(run / "shards")) for p in (run / "shards").rglob("*.tar"))
    assert sorted(res.files) == run_tars
    for rel in run_tars:
        assert (out / rel).read_bytes() == (run / "shards" / rel).read_bytes()
        assert (name == "split") == ("/" in rel)
    export_webdataset(run, tmp_path / "again")
    assert all((out / r).read_bytes() == (tmp_path / "again" / r).read_bytes() for r in run_tars)

    data_files = {s: sorted(glob.glob(str(out / (f"{s}/*.tar" if name == "split" else "*.tar")))) for s in splits}
    seen = set()
    for urls in data_files.values():
        for raw, dec in zip(
            wds.WebDataset(urls, shardshuffle=False), wds.WebDataset(urls, shardshuffle=False).decode("pil")
        ):
            key = raw["__key__"]
            ext = samples[key]["image_ext"]
            assert raw[ext] == runs["originals"][key]  # under the right extension, the original bytes
            assert isinstance(dec[ext], PIL_Image.Image) and dec["txt"] == samples[key]["caption"]
            assert dec["json"]["mmcurate"]["width"] == samples[key]["width"]
            seen.add(key)
    assert seen == set(samples)

    card = _card_yaml(out)
    features = datasets.Features._from_yaml_list(card["dataset_info"]["features"])
    exts = sorted({s["image_ext"] for s in samples.values()})
    assert exts == ["jpg", "png", "webp"] and all(isinstance(features[e], datasets.Image) for e in exts)
    assert {s["name"]: s["num_examples"] for s in card["dataset_info"]["splits"]} == splits
    for ds_dict in (
        _load(str(out), tmp_path=tmp_path),  # the card's configs and features
        _load("webdataset", data_files=data_files, features=features, tmp_path=tmp_path),
    ):
        assert ds_dict.num_rows == splits
        got = set()
        for ds in ds_dict.values():
            for rec in ds:
                ext = samples[rec["__key__"]]["image_ext"]
                assert rec[ext] is not None and all(rec[e] is None for e in exts if e != ext)
                rec[ext].load()
                assert rec["json"]["extra"] == json.loads(samples[rec["__key__"]]["meta"]).get("extra")
                got.add(rec["__key__"])
        assert got == set(samples)


def test_webdataset_without_features_is_what_the_card_warns_of(runs, tmp_path):
    """datasets' webdataset builder without features infers them from the first 5 samples: it refuses shards whose
    first samples differ in extension, and otherwise gives a later sample of another extension a null image (the
    behaviour the card documents and its features avoid)."""
    out = tmp_path / "exp"
    export_webdataset(runs["dir"] / "plain", out)
    assert "silently" in (out / "README.md").read_text()
    tars = sorted(glob.glob(str(out / "*.tar")))
    with pytest.raises(ValueError, match="same prefix or the same types"):  # jpg, png, webp, jpg, ...
        _load("webdataset", data_files={"train": tars}, tmp_path=tmp_path)
    # a JPEG-only first tar: the PNG and WebP images of the later ones are lost without a word
    first = tmp_path / "jpg_first.tar"
    fx.write_tar(first, [(f"a{i}.{e}", d) for i in range(5) for e, d in (("jpg", fx.image_bytes(i)), ("txt", b"x"))])
    ds = _load("webdataset", data_files={"train": [str(first), *tars]}, tmp_path=tmp_path)["train"]
    assert "png" not in ds.column_names and len(ds) == 5 + 36
    assert sum(r["jpg"] is not None for r in ds) == 5 + 12


def test_webdataset_metadata_that_differ_in_type(runs, tmp_path):
    out = tmp_path / "exp"
    export_webdataset(runs["dir"] / "folder", out)
    card = _card_yaml(out)
    assert "json" not in [f["name"] for f in card["dataset_info"]["features"]]
    assert "metadata differ in type" in (out / "README.md").read_text()
    ds = _load(str(out), tmp_path=tmp_path)["train"]
    assert len(ds) == 6 and all(any(r[e] is not None for e in FMTS.values() if e in r) for r in ds)


# ---------------------------------------------------------------------------------------------------------
# the export directory, --link, the command


@pytest.mark.parametrize("fmt", NEW_FORMATS)
def test_refusals_and_overwrite(runs, tmp_path, fmt):
    run = runs["dir"] / "split"
    export = EXPORT[fmt]
    for out, what in [
        (run, "is the run directory"),
        (run / "x", "lies inside the run directory"),
        (runs["dir"], "contains the run directory"),
        (runs["dir"] / "in" / "x", "lies inside the input"),
    ]:
        with pytest.raises(ValueError, match=what):
            export(run, out)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(ValueError, match="not empty and holds no earlier export"):
        export(run, out)
    (out / "mine.txt").unlink()
    export(run, out)
    (out / "notes.txt").write_text("kept")
    with pytest.raises(ValueError, match="pass --overwrite"):
        export(runs["dir"] / "plain", out)
    export(runs["dir"] / "plain", out, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    expected = {
        "jsonl": ["data.jsonl", "images"],
        "hf": ["data"],
        "webdataset": sorted(p.name for p in (runs["dir"] / "plain" / "shards").iterdir()),
    }[fmt]
    assert names == sorted([*expected, "README.md", MARKER, "notes.txt"])
    assert json.loads((out / MARKER).read_text())["format"] == fmt
    assert not list(tmp_path.glob(".exp.export-*"))
    # one format over another: the earlier export's entries go, nothing else
    other = NEW_FORMATS[(NEW_FORMATS.index(fmt) + 1) % 3]
    EXPORT[other](run, out, overwrite=True)
    assert "notes.txt" in {p.name for p in out.iterdir()}
    assert json.loads((out / MARKER).read_text())["format"] == other


def test_a_run_that_kept_nothing(runs, tmp_path):
    run_local(_recipe(runs["dir"] / "in", tmp_path / "run", [{"caption_filter": {"min_words": 50}}]))
    for fmt in NEW_FORMATS:
        res = EXPORT[fmt](tmp_path / "run", tmp_path / fmt)
        assert res.splits == {"train": 0} and res.images == 0
        card = _card_yaml(tmp_path / fmt)
        assert card["configs"][0]["data_files"][0]["split"] == "train"


def test_overwrite_never_replaces_a_file_the_earlier_export_did_not_write(runs, tmp_path):
    out = tmp_path / "exp"
    export_hf(runs["dir"] / "plain", out)
    (out / "data.jsonl").write_text("the user's own")
    with pytest.raises(ValueError, match="data.jsonl is not the earlier export's"):
        export_jsonl(runs["dir"] / "plain", out, overwrite=True)
    assert (out / "data.jsonl").read_text() == "the user's own" and (out / "data").is_dir()
    assert json.loads((out / MARKER).read_text())["format"] == "hf"


def test_link(runs, tmp_path):
    folder_run, folder_in = runs["dir"] / "folder", runs["folder_in"]
    res = export_jsonl(folder_run, tmp_path / "jsonl", link=True)
    assert res.linked and res.images == 6
    for line in (tmp_path / "jsonl" / "data.jsonl").read_text().splitlines():
        rec = json.loads(line)
        p = tmp_path / "jsonl" / rec["image"]
        assert p.is_symlink() and os.readlink(p) == os.path.realpath(folder_in / os.path.basename(rec["image"]))
    with pytest.raises(ValueError, match="export without --link"):
        export_jsonl(runs["dir"] / "plain", tmp_path / "jsonl2", link=True)  # tar input: no image files
    assert not (tmp_path / "jsonl2").exists()
    with pytest.raises(ValueError, match="--link does not apply to --format hf"):
        export_hf(folder_run, tmp_path / "hf", link=True)
    run = runs["dir"] / "split"
    res = export_webdataset(run, tmp_path / "wds", link=True)
    for rel in res.files:
        p = tmp_path / "wds" / rel
        assert p.is_symlink() and os.readlink(p) == os.path.realpath(run / "shards" / rel)
    urls = sorted(str(tmp_path / "wds" / f) for f in res.files)
    assert sum(1 for _ in wds.WebDataset(urls, shardshuffle=False)) == len(_samples(run))


def test_cli_every_format(runs, tmp_path):
    assert set(NEW_FORMATS) < set(FORMATS)
    for fmt in NEW_FORMATS:
        proc = mmcurate_cli("export", runs["dir"] / "split", "--format", fmt, "--out", tmp_path / fmt)
        assert proc.returncode == 0, proc.stderr
        assert f"as {fmt}" in proc.stdout and "README.md" in proc.stdout
    proc = mmcurate_cli("export", runs["dir"] / "plain", "--format", "hf", "--link", "--out", tmp_path / "x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--link" in proc.stderr
    assert "exported" in export_run(runs["dir"] / "plain", tmp_path / "y", format="jsonl")


def test_images_read_back_from_the_shards_are_the_inputs(runs):
    """The fixture itself: every format above compares against these bytes."""
    samples = _samples(runs["dir"] / "plain")
    assert {s["image_ext"] for s in samples.values()} == {"jpg", "png", "webp"}
    for key in samples:
        img = PIL_Image.open(io.BytesIO(runs["originals"][key]))
        assert img.format in FMTS
