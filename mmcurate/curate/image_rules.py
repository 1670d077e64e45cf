"""Image size rules (sides, area, aspect ratio, file size) evaluated over whole columns at once.

Bounds are inclusive: a sample passes ``min_side`` when ``min(width, height) >= min_side``. The aspect ratio
is ``long side / short side`` (>= 1), so one bound covers portrait and landscape alike: CogVLM's
``1/6 <= width/height <= 6`` is ``max_aspect = 6``, DataComp's "aspect ratio at most 3" is ``max_aspect = 3``.
Rules are checked in the order of :data:`RULE_ORDER`; a sample is reported under the first rule it fails.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

#: Reasons, in the order rules are checked.
RULE_ORDER = ("min_side", "max_side", "min_area", "aspect_ratio", "file_size")

#: Named bound sets. Explicit keys override a preset's.
PRESETS = {
    # DataComp "basic" filtering (Gadre et al. 2023): smaller side >= 200 px, aspect ratio <= 3.
    "datacomp": {"min_side": 200, "max_aspect": 3.0},
    # CogVLM's pre-training filter: aspect ratio (width/height) within 1/6 .. 6.
    "cogvlm": {"max_aspect": 6.0},
    # No bound at all: only what is given explicitly.
    "none": {},
}


@dataclass(frozen=True)
class SizeRules:
    """Inclusive bounds; None disables a bound."""

    min_side: int | None = None
    max_side: int | None = None
    min_area: int | None = None
    min_aspect: float | None = None  # long/short side, >= 1
    max_aspect: float | None = None
    min_file_size: int | None = None  # bytes
    max_file_size: int | None = None

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{f.name} must be a number or null, got {type(v).__name__}")
            if v < 0 or not np.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {v}")
        for lo, hi in (("min_side", "max_side"), ("min_aspect", "max_aspect"), ("min_file_size", "max_file_size")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is larger than {hi} ({b})")
        for name in ("min_aspect", "max_aspect"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(
                    f"{name} is long side / short side, so it must be >= 1, got {v} "
                    f"(a width/height bound of 1/x..x is max_aspect: x)"
                )

    @property
    def needs_file_size(self) -> bool:
        return self.min_file_size is not None or self.max_file_size is not None


def resolve_rules(preset: str, overrides: dict) -> SizeRules:
    """The preset's bounds with the explicitly given keys (not None) on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    merged: dict[str, Any] = dict(PRESETS[preset])
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return SizeRules(**merged)


def check_sizes(rules: SizeRules, width, height, file_size=None) -> tuple[np.ndarray, list]:
    """Evaluate the rules. Returns ``(reason_index int8[n], details)``: ``reason_index`` is -1 where the
    sample passes, else an index into :data:`RULE_ORDER`; ``details`` holds a message for each failure and
    None for passes. Only failing rows are formatted."""
    w = np.asarray(width, dtype=np.int64)
    h = np.asarray(height, dtype=np.int64)
    n = w.size
    short, long_ = np.minimum(w, h), np.maximum(w, h)
    area = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(short > 0, long_ / np.maximum(short, 1), np.inf)
    fs = None if file_size is None else np.asarray(file_size, dtype=np.int64)
    if rules.needs_file_size and fs is None:
        raise ValueError("file-size bounds need the file_size column")

    reason = np.full(n, -1, dtype=np.int8)

    def apply(code: int, failed: np.ndarray):
        reason[(reason < 0) & failed] = code

    if rules.min_side is not None:
        apply(0, short < rules.min_side)
    if rules.max_side is not None:
        apply(1, long_ > rules.max_side)
    if rules.min_area is not None:
        apply(2, area < rules.min_area)
    if rules.min_aspect is not None or rules.max_aspect is not None:
        lo = rules.min_aspect if rules.min_aspect is not None else 1.0
        hi = rules.max_aspect if rules.max_aspect is not None else np.inf
        apply(3, (aspect < lo) | (aspect > hi))
    if rules.needs_file_size:
        assert fs is not None  # checked above
        lo = rules.min_file_size if rules.min_file_size is not None else 0
        hi = rules.max_file_size if rules.max_file_size is not None else np.iinfo(np.int64).max
        apply(4, (fs < lo) | (fs > hi))

    details: list = [None] * n
    for i in np.flatnonzero(reason >= 0):
        details[i] = _detail(
            rules, RULE_ORDER[reason[i]], int(w[i]), int(h[i]), float(aspect[i]), None if fs is None else int(fs[i])
        )
    return reason, details


def _detail(rules: SizeRules, rule: str, w: int, h: int, aspect: float, fs: int | None) -> str:
    if rule == "min_side":
        side = "width" if w <= h else "height"
        return f"{side} {min(w, h)} < min_side {rules.min_side}"
    if rule == "max_side":
        side = "width" if w >= h else "height"
        return f"{side} {max(w, h)} > max_side {rules.max_side}"
    if rule == "min_area":
        return f"area {w}x{h} = {w * h} < min_area {rules.min_area}"
    if rule == "aspect_ratio":
        if rules.min_aspect is not None and aspect < rules.min_aspect:
            return f"aspect ratio {aspect:.3g} ({w}x{h}) < min_aspect {rules.min_aspect:g}"
        return f"aspect ratio {aspect:.3g} ({w}x{h}) > max_aspect {rules.max_aspect:g}"
    assert fs is not None  # a file-size rule failed, so the sizes were given
    if rules.min_file_size is not None and fs < rules.min_file_size:
        return f"file size {fs} B < min_file_size {rules.min_file_size}"
    return f"file size {fs} B > max_file_size {rules.max_file_size}"
