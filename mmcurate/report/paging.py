"""Paged listings without scripts: the pages of a listing are sibling blocks, a plain ``<a href="#page-id">``
link shows one (CSS ``:target``), and the first page shows while no page of the listing is targeted.

The report allows no scripts (its Content-Security-Policy), so paging is anchors and CSS only. Element ids
come from :func:`anchor_id`, a hash of the data strings: a hostile stage name or key never reaches an id
attribute, and the same listing gets the same ids in every report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from mmcurate.report.html_parts import e

__all__ = ["PAGING_CSS", "anchor_id", "evenly_spaced", "paged"]

PAGING_CSS = """
.pages>.page{display:none}.pages>.page:target{display:block}
.pages:not(:has(>.page:target))>.page:first-child{display:block}
.page,.anchor{scroll-margin-top:96px}  /* the block's title stays visible under the sticky nav */
.pager{display:flex;flex-wrap:wrap;gap:4px;align-items:center;margin:4px 0 8px;font-size:12.5px;color:var(--muted)}
.pager a{padding:1px 8px;border:1px solid var(--line);border-radius:5px;text-decoration:none;color:var(--accent)}
.pager a.cur{background:var(--accent);border-color:var(--accent);color:#fff}
"""


def anchor_id(prefix: str, *parts) -> str:
    """A stable HTML id for the thing named by `parts` (any strings): `prefix` and a hash, never the strings."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{prefix}-{digest}"


def evenly_spaced(n: int, k: int) -> list[int]:
    """`k` row positions spread evenly over `n` rows, first and last included (all of them when n <= k): a
    deterministic sample that covers the whole listing instead of its head."""
    if k <= 0 or n <= 0:
        return []
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({(i * (n - 1)) // (k - 1) for i in range(k)})


def paged(
    listing_id: str,
    blocks: Sequence[str],
    per_page: int,
    what: str = "rows",
    wrap: Callable[[str], str] = lambda page: page,
) -> str:
    """`blocks` (HTML items, e.g. table rows) cut into pages of `per_page`, each page's items put together by
    `wrap` (e.g. into a table) under a pager of plain anchors. One page needs no pager. `listing_id` must come
    from :func:`anchor_id`."""
    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")
    pages = [blocks[i : i + per_page] for i in range(0, len(blocks), per_page)] or [[]]
    if len(pages) == 1:
        return wrap("".join(pages[0]))
    out = []
    for p, page in enumerate(pages, 1):
        links = "".join(
            f'<a href="#{listing_id}-p{q}"{" class=cur" if q == p else ""}>{q}</a>' for q in range(1, len(pages) + 1)
        )
        first, last = (p - 1) * per_page + 1, (p - 1) * per_page + len(page)
        pager = f'<div class="pager">{e(what)} {first:,}–{last:,} of {len(blocks):,} · page {links}</div>'
        out.append(f'<div class="page" id="{listing_id}-p{p}" data-page="{p}">{pager}{wrap("".join(page))}</div>')
    return f'<div class="pages" id="{listing_id}">{"".join(out)}</div>'
