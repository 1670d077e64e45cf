"""Thumbnails of kept samples, read back from the run's output shards when the report is built.

thumbs.parquet holds pictures of rejects and duplicate groups only: which kept samples a view wants (the
blurriest, those just above the CLIP cut, a cluster's members) is known only once samples.parquet is written.
Their original bytes are in the output tars (``shards/<samples.parquet's shard>``, member
``<key>.<image_ext>``), so the few a view shows are read from there: one pass over the headers of each tar
that holds one (a tar has no index; headers are parsed, data skipped), only the wanted members' bytes read.

Bounded whatever the run's size: the callers ask for a few dozen keys. A missing shard, a shard outside
the output directory or a member over the size limit gives a placeholder tile, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmcurate.io.base import DEFAULT_MAX_IMAGE_BYTES
from mmcurate.io.keys import key_to_member_base
from mmcurate.io.paths import is_inside
from mmcurate.report.run_data import RunData, read_sample_rows
from mmcurate.report.thumbnails import Thumbnail, make_thumbnails, placeholder_tile

__all__ = ["kept_thumbnails", "SHARDS_DIR"]

SHARDS_DIR = "shards"


_BLOCK = 512


def _number(field: bytes) -> int:
    """A tar header's numeric field: octal text, or base-256 when its first byte has the high bit set."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header ("<len> path=<value>\n" records)."""
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        if space < 0:
            return None
        length = int(data[at:space])
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        at += length
    return None


def _read_members(tar_path: Path, wanted: dict[str, str]) -> dict[str, bytes]:
    """member name -> bytes for the members of `wanted` (member name -> key) found in the tar.

    The headers are parsed here (name, size, type; pax and GNU long names), not by tarfile, whose header
    parsing costs ~10x more: a 1,000-sample output shard has 3,000 members and a gallery may touch a hundred
    shards. Data blocks are skipped with a seek. A malformed header ends the scan (the rest become placeholders)."""
    found: dict[str, bytes] = {}
    try:
        with open(tar_path, "rb", buffering=1 << 16) as f:
            long_name: str | None = None
            while len(found) < len(wanted):
                header = f.read(_BLOCK)
                if len(header) < _BLOCK or header == bytes(_BLOCK):
                    break
                size = _number(header[124:136])
                kind = header[156:157]
                padded = -(-size // _BLOCK) * _BLOCK
                if kind in (b"x", b"L"):  # the next member's name: pax extended header, GNU long name
                    data = f.read(padded)[:size]
                    if kind == b"x":
                        long_name = _pax_path(data)
                    else:
                        long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                    continue
                if long_name is not None:
                    name, long_name = long_name, None
                else:
                    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
                    if prefix:
                        name = prefix.decode("utf-8", "surrogateescape") + "/" + name
                if name in wanted and kind in (b"0", b"\0") and size <= DEFAULT_MAX_IMAGE_BYTES:
                    found[name] = f.read(size)
                    f.seek(padded - size, os.SEEK_CUR)
                else:
                    f.seek(padded, os.SEEK_CUR)
    except (OSError, ValueError):  # a damaged or vanished shard: its tiles become placeholders
        pass
    return found


def kept_thumbnails(data: RunData, keys: list[str], size: int = 128) -> dict[str, Thumbnail]:
    """key -> thumbnail (its caption attached) of kept samples, the images read from the output shards under
    ``out_dir/shards``: where samples.parquet says each key's image is (``shard``, ``image_ext``)."""
    keys = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
    rows = read_sample_rows(data, keys, ("shard", "image_ext", "caption"))
    root = os.path.realpath(Path(data.out_dir) / SHARDS_DIR)
    by_shard: dict[str, dict[str, str]] = {}
    for key in keys:
        row = rows.get(key, {})
        shard, ext = row.get("shard"), row.get("image_ext")
        if shard and ext:
            by_shard.setdefault(shard, {})[f"{key_to_member_base(key)}.{ext}"] = key
    blobs: dict[str, bytes] = {}
    for shard, wanted in sorted(by_shard.items()):
        path = os.path.realpath(os.path.join(root, shard))
        if not is_inside(path, root):  # samples.parquet is data: it may name any path
            continue
        for member, blob in _read_members(Path(path), wanted).items():
            blobs[wanted[member]] = blob
    found = [k for k in keys if k in blobs]
    thumbs = dict(zip(found, make_thumbnails([blobs[k] for k in found], size)))
    missing = Thumbnail(placeholder_tile(size, "not in the shards", title="no image"), False, "no image")
    return {k: thumbs.get(k, missing).with_caption(rows.get(k, {}).get("caption")) for k in keys}
