"""The report's small HTML and number-formatting helpers, shared by its sections: every value from a manifest or a
run's tables is escaped and formatted defensively (a hand-edited or hostile manifest gives "–", never a crash)."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from html import escape
from urllib.parse import quote

from mmcurate.report.charts import format_number
from mmcurate.report.thumbnails import display_text


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


def section(sid: str, title: str, intro: str, content: str) -> str:
    """A report section: its anchor id (the nav links to it), heading, optional intro line and content."""
    intro_html = f'<p class="intro">{e(intro)}</p>' if intro else ""
    return f'<section id="{sid}"><h2>{e(title)}</h2>{intro_html}{content}</section>'


def file_link(name: str, base: str = "") -> str:
    """A link (never loaded: no request) to one of the run's own tables; ``base``: RunData.files_href."""
    return f'<a class="file" href="{e(base + quote(name))}" data-file="{e(name)}">{e(name)}</a>'


def empty(text: str) -> str:
    return f'<p class="empty">{e(text)}</p>'


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def tile(
    jpeg: bytes | None,
    key: str,
    lines: list[tuple[str, str]],
    badge: str = "",
    badge_cls: str = "",
    decoded: bool = True,
    caption: str | None = None,
    cls: str = "",
) -> str:
    """One thumbnail tile of a gallery: the image (a data: URI), an optional badge on it, the key, a few
    (css class, text) lines and the caption. Every gallery of the report draws its tiles with this."""
    img = f'<img src="{data_uri(jpeg)}" alt="{e(key)}">' if jpeg else '<span class="noimg">no thumbnail</span>'
    badge_html = f'<span class="badge-tile {e(badge_cls)}">{e(badge)}</span>' if badge else ""
    # Text of samples passes the PII redactor again: thumbs.parquet / rejects.parquet of an older run
    # may hold it in clear.
    lines = [(c, display_text(t, 1000)) for c, t in lines]
    caption = display_text(caption)
    meta = "".join(f'<div class="{e(c)}" title="{e(t)}">{e(t)}</div>' for c, t in lines if t)
    cap = f'<div class="caption" title="{e(caption)}">{e(caption)}</div>' if caption else ""
    return (
        f'<figure class="tile {e(cls)}{"" if decoded else " placeholder"}" data-key="{e(key)}">'
        f'<div class="frame">{img}{badge_html}</div><figcaption>'
        f'<div class="key" title="{e(key)}">{e(key)}</div>{meta}{cap}</figcaption></figure>'
    )
