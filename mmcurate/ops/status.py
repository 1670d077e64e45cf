"""Per-sample status codes shared by decode and hash ops (mirrors csrc/include/mmcurate/status.h)."""

from enum import IntEnum


class Status(IntEnum):
    ok = 0
    truncated = 1
    corrupt = 2
    unsupported = 3
    too_large = 4
    empty = 5


def status_name(code, default: str = "corrupt") -> str:
    """The name of a status code (a decode reject's reason, e.g. "truncated"); ``default`` for a code this
    table does not know (a newer native core)."""
    try:
        return Status(int(code)).name
    except ValueError:
        return default
