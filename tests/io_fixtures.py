"""Helpers that build input datasets by hand for the io tests (independent of mmcurate's writer)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (24, 16)) -> bytes:
    """A small distinct image, encoded."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes | None]], compression: str = "") -> Path:
    """A tar with the given (name, data) members in order, the way img2dataset/tarfile would write it;
    data None adds a directory entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, f"w:{compression}" if compression else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mtime = 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    return path


def img2dataset_members(keys: list[str], seed: int = 0) -> list[tuple[str, bytes]]:
    """Members as img2dataset writes them: KEY.jpg, KEY.txt, KEY.json per sample."""
    out = []
    for i, key in enumerate(keys):
        out.append((f"{key}.jpg", image_bytes(seed * 1000 + i)))
        out.append((f"{key}.txt", f"caption of {key}".encode()))
        meta = {"key": key, "url": f"http://x/{key}.jpg", "status": "success"}
        out.append((f"{key}.json", json.dumps(meta).encode()))
    return out


def img2dataset_shards(root: Path, n_shards: int, per_shard: int) -> list[Path]:
    """n_shards tars named 00000.tar, ... with 9-digit img2dataset keys."""
    paths = []
    for s in range(n_shards):
        keys = [f"{s:05d}{i:04d}" for i in range(per_shard)]
        paths.append(write_tar(root / f"{s:05d}.tar", img2dataset_members(keys, seed=s)))
    return paths


def read_all(reader, batch_size: int = 256) -> list[dict]:
    rows = []
    for shard in reader.shards():
        for batch in reader.read(shard, batch_size=batch_size):
            rows.extend(batch.to_pylist())
    return rows
