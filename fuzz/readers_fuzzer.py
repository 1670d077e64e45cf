"""atheris target for the WebDataset tar reader and the JSON / meta readers (see readers_targets.py for the
input layout and the documented outcomes). Anything else is a finding. Each distinct finding (exception
type, innermost mmcurate frame, innermost frame) is raised once, then recorded in $MMCURATE_FUZZ_SEEN and
ignored, so one campaign reports every distinct bug instead of the first only.

Run: scripts/fuzz.sh readers [seconds]
"""

import os
import sys
import tempfile
import traceback

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=["mmcurate", "tarfile", "gzip", "bz2", "lzma", "json", "readers_targets"]):
    import readers_targets

_WORK = readers_targets.Workdir(tempfile.mkdtemp(prefix="mmcurate-fuzz-readers-"))
_SEEN_FILE = os.environ.get("MMCURATE_FUZZ_SEEN", os.path.join(_WORK.path, "seen"))


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


def TestOneInput(data: bytes):
    try:
        readers_targets.run_one(_WORK, data)
    except Exception as exc:  # noqa: BLE001 - every undocumented exception is a finding
        _finding(exc)


def main():
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
