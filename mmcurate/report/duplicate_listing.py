"""The duplicate-groups listing of the report: per link kind (exact, phash, pdq, semantic, ...), the largest
groups in a paged table (representative, size, members with their distance), beyond the few groups the
gallery pictures, and a link to ``duplicates.parquet``, which has every link.

Bounded whatever the run: at most :data:`MAX_LISTED_GROUPS` groups per kind (largest first, then by
representative key: the gallery's order) and :data:`MAX_MEMBERS_SHOWN` members per group (largest distance
first, the ones worth checking), each with the count of what is left out. The gallery links its "+N more"
to the page of the listing that holds the group (:meth:`DuplicateListing.href`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.report.html_parts import e, file_link, html_table
from mmcurate.report.paging import anchor_id, paged
from mmcurate.report.run_data import DUPLICATES, RunData
from mmcurate.report.thumbnails import DUPLICATE_KIND_ORDER

__all__ = ["MAX_LISTED_GROUPS", "MAX_MEMBERS_SHOWN", "GROUPS_PER_PAGE", "DUPLICATE_LISTING_CSS", "DuplicateListing"]

MAX_LISTED_GROUPS = 100
MAX_MEMBERS_SHOWN = 12
GROUPS_PER_PAGE = 25

DUPLICATE_LISTING_CSS = """
.listing td.members{line-height:1.9}
.member{display:inline-block;margin:0 6px 0 0;white-space:nowrap}
.member code{background:#f1f3f5;border-radius:4px;padding:0 4px;word-break:break-all;white-space:normal}
.member .d{color:var(--muted);font-size:11.5px;margin-left:2px}
"""


@dataclass
class _Group:
    kind: str
    representative: str
    size: int  # members, the representative not counted
    members: list[tuple[str, float | None]] = field(default_factory=list)  # the shown ones


@dataclass
class DuplicateListing:
    """The listed groups of a run, per kind in gallery order, and the total per kind."""

    groups: dict[str, list[_Group]]  # kind -> listed groups, largest first
    totals: dict[str, int]  # kind -> every group of that kind
    _hrefs: dict[tuple[str, str], str] = field(default_factory=dict)
    files_href: str = ""  # RunData.files_href: where duplicates.parquet is, seen from the report

    @classmethod
    def from_run(cls, data: RunData) -> DuplicateListing:
        dup = data.duplicates
        if dup is None or dup.num_rows == 0 or not {"key", "duplicate_of", "kind"} <= set(dup.column_names):
            return cls({}, {}, files_href=data.files_href)
        sizes = dup.group_by(["kind", "duplicate_of"]).aggregate([([], "count_all")])
        groups: dict[str, list[_Group]] = {}
        totals: dict[str, int] = {}
        for kind in sorted(set(sizes.column("kind").to_pylist()), key=lambda k: (DUPLICATE_KIND_ORDER.get(k, 99), k)):
            of_kind = sizes.filter(pc.equal(sizes.column("kind"), kind))
            totals[kind] = of_kind.num_rows
            counts = of_kind.column("count_all").to_numpy()
            reps = of_kind.column("duplicate_of").to_pylist()
            top = sorted(range(len(reps)), key=lambda i: (-int(counts[i]), reps[i]))[:MAX_LISTED_GROUPS]
            groups[kind] = [_Group(kind, reps[i], int(counts[i])) for i in top]
            _fill_members(dup, kind, groups[kind])
        listing = cls(groups, totals, files_href=data.files_href)
        for kind, listed in groups.items():
            for i, g in enumerate(listed):
                page = i // GROUPS_PER_PAGE + 1
                base = _listing_id(kind)
                listing._hrefs[(kind, g.representative)] = (
                    f"#{base}-p{page}" if len(listed) > GROUPS_PER_PAGE else f"#{base}"
                )
        return listing

    def href(self, kind: str, representative: str) -> str | None:
        """The in-page link to the listing's page that holds this group; None when it is not listed."""
        return self._hrefs.get((kind, representative))

    def html(self) -> str:
        if not self.groups:
            return ""
        blocks = [self._kind_block(kind, listed) for kind, listed in self.groups.items()]
        return (
            f'<div class="listing" data-listing="duplicates"><h3>Duplicate groups, listed</h3>'
            f'<p class="note">The {MAX_LISTED_GROUPS:,} largest groups per kind with up to {MAX_MEMBERS_SHOWN:,} '
            f"members each (largest distance first); {file_link(DUPLICATES, self.files_href)} has every link "
            f"(key, duplicate_of, kind, distance).</p>{''.join(blocks)}</div>"
        )

    def _kind_block(self, kind: str, listed: list[_Group]) -> str:
        rows = []
        for rank, g in enumerate(listed, 1):
            members = "".join(
                f'<span class="member"><code>{e(k)}</code>{_distance(kind, d)}</span>' for k, d in g.members
            )
            left = g.size - len(g.members)
            if left:
                members += f'<span class="muted" data-left-out="{left}">+{left:,} more in duplicates.parquet</span>'
            rows.append(
                f'<tr data-group="{e(g.representative)}" data-size="{g.size + 1}"><td class="num">{rank:,}</td>'
                f'<td class="num">{g.size + 1:,}</td><td class="key">{e(g.representative)}</td>'
                f'<td class="members">{members}</td></tr>'
            )
        base = _listing_id(kind)
        table = paged(
            base,
            rows,
            GROUPS_PER_PAGE,
            "groups",
            wrap=lambda page: html_table(["#", "size", "representative", "members"], [page], "dup-list"),
        )
        if len(listed) <= GROUPS_PER_PAGE:
            table = f'<div id="{base}" class="anchor">{table}</div>'
        total = self.totals[kind]
        more = (
            f'<p class="note" data-left-out="{total - len(listed)}">{total - len(listed):,} smaller groups not '
            f"listed: every one is in {file_link(DUPLICATES, self.files_href)}.</p>"
            if total > len(listed)
            else ""
        )
        return (
            f'<details data-kind="{e(kind)}" data-groups="{total}" data-listed="{len(listed)}"><summary>'
            f'<span class="kind">{e(kind)}</span> {total:,} groups<span class="muted"> · {len(listed):,} listed'
            f"</span></summary>{table}{more}</details>"
        )


def _listing_id(kind: str) -> str:
    return anchor_id("dupgroups", kind)


def _distance(kind: str, d: float | None) -> str:
    if d is None or kind == "exact" or not np.isfinite(d):
        return ""
    return f'<span class="d">d={d:g}</span>'


def _fill_members(dup: pa.Table, kind: str, listed: list[_Group]) -> None:
    """The shown members of the listed groups of one kind: largest distance first, then by key."""
    if not listed:
        return
    reps = pa.array([g.representative for g in listed], pa.string())
    mask = pc.and_(pc.equal(dup.column("kind"), kind), pc.is_in(dup.column("duplicate_of"), value_set=reps))
    rows = dup.filter(mask)
    cols = ["key", "duplicate_of"] + (["distance"] if "distance" in rows.column_names else [])
    rows = rows.select(cols)
    if "distance" in cols:
        rows = rows.append_column("_neg", pc.negate(pc.fill_null(rows.column("distance"), 0.0)))
        rows = rows.sort_by([("duplicate_of", "ascending"), ("_neg", "ascending"), ("key", "ascending")])
    else:
        rows = rows.sort_by([("duplicate_of", "ascending"), ("key", "ascending")])
    by_rep = {g.representative: g for g in listed}
    keys, owners = rows.column("key").to_pylist(), rows.column("duplicate_of").to_pylist()
    dists = rows.column("distance").to_pylist() if "distance" in cols else [None] * len(keys)
    for k, rep, d in zip(keys, owners, dists):
        g = by_rep[rep]
        if len(g.members) < MAX_MEMBERS_SHOWN:
            g.members.append((k, d))
