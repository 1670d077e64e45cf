"""Exports of a finished run into a training format: `mmcurate export RUN_DIR --format FORMAT --out DIR`.

- llava: LLaVA's conversation JSON per split, the kept images, a dataset card (mmcurate/export/llava.py).
- jsonl: one JSON line per kept sample per split, the images as files (mmcurate/export/jsonl.py).
- hf: Parquet with the `datasets` Image feature in the Hugging Face hub's layout, a card with its YAML metadata
  (mmcurate/export/hf.py).
- webdataset: the run's tar shards per split, a card whose features let `datasets` read every image
  (mmcurate/export/webdataset.py).

What they share (the run, the export directory's rules, temp dir + publish + marker, the images from the run's
shards, the card's common sections) is mmcurate/export/common.py.
"""

from __future__ import annotations

FORMATS = ("llava", "jsonl", "hf", "webdataset")


def export_run(
    run_dir, out, *, format: str, link: bool = False, overwrite: bool = False, license: str | None = None
) -> str:
    """Export the finished run in `run_dir` to `out` in `format` (one of FORMATS); returns the one-line summary
    the command prints. license: the dataset card's license (hf only: its YAML `license`, default unknown)."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    if license is not None and format != "hf":
        raise ValueError(f"--license is for --format hf (its dataset card's metadata), not {format}")
    if format == "llava":
        from mmcurate.export.llava import export_llava

        result = export_llava(run_dir, out, link=link, overwrite=overwrite)
        files = ", ".join(f"{name} {n:,}" for name, n in sorted(result.files.items()))
        return (
            f"exported {result.conversations:,} conversations ({result.turns:,} turns; {files}) and "
            f"{result.images:,} images{' (linked)' if link else ''} to {result.out}/ (README.md: the dataset card)"
        )
    if format == "jsonl":
        from mmcurate.export.jsonl import export_jsonl as export
    elif format == "hf":
        from mmcurate.export.hf import export_hf

        return export_hf(run_dir, out, link=link, overwrite=overwrite, license=license).summary()
    else:
        from mmcurate.export.webdataset import export_webdataset as export
    return export(run_dir, out, link=link, overwrite=overwrite).summary()
