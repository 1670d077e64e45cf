"""The rejects listing of the report: per (stage, reason), a paged table of rejected keys with the stage's
detail, beyond the few thumbnails of the gallery, and a link to ``rejects.parquet``, which has every row.

Bounded whatever the run: at most :data:`MAX_LISTED_PER_REASON` rows per reason, spread evenly over the
reason's rejects in key order (deterministic, and covering every shard rather than the first), with the
count of what is left out. Details pass :func:`~mmcurate.report.thumbnails.display_text` (redacted, cut):
a stage's detail never quotes the text, but rejects.parquet may come from anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.report.html_parts import e, file_link, html_table
from mmcurate.report.paging import anchor_id, evenly_spaced, paged
from mmcurate.report.run_data import REJECTS, RunData
from mmcurate.report.thumbnails import display_text

__all__ = ["MAX_LISTED_PER_REASON", "ROWS_PER_PAGE", "REJECT_LISTING_CSS", "reject_listing", "reject_listing_id"]

MAX_LISTED_PER_REASON = 200
ROWS_PER_PAGE = 50
MAX_DETAIL_CHARS = 240

REJECT_LISTING_CSS = """
.listing{margin-top:14px}
.listing table{margin:0 0 6px}
.listing td.key{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-all}
.listing td.detail{color:#495057;word-break:break-word}
.listing table.rejects-list th:first-child,.listing table.dup-list th:first-child{width:90px}
.listing table.rejects-list th:nth-child(2){width:36%}
.listing summary .count{color:var(--bad);font-weight:650;margin-left:6px}
a.file{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
"""


def reject_listing_id(stage: str, reason: str) -> str:
    """The id of a reason's listing, for links from elsewhere in the report."""
    return anchor_id("rejects", stage, reason)


def reject_listing(data: RunData, reasons: Iterable[tuple[str, str]]) -> str:
    """The listings of `reasons` ((stage, reason) pairs, in the order to show them); "" without a rejects log."""
    r = data.rejects
    if r is None or r.num_rows == 0 or not {"key", "stage", "reason"} <= set(r.column_names):
        return ""
    blocks = [_reason_listing(r, stage, reason, data.files_href) for stage, reason in reasons]
    blocks = [b for b in blocks if b]
    if not blocks:
        return ""
    return (
        f'<div class="listing" data-listing="rejects"><h3>Rejects, listed by reason</h3>'
        f'<p class="note">Up to {MAX_LISTED_PER_REASON:,} rejected samples per reason, spread evenly over the '
        f"reason's rejects in key order; {file_link(REJECTS, data.files_href)} has every row (key, source, stage, "
        f"reason, detail).</p>{''.join(blocks)}</div>"
    )


def _reason_listing(r: pa.Table, stage: str, reason: str, files_href: str) -> str:
    mine = r.filter(pc.and_(pc.equal(r.column("stage"), stage), pc.equal(r.column("reason"), reason)))
    n = mine.num_rows
    if n == 0:
        return ""
    order = pc.sort_indices(mine, [("key", "ascending")]).to_numpy()
    positions = evenly_spaced(n, MAX_LISTED_PER_REASON)
    shown = mine.take(pa.array(order[positions]))
    keys = shown.column("key").to_pylist()
    details = shown.column("detail").to_pylist() if "detail" in shown.column_names else [None] * len(keys)
    rows = [
        f'<tr data-key="{e(k)}"><td class="num">{p + 1:,}</td><td class="key">{e(k)}</td>'
        f'<td class="detail">{e(display_text(d, MAX_DETAIL_CHARS) or "")}</td></tr>'
        for p, k, d in zip(positions, keys, details)
    ]
    listing_id = reject_listing_id(stage, reason)
    table = paged(
        listing_id + "-t",
        rows,
        ROWS_PER_PAGE,
        "rejects",
        wrap=lambda page: html_table(["# by key", "key", "detail"], [page], "rejects-list"),
    )
    left_out = n - len(keys)
    more = (
        f'<p class="note" data-left-out="{left_out}">{left_out:,} more not listed: every one is in '
        f"{file_link(REJECTS, files_href)}.</p>"
        if left_out
        else ""
    )
    return (
        # The id sits inside the <details>: a link to it opens the closed block (fragment navigation does).
        f'<details data-stage="{e(stage)}" data-reason="{e(reason)}" data-count="{n}" data-listed="{len(keys)}">'
        f'<summary>{e(stage)} · {e(reason)}<span class="count">{n:,}</span><span class="muted"> · '
        f'{len(keys):,} listed</span></summary><div id="{listing_id}" class="anchor">{table}{more}</div></details>'
    )
