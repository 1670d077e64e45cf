"""What every export format shares (mmcurate/export/: llava, jsonl, hf, webdataset), written once.

- The run: `load_run` reads a finished run's manifest.json and samples.parquet (`Run`), with the columns a format
  needs; `Run.rows` yields the kept samples in the run's order with their split (None without splits);
  `Run.scalar_columns` are the per-sample figures the steps added (hashes, scores, sizes: never vectors or
  conversation lists), the same rule the write phase uses for the shards' JSON.
- The export directory: `check_export_dir` (apart from the run and its input; new, empty, or an earlier export
  with overwrite) and `write_export`, which writes into a temporary sibling directory, adds the marker file
  (`MARKER`: what this export wrote, so that an overwrite deletes nothing else) and moves it into place; a failed
  export leaves nothing behind.
- The kept images' original bytes from the run's output shards (`ShardImages`), never re-encoded.
- The dataset card's shared parts (`exported_by`, `run_sections`: sources, recipe, counts and reject reasons) and
  its tables (`table`, `num`).

Errors are ValueError / FileNotFoundError with one line that names the fix (the command prints it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from mmcurate.io.keys import key_to_member_base
from mmcurate.io.paths import is_inside

MARKER = ".mmcurate_export.json"
IMAGES = "images"
CARD = "README.md"
#: Columns of samples.parquet that are no per-sample figure of a step: the reader's, the write phase's, the split.
NOT_FIGURES = frozenset({"key", "source", "image", "image_ext", "caption", "meta", "split", "shard"})
#: A split name as the Hugging Face hub and `datasets` accept it.
SPLIT_NAME_RE = re.compile(r"^\w+(\.\w+)*$")

T = TypeVar("T")


@dataclass
class Exported:
    """What an export of the jsonl, hf or webdataset format wrote (export_run prints it in one line)."""

    out: Path
    format: str
    splits: dict[str, int]  # split -> samples, in the run's order
    images: int  # image files or image cells written (or linked)
    files: list[str]  # the data files, relative to out
    linked: bool = False

    def summary(self) -> str:
        n = sum(self.splits.values())
        per = ", ".join(f"{s} {k:,}" for s, k in self.splits.items())
        return (
            f"exported {n:,} samples ({per}) as {self.format}: {len(self.files):,} data files, {self.images:,} "
            f"images{' (linked)' if self.linked else ''}, to {self.out}/ (README.md: the dataset card)"
        )


def fail(msg: str):
    raise ValueError(msg)


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """A finished run's outputs as an export reads them."""

    dir: Path
    manifest: dict
    samples: Path  # samples.parquet
    schema: pa.Schema

    @property
    def has_splits(self) -> bool:
        return "split" in self.schema.names

    def stage(self, name: str) -> dict | None:
        """The manifest's entry of the recipe step `name`, or None when the run did not have it."""
        return next((s for s in self.manifest.get("stages", []) if s.get("name") == name), None)

    def input_info(self) -> tuple[str | None, str | None, dict]:
        """(the input's path, its image_root, the reader options) from the manifest's recipe."""
        recipe = (self.manifest.get("run") or {}).get("recipe") or {}
        inp = recipe.get("input") or {}
        options = inp.get("options") or {}
        path = inp.get("path") if isinstance(inp.get("path"), str) else None
        root = options.get("image_root") or (os.path.dirname(path) or "." if path else None)
        return path, root, options

    def input_paths(self) -> list[str]:
        """Every path the input reads from (the recipe's path or paths, and an image_root): an export never goes
        inside them."""
        recipe = (self.manifest.get("run") or {}).get("recipe") or {}
        inp = recipe.get("input") or {}
        raw = inp.get("path")
        paths = [p for p in (raw if isinstance(raw, list) else [raw]) if isinstance(p, str) and p]
        root = (inp.get("options") or {}).get("image_root")
        if isinstance(root, str) and root:
            paths.append(root)
        if isinstance(raw, str) and raw and not root and raw.endswith((".json", ".jsonl")):
            paths.append(os.path.dirname(raw) or ".")  # a LLaVA JSON's images lie next to it by default
        return paths

    def scalar_columns(self) -> list[str]:
        """The per-sample figures of the steps (module docstring), in samples.parquet's order."""
        out = []
        for f in self.schema:
            t = f.type
            if f.name in NOT_FIGURES or f.name.startswith("_"):
                continue
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
                out.append(f.name)
            elif pa.types.is_string(t) or pa.types.is_large_string(t):
                out.append(f.name)
        return out

    def split_counts(self) -> dict[str | None, int]:
        """Kept samples per split (None: the run assigned none), in first-seen order."""
        if not self.has_splits:
            return {None: pq.ParquetFile(self.samples).metadata.num_rows}
        counts: dict[str | None, int] = {}
        for v in pq.read_table(self.samples, columns=["split"]).column("split").to_pylist():
            counts[v] = counts.get(v, 0) + 1
        return counts

    def rows(self, columns: list[str], batch_size: int = 512) -> Iterator[tuple[str | None, dict]]:
        """(split, row) per kept sample in the run's order; split None when the run assigned none. A sample the
        split step left without a split is an error (it would be lost)."""
        cols = list(dict.fromkeys(columns + (["split"] if self.has_splits else [])))
        for batch in pq.ParquetFile(self.samples).iter_batches(batch_size=batch_size, columns=cols):
            for r in batch.to_pylist():
                split = r["split"] if self.has_splits else None
                if self.has_splits and not split:
                    fail(f"sample {r.get('key')!r} of {self.samples} has no split; rerun the split step")
                yield split, r


def load_run(run_dir, need: tuple = (), why: str = "") -> Run:
    """The finished run in `run_dir`; `need`: columns the format requires, `why` the fix when they are missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    manifest_path, samples = run_dir / "manifest.json", run_dir / "samples.parquet"
    if not manifest_path.is_file() or not samples.is_file():
        fail(f"{run_dir} holds no manifest.json and samples.parquet: give the output directory of a finished run")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{manifest_path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        fail(f"{manifest_path} is not a run's manifest (not a JSON object)")
    schema = pq.read_schema(samples)
    missing = [c for c in need if c not in schema.names]
    if missing:
        fail(f"{samples} lacks the column(s) {', '.join(missing)}{': ' + why if why else ''}")
    if "split" in schema.names:
        names = {s for s in pq.read_table(samples, columns=["split"]).column("split").to_pylist() if s}
        bad = sorted(s for s in names if not SPLIT_NAME_RE.match(s))
        if bad:
            fail(f"{samples}: split name(s) {', '.join(map(repr, bad))} are not word characters; rename the splits")
    return Run(run_dir, manifest, samples, schema)


def split_label(split: str | None, default: str) -> str:
    """The name a split is written under: its own, or `default` for a run without splits."""
    return split if split is not None else default


# ---------------------------------------------------------------------------------------------------------
# the export directory


def _relation(a: str, b: str) -> str | None:
    """How realpath a stands to realpath b: "is", "lies inside", "contains", or None."""
    if a == b:
        return "is"
    if is_inside(a, b):
        return "lies inside"
    if is_inside(b, a):
        return "contains"
    return None


def check_export_dir(out: Path, run_dir: Path, input_paths: list[str], overwrite: bool) -> None:
    """The export directory: apart from the run and its input, and new, empty or (overwrite) an earlier export."""
    o = os.path.realpath(out)
    how = _relation(o, os.path.realpath(run_dir))
    if how:
        fail(f"export directory {out} {how} the run directory {run_dir}; choose a directory outside the run")
    for p in input_paths:
        if p and os.path.exists(p):
            how = _relation(o, os.path.realpath(p))
            if how:
                fail(
                    f"export directory {out} {how} the input {p}; choose a directory outside the input "
                    f"(mmcurate never writes into its input)"
                )
    if out.exists() and not out.is_dir():
        fail(f"export directory {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            fail(f"export directory {out} is not empty and holds no earlier export; choose a new or empty directory")
        if not overwrite:
            fail(f"export directory {out} holds an earlier export; pass --overwrite to replace it")


def write_export(
    run: Run, out, fmt: str, overwrite: bool, write: Callable[[Path], tuple[T, list[str]]], inputs=None
) -> T:
    """Check `out` (check_export_dir, against the run's input or `inputs`), call `write(tmp)` on a new temporary
    sibling directory (it returns its result and the top-level entries it wrote), add the marker and move the
    export into place (publish). Any failure removes the temporary directory and leaves `out` as it was."""
    out = Path(out)
    check_export_dir(out, run.dir, run.input_paths() if inputs is None else inputs, overwrite)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        result, entries = write(tmp)
        marker = {"run": str(run.dir), "format": fmt, "entries": sorted(set(entries))}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def publish(tmp: Path, out: Path) -> None:
    """Move the finished export into place: a rename when `out` is new; else the earlier export's own entries
    (its marker's list) are deleted and the new ones moved in."""
    if not out.exists():
        os.rename(tmp, out)
        return
    earlier: list = []
    marker = out / MARKER
    if marker.is_file():
        try:
            earlier = json.loads(marker.read_text()).get("entries", [])
        except (ValueError, AttributeError):
            earlier = []
    earlier = [n for n in earlier if isinstance(n, str) and "/" not in n and n not in ("", ".", "..", MARKER)]
    for p in tmp.iterdir():
        if p.name not in earlier and p.name != MARKER and ((out / p.name).exists() or (out / p.name).is_symlink()):
            fail(f"export directory {out}: {p.name} is not the earlier export's; move it away and export again")
    for name in [*earlier, MARKER]:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for p in sorted(tmp.iterdir()):
        os.rename(p, out / p.name)
    tmp.rmdir()


# ---------------------------------------------------------------------------------------------------------
# images


class ShardImages:
    """The first image of each kept sample, from the run's output shards (original bytes, as written). Keeps a few
    shards open (a run with splits interleaves their shards)."""

    def __init__(self, run_dir: Path, keep_open: int = 8):
        self.shards = Path(run_dir) / "shards"
        self.keep_open = keep_open
        self.open: OrderedDict[str, tarfile.TarFile] = OrderedDict()

    def get(self, key: str, shard: str | None, image_ext: str | None) -> bytes | None:
        if not shard or not image_ext:
            return None
        tar = self.open.get(shard)
        if tar is None:
            if len(self.open) >= self.keep_open:
                self.open.popitem(last=False)[1].close()
            path = self.shards / shard
            if not path.is_file():
                fail(f"output shard {path} of sample {key!r} is missing; the run directory is incomplete")
            tar = self.open[shard] = tarfile.open(path, "r:")
        else:
            self.open.move_to_end(shard)
        try:
            member = tar.extractfile(f"{key_to_member_base(key)}.{image_ext}")
        except KeyError:
            return None
        return member.read() if member is not None else None

    def require(self, key: str, shard: str | None, image_ext: str | None) -> bytes:
        """The image, or a ValueError when its shard lacks it."""
        data = self.get(key, shard, image_ext)
        if data is None:
            fail(f"sample {key!r}: its image is not in output shard {self.shards / str(shard)}; the run is incomplete")
        return data

    def close(self):
        for t in self.open.values():
            t.close()
        self.open.clear()


class UniqueNames:
    """File names that stay unique within an export directory: a name already taken gets `~1`, `~2`, ... before
    its extension (keys are unique within a shard, not across a run)."""

    def __init__(self):
        self.taken: set[str] = set()

    def name(self, folder: str, key: str, ext: str) -> str:
        base = f"{folder}/{key_to_member_base(key)}" if folder else key_to_member_base(key)
        name, n = f"{base}.{ext}", 0
        while name in self.taken:
            n += 1
            name = f"{base}~{n}.{ext}"
        self.taken.add(name)
        return name


def json_safe(v):
    """A value for JSON: NaN and infinities (no JSON) become None, bytes never reach here."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---------------------------------------------------------------------------------------------------------
# the dataset card


def table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(v, fmt: str = ",") -> str:
    """A figure of the manifest for a table cell: numbers formatted, anything else as text, None as "-"."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return format(v, fmt)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def exported_by(run_dir, manifest: dict, fmt: str) -> str:
    meta = manifest.get("run") or {}
    return (
        f"Exported by `mmcurate export --format {fmt}` from the run in `{run_dir}` (mmcurate "
        f"{meta.get('mmcurate_version', '?')}, finished {meta.get('finished', '?')}).\n"
    )


def run_sections(m: dict) -> list[str]:
    """The card's sections every format has, from the run's manifest `m`: Sources, Recipe, Counts (with the rejects
    by step and reason)."""
    recipe = (m.get("run") or {}).get("recipe") or {}
    inp = recipe.get("input") or {}
    counts = m.get("counts") or {}
    return [
        "## Sources\n",
        f"- input: `{inp.get('path')}` (format {inp.get('format', 'auto')}"
        + (f", options {json.dumps(inp.get('options'), sort_keys=True)}" if inp.get("options") else "")
        + ")\n"
        + "\n".join(
            f"- `{i.get('shard')}`: {i.get('samples', 0):,} samples"
            + (f", sha256 `{i['sha256']}`" if i.get("sha256") else "")
            for i in m.get("inputs", [])
        )
        + "\n",
        "## Recipe\n",
        "```json\n" + json.dumps(recipe.get("stages", []), indent=1, ensure_ascii=False) + "\n```\n",
        "## Counts\n",
        table(
            ("", "samples"),
            [
                ("read", f"{counts.get('read', 0):,}"),
                ("kept", f"{counts.get('kept', 0):,}"),
                ("rejected", f"{counts.get('rejected', 0):,}"),
            ],
        )
        + "\n",
        "Rejected, by step and reason:\n\n"
        + table(
            ("step", "reason", "samples"),
            [
                (s.get("name"), reason, f"{n:,}")
                for s in m.get("stages", [])
                for reason, n in sorted((s.get("reasons") or {}).items(), key=lambda kv: -kv[1])
            ]
            or [("-", "-", 0)],
        )
        + "\n",
    ]


def front_matter(data: dict) -> str:
    """A dataset card's YAML front matter (the Hugging Face hub's metadata block)."""
    import yaml

    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def hub_configs(data_files: dict[str, str]) -> list[dict]:
    """The card's `configs`: one default config whose data_files name each split's files (split -> glob)."""
    return [
        {
            "config_name": "default",
            "data_files": [{"split": s, "path": p} for s, p in data_files.items()],
        }
    ]


def splits_section(run: Run, exported: Exported, unit: str = "samples") -> str:
    """The card's Splits section: samples per split, and what a run without splits became."""
    rows = [(s, f"{n:,}") for s, n in exported.splits.items()]
    text = "## Splits\n\n" + table(("split", unit), rows) + "\n"
    if not run.has_splits:
        text += (
            f"\nThe run assigned no splits (add `split` to the recipe): every kept sample is in the one split "
            f"`{next(iter(exported.splits), 'train')}`.\n"
        )
    return text


def join_card(parts: list[str]) -> str:
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)
