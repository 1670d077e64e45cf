"""Every input the fuzzers ever flagged (fuzz/crashers/<target>/), replayed through the Python API.

decode: the libFuzzer target's input (byte 0 selects the options, see fuzz/decode_fuzzer.cpp) must give
    a per-sample status from decode_images / probe_images / phash_bytes, never a crash.
readers: the atheris target's input (byte 0 selects the reader, see fuzz/readers_targets.py) must read
    cleanly or end in a documented error (ShardReadError, DuplicateKeyError, a ValueError naming the
    LLaVA file at open); anything else is the bug the fuzzer found, back again.
The seed corpora run through the same checks (cheap, and they prove the replay works when no crasher is
present). New crashers become tests by being saved under fuzz/crashers/ (scripts/fuzz.sh does that).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mmcurate.ops import Status, decode_images, phash_bytes, probe_images

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
STATUSES = {int(s) for s in Status}


def _files(kind: str, target: str) -> list[Path]:
    d = FUZZ / kind / target
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def _ids(paths):
    return [f"{p.parent.parent.name}/{p.name[:24]}" for p in paths]


DECODE_INPUTS = _files("crashers", "decode") + _files("corpus", "decode")
READER_INPUTS = _files("crashers", "readers") + _files("corpus", "readers")


def _readers_targets():
    spec = importlib.util.spec_from_file_location("readers_targets", FUZZ / "readers_targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", DECODE_INPUTS, ids=_ids(DECODE_INPUTS))
def test_decoder_input_gives_a_status(path):
    data = path.read_bytes()
    if not data:
        return
    sel, blob = data[0], data[1:]
    mode = {0: "RGB", 1: "L", 2: "luma", 3: "RGB"}[sel & 3]
    target = 32 + (sel >> 6) * 16 if (sel >> 4) & 1 else None
    exif = bool((sel >> 2) & 1)
    res = decode_images(
        [blob],
        device="cpu",
        mode=mode,
        target_size=target,
        exif=exif,
        fast=bool((sel >> 3) & 1),
        max_pixels=1 << 20,
        num_threads=1,
    )
    assert int(res.status[0]) in STATUSES
    assert (res.images[0] is None) == (res.status[0] != Status.ok)
    assert (res.errors[0] is None) == (res.status[0] == Status.ok)
    if res.images[0] is not None:
        assert res.images[0].dtype == np.uint8 and res.images[0].ndim == 3
    assert int(probe_images([blob])[0][0]) in STATUSES
    for exact in (True, False):
        r = phash_bytes([blob], exact=exact, exif=exif, device="cpu", max_pixels=1 << 20, num_threads=1)
        assert int(r.status[0]) in STATUSES and (r.errors[0] is None) == (r.status[0] == Status.ok)


@pytest.mark.parametrize("path", READER_INPUTS, ids=_ids(READER_INPUTS))
def test_reader_input_reads_or_fails_as_documented(path, tmp_path):
    targets = _readers_targets()
    targets.run_one(targets.Workdir(str(tmp_path)), path.read_bytes())
