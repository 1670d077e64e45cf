"""`mmcurate export RUN_DIR --format jsonl --out DIR`: a finished run as JSON Lines and image files.

What DIR holds:
- `DIR/<split>.jsonl` per split (or one `DIR/data.jsonl` without splits): one JSON object per kept sample, in the
  run's order: `key`, `caption`, `image` (the image file's path relative to DIR, null for a sample without image),
  every scalar per-sample figure of the steps (hashes, scores, sizes; never vectors; NaN written as null) and
  `meta` (the sample's metadata as JSON text, so that records whose metadata differ in shape still load as one
  table). `pandas.read_json(path, lines=True)` and `datasets.load_dataset("json", data_files=...)` read it.
- `DIR/images/<split>/<key>.<ext>` (`DIR/images/<key>.<ext>` without splits): each kept image's original bytes
  from the run's output shards, never re-encoded, once per split: samples of the same image (the conversations of
  a LLaVA set) name one file; a name taken twice (keys are unique per input shard) gets `~1`, ...
  `link=True` (`--link`): symlinks to the input's image files instead (a LLaVA input's image under its image_root,
  an image folder's `<key>.<ext>`); a run that read tar or Parquet shards has no image files to link.
- `DIR/README.md`: the dataset card (YAML front matter with each split's data file, then the files, the splits,
  sources, recipe, counts and reject reasons); `DIR/.mmcurate_export.json`: the marker (export/common.py).

Multi-image records (LLaVA) get their first image, the one the run's shards hold; `meta` names all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mmcurate.export.common import (
    CARD,
    IMAGES,
    Exported,
    Run,
    ShardImages,
    UniqueNames,
    exported_by,
    fail,
    front_matter,
    hub_configs,
    join_card,
    json_safe,
    load_run,
    run_sections,
    split_label,
    splits_section,
    write_export,
)
from mmcurate.io.paths import is_inside

NO_SPLIT_FILE = "data.jsonl"
DEFAULT_SPLIT = "train"


class _Originals:
    """The input's image file of a kept sample, for --link."""

    def __init__(self, run: Run):
        path, root, options = run.input_info()
        self.llava = "image_paths" in run.schema.names
        self.root = os.path.realpath(root if self.llava else (path or "")) if (root or path) else None
        self.allow_outside = bool(options.get("allow_outside_root", False))

    def find(self, r: dict) -> str:
        key, ext = r["key"], r.get("image_ext")
        if self.root is None:
            fail(f"sample {key!r}: the run's manifest names no input to link its image to; export without --link")
        if self.llava:
            paths = r.get("image_paths") or []
            rel = paths[0] if paths else None
        else:
            rel = f"{key}.{ext}"
        real = os.path.realpath(os.path.join(self.root, rel)) if rel else None
        if real is None or not os.path.isfile(real):
            fail(
                f"sample {key!r}: no image file {os.path.join(self.root, rel or '?')} to link to (--link needs the "
                f"input's image files: a LLaVA input or an image folder; a run that read tar or Parquet shards has "
                f"none); export without --link"
            )
        if not self.allow_outside and not is_inside(real, self.root):
            fail(f"sample {key!r}: its image file resolves outside the input {self.root}; export without --link")
        size = r.get("file_size")
        if isinstance(size, int) and os.path.getsize(real) != size:
            fail(f"sample {key!r}: {real} changed since the run ({size:,} bytes then); export without --link")
        return real


def export_jsonl(run_dir, out, *, link: bool = False, overwrite: bool = False) -> Exported:
    """Export a finished run (see the module docstring)."""
    run = load_run(run_dir, need=("key",))
    out = Path(out)
    return write_export(run, out, "jsonl", overwrite, lambda tmp: _write(run, out, tmp, link))


def _write(run: Run, out: Path, tmp: Path, link: bool) -> tuple[Exported, list[str]]:
    figures = [c for c in run.scalar_columns() if c not in ("image", "key", "caption", "meta")]
    read = [c for c in ("key", "caption", "meta", "shard", "image_ext", "image_paths") if c in run.schema.names]
    if link and "file_size" not in figures and "file_size" in run.schema.names:
        read.append("file_size")
    images = ShardImages(run.dir)
    originals = _Originals(run) if link else None
    names = UniqueNames()
    written: dict[tuple, str] = {}  # (folder, ext or "link", sha256 or source) -> the file written
    handles: dict[str, object] = {}
    counts: dict[str, int] = {}
    n_images = 0
    try:
        for split, r in run.rows(read + figures):
            label = split_label(split, DEFAULT_SPLIT)
            fname = f"{split}.jsonl" if split is not None else NO_SPLIT_FILE
            f = handles.get(fname)
            if f is None:
                f = handles[fname] = open(tmp / fname, "w", encoding="utf-8")
                counts[label] = 0
            image = None
            ext = r.get("image_ext")
            if ext and r.get("shard"):
                folder = f"{IMAGES}/{split}" if split is not None else IMAGES
                if originals is not None:
                    source = originals.find(r)
                    ident = (folder, "link", source)
                else:
                    data = images.require(r["key"], r["shard"], ext)
                    ident = (folder, ext, hashlib.sha256(data).digest())
                image = written.get(ident)  # samples of one image (LLaVA conversations) share its file
                if image is None:
                    image = written[ident] = names.name(folder, r["key"], ext)
                    target = tmp / image
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if originals is not None:
                        os.symlink(source, target)
                    else:
                        target.write_bytes(data)
                    n_images += 1
            record = {
                "key": r["key"],
                "caption": r.get("caption"),
                "image": image,
                **{c: json_safe(r.get(c)) for c in figures},
                "meta": r.get("meta"),
            }
            f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
            counts[label] += 1
    finally:
        images.close()
        for f in handles.values():
            f.close()
    if not handles:  # nothing kept: an empty file, so the card and the loaders still agree
        (tmp / NO_SPLIT_FILE).touch()
        handles[NO_SPLIT_FILE] = None
        counts[DEFAULT_SPLIT] = 0
    files = list(handles)
    exported = Exported(out=out, format="jsonl", splits=counts, images=n_images, files=files, linked=link)
    data_files = dict(zip(counts, files))
    (tmp / CARD).write_text(card(run, exported, data_files, figures), encoding="utf-8")
    return exported, [*files, CARD] + ([IMAGES] if n_images else [])


def card(run: Run, exported: Exported, data_files: dict[str, str], figures: list[str]) -> str:
    first, first_file = next(iter(data_files.items()))
    parts = [
        front_matter({"license": "unknown", "tags": ["mmcurate"], "configs": hub_configs(data_files)}),
        "# Image-text data curated by mmcurate\n",
        exported_by(run.dir, run.manifest, "jsonl"),
        "## Files\n",
        "\n".join(f"- `{f}`: {exported.splits[s]:,} samples" for s, f in data_files.items())
        + f"\n- `{IMAGES}/`: {exported.images:,} images, "
        + ("symlinks to the input's image files" if exported.linked else "the original bytes, never re-encoded")
        + "\n",
        "One JSON object a line: `key`, `caption`, `image` (the image file, relative to this directory; null "
        "without image), "
        + (", ".join(f"`{c}`" for c in figures) + " (the steps' per-sample figures), " if figures else "")
        + "`meta` (the sample's metadata as JSON text).\n",
        "## Loading\n",
        "```python\nimport pandas, datasets\n\n"
        f'df = pandas.read_json("{first_file}", lines=True)\n'
        f'ds = datasets.load_dataset("json", data_files={{"{first}": "{first_file}"}})["{first}"]\n'
        "```\n",
        splits_section(run, exported),
        *run_sections(run.manifest),
    ]
    return join_card(parts)
