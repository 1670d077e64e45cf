"""Parquet written atomically, and the tabular caption files (JSONL, CSV, Parquet) the folder reader reads."""

from __future__ import annotations

import os

import pyarrow as pa

from mmcurate.io.atomic import atomic_output


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, **write_options) -> None:
    """Write `table` to `path` as Parquet; the file appears complete or not at all."""
    import pyarrow.parquet as pq

    write_options.setdefault("compression", "zstd")
    with atomic_output(path) as f:
        pq.write_table(table, f, **write_options)


def read_columns(path: str | os.PathLike) -> dict[str, list]:
    """A JSONL, CSV/TSV or Parquet file as {column: values}, chosen by extension.

    CSV columns are all read as text, so keys like `0001` keep their leading zeros; empty cells are null. JSONL rows may
    disagree on a column's type (an int here, a string there) or leave columns out (None there).
    """
    p = os.fspath(path)
    lower = p.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pydict()
    if lower.endswith((".jsonl", ".ndjson")):
        return _read_jsonl(p)
    if lower.endswith((".csv", ".tsv")):
        import pyarrow.csv as pacsv

        parse = pacsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",", newlines_in_values=True)
        with open(p, "rb") as f:
            header = f.readline()
        if not header.strip():
            return {}
        names = pacsv.read_csv(pa.py_buffer(header), parse_options=parse).column_names
        return pacsv.read_csv(
            p,
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True
            ),
        ).to_pydict()
    raise ValueError(f"caption file {p!r}: unsupported extension; use .jsonl, .csv, .tsv or .parquet")


def _read_jsonl(path: str) -> dict[str, list]:
    import json

    columns: dict[str, list] = {}
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: JSON nested too deep to parse") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            for name in row:
                if name not in columns:
                    columns[name] = [None] * n
            for name, values in columns.items():
                values.append(row.get(name))
            n += 1
    return columns
