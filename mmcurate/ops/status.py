"""Per-sample status codes shared by decode and hash ops (mirrors csrc/include/mmcurate/status.h)."""
from enum import IntEnum


class Status(IntEnum):
    ok = 0
    truncated = 1
    corrupt = 2
    unsupported = 3
    too_large = 4
    empty = 5
