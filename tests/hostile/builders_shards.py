"""Hostile and damaged inputs for the readers: WebDataset shards, image folders, LLaVA files and paths.

Each builder writes one shape under a directory the test owns and returns what the test needs (the path,
and where it matters the expected keys). Used by tests/hostile/test_readers.py; reusable by the CLI and
end-to-end hostile tests (every shape here must end kept or rejected, never abort a run).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from pathlib import Path

from tests.io_fixtures import image_bytes, img2dataset_members, write_tar

# Bytes planted outside an input root: no reader may ever yield them.
SECRET = b"\xff\xd8\xff\xe0PRIVATE-PHOTO-OUTSIDE-THE-ROOT" + b"\x00" * 64


def plant_secret(directory: Path, name: str = "secret.jpg") -> Path:
    """A private 'photo' outside the input root."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(SECRET)
    return path


# -- WebDataset shards -----------------------------------------------------------------------------


def bad_key_shard(path: Path) -> tuple[Path, list[str], list[str]]:
    """Samples keyed with '..', a leading '/', a newline, a NUL, a tab, DEL and non-UTF-8 bytes, between good
    samples. Returns (path, good keys, bad raw keys) in tar order."""
    bad = [
        "../../etc/evil",
        "/abs/evil",
        "new\nline",
        "nul\x00byte",
        "tab\tkey",
        "del\x7fkey",
        "a/../b",
        "bad\udcffutf8",
    ]
    good = ["000", "001", "002"]
    members = []
    for i, key in enumerate(good[:1] + bad[:4] + good[1:2] + bad[4:] + good[2:]):
        members.append((f"{key}.jpg", image_bytes(i)))
        members.append((f"{key}.txt", f"caption {i}".encode()))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.pax_headers = {"path": name}  # PAX carries NUL and newline verbatim (ustar would cut at NUL)
            tar.addfile(info, io.BytesIO(data))
    return path, good, bad


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def deep_meta_shard(path: Path, depth: int = 1_000) -> Path:
    """Sample "deep" carries a `.json` nested `depth` levels (json.loads raises RecursionError near 1,000);
    "ok" before and after it are ordinary."""
    return write_tar(
        path,
        [
            ("ok1.jpg", image_bytes(1)),
            ("ok1.json", b'{"k": 1}'),
            ("deep.jpg", image_bytes(2)),
            ("deep.json", deep_json(depth)),
            ("ok2.jpg", image_bytes(3)),
            ("ok2.json", b"\xff\xfe{not utf-8"),
            ("ok3.jpg", image_bytes(4)),
            ("ok3.txt", b"\xc3\x28 bad utf-8 caption"),
        ],
    )


def unrecognised_shards(root: Path) -> dict[str, Path]:
    """Layouts no WebDataset rule recognises: members without a suffix, only unknown suffixes, only
    directories, only symlinks/hardlinks to other places."""
    root.mkdir(parents=True, exist_ok=True)
    out = {
        "no_suffix": write_tar(root / "no_suffix.tar", [("README", b"x"), ("LICENSE", b"y"), ("dir/file", b"z")]),
        "unknown_suffixes": write_tar(root / "unknown.tar", [("a.foo", b"1"), ("a.bar", b"2"), ("b.baz", b"3")]),
        "directories_only": write_tar(root / "dirs.tar", [("a", None), ("a/b", None), ("c.jpg", None)]),
    }
    links = root / "links.tar"
    with tarfile.open(links, "w") as tar:
        for name, kind, target in (
            ("x.jpg", tarfile.SYMTYPE, "/etc/passwd"),
            ("y.jpg", tarfile.LNKTYPE, "/etc/passwd"),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    out["links_only"] = links
    return out


def big_member_tar_gz(path: Path, member_bytes: int = 1_500_000_000, compresslevel: int = 1) -> Path:
    """A small .tar.gz (zeros compress ~1000:1) holding "big.jpg" of `member_bytes` zero bytes between two
    ordinary samples. Streamed: building it never holds the member in memory."""

    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        for name, data in (("a.jpg", image_bytes(1)), ("a.txt", b"before")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("big.jpg")
        info.size = member_bytes
        tar.addfile(info, io.BufferedReader(Zeros(member_bytes), 1 << 20))
        for name, data in (("big.txt", b"the big one"), ("c.jpg", image_bytes(3)), ("c.txt", b"after")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def huge_header_tar(path: Path, declared: int = 3 << 30) -> Path:
    """A plain tar whose member "huge.jpg" declares `declared` bytes (> 2 GiB: GNU base-256 size field) and
    holds them as a sparse hole, so the file costs no disk; ordinary samples before and after it."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("a.jpg", image_bytes(1)), ("a.txt", b"before")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("huge.jpg")
        info.size = declared
        tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT, tar.encoding, tar.errors))
        tar.offset += tarfile.BLOCKSIZE
        blocks, rem = divmod(declared, tarfile.BLOCKSIZE)
        skip = declared + (tarfile.BLOCKSIZE - rem if rem else 0)
        tar.fileobj.seek(skip, os.SEEK_CUR)  # a hole: the data reads back as zeros
        tar.offset += skip
        for name, data in (("c.jpg", image_bytes(3)), ("c.txt", b"after")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def zero_byte_shard(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def not_a_tar_shard(path: Path) -> Path:
    path.write_bytes(b"<html>404 Not Found</html>\n" * 50)
    return path


def four_shards_one_truncated(
    root: Path, per_shard: int = 5, which: int = 2, cut: str = "mid_member"
) -> tuple[list[Path], int]:
    """Four img2dataset shards; shard `which` cut short, as an interrupted download leaves it: `mid_member`
    (inside an image's data) or `at_header` (exactly after a member, with no end-of-archive blocks), or
    `in_skipped` (inside the data of a member the reader skips, an unknown suffix). Returns (paths, number
    of samples wholly before the cut in the damaged shard)."""
    paths = []
    for s in range(4):
        keys = [f"{s:05d}{i:04d}" for i in range(per_shard)]
        members = img2dataset_members(keys, seed=s)
        if s == which and cut == "in_skipped":
            members.insert(3 * 2, (f"{keys[2]}.npy", bytes(50_000)))
        paths.append(write_tar(root / f"{s:05d}.tar", members))
    data = paths[which].read_bytes()
    # Byte offsets of each member's header and data, to cut at a chosen place.
    offsets = []
    with tarfile.open(paths[which]) as tar:
        for m in tar.getmembers():
            offsets.append((m.name, m.offset, m.offset_data, m.size))
    if cut == "mid_member":
        name, _, start, size = next(o for o in offsets if o[0].endswith(".jpg") and o[0].startswith(f"{which:05d}0002"))
        end = start + size // 2
        before = 2
    elif cut == "at_header":
        name, start, _, _ = next(o for o in offsets if o[0].startswith(f"{which:05d}0003") and o[0].endswith(".jpg"))
        end = start
        before = 3
    elif cut == "in_skipped":
        name, _, start, size = next(o for o in offsets if o[0].endswith(".npy"))
        end = start + size // 2
        before = 2
    else:
        raise ValueError(cut)
    paths[which].write_bytes(data[:end])
    return paths, before


def corrupt_tar_gz(path: Path, n: int = 32) -> Path:
    """A .tar.gz whose compressed stream is overwritten with garbage in the middle (zlib raises there, or the
    tar headers after it fail their checksum). The members are ~4 KB of text, so the damage lies well past
    tarfile's first read-ahead chunk."""
    rng = random.Random(0)
    words = ["cat", "dog", "sky", "tree", "red", "blue", "photo", "of", "a", "the"]
    text = lambda: " ".join(rng.choice(words) for _ in range(1000)).encode()  # noqa: E731 - Huffman-coded
    members = [(f"{i:09d}.{ext}", text()) for i in range(n) for ext in ("jpg", "txt")]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = bytearray(gzip.compress(raw.getvalue(), mtime=0))
    mid = len(blob) // 2
    blob[mid : mid + 64] = bytes(range(64))
    path.write_bytes(bytes(blob))
    return path


def truncated_tar_gz(path: Path, n: int = 8) -> Path:
    """A .tar.gz cut at 60% of its compressed size (gzip itself does not raise: the tar ends early)."""
    members = img2dataset_members([f"{i:09d}" for i in range(n)])
    write_tar(path, members, "gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


# -- special files -----------------------------------------------------------------------------------


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# -- image folders --------------------------------------------------------------------------------------


def hostile_folder(root: Path, outside: Path) -> dict[str, str]:
    """An image folder with one ordinary image and every hostile shape a listing can meet. Returns
    {key: expected read_reason or None}."""
    root.mkdir(parents=True, exist_ok=True)
    secret = plant_secret(outside)
    (outside / "private_dir").mkdir(exist_ok=True)
    (outside / "private_dir" / "p.jpg").write_bytes(SECRET)
    (root / "ok.jpg").write_bytes(image_bytes(1))
    (root / "ok.txt").write_text("a fine caption")
    (root / "inside_link.jpg").symlink_to(root / "ok.jpg")  # a link inside the root is fine
    (root / "escape.jpg").symlink_to(secret)  # a file link out of the root
    (root / "escape_dir").symlink_to(outside / "private_dir")  # a dir link: never descended
    (root / "leak.jpg").write_bytes(image_bytes(2))
    (root / "leak.txt").symlink_to(secret)  # a sidecar link out of the root
    make_fifo(root / "fifo.jpg")
    (root / "dir.jpg").mkdir()
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "big.jpg").write_bytes(image_bytes(3) + bytes(5000))
    (root / "deep.jpg").write_bytes(image_bytes(4))
    (root / "deep.json").write_bytes(deep_json(1_000))
    (root / "new\nline.jpg").write_bytes(image_bytes(5))
    return {
        "ok": None,
        "inside_link": None,
        "escape": "path_outside_root",
        "leak": "path_outside_root",
        "fifo": "not_a_file",
        "zero": "path_outside_root",
        "big": "too_large",
        "deep": "bad_meta",
        "__bad_key__": "bad_key",
    }  # dir.jpg is a directory: walked, not an image


# -- LLaVA files ------------------------------------------------------------------------------------------


def hostile_llava(root: Path, outside: Path, fmt: str = "json") -> tuple[Path, dict[str, str | None]]:
    """A LLaVA file under `root` (image_root) whose entries point outside it, at special files, with NUL
    bytes, bad ids and deep records. Returns (path, {key: expected read_reason or None})."""
    root.mkdir(parents=True, exist_ok=True)
    secret = plant_secret(outside)
    (root / "img").mkdir(exist_ok=True)
    (root / "img" / "ok.jpg").write_bytes(image_bytes(1))
    (root / "img" / "link_out.jpg").symlink_to(secret)
    (root / "img" / "big.jpg").write_bytes(image_bytes(2) + bytes(5000))
    make_fifo(root / "img" / "fifo.jpg")
    rel_up = os.path.relpath(secret, root)
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A thing."}]
    entries = [
        ({"id": "ok", "image": "img/ok.jpg", "conversations": conv}, None),
        ({"id": "absolute", "image": str(secret), "conversations": conv}, "path_outside_root"),
        ({"id": "dotdot", "image": rel_up, "conversations": conv}, "path_outside_root"),
        ({"id": "dotdot_in", "image": "img/../img/ok.jpg", "conversations": conv}, None),
        ({"id": "symlink", "image": "img/link_out.jpg", "conversations": conv}, "path_outside_root"),
        ({"id": "nul", "image": "img/ok.jpg\x00.png", "conversations": conv}, "bad_path"),
        ({"id": "directory", "image": "img", "conversations": conv}, "not_a_file"),
        ({"id": "directory_slash", "image": "img/", "conversations": conv}, "not_a_file"),
        ({"id": "fifo", "image": "img/fifo.jpg", "conversations": conv}, "not_a_file"),
        ({"id": "dev_zero", "image": "/dev/zero", "conversations": conv}, "path_outside_root"),
        ({"id": "big", "image": "img/big.jpg", "conversations": conv}, None),  # too_large at max_image_bytes=2000
        ({"id": "missing", "image": "img/none.jpg", "conversations": conv}, None),  # image null: integrity rejects
        ({"id": "../../etc/passwd", "image": "img/ok.jpg", "conversations": conv}, "bad_key"),
        ({"id": "line\nbreak", "image": "img/ok.jpg", "conversations": conv}, "bad_key"),
        ({"id": "deep", "image": "img/ok.jpg", "x": json.loads(deep_json(200))}, "bad_meta"),
    ]
    path = root / f"data.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps([e for e, _ in entries]))
    else:
        lines = [json.dumps(e) for e, _ in entries]
        lines.insert(3, '{"id": "broken", "image": ')  # a line that does not parse
        lines.insert(4, "[" * 5000 + "]" * 5000)  # RecursionError in json.loads
        path.write_text("\n".join(lines) + "\n")
    expected = {e["id"]: r for e, r in entries}
    return path, expected
