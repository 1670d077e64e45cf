"""`mmcurate export RUN_DIR --format webdataset --out DIR`: a finished run as WebDataset tar shards.

What DIR holds:
- `DIR/<split>/NNNNN.tar` per split (or `DIR/NNNNN.tar` without splits): the run's output shards, which already are
  WebDataset shards: per kept sample `<key>.<ext>` (the original image bytes under the extension of its format,
  so a run of JPEG, PNG and WebP images has .jpg, .png and .webp members side by side), `<key>.txt` (the caption)
  and `<key>.json` (the sample's metadata, with the steps' per-sample figures under "mmcurate"), with
  deterministic headers (io/shard_writer.py). They are copied byte for byte, each checked against the sha256 the
  run's manifest recorded; `link=True` (`--link`): symlinks to the run's shards instead.
- `DIR/README.md`: the dataset card: YAML front matter (`configs` with each split's tars, `dataset_info` with the
  features: one Image column per image extension the shards hold, `txt`, `json` with the type of every metadata
  field, `__key__`, `__url__`, and each split's num_examples), then the files, how to load them, the splits,
  sources, recipe, counts and reject reasons. `DIR/.mmcurate_export.json`: the marker (export/common.py).

Loading. The `webdataset` library (`webdataset.WebDataset(urls).decode("pil")`) returns each sample's image under
its own extension. Hugging Face `datasets`' webdataset builder names columns by extension too, but without
declared features it infers them from the first 5 samples of the first tar: it refuses the shards when those 5
differ in extension, and otherwise silently gives every later sample whose image has another extension a null image
(and drops metadata fields those 5 lack). So the card declares the features:
`datasets.load_dataset(DIR)` reads them and returns every image (in the `jpg`, `png` or `webp` column, the others
null); with `datasets.load_dataset("webdataset", data_files=...)` pass them as `features=` (the card shows how). When
the samples' metadata differ in type (a field text in one sample and a list in another), no `json` column can hold
them: the card then leaves `json` out, `datasets` skips it and says nothing; the tars still hold it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa

from mmcurate.export import hf_features as hff
from mmcurate.export.common import (
    CARD,
    Exported,
    Run,
    exported_by,
    fail,
    front_matter,
    hub_configs,
    join_card,
    load_run,
    run_sections,
    split_label,
    splits_section,
    write_export,
)

DEFAULT_SPLIT = "train"
_BASE_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's (and datasets') key/extension split
_TEXT_EXTS = ("txt", "json")


class _Scan:
    """What the shards hold, for the card's features: samples, image extensions, the metadata's type."""

    def __init__(self):
        self.samples = 0
        self.images = 0
        self.image_exts: set[str] = set()
        self.json_type: pa.DataType | None = None
        self.json_conflict: str | None = None
        self._pending: list = []

    def tar(self, path: Path) -> tuple[int, int]:
        """(samples, bytes of their members) of one shard."""
        n, size, last = 0, 0, None
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                match = _BASE_EXT.match(m.name)
                if not match:
                    continue
                key, ext = match.groups()
                size += m.size
                if key != last:
                    n, last = n + 1, key
                if ext == "json":
                    f = tar.extractfile(m)
                    try:
                        self._pending.append(json.loads(f.read()) if f is not None else None)
                    except ValueError:
                        self._note_conflict(f"{m.name} is not JSON")
                    if len(self._pending) >= 1000:
                        self._infer()
                elif ext not in _TEXT_EXTS:
                    self.image_exts.add(ext)
                    self.images += 1
        self.samples += n
        return n, size

    def _note_conflict(self, why: str) -> None:
        self.json_conflict = self.json_conflict or why

    def _infer(self) -> None:
        batch, self._pending = self._pending, []
        if self.json_conflict or not batch:
            return
        try:
            t = pa.array(batch).type
            self.json_type = hff.unify(self.json_type, t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, ValueError) as exc:
            self._note_conflict(str(exc).splitlines()[0])

    def json_feature(self) -> pa.DataType | None:
        """The `json` column's type, or None when the metadata have none in common (json_conflict says why)."""
        self._infer()
        t = self.json_type
        if self.json_conflict is None and t is not None and not pa.types.is_struct(t):
            self._note_conflict("a sample's metadata is no JSON object")
        if self.json_conflict is None and t is not None and not hff.supported(t):
            self._note_conflict(f"no datasets feature for {t}")
        return None if self.json_conflict or t is None else t


def _copy_checked(src: Path, dst: Path, sha256: str | None) -> None:
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for chunk in iter(lambda: fi.read(1 << 20), b""):
            h.update(chunk)
            fo.write(chunk)
    if sha256 and h.hexdigest() != sha256:
        fail(f"output shard {src} differs from what the run wrote (sha256 in manifest.json); rerun the run")


def _run_shards(run: Run) -> list[tuple[str, str | None]]:
    """(path relative to shards/, sha256 or None) of every output shard, in the run's order."""
    outputs = run.manifest.get("outputs")
    listed = [
        (o["path"][len("shards/") :], o.get("sha256"))
        for o in (outputs if isinstance(outputs, list) else [])
        if isinstance(o, dict) and isinstance(o.get("path"), str) and o["path"].startswith("shards/")
    ]
    found = sorted(str(p.relative_to(run.dir / "shards")) for p in (run.dir / "shards").rglob("*.tar"))
    if listed:
        missing = [p for p, _ in listed if p not in found]
        if missing:
            fail(f"output shard {run.dir / 'shards' / missing[0]} is missing; the run directory is incomplete")
        return listed
    return [(p, None) for p in found]


def export_webdataset(run_dir, out, *, link: bool = False, overwrite: bool = False) -> Exported:
    """Export a finished run (see the module docstring)."""
    run = load_run(run_dir, need=("key",))
    out = Path(out)
    return write_export(run, out, "webdataset", overwrite, lambda tmp: _write(run, out, tmp, link))


def _write(run: Run, out: Path, tmp: Path, link: bool) -> tuple[Exported, list[str]]:
    expected = {split_label(s, DEFAULT_SPLIT): n for s, n in run.split_counts().items()}
    scan = _Scan()
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    files: list[str] = []
    for rel, sha in _run_shards(run):
        parts = rel.split("/")
        if run.has_splits and len(parts) != 2 or not run.has_splits and len(parts) != 1:
            fail(
                f"output shard shards/{rel} is not where a run {'with' if run.has_splits else 'without'} splits puts it"
            )
        label = parts[0] if run.has_splits else DEFAULT_SPLIT
        src, dst = run.dir / "shards" / rel, tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(os.path.realpath(src), dst)
        else:
            _copy_checked(src, dst, sha)
        n, size = scan.tar(dst)
        counts[label] = counts.get(label, 0) + n
        sizes[label] = sizes.get(label, 0) + size
        files.append(rel)
    for label in dict.fromkeys([*expected, *counts]):
        if counts.get(label, 0) != expected.get(label, 0):
            fail(
                f"the run's shards of split {label!r} hold {counts.get(label, 0):,} samples, samples.parquet "
                f"{expected.get(label, 0):,}; the run directory is incomplete"
            )
    counts = {s: n for s, n in expected.items() if n} or {DEFAULT_SPLIT: 0}
    exported = Exported(out=out, format="webdataset", splits=counts, images=scan.images, files=files, linked=link)
    features = features_of(scan)
    data_files = {s: (f"{s}/*.tar" if run.has_splits else "*.tar") for s in counts}
    yaml_data = {
        "license": "unknown",
        "tags": ["mmcurate", "webdataset"],
        "configs": hub_configs(data_files),
        "dataset_info": {
            "features": [hff.feature_yaml(n, t) for n, t in features],
            "splits": [{"name": s, "num_bytes": sizes.get(s, 0), "num_examples": n} for s, n in counts.items()],
        },
    }
    (tmp / CARD).write_text(card(run, exported, yaml_data, scan, data_files), encoding="utf-8")
    tops = sorted({f.split("/")[0] for f in files})
    return exported, [*tops, CARD]


def features_of(scan: _Scan) -> list[tuple[str, object]]:
    """The columns `datasets`' webdataset builder makes of the shards, with their types."""
    cols: list[tuple[str, object]] = [(ext, hff.IMAGE) for ext in sorted(scan.image_exts)]
    cols.append(("txt", pa.string()))
    json_type = scan.json_feature()
    if json_type is not None:
        cols.append(("json", json_type))
    return cols + [("__key__", pa.string()), ("__url__", pa.string())]


def card(run: Run, exported: Exported, yaml_data: dict, scan: _Scan, data_files: dict[str, str]) -> str:
    first = next(iter(data_files))
    exts = sorted(scan.image_exts)
    parts = [
        front_matter(yaml_data),
        "# Image-text data curated by mmcurate (WebDataset)\n",
        exported_by(run.dir, run.manifest, "webdataset"),
        "## Files\n",
        f"{len(exported.files):,} tar shards"
        + (" (symlinks to the run's shards)" if exported.linked else " (the run's output shards, byte for byte)")
        + ":\n\n"
        + "\n".join(f"- `{f}`" for f in exported.files)
        + "\n",
        "Per sample: `<key>.<ext>` the original image bytes under the extension of its format"
        + (f" ({', '.join(f'`.{e}`' for e in exts)})" if exts else "")
        + ", `<key>.txt` the caption, `<key>.json` the metadata (the steps' per-sample figures under `mmcurate`).\n",
        "## Loading\n",
        "```python\nimport webdataset\n\n"
        f'ds = webdataset.WebDataset(sorted(glob.glob("{data_files[first]}")), shardshuffle=False).decode("pil")\n'
        "```\n",
        "Hugging Face `datasets` names a column per extension"
        + (f" ({', '.join(f'`{e}`' for e in exts)}: each sample has its image in one, the others null)" if exts else "")
        + ". Its webdataset builder, given no features, infers them from the first 5 samples: it refuses the shards "
        "when those differ in extension, and otherwise silently loses the image of every later sample whose "
        "extension differs. The features in this card's metadata avoid both. "
        "`datasets.load_dataset(<this directory>)` reads them from this card; with data_files, pass them:\n",
        "```python\nimport datasets, yaml\n\n"
        'card = yaml.safe_load(open("README.md").read().split("---\\n")[1])\n'
        'features = datasets.Features._from_yaml_list(card["dataset_info"]["features"])\n'
        f'ds = datasets.load_dataset("webdataset", data_files={{"{first}": "{data_files[first]}"}}, '
        "features=features)\n```\n",
    ]
    if scan.json_conflict:
        parts.append(
            f"The samples' metadata differ in type ({scan.json_conflict}): no `json` column can hold them, so the "
            "features leave it out and `datasets` skips it; the tars hold it (read it with the webdataset library).\n"
        )
    parts += [splits_section(run, exported), *run_sections(run.manifest)]
    return join_card(parts)
