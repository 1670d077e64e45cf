"""atheris target for the WebDataset tar reader and the JSON / meta readers.

Byte 0 picks the target, the rest is its input:
  0  a WebDataset shard (.tar; tarfile auto-detects gzip/bz2/xz) read through WebDatasetReader.read
  1  a meta text through keys.normalize_meta (and the member-name / key helpers)
  2  a LLaVA .json file through LlavaReader (open, shards, read)
  3  a LLaVA .jsonl file, likewise

The documented outcomes pass: rows (kept or rejected downstream), ShardReadError for an unreadable shard,
DuplicateKeyError for a repeated key, and ValueError for a LLaVA file that is not valid JSON / not a list
of objects (raised when the reader is opened, naming the file). Anything else is a finding. Each distinct
finding (exception type + innermost mmcurate frame) is raised once, then recorded in
$MMCURATE_FUZZ_SEEN and ignored, so one campaign reports every distinct bug instead of the first only.

Run: scripts/fuzz.sh readers [seconds]
"""
import os
import sys
import tempfile
import traceback

import atheris

with atheris.instrument_imports(include=["mmcurate", "tarfile", "gzip", "bz2", "lzma", "json"]):
    from mmcurate.io import keys, webdataset
    from mmcurate.io.llava import LlavaReader

_WORK = tempfile.mkdtemp(prefix="mmcurate-fuzz-readers-")
_ROOT = os.path.join(_WORK, "root")
os.makedirs(_ROOT, exist_ok=True)
with open(os.path.join(_ROOT, "a.jpg"), "wb") as _f:  # an image a LLaVA entry can name
    _f.write(b"\xff\xd8\xff\xe0" + b"\0" * 16)
_SEEN_FILE = os.environ.get("MMCURATE_FUZZ_SEEN", os.path.join(_WORK, "seen"))


def _expected_types():
    types = [webdataset.ShardReadError, keys.DuplicateKeyError]
    # Shard-damage outcomes another part of the code may add; accepted when they exist.
    for name in ("ShardError", "ShardDamage"):
        if hasattr(webdataset, name) and isinstance(getattr(webdataset, name), type):
            types.append(getattr(webdataset, name))
    return tuple(types)


_EXPECTED = _expected_types()


def _signature(exc: BaseException) -> str:
    """Exception type, innermost mmcurate frame and innermost frame (a library bug may lie below ours)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "mmcurate" in f.filename]

    def where(f):
        return f"{os.path.basename(f.filename)}:{f.lineno}" if f else "?"

    return f"{type(exc).__name__}@{where(ours[-1] if ours else None)}@{where(frames[-1] if frames else None)}"


def _finding(exc: BaseException):
    """Raise the first time this kind of failure is seen in the campaign; ignore repeats."""
    sig = _signature(exc)
    try:
        with open(_SEEN_FILE, encoding="utf-8") as f:
            seen = set(f.read().splitlines())
    except OSError:
        seen = set()
    if sig in seen:
        return
    with open(_SEEN_FILE, "a", encoding="utf-8") as f:
        f.write(sig + "\n")
    raise exc


def _write(name: str, data: bytes) -> str:
    path = os.path.join(_WORK, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _webdataset(data: bytes):
    path = _write("shard.tar", data)
    reader = webdataset.WebDatasetReader(path, on_duplicate_key="suffix" if len(data) % 2 else "error")
    rows = 0
    for table in reader.read(path, batch_size=4):
        rows += table.num_rows
        for meta in table.column("meta").to_pylist():
            if meta is not None:
                keys.normalize_meta(meta)  # stages json.loads the meta: it must stay loadable


def _meta(data: bytes):
    text = data.decode("utf-8", errors="replace")
    out = keys.normalize_meta(text)
    import json
    if not isinstance(json.loads(out), dict):
        raise AssertionError("normalize_meta returned a non-object")
    raw, _ = keys.split_member_name(text)
    if raw is not None:
        key = keys.member_base_to_key(raw)
        keys.key_to_member_base(key)


def _llava(data: bytes, suffix: str):
    path = _write("data" + suffix, data)
    try:
        reader = LlavaReader(path, image_root=_ROOT, shard_size=3,
                             on_duplicate_key="suffix" if len(data) % 2 else "error")
    except ValueError as exc:
        # Documented: a malformed file fails when the reader is opened, naming the file.
        if isinstance(exc, keys.DuplicateKeyError) or path in str(exc):
            return
        raise
    for shard in reader.shards():
        for _table in reader.read(shard, batch_size=2):
            pass


def TestOneInput(data: bytes):
    if not data:
        return
    target, body = data[0] % 4, data[1:]
    try:
        if target == 0:
            _webdataset(body)
        elif target == 1:
            _meta(body)
        else:
            _llava(body, ".json" if target == 2 else ".jsonl")
    except _EXPECTED:
        pass
    except Exception as exc:  # noqa: BLE001 - every other exception is a finding
        _finding(exc)


def main():
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
