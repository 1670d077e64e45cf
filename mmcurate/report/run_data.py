"""Reads what the report needs from an mmcurate output directory, and nothing more.

Only the columns the report uses are read (samples.parquet can be large: its captions are the biggest
part), and optional parts may be missing: a run without dedup has no duplicates.parquet, a run that
collected no thumbnails has no thumbs.parquet. Only manifest.json is required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "RunData",
    "load_run",
    "read_samples",
    "read_sample_rows",
    "samples_columns",
    "read_samples_spread",
    "MANIFEST",
    "SAMPLES",
    "REJECTS",
    "DUPLICATES",
    "THUMBS",
]

MANIFEST = "manifest.json"
SAMPLES = "samples.parquet"
REJECTS = "rejects.parquet"
DUPLICATES = "duplicates.parquet"
THUMBS = "thumbs.parquet"

_SAMPLE_COLUMNS = ("width", "height", "caption")
_REJECT_COLUMNS = ("key", "stage", "reason", "detail")
_DUPLICATE_COLUMNS = ("key", "duplicate_of", "kind", "distance")


@dataclass
class RunData:
    out_dir: Path
    manifest: dict
    samples: pa.Table | None = None  # width, height, caption of kept samples (those present)
    rejects: pa.Table | None = None  # key, stage, reason, detail
    duplicates: pa.Table | None = None  # key, duplicate_of, kind, distance
    thumbs: pa.Table | None = None  # THUMBS_SCHEMA
    missing: list[str] = field(default_factory=list)  # optional files that were not there
    # The run directory as seen from where the report is written, for its links to the run's tables: "" beside
    # them (the default place), else a relative URL prefix ending in "/" (write_report sets it).
    files_href: str = ""

    @property
    def run(self) -> dict:
        return _dict(self.manifest.get("run"))

    @property
    def counts(self) -> dict:
        return _dict(self.manifest.get("counts"))

    @property
    def stages(self) -> list[dict]:
        return [s for s in (self.manifest.get("stages") or []) if isinstance(s, dict)]

    def stages_with_stats(self, name: str) -> list[dict]:
        """The manifest entries of the stages called `name` that report ``stats`` (a dict; global stages
        do), in recipe order."""
        return [s for s in self.stages if s.get("name") == name and isinstance(s.get("stats"), dict)]

    def recipe_params(self, name: str) -> dict | None:
        """The parameters the recipe (as the manifest records it) gave the first stage called `name` ({} when it
        gave none), or None when the recipe has no such stage."""
        recipe = self.run.get("recipe")
        steps = recipe.get("stages") if isinstance(recipe, dict) else None
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and name in step:
                return step[name] if isinstance(step[name], dict) else {}
        return None


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _read(path: Path, wanted: tuple[str, ...], missing: list[str]) -> pa.Table | None:
    if not path.exists():
        missing.append(path.name)
        return None
    names = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in wanted if c in names])


def samples_columns(data: RunData) -> list[str]:
    """The column names of samples.parquet ([] without the file): what a section checks before it reads."""
    path = data.out_dir / SAMPLES
    return pq.read_schema(path).names if path.exists() else []


def read_samples(data: RunData, columns) -> pa.Table | None:
    """The `columns` of samples.parquet that it has (a section reads its own columns, and only them), or None
    without the file or without any of them."""
    path = data.out_dir / SAMPLES
    if not path.exists():
        return None
    names = set(pq.read_schema(path).names)
    present = [c for c in dict.fromkeys(columns) if c in names]
    return pq.read_table(path, columns=present) if present else None


def read_sample_rows(data: RunData, keys, columns) -> dict[str, dict]:
    """key -> {column: value} of samples.parquet for the given keys (a gallery's few), filtered while reading:
    wide columns (captions) are read only for them, not for the whole run."""
    path = data.out_dir / SAMPLES
    keys = sorted({k for k in keys if isinstance(k, str)})
    if not path.exists() or not keys:
        return {}
    names = set(pq.read_schema(path).names)
    if "key" not in names:
        return {}
    present = [c for c in dict.fromkeys(columns) if c in names and c != "key"]
    table = pq.read_table(path, columns=["key", *present], filters=[("key", "in", keys)])
    return {row["key"]: row for row in table.to_pylist()}


#: read_samples_spread decodes at most this many times the rows it returns (plus one row group).
SPREAD_DECODE_FACTOR = 4


def read_samples_spread(data: RunData, columns, max_rows: int) -> pa.Table | None:
    """At most `max_rows` rows of samples.parquet's `columns`, spread over the file and deterministic: whole row
    groups evenly spaced through the file (a row group is a run of consecutive samples), about
    SPREAD_DECODE_FACTOR x max_rows rows of them, then every k-th of those rows. Wide columns (embeddings:
    1 kB a sample at d = 512) are decoded only for the chosen row groups, whatever the run's size."""
    path = data.out_dir / SAMPLES
    if not path.exists() or max_rows <= 0:
        return None
    f = pq.ParquetFile(path)
    present = [c for c in dict.fromkeys(columns) if c in f.schema_arrow.names]
    if not present or f.metadata.num_rows == 0:
        return None
    sizes = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    budget = SPREAD_DECODE_FACTOR * max_rows
    if sum(sizes) <= budget:
        groups = list(range(len(sizes)))
    else:
        m = max(1, min(len(sizes), -(-budget * len(sizes) // sum(sizes))))
        groups = sorted({round(i * (len(sizes) - 1) / max(1, m - 1)) for i in range(m)})
    table = f.read_row_groups(groups, columns=present)
    step = max(1, -(-table.num_rows // max_rows))
    return table.take(pa.array(range(0, table.num_rows, step)))


def load_run(out_dir) -> RunData:
    """Load an output directory. Raises FileNotFoundError when manifest.json is absent and ValueError
    when it is not a JSON object."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: the report needs the manifest of a finished run "
            f"(is {out_dir} an mmcurate output directory?)"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}")
    missing: list[str] = []
    data = RunData(out_dir, manifest, missing=missing)
    data.samples = _read(out_dir / SAMPLES, _SAMPLE_COLUMNS, missing)
    data.rejects = _read(out_dir / REJECTS, _REJECT_COLUMNS, missing)
    data.duplicates = _read(out_dir / DUPLICATES, _DUPLICATE_COLUMNS, missing)
    thumbs = out_dir / THUMBS
    data.thumbs = pq.read_table(thumbs) if thumbs.exists() else None
    if data.thumbs is None:
        missing.append(THUMBS)
    return data
