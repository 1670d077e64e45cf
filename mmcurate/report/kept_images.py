"""Thumbnails of kept samples, read back from the run's output shards when the report is built.

thumbs.parquet holds pictures of rejects and duplicate groups only: which kept samples a view wants (the
blurriest, those just above the CLIP cut, a cluster's members) is known only once samples.parquet is written.
Their original bytes are in the output tars (``shards/<samples.parquet's shard>``, member
``<key>.<image_ext>``), so the few a view shows are read from there: one pass over the headers of each tar
that holds one (a tar has no index; headers are read, data skipped), only the wanted members' bytes read.

Bounded whatever the run's size: the callers ask for a few dozen keys. A missing shard, a shard outside
the output directory or a member over the size limit gives a placeholder tile, never an error.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from mmcurate.io.base import DEFAULT_MAX_IMAGE_BYTES
from mmcurate.io.keys import key_to_member_base
from mmcurate.io.paths import is_inside
from mmcurate.report.thumbnails import Thumbnail, make_thumbnails, placeholder_tile

__all__ = ["kept_thumbnails", "SHARDS_DIR"]

SHARDS_DIR = "shards"


def _read_members(tar_path: Path, wanted: dict[str, str]) -> dict[str, bytes]:
    """member name -> bytes for the members of `wanted` (member name -> key) found in the tar."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, mode="r:") as tf:
            for member in tf:
                if member.name in wanted and member.isfile() and member.size <= DEFAULT_MAX_IMAGE_BYTES:
                    f = tf.extractfile(member)
                    if f is not None:
                        found[member.name] = f.read()
                    if len(found) == len(wanted):
                        break
    except (OSError, tarfile.TarError):  # a damaged or vanished shard: its tiles become placeholders
        pass
    return found


def kept_thumbnails(out_dir, rows: list[dict], size: int = 128) -> dict[str, Thumbnail]:
    """key -> thumbnail for `rows` (dicts with ``key``, ``shard``, ``image_ext`` and optionally ``caption``, as
    samples.parquet has them), the images read from the output shards under ``out_dir/shards``."""
    root = os.path.realpath(Path(out_dir) / SHARDS_DIR)
    by_shard: dict[str, dict[str, str]] = {}
    for row in rows:
        key, shard, ext = row.get("key"), row.get("shard"), row.get("image_ext")
        if key and shard and ext:
            by_shard.setdefault(shard, {})[f"{key_to_member_base(key)}.{ext}"] = key
    blobs: dict[str, bytes] = {}
    for shard, wanted in sorted(by_shard.items()):
        path = os.path.realpath(os.path.join(root, shard))
        if not is_inside(path, root):  # samples.parquet is data: it may name any path
            continue
        for member, blob in _read_members(Path(path), wanted).items():
            blobs[wanted[member]] = blob
    keys = [k for k in dict.fromkeys(r.get("key") for r in rows) if k in blobs]
    thumbs = dict(zip(keys, make_thumbnails([blobs[k] for k in keys], size)))
    missing = Thumbnail(placeholder_tile(size, "not in the shards", title="no image"), False, "no image")
    captions = {r.get("key"): r.get("caption") for r in rows}
    return {
        r["key"]: thumbs.get(r["key"], missing).with_caption(captions.get(r["key"]))
        for r in rows
        if r.get("key") is not None
    }
