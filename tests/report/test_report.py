"""The HTML quality report and its thumbnails.

An output directory is built the way a run builds one: the built-in sample (real photos, near and exact
duplicates, broken files) goes through real decisions made with mmcurate.ops (decode statuses, sizes,
sha256, pHash distances), plus samples with hostile keys and captions. The report is then checked by
parsing it, and in a real headless chromium (DevTools protocol over a pipe): it renders, loads nothing
from outside, and logs no errors.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import build_demo_input
from mmcurate.curate.balance import MAX_LISTED_CLUSTER_SIZES, cluster_balance_stats
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA
from mmcurate.report.charts import BarRow, Histogram, Segment, Series, bar_chart_svg, histogram_svg, rank_size_svg
from mmcurate.report.html_report import render_report, write_report
from mmcurate.report.run_data import RunData, load_run
from mmcurate.report.thumbnails import THUMBS_SCHEMA, ThumbnailCollector, make_thumbnails
from mmcurate.sample_data import Sample, build_sample

HOSTILE_KEY = "evil\"><script>alert('key')</script>"
HOSTILE_CAPTION = 'Cat <script>alert("caption")</script> & <img src=x onerror=alert(1)> "friends"'
HOSTILE_DETAIL = "1 word < 3 </td><script>alert('detail')</script>"
HOSTILE_RECIPE_VALUE = "</pre><script>alert('recipe')</script>"
MIN_SIDE = 200
MIN_WORDS = 3
PHASH_MAX_DISTANCE = 10
OWN_TABLES = {"rejects.parquet", "duplicates.parquet"}  # the report links them (relative): they list everything


# ------------------------------------------------------------------------------------------------
# an output directory, as a run writes it


def _caption(sample: Sample) -> str:
    return f"A photograph of {sample.source or sample.key.split('_')[0]} ({sample.label.replace('_', ' ')})"


def _components(keys: list[str], codes: np.ndarray, max_distance: int) -> dict[str, list[str]]:
    """Connected components of the 'within max_distance' graph, keyed by their smallest key."""
    parent = list(range(len(keys)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    dist = np.bitwise_count(codes[:, None] ^ codes[None, :])
    for i, j in zip(*np.nonzero(np.triu(dist <= max_distance, 1))):
        parent[find(i)] = find(j)
    groups: dict[int, list[str]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(find(i), []).append(k)
    return {min(g): sorted(g) for g in groups.values()}


def build_output_dir(out: Path, with_thumbs: bool = True) -> dict:
    """Run the sample through integrity -> image_filter -> caption_filter -> exact_dedup -> phash_dedup with
    real decisions, write manifest.json and the parquet files, and return what was decided."""
    from mmcurate.ops import Status, decode_images, phash_bytes

    t_start = time.time()
    samples = build_sample(max_photos=6)
    samples.append(Sample(HOSTILE_KEY, samples[0].data, "original", detail="hostile key"))
    captions = {s.key: _caption(s) for s in samples}
    captions["chelsea"] = HOSTILE_CAPTION
    captions[HOSTILE_KEY] = "ok"
    by_key = {s.key: s for s in samples}
    keys = [s.key for s in samples]
    rejects: list[dict] = []
    duplicates: list[dict] = []
    stages: list[dict] = []
    collector = ThumbnailCollector(max_per_reason=3, max_groups=4, max_per_group=4, size=96)

    def map_stage(name, alive, decide):
        t0 = time.perf_counter()
        kept, batch_rejects = [], []
        for k in alive:
            verdict = decide(k)
            if verdict is None:
                kept.append(k)
            else:
                batch_rejects.append(
                    {"key": k, "source": "shard-00000.tar", "stage": name, "reason": verdict[0], "detail": verdict[1]}
                )
        table = pa.Table.from_pylist(batch_rejects, schema=REJECTS_SCHEMA)
        if with_thumbs:  # offered in two batches, the later one first: selection must not depend on order
            half = table.num_rows // 2
            for part in (table.slice(half), table.slice(0, half)):
                imgs = {k: by_key[k].data for k in part.column("key").to_pylist()}
                collector.offer_rejects(part, imgs, {k: captions[k] for k in imgs})
        rejects.extend(batch_rejects)
        reasons: dict[str, int] = {}
        for r in batch_rejects:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        stages.append(
            {
                "name": name,
                "kind": "map",
                "in": len(alive),
                "kept": len(kept),
                "rejected": len(batch_rejects),
                "seconds": time.perf_counter() - t0,
                "reasons": reasons,
            }
        )
        return kept

    decoded = decode_images([by_key[k].data for k in keys], device="cpu")
    info = {
        k: (int(st), err, img.shape[:2] if img is not None else None)
        for k, st, err, img in zip(keys, decoded.status, decoded.errors, decoded.images)
    }
    alive = map_stage(
        "integrity",
        keys,
        lambda k: None if info[k][0] == 0 else (Status(info[k][0]).name, info[k][1] or "decode failed"),
    )
    alive = map_stage(
        "image_filter",
        alive,
        lambda k: None if min(info[k][2]) >= MIN_SIDE else ("min_side", f"min side {min(info[k][2])} < {MIN_SIDE}"),
    )
    alive = map_stage(
        "caption_filter",
        alive,
        lambda k: (
            None
            if len(captions[k].split()) >= MIN_WORDS
            else ("min_words", HOSTILE_DETAIL if k == HOSTILE_KEY else "too few words")
        ),
    )

    def global_stage(name, alive, groups, kind, reason, distance):
        t0 = time.perf_counter()
        removed = set()
        for rep, members in groups.items():
            for m in members:
                if m != rep:
                    removed.add(m)
                    duplicates.append({"key": m, "duplicate_of": rep, "kind": kind, "distance": distance(m, rep)})
                    rejects.append(
                        {
                            "key": m,
                            "source": "shard-00000.tar",
                            "stage": name,
                            "reason": reason,
                            "detail": f"duplicate of {rep}",
                        }
                    )
        kept = [k for k in alive if k not in removed]
        stages.append(
            {
                "name": name,
                "kind": "global",
                "in": len(alive),
                "kept": len(kept),
                "rejected": len(removed),
                "seconds": time.perf_counter() - t0,
                "reasons": {reason: len(removed)} if removed else {},
            }
        )
        return kept

    sha = {k: hashlib.sha256(by_key[k].data).hexdigest() for k in keys}
    exact_groups: dict[str, list[str]] = {}
    for k in sorted(alive):
        exact_groups.setdefault(sha[k], []).append(k)
    alive = global_stage(
        "exact_dedup", alive, {g[0]: g for g in exact_groups.values()}, "exact", "exact_duplicate", lambda m, rep: 0.0
    )
    codes_all = phash_bytes([by_key[k].data for k in alive], device="cpu").codes
    code = dict(zip(alive, codes_all))
    groups = _components(alive, np.asarray(codes_all, dtype=np.uint64), PHASH_MAX_DISTANCE)
    alive = global_stage(
        "phash_dedup",
        alive,
        groups,
        "phash",
        "near_duplicate",
        lambda m, rep: float(int(code[m] ^ code[rep]).bit_count()),
    )

    kept_rows = [
        {
            "key": k,
            "source": "shard-00000.tar",
            "sha256": sha[k],
            "width": int(info[k][2][1]),
            "height": int(info[k][2][0]),
            "format": decoded.formats[keys.index(k)],
            "phash": f"{int(code[k]):016x}",
            "caption": captions[k],
        }
        for k in alive
    ]
    pq.write_table(pa.Table.from_pylist(kept_rows), out / "samples.parquet")
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), out / "rejects.parquet")
    dup_table = pa.Table.from_pylist(duplicates, schema=DUPLICATES_SCHEMA)
    pq.write_table(dup_table, out / "duplicates.parquet")
    if with_thumbs:
        wanted = collector.wanted_keys(dup_table)
        table = pa.table({"key": keys, "image": [by_key[k].data for k in keys], "caption": [captions[k] for k in keys]})
        for part in (table.slice(0, 20), table.slice(20)):  # the executor's second pass, batch by batch
            collector.offer_group_members(wanted, part)
        collector.write(out / "thumbs.parquet")
    import mmcurate

    manifest = {
        "run": {
            "started": t_start,
            "finished": time.time(),
            "duration_s": 3.2 + sum(s["seconds"] for s in stages),
            "mmcurate_version": mmcurate.__version__,
            "recipe": {
                "input": {"path": "/data/shards/{00000..00001}.tar", "format": "webdataset"},
                "output": {"path": str(out), "shard_size": 1000},
                "stages": [
                    {"integrity": {}},
                    {"image_filter": {"min_side": MIN_SIDE}},
                    {"caption_filter": {"min_words": MIN_WORDS, "boilerplate": [HOSTILE_RECIPE_VALUE]}},
                    {"exact_dedup": {}},
                    {"phash_dedup": {"max_distance": PHASH_MAX_DISTANCE}},
                ],
            },
            "build_info": mmcurate.build_info(),
        },
        "counts": {"read": len(keys), "kept": len(alive), "rejected": len(rejects)},
        "stages": stages,
        "inputs": [{"path": "/data/shards/00000.tar", "sha256": "ab" * 32, "bytes": 123456}],
        "outputs": [{"path": "shards/00000.tar", "sha256": "cd" * 32, "bytes": 65432}, "samples.parquet"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {
        "keys": keys,
        "kept": alive,
        "rejects": rejects,
        "duplicates": duplicates,
        "stages": stages,
        "manifest": manifest,
        "collector": collector,
        "samples": by_key,
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    truth = build_output_dir(out)
    write_report(out)
    return out, truth


# ------------------------------------------------------------------------------------------------
# a small DOM for assertions


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], []

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag=None, **attrs):
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


class DomBuilder(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base", "embed"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", [])
        self.cur = self.root
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text.append(data)


def parse(html: str) -> DomBuilder:
    p = DomBuilder()
    p.feed(html)
    p.close()
    return p


# ------------------------------------------------------------------------------------------------
# thumbnails


def test_thumbnails_fit_the_box_and_broken_images_get_placeholders():
    from PIL import Image

    samples = build_sample(max_photos=2)
    thumbs = make_thumbnails([s.data for s in samples], size=64)
    assert len(thumbs) == len(samples)
    for s, t in zip(samples, thumbs):
        img = Image.open(io.BytesIO(t.jpeg))
        assert img.format == "JPEG" and max(img.size) <= 64
        if s.label in ("truncated", "corrupt", "empty", "unsupported"):
            assert not t.decoded and t.note, s.key
            assert img.size == (64, 64)  # the placeholder tile
        else:
            assert t.decoded, s.key
            assert max(img.size) == 64  # aspect kept: the long side fills the box
    # aspect ratio survives (chelsea is 451 x 300)
    chelsea = next(t for s, t in zip(samples, thumbs) if s.key == "chelsea")
    w, h = Image.open(io.BytesIO(chelsea.jpeg)).size
    assert (w, h) == (64, round(300 * 64 / 451))
    # None and junk never raise
    assert [t.decoded for t in make_thumbnails([None, b"\x00" * 10], size=32)] == [False, False]


def _rejects(rows):
    return pa.Table.from_pylist(
        [{"key": k, "source": "s", "stage": st, "reason": r, "detail": ""} for k, st, r in rows], schema=REJECTS_SCHEMA
    )


def test_collector_keeps_the_smallest_keys_per_reason_whatever_the_order():
    samples = {s.key: s.data for s in build_sample(max_photos=3)}
    rows = [(k, "image_filter", "min_side" if i % 2 else "aspect") for i, k in enumerate(sorted(samples))]
    forward = ThumbnailCollector(max_per_reason=2, size=32)
    forward.offer_rejects(_rejects(rows), samples)
    backward = ThumbnailCollector(max_per_reason=2, size=32)
    for row in reversed(rows):  # one sample at a time, reversed
        backward.offer_rejects(_rejects([row]), samples)
    split_a, split_b = ThumbnailCollector(max_per_reason=2, size=32), ThumbnailCollector(max_per_reason=2, size=32)
    split_a.offer_rejects(_rejects(rows[1::2]), samples)
    split_b.offer_rejects(_rejects(rows[::2]), samples)
    merged = split_b.merge(split_a)
    expected = {reason: sorted(k for k, _, r in rows if r == reason)[:2] for reason in ("min_side", "aspect")}
    for c in (forward, backward, merged):
        t = c.to_table()
        assert t.schema == THUMBS_SCHEMA
        got = {
            reason: [k for k, r in zip(t["key"].to_pylist(), t["reason"].to_pylist()) if r == reason]
            for reason in expected
        }
        assert got == expected
        assert t.equals(forward.to_table())
    # keys without bytes at hand are skipped, not drawn
    c = ThumbnailCollector(size=32)
    assert c.offer_rejects(_rejects([("absent", "exact_dedup", "exact_duplicate")]), {}) == 0
    assert c.to_table().num_rows == 0


def test_collector_chooses_duplicate_groups_deterministically_and_round_trips(tmp_path):
    samples = {s.key: s.data for s in build_sample(max_photos=3)}
    dup = pa.Table.from_pylist(
        [{"key": "astronaut_copy", "duplicate_of": "astronaut", "kind": "exact", "distance": 0.0}]
        + [
            {"key": f"{p}_{v}", "duplicate_of": p, "kind": "phash", "distance": float(d)}
            for p in ("chelsea", "coffee")
            for v, d in (("requal", 1), ("small", 2), ("bright", 4))
        ]
        + [{"key": "astronaut_small", "duplicate_of": "astronaut", "kind": "phash", "distance": 3.0}],
        schema=DUPLICATES_SCHEMA,
    )
    c = ThumbnailCollector(max_groups=3, max_per_group=3, size=32)
    wanted = c.wanted_keys(dup)
    # near duplicates first, kinds alternate, larger groups first, then by representative key
    assert [(g.kind, g.representative) for g in c.groups] == [
        ("phash", "chelsea"),
        ("exact", "astronaut"),
        ("phash", "coffee"),
    ]
    # members with the largest distance are the ones shown (representative + 2)
    assert [m for m, _ in c.groups[0].members] == ["chelsea_bright", "chelsea_small"]
    assert c.groups[0].size == 3
    assert wanted == {
        "chelsea",
        "chelsea_bright",
        "chelsea_small",
        "astronaut",
        "astronaut_copy",
        "coffee",
        "coffee_bright",
        "coffee_small",
    }
    table = pa.table({"key": list(samples), "image": list(samples.values())})
    assert c.offer_group_members(wanted, table) == len(wanted)
    assert c.offer_group_members(wanted, table) == 0  # already have them
    t = c.to_table()
    assert t["kind"].to_pylist() == ["duplicate"] * 8
    assert t["key"].to_pylist()[:3] == ["chelsea", "chelsea_bright", "chelsea_small"]
    assert t["distance"].to_pylist()[:3] == [None, 4.0, 2.0]
    assert all(t["decoded"].to_pylist())
    path = c.write(tmp_path / "thumbs.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["thumbs.parquet"]  # no temporary file left behind
    again = ThumbnailCollector.read(path, max_groups=3, max_per_group=3, size=32)
    assert again.to_table().equals(t)
    assert pickle.loads(pickle.dumps(c)).to_table().equals(t)  # executors ship stages and collectors around


def test_collector_rejects_bad_limits_by_name():
    with pytest.raises(ValueError, match="max_per_reason"):
        ThumbnailCollector(max_per_reason=-1)
    with pytest.raises(ValueError, match="size"):
        ThumbnailCollector(size=2)
    with pytest.raises(ValueError, match="'image' column"):
        c = ThumbnailCollector()
        c.wanted_keys(
            pa.Table.from_pylist(
                [{"key": "b", "duplicate_of": "a", "kind": "exact", "distance": 0.0}], schema=DUPLICATES_SCHEMA
            )
        )
        c.offer_group_members({"a"}, pa.table({"key": ["a"]}))


# ------------------------------------------------------------------------------------------------
# charts


def test_histograms_count_every_value_including_the_tail():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(500, 80, 2000), [50_000.0, np.nan]])  # one outlier, one NaN
    h = Histogram.linear(values)
    assert h.total == 2001 and int(h.counts.sum()) == 2001
    assert h.overflow and h.edges[-1] < 2000  # the outlier is folded in
    assert h.label(len(h.counts) - 1).startswith("≥")
    a = Histogram.aspect([1.0, 2.0, 0.5, 100.0, 0.001])
    assert int(a.counts.sum()) == 5 and a.counts[0] == 1 and a.counts[-1] == 1
    i = Histogram.integers([0, 0, 3, 10])
    assert list(i.counts) == [2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    svg = histogram_svg(i, "t<", "x&")
    assert svg.count("<rect") == 11 and "t&lt;" in svg and "x&amp;" in svg
    assert "no data" in histogram_svg(Histogram.linear([]), "empty", "x")
    bars = bar_chart_svg([BarRow("<b>", [Segment(3, "#000", "a<b")])], "chart")
    assert "&lt;b&gt;" in bars and "<b>" not in bars


def _polyline_points(node) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in node.attrs["points"].split()]


def test_rank_size_chart_sorts_switches_to_log_and_keeps_long_series_exact():
    dom = parse(rank_size_svg([Series("a<b", [1, 5, 3], "#000")], "t&")).root
    svg = dom.find_all("svg")[0]
    assert svg.attrs["aria-label"] == "t&" and "a<b" in svg.all_text() and "log scale" not in svg.all_text()
    (line,) = dom.find_all("polyline")
    ys = [y for _, y in _polyline_points(line)]
    assert len(ys) == 3 and ys[0] < ys[1] < ys[2]  # largest first: highest on the page
    assert len(dom.find_all("circle")) == 3 and dom.find_all("g")[0].attrs["data-series"] == "a<b"
    # a wide range goes on a log axis; zeros cannot, so the line stops and the legend counts them
    dom = parse(rank_size_svg([Series("wide", [0, 1000, 10, 0, 1, 100], "#000")], "w")).root
    assert "log scale" in dom.all_text() and "2 empty" in dom.all_text()
    (line,) = dom.find_all("polyline")
    pts = _polyline_points(line)
    steps = np.diff([y for _, y in pts])
    assert len(pts) == 4 and steps.min() > 0 and np.ptp(steps) < 0.2  # 1000, 100, 10, 1: one decade per step
    assert "log scale" not in rank_size_svg([Series("wide", [1000, 1], "#000")], "w", log_y=False)
    # 4096 values: the polyline keeps each pixel column's extremes, so the first and last points are exact
    values = np.arange(1, 4097)[::-1] ** 2
    dom = parse(rank_size_svg([Series("long", values, "#000"), Series("flat", np.full(4096, 50), "#111")], "l")).root
    lines = dom.find_all("polyline")
    assert len(lines) == 2 and not dom.find_all("circle")
    pts = _polyline_points(lines[0])
    assert 100 < len(pts) < 4096 // 2
    ref = parse(
        rank_size_svg([Series("long", [values[0], values[-1]], "#000"), Series("flat", [50, 50], "#111")], "l")
    ).root.find_all("polyline")[0]
    assert [pts[0], pts[-1]] == _polyline_points(ref)  # same axes: first and last points agree
    assert "no data" in rank_size_svg([Series("empty", [], "#000")], "x")


# ------------------------------------------------------------------------------------------------
# the report


def test_report_shows_the_run(run_dir):
    out, truth = run_dir
    html = (out / "report.html").read_text(encoding="utf-8")
    dom = parse(html).root
    manifest = truth["manifest"]
    sections = [n.attrs["id"] for n in dom.find_all("section")]
    # captions: the kept samples have some; no modifying stage ran (no "edits" section)
    assert sections == ["run", "funnel", "distributions", "captions", "duplicates", "clusters", "rejects", "timing"]
    # KPIs and the accounting check
    kpi = {
        n.attrs["data-kpi"]: n.find_all("div", **{"class": "kpi-value"})[0].all_text()
        for n in dom.find_all("div")
        if "data-kpi" in n.attrs
    }
    assert kpi["read"] == f"{manifest['counts']['read']:,}"
    assert kpi["kept"] == f"{manifest['counts']['kept']:,}"
    assert kpi["rejected"] == f"{manifest['counts']['rejected']:,}"
    assert kpi["duplicates"] == f"{len(truth['duplicates']):,}"
    assert len(dom.find_all("span", data_check="balanced")) == 1
    # funnel: a row per stage, with the manifest's numbers and its reasons
    rows = [n for n in dom.find_all("tr") if "data-stage" in n.attrs and n.attrs.get("data-in")]
    assert [r.attrs["data-stage"] for r in rows] == [s["name"] for s in truth["stages"]]
    for row, stage in zip(rows, truth["stages"]):
        assert (int(row.attrs["data-in"]), int(row.attrs["data-kept"]), int(row.attrs["data-rejected"])) == (
            stage["in"],
            stage["kept"],
            stage["rejected"],
        )
        chips = {
            c.attrs["data-reason"]: int(c.find_all("b")[0].all_text().replace(",", ""))
            for c in row.find_all("span")
            if "data-reason" in c.attrs
        }
        assert chips == stage["reasons"]
    integrity = truth["stages"][0]["reasons"]
    assert integrity == {"truncated": 1, "corrupt": 1, "empty": 1, "unsupported": 1}
    # histograms: every kept sample counted; pHash distances of every near duplicate
    hists = {n.attrs["data-hist"]: int(n.attrs["data-n"]) for n in dom.find_all("div") if "data-hist" in n.attrs}
    n_kept = len(truth["kept"])
    assert hists == {
        "width": n_kept,
        "height": n_kept,
        "aspect": n_kept,
        "caption_chars": n_kept,
        "caption_words": n_kept,
        "phash_distance": sum(d["kind"] == "phash" for d in truth["duplicates"]),
    }
    # duplicate groups: sizes from duplicates.parquet, tiles from thumbs.parquet
    groups = [n for n in dom.find_all("div") if "data-group" in n.attrs]
    assert 1 <= len(groups) <= 4
    for g in groups:
        members = [
            d
            for d in truth["duplicates"]
            if d["duplicate_of"] == g.attrs["data-group"] and d["kind"] == g.attrs["data-kind"]
        ]
        assert int(g.attrs["data-size"]) == len(members) + 1
        tiles = [t.attrs["data-key"] for t in g.find_all("figure")]
        assert tiles[0] == g.attrs["data-group"]
        assert set(tiles[1:]) <= {d["key"] for d in members} and len(tiles) <= 4
    # reject cards: one per (stage, reason) with its count; thumbnails at most 3 each
    cards = {
        (n.attrs["data-stage"], n.attrs["data-reason"]): n for n in dom.find_all("div") if "data-reason" in n.attrs
    }
    expected: dict = {}
    for r in truth["rejects"]:
        expected[(r["stage"], r["reason"])] = expected.get((r["stage"], r["reason"]), 0) + 1
    assert {k: int(v.attrs["data-count"]) for k, v in cards.items()} == expected
    broken = [t.attrs["data-key"] for t in cards[("integrity", "corrupt")].find_all("figure")]
    assert broken == ["broken_corrupt"]
    assert "placeholder" in cards[("integrity", "corrupt")].find_all("figure")[0].attrs["class"]
    for card in cards.values():
        assert len(card.find_all("figure")) <= 3
    assert "duplicate groups" in cards[("exact_dedup", "exact_duplicate")].all_text()
    # timing: one row per stage plus the I/O remainder and the total
    timing = [n.attrs["data-stage"] for n in dom.find_all("tr") if "data-seconds" in n.attrs]
    assert timing == [s["name"] for s in truth["stages"]] + ["other (read, write, overhead)"]
    # the recipe, as YAML, in a <details>
    recipe = dom.find_all("details", data_detail="recipe")[0].all_text()
    assert "min_side: 200" in recipe and "phash_dedup" in recipe


def test_report_references_nothing_outside_itself(run_dir):
    out, _ = run_dir
    html = (out / "report.html").read_text(encoding="utf-8")
    parsed = parse(html)
    refs = [
        (n.tag, k, v)
        for n in parsed.root.iter()
        for k, v in n.attrs.items()
        if k in ("src", "href", "xlink:href", "srcset", "poster", "data", "action", "background")
    ]
    assert refs, "expected in-page links and data: images"
    for tag, attr, value in refs:
        # in-page links, embedded images, and links (never loaded) to the run's own tables beside the report
        assert value.startswith("#") or value.startswith("data:image/") or value in OWN_TABLES, (tag, attr, value[:80])
    assert {v for _, _, v in refs if v in OWN_TABLES} == OWN_TABLES
    assert "http://" not in html and "https://" not in html
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(parsed.tags)
    assert "url(" not in html and "@import" not in html and "@font-face" not in html
    images = [n for n in parsed.root.iter() if n.tag == "img"]
    assert len(images) >= 10
    size = (out / "report.html").stat().st_size
    assert size < 1_500_000, size


def test_report_written_elsewhere_links_the_run_tables_where_they_are(run_dir, tmp_path):
    """write_report(path=...) outside the run directory: the links to rejects.parquet / duplicates.parquet are
    relative to the report's own place and resolve to the run's files (beside the run, they stay bare names)."""
    from urllib.parse import unquote

    out, _ = run_dir
    target = tmp_path / "some where" / "report.html"
    write_report(out, target)
    hrefs = {
        n.attrs["href"] for n in parse(target.read_text(encoding="utf-8")).root.iter() if n.attrs.get("class") == "file"
    }
    assert hrefs and all(not h.startswith(("/", "file:")) for h in hrefs)
    assert {(target.parent / unquote(h)).resolve() for h in hrefs} == {(out / t).resolve() for t in OWN_TABLES}


def test_report_escapes_hostile_keys_captions_and_details(run_dir):
    out, truth = run_dir
    html = (out / "report.html").read_text(encoding="utf-8")
    for raw in (HOSTILE_KEY, HOSTILE_CAPTION, HOSTILE_DETAIL, HOSTILE_RECIPE_VALUE):
        assert raw not in html
    assert "<script" not in html.lower()
    parsed = parse(html)
    assert "script" not in parsed.tags
    text = parsed.root.all_text()
    # the hostile strings are shown, as text
    assert HOSTILE_KEY in text and HOSTILE_DETAIL in text and HOSTILE_RECIPE_VALUE in text
    assert HOSTILE_CAPTION in text  # chelsea's caption, under its duplicate-group tile
    hostile_tiles = [n for n in parsed.root.iter() if n.tag == "figure" and n.attrs.get("data-key") == HOSTILE_KEY]
    assert len(hostile_tiles) == 1
    # only our own images: no <img src=x> smuggled in through a caption
    assert all(n.attrs["src"].startswith("data:image/jpeg;base64,") for n in parsed.root.iter() if n.tag == "img")


def test_report_without_optional_parts(tmp_path, run_dir):
    src, truth = run_dir
    shutil.copy(src / "manifest.json", tmp_path / "manifest.json")
    html = render_report(load_run(tmp_path))
    dom = parse(html).root
    assert [n.attrs["id"] for n in dom.find_all("section")] == [
        "run",
        "funnel",
        "distributions",
        "duplicates",
        "clusters",
        "rejects",
        "timing",
    ]
    assert "no duplicates.parquet" in html and "samples.parquet is missing" in html
    # reasons fall back to the manifest when rejects.parquet is absent
    cards = [n for n in dom.find_all("div") if "data-reason" in n.attrs]
    assert sum(int(c.attrs["data-count"]) for c in cards) == truth["manifest"]["counts"]["rejected"]
    # a bare manifest: counts only
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {"read": 5, "kept": 3, "rejected": 1}}))
    path = write_report(tmp_path)
    html = path.read_text(encoding="utf-8")
    assert "accounting mismatch" in html and "the manifest lists no stages" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "report.html"]  # no temp files
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        write_report(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------
# the report in a run: ReportObserver, as the CLI attaches it to the executor


@pytest.fixture(scope="module")
def demo_in_3_shards(tmp_path_factory) -> Path:
    """The demo dataset in 3 shards (conftest's demo_input has 6)."""
    return build_demo_input(tmp_path_factory.mktemp("demo_input"), shard_size=40)


@pytest.mark.parametrize("report", [True, False])
def test_report_observer_collects_thumbnails_and_writes_the_report_the_recipe_asks_for(
    demo_in_3_shards, tmp_path, report
):
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe
    from mmcurate.report import ReportObserver

    out = tmp_path / "out"
    r = default_recipe_dict()
    r["input"]["path"] = str(demo_in_3_shards)
    r["output"].update(path=str(out), report=report)
    manifest = LocalExecutor(parse_recipe(r), progress=False, observers=[ReportObserver(max_per_reason=2)]).run()
    thumbs = pq.read_table(out / "thumbs.parquet").to_pylist()  # written whether or not the report is
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    # a thumbnail per (stage, reason), up to the limit, for map and global rejects alike, all of rejected samples
    by_reason: dict = {}
    for row in rejects:
        by_reason.setdefault((row["stage"], row["reason"]), set()).add(row["key"])
    shown = [t for t in thumbs if t["kind"] == "reject"]
    assert {(t["stage"], t["reason"]) for t in shown} == set(by_reason)
    assert all(t["key"] in by_reason[(t["stage"], t["reason"])] for t in shown)
    assert max(sum(1 for t in shown if t["reason"] == reason) for _, reason in by_reason) == 2
    assert {"exact_dedup", "phash_dedup"} <= {t["stage"] for t in shown}
    # the duplicate groups' tiles are decoded images from the second read of the input
    dup_tiles = [t for t in thumbs if t["kind"] == "duplicate"]
    assert dup_tiles and all(t["decoded"] for t in dup_tiles)
    assert (out / "report.html").exists() == report
    assert ("report" in manifest["timings_s"]) == report
    assert json.loads((out / "manifest.json").read_text())["timings_s"] == manifest["timings_s"]
    if report:
        html = (out / "report.html").read_text(encoding="utf-8")
        assert html.count("data:image/jpeg;base64,") >= len(shown)


# ------------------------------------------------------------------------------------------------
# semantic clusters: the balance and semantic_dedup stages' stats in the manifest

HOSTILE_STAT = "<img src=x onerror=alert('stat')></td><script>alert(1)</script>"


def _blobs(n: int, seed: int = 0, d: int = 16) -> np.ndarray:
    """Unit vectors in Gaussian blobs of very different sizes; every 10th row has a near copy after it."""
    rng = np.random.default_rng(seed)
    weights = 0.8 ** np.arange(24)
    sizes = np.maximum(3, np.round(n * weights / weights.sum())).astype(int)
    centers = rng.standard_normal((sizes.size, d))
    x = np.concatenate([c + 0.25 * rng.standard_normal((s, d)) for c, s in zip(centers, sizes)])
    x = x[rng.permutation(len(x))]
    copies = x[1::10]
    x[1::10] = x[0::10][: len(copies)] + 1e-4 * rng.standard_normal(copies.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def semantic_stage_entries() -> list[dict]:
    """semantic_dedup then balance, run for real on generated embeddings; their manifest entries as the
    executor writes them (through JSON)."""
    import mmcurate.stages.semantic  # noqa: F401  (registers the stages)
    from mmcurate.pipeline.global_phase import run_on_table
    from mmcurate.pipeline.stage import registry

    x = _blobs(1500)
    n = len(x)
    table = pa.table(
        {
            "key": [f"s{i:05d}" for i in range(n)],
            "source": ["shard-00000.tar"] * n,
            "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
        }
    )
    entries = []
    for name, params in (
        ("semantic_dedup", {"eps": 0.01, "n_clusters": 12, "device": "cpu"}),
        ("balance", {"target": n // 4, "levels": [60, 15], "device": "cpu"}),
    ):
        res = run_on_table(registry.create(name, params), table)
        reasons: dict[str, int] = {}
        for r in res.rejected.column("reason").to_pylist():
            reasons[r] = reasons.get(r, 0) + 1
        entries.append(
            {
                "name": name,
                "kind": "global",
                "in": table.num_rows,
                "kept": table.num_rows - res.rejected.num_rows,
                "rejected": res.rejected.num_rows,
                "seconds": res.stats.seconds,
                "reasons": reasons,
                "stats": res.stats.to_dict(),
            }
        )
        gone = set(res.rejected.column("key").to_pylist())
        table = table.filter(pa.array([k not in gone for k in table.column("key").to_pylist()]))
    return json.loads(json.dumps(entries))


def _semantic_manifest(stages: list[dict]) -> dict:
    read, kept = stages[0]["in"], stages[-1]["kept"]
    return {
        "run": {"duration_s": 2.0},
        "counts": {"read": read, "kept": kept, "rejected": read - kept},
        "stages": stages,
    }


def _clusters_section(html: str) -> Node:
    (section,) = parse(html).root.find_all("section", id="clusters")
    return section


def _metric_cells(section: Node) -> dict[str, tuple[str, str]]:
    out = {}
    for row in section.find_all("tr"):
        if "data-metric" in row.attrs:
            cells = {td.attrs["data-side"]: td.all_text() for td in row.find_all("td") if "data-side" in td.attrs}
            out[row.attrs["data-metric"]] = (cells["before"], cells["after"])
    return out


def test_report_shows_cluster_sizes_before_and_after_balance(tmp_path, semantic_stage_entries):
    dedup, balance = semantic_stage_entries
    before, after = balance["stats"]["before"], balance["stats"]["after"]
    k = before["n_clusters"]
    assert 2 <= k <= 64 and len(before["sizes"]) == len(after["sizes"]) == k
    assert dedup["stats"]["duplicates"] > 0 and after["gini"] < before["gini"]
    (tmp_path / "manifest.json").write_text(json.dumps(_semantic_manifest(semantic_stage_entries)))
    html = write_report(tmp_path).read_text(encoding="utf-8")
    dom = parse(html).root
    assert [a.all_text() for a in dom.find_all("a", href="#clusters")] == ["Semantic clusters"]
    section = _clusters_section(html)
    (card,) = section.find_all("div", data_stage="balance")
    # two series, each a point per cluster, largest first
    series = {g.attrs["data-series"]: g for g in card.find_all("g") if "data-series" in g.attrs}
    assert sorted(series) == ["after", "before"]
    for name, side in (("before", before), ("after", after)):
        g = series[name]
        assert int(g.attrs["data-n"]) == k and len(g.find_all("circle")) == sum(v > 0 for v in side["sizes"])
        (line,) = g.find_all("polyline")
        ys = [y for _, y in _polyline_points(line)]
        assert ys == sorted(ys)
    # the largest cluster shrinks: its point sits lower after (larger y)
    assert (
        _polyline_points(series["after"].find_all("polyline")[0])[0][1]
        > _polyline_points(series["before"].find_all("polyline")[0])[0][1]
    )
    cells = _metric_cells(card)
    assert cells["gini"] == (f"{before['gini']:.3f}", f"{after['gini']:.3f}")
    assert cells["normalized_entropy"] == (f"{before['normalized_entropy']:.3f}", f"{after['normalized_entropy']:.3f}")
    assert cells["clusters"] == (f"{k:,}", f"{k:,}")
    assert cells["samples"] == (f"{balance['in']:,}", f"{balance['kept']:,}")
    assert cells["largest"] == (f"{max(before['sizes']):,}", f"{max(after['sizes']):,}")
    # semantic_dedup: clusters, duplicates, eps and its cluster-size percentiles
    (sd,) = section.find_all("div", data_stage="semantic_dedup")
    facts = {
        tr.find_all("th")[0].all_text(): tr.find_all("td")[0].all_text()
        for tr in sd.find_all("tr")
        if tr.find_all("th") and tr.find_all("td")
    }
    assert facts["clusters"] == "12"
    assert facts["duplicates removed"].startswith(f"{dedup['stats']['duplicates']:,} (")
    assert facts["eps (cosine ≥ 1 − eps is a duplicate)"] == "0.010"
    pct = {td.attrs["data-percentile"]: td.all_text() for td in sd.find_all("td") if "data-percentile" in td.attrs}
    assert list(pct) == list(dedup["stats"]["cluster_size_percentiles"])
    assert pct["p100"] == f"{dedup['stats']['cluster_size_percentiles']['p100']:,.0f}"


def test_report_summarises_balance_beyond_the_listed_sizes():
    rng = np.random.default_rng(0)
    k = MAX_LISTED_CLUSTER_SIZES + 500
    labels = rng.zipf(1.3, 40_000) % k
    before = cluster_balance_stats(labels, k)
    after = cluster_balance_stats(labels[np.isin(labels, np.arange(0, k, 2))], k)
    assert "sizes" not in before and "sizes" not in after
    stats = {
        "n": 40_000,
        "target": 10_000,
        "selected": 10_000,
        "method": "hierarchical",
        "strategy": "random",
        "levels": [k, 50],
        "before": before,
        "after": after,
    }
    stage = {"name": "balance", "kind": "global", "in": 40_000, "kept": 10_000, "rejected": 30_000, "stats": stats}
    section = _clusters_section(render_report(RunData(Path("run"), _semantic_manifest([stage]))))
    (card,) = section.find_all("div", data_stage="balance")
    assert not card.find_all("svg")
    assert f"up to {MAX_LISTED_CLUSTER_SIZES:,} clusters" in card.all_text() and f"{k:,}" in card.all_text()
    cells = _metric_cells(card)
    assert cells["gini"] == (f"{before['gini']:.3f}", f"{after['gini']:.3f}")
    assert cells["clusters"] == (f"{k:,}", f"{k:,}")
    assert cells["largest"] == (
        f"{before['size_percentiles']['p100']:,.0f}",
        f"{after['size_percentiles']['p100']:,.0f}",
    )


def test_report_without_semantic_stages_says_so(run_dir):
    out, _ = run_dir
    section = _clusters_section((out / "report.html").read_text(encoding="utf-8"))
    assert not section.find_all("svg") and not section.find_all("table")
    notes = [p.all_text() for p in section.find_all("p") if p.attrs.get("class") == "empty"]
    assert notes == ["no semantic stage ran (semantic_dedup, balance): no clusters to show"]
    # the stages ran but nothing had an embedding: no cluster stats, said per stage
    stages = [
        {
            "name": "semantic_dedup",
            "kind": "global",
            "in": 3,
            "kept": 0,
            "rejected": 3,
            "stats": {"no_embedding": 3, "eps": 0.05, "keep": "hard", "clusters": 0, "duplicates": 0},
        },
        {
            "name": "balance",
            "kind": "global",
            "in": 0,
            "kept": 0,
            "rejected": 0,
            "stats": {"no_embedding": 0, "n": 0, "target": 0, "selected": 0},
        },
    ]
    section = _clusters_section(render_report(RunData(Path("run"), _semantic_manifest(stages))))
    text = section.all_text()
    assert "nothing was clustered" in text and "no cluster-size percentiles" in text and not section.find_all("svg")


def test_cluster_section_escapes_manifest_values(semantic_stage_entries):
    dedup, balance = json.loads(json.dumps(semantic_stage_entries))
    balance["stats"]["method"] = HOSTILE_STAT
    balance["stats"]["after"]["sizes"] = balance["stats"]["after"]["sizes"][:-1] + [HOSTILE_STAT]
    dedup["stats"]["keep"] = {"max": HOSTILE_STAT}
    dedup["stats"]["cluster_size_percentiles"][HOSTILE_STAT] = HOSTILE_STAT
    html = render_report(RunData(Path("run"), _semantic_manifest([dedup, balance])))
    assert HOSTILE_STAT not in html and "<script" not in html.lower()
    parsed = parse(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    section = _clusters_section(html)
    assert section.all_text().count(HOSTILE_STAT) >= 3  # shown, as text
    (card,) = section.find_all("div", data_stage="balance")
    assert not card.find_all("svg")  # sizes that are not numbers are not drawn
    assert _metric_cells(card)["gini"][1] == f"{balance['stats']['after']['gini']:.3f}"


# ------------------------------------------------------------------------------------------------
# a real browser


def _chromium() -> str | None:
    for candidate in (os.environ.get("MMCURATE_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: events out;
    messages are JSON separated by NUL). No websocket library needed."""

    def __init__(self, binary: str, profile: Path, log: Path, timeout: float = 60.0):
        self.deadline = time.monotonic() + timeout
        cmd_r, self.cmd_w = os.pipe()
        self.evt_r, evt_w = os.pipe()
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            "about:blank",
        ]
        # The shell moves our pipe ends to fds 3 and 4, where chromium expects them.
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2', "sh", *args],
            stdin=cmd_r,
            stdout=evt_w,
            stderr=self.log,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.evt_r], [], [], left)
            if ready:
                chunk = os.read(self.evt_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message()
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - best effort: the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.evt_r)
        self.log.close()


_DOM_FACTS = """JSON.stringify({
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  kpiRead: document.querySelector('[data-kpi=read] .kpi-value').textContent,
  images: document.images.length,
  imagesBroken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
  svgs: document.querySelectorAll('svg').length,
  svgsRendered: Array.from(document.querySelectorAll('svg')).filter(s => s.getBoundingClientRect().width > 100).length,
  scripts: document.scripts.length,
  height: document.documentElement.scrollHeight,
  title: document.title,
})"""


def _open_in_chromium(
    chromium: str, report: Path, tmp_path: Path, visits: tuple[str, ...] = ()
) -> tuple[dict, list, list[str], bytes, bytes]:
    """Load `report` in headless chromium: (DOM facts, errors logged, URLs requested, viewport PNG,
    full-page PNG at half scale). Then, in the same browser, each URL of `visits` (another report, or an anchor
    of one, as a reader's click goes there): facts["visits"] holds, per URL, the :target element, the <details>
    that are open and the pages of paged listings that are shown."""
    browser = DevTools(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.call(
            "Emulation.setDeviceMetricsOverride", session, width=1280, height=2000, deviceScaleFactor=1, mobile=False
        )
        browser.call("Page.navigate", session, url=report.as_uri())
        browser.wait_for("Page.loadEventFired")
        facts = json.loads(
            browser.call("Runtime.evaluate", session, expression=_DOM_FACTS, returnByValue=True)["result"]["value"]
        )
        shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
        full = browser.call(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": min(facts["height"], 12000), "scale": 0.5},
        )["data"]
        facts["visits"] = [_visit(browser, session, url) for url in visits]
        browser.call("Runtime.evaluate", session, expression="1")  # drains late console/log events
    finally:
        browser.close()

    import base64

    errors = []
    for ev in browser.events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            errors.append(params.get("args"))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            errors.append(params["entry"].get("text"))
    requested = [
        ev["params"]["request"]["url"] for ev in browser.events if ev.get("method") == "Network.requestWillBeSent"
    ]
    return facts, errors, requested, base64.b64decode(shot), base64.b64decode(full)


_VISIT_FACTS = """JSON.stringify({
  href: location.href,
  target: (document.querySelector(':target') || {}).id || null,
  openDetails: Array.from(document.querySelectorAll('details[open]')).length,
  shownPages: Array.from(document.querySelectorAll('.pages > .page'))
    .filter(p => getComputedStyle(p).display !== 'none').map(p => p.id),
  targetVisible: !!document.querySelector(':target') && document.querySelector(':target').getClientRects().length > 0,
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  images: document.images.length,
  imagesBroken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
  svgs: document.querySelectorAll('svg').length,
  svgsRendered: Array.from(document.querySelectorAll('svg')).filter(s => s.getBoundingClientRect().width > 100).length,
  scripts: document.scripts.length,
})"""


def _visit(browser, session: str, url: str) -> dict:
    """Go to `url` (a fragment of the loaded page scrolls; another page loads) and return _VISIT_FACTS."""
    browser.call("Page.navigate", session, url=url)
    deadline = time.monotonic() + 20
    while True:
        ready = browser.call(
            "Runtime.evaluate", session, expression="document.readyState + ' ' + location.href", returnByValue=True
        )["result"]["value"]
        if ready == f"complete {url}" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return json.loads(
        browser.call("Runtime.evaluate", session, expression=_VISIT_FACTS, returnByValue=True)["result"]["value"]
    )


@pytest.mark.browser
def test_report_renders_in_headless_chromium_without_errors(run_dir, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (scripts/install_browser.sh installs Debian's chromium)")
    from PIL import Image
    from test_report_views import write_listing_run

    from mmcurate.report.duplicate_listing import DuplicateListing
    from mmcurate.report.reject_listing import reject_listing_id

    out, truth = run_dir
    report = (out / "report.html").resolve()
    # a second report whose listings page: its anchors are visited in the same browser
    write_listing_run(tmp_path / "listing")
    paged_report = write_report(tmp_path / "listing").resolve()
    listing = DuplicateListing.from_run(load_run(tmp_path / "listing"))
    reject_anchor = reject_listing_id("image_filter", "min_side")
    visits = (
        f"{paged_report.as_uri()}#{reject_anchor}",  # "listed below": opens the closed block, page 1 shown
        f"{paged_report.as_uri()}#{reject_anchor}-t-p3",  # a pager link: page 3 instead of page 1
        paged_report.as_uri() + listing.href("phash", "rep0030"),  # a gallery "+N more": the group's page
    )
    facts, errors, requested, shot, full = _open_in_chromium(chromium, report, tmp_path, visits)

    png = tmp_path / "report.png"
    png.write_bytes(shot)
    (tmp_path / "report_full.png").write_bytes(full)
    if os.environ.get("MMCURATE_SCREENSHOT_DIR"):  # to look at them
        for name in ("report.png", "report_full.png"):
            shutil.copy(tmp_path / name, Path(os.environ["MMCURATE_SCREENSHOT_DIR"]) / name)

    assert errors == [], errors
    pages = {report.as_uri(), paged_report.as_uri()}
    assert requested and all(u in pages or u.startswith("data:") for u in requested), requested

    assert facts["sections"] == [
        "run",
        "funnel",
        "distributions",
        "captions",
        "duplicates",
        "clusters",
        "rejects",
        "timing",
    ]
    listed, page3, group = facts["visits"]
    assert listed["target"] == reject_anchor and listed["targetVisible"] and listed["openDetails"] == 1
    assert f"{reject_anchor}-t-p1" in listed["shownPages"]
    assert page3["target"] == f"{reject_anchor}-t-p3" and page3["targetVisible"]
    shown = [p for p in page3["shownPages"] if p.startswith(reject_anchor)]
    assert shown == [f"{reject_anchor}-t-p3"]  # one page of a listing at a time
    assert group["target"] == listing.href("phash", "rep0030")[1:] and group["targetVisible"]
    assert facts["kpiRead"] == f"{truth['manifest']['counts']['read']:,}"
    assert facts["images"] >= 10 and facts["imagesBroken"] == 0  # every data: thumbnail decoded
    assert facts["svgs"] >= 8 and facts["svgsRendered"] == facts["svgs"]
    assert facts["scripts"] == 0
    assert facts["title"].startswith("mmcurate report")

    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (2000, 1280, 3)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 500, "screenshot looks blank"


@pytest.mark.browser
def test_cluster_and_view_sections_render_in_headless_chromium(tmp_path, semantic_stage_entries, quality_run):
    """The cluster section of a manifest-only run; then, in the same browser, the quality, CLIP, splits and
    provenance views of a real run (tests/report_runs.py's quality_run)."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (scripts/install_browser.sh installs Debian's chromium)")
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(_semantic_manifest(semantic_stage_entries)))
    report = write_report(out).resolve()
    views_report = write_report(quality_run, tmp_path / "views" / "report.html").resolve()
    facts, errors, requested, _, full = _open_in_chromium(chromium, report, tmp_path, (views_report.as_uri(),))
    if os.environ.get("MMCURATE_SCREENSHOT_DIR"):
        (Path(os.environ["MMCURATE_SCREENSHOT_DIR"]) / "report_clusters_full.png").write_bytes(full)
    assert errors == [], errors  # of both pages
    pages = {report.as_uri(), views_report.as_uri()}
    assert requested and all(u in pages or u.startswith("data:") for u in requested), requested
    assert "clusters" in facts["sections"]
    assert facts["svgs"] >= 3 and facts["svgsRendered"] == facts["svgs"]  # funnel, rank-size, timing
    assert facts["scripts"] == 0
    [views] = facts["visits"]
    assert {"quality", "clip", "splits"} <= set(views["sections"])
    assert views["images"] >= 40 and views["imagesBroken"] == 0  # galleries read back from the output shards
    assert views["svgs"] >= 12 and views["svgsRendered"] == views["svgs"]  # 7 signals, scores, map, ...
    assert views["scripts"] == 0


def test_pdq_links_get_their_own_distance_histogram(demo_input, tmp_path):
    """A run deduplicating with hash: pdq: its links' distances (bits of 256) are charted apart from pHash's."""
    from helpers import default_recipe_for, run_local

    r = default_recipe_for(demo_input, tmp_path / "out")
    r["stages"] = [s if "phash_dedup" not in s else {"phash_dedup": {"hash": "pdq"}} for s in r["stages"]]
    run_local(r)
    dom = parse(write_report(tmp_path / "out").read_text(encoding="utf-8")).root
    hists = {n.attrs["data-hist"]: int(n.attrs["data-n"]) for n in dom.find_all("div") if "data-hist" in n.attrs}
    links = pq.read_table(tmp_path / "out" / "duplicates.parquet").column("kind").to_pylist()
    assert links.count("pdq") > 0 and hists["pdq_distance"] == links.count("pdq")
    assert hists["phash_distance"] == 0  # no pHash links in this run; the card stays, empty
