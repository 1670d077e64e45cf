"""Exports of a finished run into a training format: `mmcurate export RUN_DIR --format FORMAT --out DIR`.

llava: LLaVA's conversation JSON per split, the kept images, a dataset card (mmcurate/export/llava.py).
"""

from __future__ import annotations

FORMATS = ("llava",)


def export_run(run_dir, out, *, format: str, link: bool = False, overwrite: bool = False) -> str:
    """Export the finished run in `run_dir` to `out` in `format` (one of FORMATS); returns the one-line summary
    the command prints."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    from mmcurate.export.llava import export_llava

    result = export_llava(run_dir, out, link=link, overwrite=overwrite)
    files = ", ".join(f"{name} {n:,}" for name, n in sorted(result.files.items()))
    return (
        f"exported {result.conversations:,} conversations ({result.turns:,} turns; {files}) and "
        f"{result.images:,} images{' (linked)' if link else ''} to {result.out}/ (README.md: the dataset card)"
    )
