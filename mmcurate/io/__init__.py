"""Readers and writers: WebDataset shards, image folders with captions, LLaVA JSON, list files, Hugging Face
Parquet/Arrow with embedded images, COCO captions (docs/inputs.md); atomic writes.

reader = open_reader(path, format="auto" | "webdataset" | "folder" | "llava" | "table" | "hf" | "coco", **options)
reader.shards()               # stable, sorted shard ids
reader.read(shard, 256)       # -> SAMPLE_SCHEMA pa.Tables
reader.count(shard)           # sample count when cheap, else None
reader.describe()             # for the manifest
reader.start_notes()          # one-line notes for the start of a run (e.g. images found but no captions)

with ShardWriter(out_dir, shard_size=1000) as w:   # out_dir/shards/00000.tar, ...
    w.write(table)                                  # original bytes, deterministic tars, atomic
"""

from mmcurate.io.atomic import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temp_files,
    sha256_file,
)
from mmcurate.io.base import Reader
from mmcurate.io.coco import CocoReader
from mmcurate.io.folder import FolderReader
from mmcurate.io.hf_parquet import HfParquetReader
from mmcurate.io.keys import DuplicateKeyError
from mmcurate.io.llava import LlavaReader
from mmcurate.io.parquet_io import write_parquet_atomic
from mmcurate.io.readers import FORMATS, detect_format, open_reader, reader_options
from mmcurate.io.shard_writer import ShardWriter
from mmcurate.io.table import TableReader
from mmcurate.io.webdataset import ShardReadError, WebDatasetReader

__all__ = [
    "open_reader",
    "detect_format",
    "reader_options",
    "FORMATS",
    "Reader",
    "WebDatasetReader",
    "FolderReader",
    "LlavaReader",
    "TableReader",
    "HfParquetReader",
    "CocoReader",
    "ShardWriter",
    "ShardReadError",
    "DuplicateKeyError",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_parquet_atomic",
    "sha256_file",
    "remove_stale_temp_files",
]
