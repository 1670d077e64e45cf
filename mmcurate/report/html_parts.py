"""The report's small HTML and number-formatting helpers, shared by its sections: every value from a manifest or a
run's tables is escaped and formatted defensively (a hand-edited or hostile manifest gives "–", never a crash)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape

from mmcurate.report.charts import format_number


def e(value) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def as_float(v) -> float | None:
    """A finite number as float, else None (bools, text, NaN and overflow included)."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def num(v) -> str:
    f = as_float(v)
    return "–" if f is None else format_number(f)


def fixed(v, digits: int = 3) -> str:
    f = as_float(v)
    return "–" if f is None else f"{f:.{digits}f}"


def html_table(headers: list[str], rows: Iterable[str], cls: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def empty(text: str) -> str:
    return f'<p class="empty">{e(text)}</p>'
