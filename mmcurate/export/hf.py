"""`mmcurate export RUN_DIR --format hf --out DIR`: a finished run as a Hugging Face dataset in the hub's layout.

What DIR holds:
- `DIR/data/<split>-NNNNN-of-MMMMM.parquet`: the kept samples of each split in the run's order (a run without
  splits is one `train` split), several files when a split is large (each at most about `max_file_bytes`), row
  groups of at most `row_group_rows` rows (`datasets`' own choice for image data) and `row_group_bytes`. Columns:
  `image` (the `datasets` Image feature: a struct {bytes, path} whose bytes are the original image bytes from the
  run's output shards, never re-encoded, and path its file name `<key>.<ext>`; null for a sample without image),
  `key`, `caption`, every scalar per-sample figure of the steps (hashes, scores, sizes; never vectors), and `meta`
  (the sample's metadata as JSON text). The schema carries the `huggingface` metadata `Dataset.to_parquet` writes,
  so `datasets` (and the hub's viewer) read `image` as an Image, not a struct.
- `DIR/README.md`: the dataset card: YAML front matter (the hub's metadata: `configs` with each split's
  data_files, `dataset_info` with the features and each split's num_examples and num_bytes, `license`: unknown
  unless given), then the files, how to load them, the splits, sources, recipe, counts and reject reasons.
- `DIR/.mmcurate_export.json`: the marker (export/common.py).

`datasets.load_dataset(DIR)` and `datasets.load_dataset("parquet", data_files={split: "DIR/data/<split>-*"})`
both load it. Multi-image records (LLaVA) carry their first image, the one the run's shards hold; `meta` names all
of them. `--link` does not apply: Parquet holds the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmcurate.export import hf_features as hff
from mmcurate.export.common import (
    CARD,
    Exported,
    Run,
    ShardImages,
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
from mmcurate.io.keys import key_to_member_base

DATA = "data"
MAX_FILE_BYTES = 500 << 20  # the hub's usual Parquet file size
ROW_GROUP_ROWS = 100  # datasets' PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS
ROW_GROUP_BYTES = 64 << 20
DEFAULT_SPLIT = "train"


def columns_of(run: Run) -> list[tuple[str, object]]:
    """(name, Arrow type or hff.IMAGE) of each column the Parquet files hold, in order."""
    figures = [(c, run.schema.field(c).type) for c in run.scalar_columns()]
    return [
        ("image", hff.IMAGE),
        ("key", pa.string()),
        ("caption", pa.string()),
        *[(c, t) for c, t in figures if c not in ("image", "key", "caption", "meta") and hff.supported(t)],
        ("meta", pa.string()),
    ]


class _SplitParquet:
    """One split's Parquet files: row groups bounded by rows and bytes, a new file past max_file_bytes; files get
    their final `-NNNNN-of-MMMMM` names once the split is complete."""

    def __init__(self, tmp: Path, split: str, schema: pa.Schema, limits: tuple[int, int, int]):
        self.tmp, self.split, self.schema = tmp, split, schema
        self.max_file, self.group_rows, self.group_bytes = limits
        self.group_bytes = min(self.group_bytes, self.max_file)  # a file holds whole row groups
        self.rows: list[dict] = []
        self.rows_bytes = 0
        self.writer: pq.ParquetWriter | None = None
        self.file_bytes = 0
        self.parts: list[Path] = []
        self.num_examples = 0
        self.num_bytes = 0  # Arrow bytes, as datasets counts a split's num_bytes

    def add(self, row: dict, size: int) -> None:
        if self.rows and self.rows_bytes + size > self.group_bytes:
            self._flush()  # a row group exceeds the bound only when one row does
        self.rows.append(row)
        self.rows_bytes += size
        if len(self.rows) >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        if self.writer is not None and self.file_bytes + self.rows_bytes > self.max_file and self.file_bytes:
            self.writer.close()
            self.writer = None
        if self.writer is None:
            part = self.tmp / DATA / f".{self.split}-part{len(self.parts):05d}.parquet"
            self.parts.append(part)
            self.writer = pq.ParquetWriter(part, self.schema)
            self.file_bytes = 0
        t = pa.Table.from_pylist(self.rows, schema=self.schema)
        self.writer.write_table(t, row_group_size=len(self.rows))
        self.num_examples += t.num_rows
        self.num_bytes += t.nbytes
        self.file_bytes += self.rows_bytes
        self.rows, self.rows_bytes = [], 0

    def close(self) -> list[str]:
        """Finish the split; its files' names relative to DIR."""
        self._flush()
        if not self.parts:  # an empty split still has its (empty) file
            self.parts.append(self.tmp / DATA / f".{self.split}-part00000.parquet")
            self.writer = pq.ParquetWriter(self.parts[0], self.schema)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        names = []
        for i, part in enumerate(self.parts):
            name = f"{DATA}/{self.split}-{i:05d}-of-{len(self.parts):05d}.parquet"
            os.rename(part, self.tmp / name)
            names.append(name)
        return names


def export_hf(
    run_dir,
    out,
    *,
    link: bool = False,
    overwrite: bool = False,
    license: str | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    row_group_rows: int = ROW_GROUP_ROWS,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> Exported:
    """Export a finished run (see the module docstring)."""
    if link:
        fail("--link does not apply to --format hf (Parquet holds the image bytes); export without --link")
    if min(max_file_bytes, row_group_rows, row_group_bytes) < 1:
        fail("max_file_bytes, row_group_rows and row_group_bytes must be positive")
    run = load_run(run_dir, need=("key",))
    out = Path(out)
    limits = (max_file_bytes, row_group_rows, row_group_bytes)
    return write_export(run, out, "hf", overwrite, lambda tmp: _write(run, out, tmp, limits, license))


def _write(run: Run, out: Path, tmp: Path, limits, license) -> tuple[Exported, list[str]]:
    columns = columns_of(run)
    schema = pa.schema([pa.field(n, hff.storage_type(t)) for n, t in columns], metadata=hff.schema_metadata(columns))
    figures = [n for n, _ in columns if n not in ("image", "key", "caption", "meta")]
    read = ["key", "caption", "meta", "shard", "image_ext"]
    (tmp / DATA).mkdir()
    writers: dict[str, _SplitParquet] = {}
    images = ShardImages(run.dir)
    n_images = 0
    try:
        for split, r in run.rows([c for c in read if c in run.schema.names] + figures):
            label = split_label(split, DEFAULT_SPLIT)
            w = writers.get(label)
            if w is None:
                w = writers[label] = _SplitParquet(tmp, label, schema, limits)
            ext = r.get("image_ext")
            data = images.require(r["key"], r.get("shard"), ext) if ext and r.get("shard") else None
            n_images += data is not None
            row = {
                "image": {"bytes": data, "path": f"{key_to_member_base(r['key'])}.{ext}"} if data else None,
                "key": r["key"],
                "caption": r.get("caption"),
                **{c: r.get(c) for c in figures},
                "meta": r.get("meta"),
            }
            size = len(data or b"") + sum(len(v) for v in (r.get("caption"), r.get("meta")) if isinstance(v, str))
            w.add(row, size + 8 * len(figures))
        files = {label: w.close() for label, w in writers.items()}
    finally:
        images.close()
        for w in writers.values():
            if w.writer is not None:
                w.writer.close()
    if not writers:  # nothing kept: one empty train split, so the card and the loaders still agree
        w = writers[DEFAULT_SPLIT] = _SplitParquet(tmp, DEFAULT_SPLIT, schema, limits)
        files = {DEFAULT_SPLIT: w.close()}
    exported = Exported(
        out=out,
        format="hf",
        splits={s: w.num_examples for s, w in writers.items()},
        images=n_images,
        files=[f for names in files.values() for f in names],
    )
    info = {
        "features": [hff.feature_yaml(n, t) for n, t in columns],
        "splits": [{"name": s, "num_bytes": w.num_bytes, "num_examples": w.num_examples} for s, w in writers.items()],
        "download_size": sum((tmp / f).stat().st_size for f in exported.files),
        "dataset_size": sum(w.num_bytes for w in writers.values()),
    }
    yaml_data = {
        "license": license or "unknown",
        "tags": ["mmcurate"],
        "configs": hub_configs({s: f"{DATA}/{s}-*" for s in writers}),
        "dataset_info": info,
    }
    (tmp / CARD).write_text(card(run, exported, yaml_data, figures), encoding="utf-8")
    return exported, [DATA, CARD]


def card(run: Run, exported: Exported, yaml_data: dict, figures: list[str]) -> str:
    first = next(iter(exported.splits))
    parts = [
        front_matter(yaml_data),
        "# Image-text data curated by mmcurate\n",
        exported_by(run.dir, run.manifest, "hf"),
        "## Files\n",
        "\n".join(f"- `{f}`" for f in exported.files) + "\n",
        "Parquet in the Hugging Face hub's layout. Columns: `image` (the `datasets` Image feature: the original "
        "image bytes, never re-encoded, and the file name `<key>.<ext>`), `key`, `caption`, "
        + (", ".join(f"`{c}`" for c in figures) + " (the steps' per-sample figures), " if figures else "")
        + "`meta` (the sample's metadata as JSON text).\n",
        "## Loading\n",
        "```python\nimport datasets\n\n"
        f'ds = datasets.load_dataset("path/to/this/directory")  # every split\n'
        f'train = datasets.load_dataset("parquet", data_files={{"{first}": "data/{first}-*.parquet"}})["{first}"]\n'
        "```\n",
        splits_section(run, exported),
        *run_sections(run.manifest),
    ]
    return join_card(parts)
