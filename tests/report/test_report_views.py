"""The report's captions and modifying-stages sections, and its paged listings of rejects and duplicate groups
(report/captions_section.py, edits_section.py, reject_listing.py, duplicate_listing.py, paging.py).

The sections are checked on a real run of the demo (caption_clean, caption_filter with language identification,
pii_redact keeping the raw originals, so that only the report's own masking stands between a planted value and
the page) against what its samples.parquet holds; the listings on output directories written here, large enough
to page and to be cut, with hostile names and personal data in the details.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_report import parse

from helpers import default_recipe_for, run_local
from mmcurate.curate.pii import DEFAULT_TOKENS
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA
from mmcurate.report import captions_section as captions_mod
from mmcurate.report import duplicate_listing, reject_listing
from mmcurate.report.html_report import render_report
from mmcurate.report.paging import anchor_id, evenly_spaced, paged
from mmcurate.report.run_data import load_run

HOSTILE = "</td><script>alert('x')</script><b>"
# personal data as the demo plants it in captions (mmcurate/io/demo_dataset.py)
DEMO_PII = ["jane.doe@example.com", "555-0132", "4111 1111 1111 1111", "192.168.1.20", "110105194912310025"]


def _section(dom, sid):
    found = [n for n in dom.find_all("section") if n.attrs.get("id") == sid]
    return found[0] if found else None


# ------------------------------------------------------------------------------------------------
# captions and modifying stages, from a real run


@pytest.fixture(scope="module")
def text_run(demo_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text_run") / "out"
    r = default_recipe_for(demo_input, out)
    stages = []
    for s in r["stages"]:
        name = next(iter(s))
        if name == "caption_filter":
            s = {"caption_filter": {**s[name], "detect_language": True}}
        elif name == "pii_redact":
            s = {"pii_redact": {"keep_original_text": True}}  # raw originals in samples.parquet: the report masks
        stages.append(s)
    r["stages"] = stages
    run_local(r)
    return out


@pytest.fixture(scope="module")
def text_report(text_run):
    html = render_report(load_run(text_run))
    return html, parse(html).root, pq.read_table(text_run / "samples.parquet")


def test_modifying_stages_count_what_changed_in_the_kept_samples(text_report):
    html, dom, samples = text_report
    section = _section(dom, "edits")
    assert section is not None
    rows = samples.to_pylist()
    # caption_clean: captions that differ from what the stage received
    changed = sum(r["caption_original"] is not None and r["caption"] != r["caption_original"] for r in rows)
    clean = section.find_all("div", data_stage="caption_clean")[0]
    counted = [n for n in clean.iter() if "data-changed" in n.attrs][0]
    assert int(counted.attrs["data-changed"]) == changed > 0
    assert int(counted.attrs["data-compared"]) == len(rows)
    assert "keep_original_text" in clean.all_text()  # the count includes redaction: said so
    pairs = [n for n in clean.iter() if n.attrs.get("class") == "pair"]
    assert 0 < len(pairs) <= 8
    assert any(n.tag == "del" for p in pairs for n in p.iter()) and any(n.tag == "ins" for p in pairs for n in p.iter())
    # pii_redact: values and samples per kind, summed from pii_redactions
    values, per_sample = Counter(), Counter()
    for r in rows:
        counts = json.loads(r["pii_redactions"])
        values.update(counts)
        per_sample.update({k: 1 for k, v in counts.items() if v})
    pii = section.find_all("div", data_stage="pii_redact")[0]
    shown = {
        tr.attrs["data-kind"]: {
            td.attrs["data-n"]: int(td.all_text().replace(",", "")) for td in tr.find_all("td") if "data-n" in td.attrs
        }
        for tr in pii.find_all("tr")
        if "data-kind" in tr.attrs
    }
    assert len(shown) >= 4
    assert shown == {k: {"occurrences": values[k], "samples": per_sample[k]} for k in shown}
    assert set(shown) == {k for k, v in values.items() if v}
    examples = [n for n in pii.iter() if n.attrs.get("class") == "pair"]
    assert {p.attrs["data-kind"] for p in examples} <= set(shown) and len(examples) >= 3
    marks = {m.all_text() for p in examples for m in p.find_all("mark")}
    assert marks and marks <= set(DEFAULT_TOKENS.values())


def test_no_personal_value_reaches_the_report_when_the_recipe_kept_the_originals(text_report):
    html, _, samples = text_report
    originals = " ".join(v for v in samples.column("caption_original").to_pylist() if v)
    planted = [v for v in DEMO_PII if v in originals]
    assert planted, "the run must keep raw personal data in caption_original for this test to mean anything"
    for value in DEMO_PII:
        assert value not in html


def test_captions_section_languages_ngrams_and_special_characters(text_report, text_run):
    html, dom, samples = text_report
    section = _section(dom, "captions")
    assert section is not None
    card = section.find_all("div", data_card="languages")[0]
    languages = Counter(samples.column("language").to_pylist())
    stats = [n for n in card.iter() if n.attrs.get("class") == "stats"][0].all_text()
    assert f"{len(languages):,} languages among {samples.num_rows:,} kept captions" in stats
    top_code, top_n = languages.most_common(1)[0]
    assert top_code in card.all_text() and f"{top_n:,} (" in card.all_text()
    manifest = json.loads((text_run / "manifest.json").read_text())
    caption_filter = [s for s in manifest["stages"] if s["name"] == "caption_filter"][0]
    boiler = [n for n in section.iter() if n.attrs.get("data-card") == "style"][0]
    assert (
        f"rejected {caption_filter['reasons'].get('boilerplate', 0):,} of {caption_filter['in']:,}" in boiler.all_text()
    )
    # n-grams: every kept caption looked at, the top bigram's share as counted here
    captions = [c for c in samples.column("caption").to_pylist() if c]
    ngrams = section.find_all("div", data_card="ngrams")[0]
    assert int([n for n in ngrams.iter() if "data-sampled" in n.attrs][0].attrs["data-sampled"]) == len(captions)
    (gram, n), *_ = captions_mod.top_ngrams(captions, 2)
    cells = [td.all_text() for td in ngrams.find_all("td")]
    assert cells[2] == gram and cells[3] == f"{100.0 * n / len(captions):.1f}%"
    # special characters: every kept caption
    ratio = captions_mod.special_char_ratio(pa.array(captions))
    heavy = [n for n in section.iter() if "data-special-heavy" in n.attrs][0]
    assert int(heavy.attrs["data-special-heavy"]) == int((ratio > captions_mod.SPECIAL_THRESHOLD).sum())


def test_special_char_ratio_and_ngrams_on_known_text():
    r = captions_mod.special_char_ratio(pa.array(["ab, c!", "नमस्ते", "★★★★", "", None]))
    assert r[0] == pytest.approx(2 / 6) and r[1] == 0.0 and r[2] == 1.0 and np.isnan(r[3]) and np.isnan(r[4])
    texts = ["Stock photo of a dog", "stock photo of a cat", "a cat on a mat <EMAIL>"]
    assert captions_mod.top_ngrams(texts, 2)[:5] == [
        ("a cat", 2),
        ("of a", 2),
        ("photo of", 2),
        ("stock photo", 2),
        ("a dog", 1),
    ]
    words = dict(captions_mod.top_ngrams(texts, 1))
    assert words["cat"] == 2 and "a" not in words and words["<EMAIL>"] == 1  # the token stays one token


def test_caption_ngrams_are_sampled_and_redacted(tmp_path, monkeypatch):
    n = 500
    captions = [f"contact me at jane.roe@example.org about photo {i}" for i in range(n)]
    pq.write_table(pa.table({"key": [f"{i:05d}" for i in range(n)], "caption": captions}), tmp_path / "samples.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {"read": n, "kept": n, "rejected": 0}}))
    monkeypatch.setattr(captions_mod, "MAX_TEXT_SAMPLE", 40)
    html = render_report(load_run(tmp_path))
    dom = parse(html).root
    sampled = [x for x in dom.iter() if "data-sampled" in x.attrs][0]
    assert sampled.attrs["data-sampled"] == "40" and "40 of 500 kept captions" in sampled.all_text()
    assert "jane.roe@example.org" not in html and "example.org" not in html
    assert "&lt;EMAIL&gt;" in html  # the top words show where the value was
    assert _section(dom, "edits") is None  # no modifying stage ran: no section
    assert _section(dom, "captions").find_all("div", data_card="languages") == []  # no language identification


def test_sections_absent_without_captions_or_modifying_stages(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {"read": 1, "kept": 1, "rejected": 0}}))
    pq.write_table(pa.table({"key": ["a"], "width": [10], "height": [10]}), tmp_path / "samples.parquet")
    dom = parse(render_report(load_run(tmp_path))).root
    ids = [n.attrs["id"] for n in dom.find_all("section")]
    assert "captions" not in ids and "edits" not in ids
    assert not [a for a in dom.find_all("a") if a.attrs.get("href") in ("#captions", "#edits")]


def test_pii_counts_of_reject_if_found_come_from_the_rejects(tmp_path):
    rejects = [
        {"key": f"k{i}", "source": "s", "stage": "pii_redact", "reason": "pii", "detail": "email=2, phone=1"}
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), tmp_path / "rejects.parquet")
    pq.write_table(
        pa.table({"key": ["a"], "caption": ["a dog"], "pii_redactions": ["{}"]}), tmp_path / "samples.parquet"
    )
    manifest = {
        "counts": {"read": 4, "kept": 1, "rejected": 3},
        "run": {"recipe": {"stages": [{"pii_redact": {"reject_if_found": True}}]}},
        "stages": [{"name": "pii_redact", "kind": "map", "in": 4, "kept": 1, "rejected": 3, "reasons": {"pii": 3}}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    dom = parse(render_report(load_run(tmp_path))).root
    rows = {tr.attrs["data-kind"]: tr for tr in _section(dom, "edits").find_all("tr") if "data-kind" in tr.attrs}
    assert set(rows) == {"email", "phone"}
    rejected = {
        k: [td.all_text() for td in tr.find_all("td") if td.attrs.get("data-n") == "rejected"] for k, tr in rows.items()
    }
    assert rejected == {"email": ["6"], "phone": ["3"]}


# ------------------------------------------------------------------------------------------------
# paging


def test_paging_is_plain_anchors_and_evenly_spaced_samples():
    assert evenly_spaced(10, 4) == [0, 3, 6, 9] and evenly_spaced(3, 10) == [0, 1, 2] and evenly_spaced(5, 0) == []
    assert evenly_spaced(1_000_000, 200)[-1] == 999_999 and len(evenly_spaced(1_000_000, 200)) == 200
    lid = anchor_id("x", HOSTILE)
    assert re.fullmatch(r"x-[0-9a-f]{12}", lid) and lid == anchor_id("x", HOSTILE) != anchor_id("x", "other")
    html = paged(lid, [f"<li>{i}</li>" for i in range(7)], 3, "items", wrap=lambda p: f"<ul>{p}</ul>")
    dom = parse(html).root
    pages = [n for n in dom.iter() if n.attrs.get("class") == "page"]
    assert [p.attrs["id"] for p in pages] == [f"{lid}-p{i}" for i in (1, 2, 3)]
    assert [len(p.find_all("li")) for p in pages] == [3, 3, 1]
    for p in pages:  # every page links every page
        assert [a.attrs["href"] for a in p.find_all("a")] == [f"#{lid}-p{i}" for i in (1, 2, 3)]
    assert "items 7–7 of 7" in pages[2].all_text()
    assert paged(lid, ["<li>1</li>"], 3, wrap=lambda p: f"<ul>{p}</ul>") == "<ul><li>1</li></ul>"  # no pager


# ------------------------------------------------------------------------------------------------
# rejects and duplicate groups, listed


def write_listing_run(out: Path, n_big: int = 1234, n_groups: int = 130) -> dict:
    """An output directory with one reason of `n_big` rejects (hostile details holding an e-mail), a small
    hostile reason, and `n_groups` phash groups of decreasing size plus one exact group."""
    out.mkdir(parents=True, exist_ok=True)
    rejects = [
        {
            "key": f"r{i:06d}",
            "source": "s.tar",
            "stage": "image_filter",
            "reason": "min_side",
            "detail": f"min side {i % 100} < 200 {HOSTILE} owner jane.roe@example.org",
        }
        for i in range(n_big)
    ]
    rejects += [
        {"key": f"{HOSTILE}{i}", "source": "s.tar", "stage": HOSTILE, "reason": HOSTILE, "detail": None}
        for i in range(3)
    ]
    dups = []
    for g in range(n_groups):
        for m in range(n_groups + 1 - g):  # group g has n_groups + 1 - g members
            dups.append(
                {"key": f"g{g:04d}m{m:04d}", "duplicate_of": f"rep{g:04d}", "kind": "phash", "distance": float(m % 7)}
            )
    dups += [{"key": f"x{m:03d}", "duplicate_of": HOSTILE, "kind": "exact", "distance": 0.0} for m in range(30)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rejects))  # file order must not matter
    pq.write_table(pa.Table.from_pylist([rejects[i] for i in order], schema=REJECTS_SCHEMA), out / "rejects.parquet")
    pq.write_table(pa.Table.from_pylist(dups, schema=DUPLICATES_SCHEMA), out / "duplicates.parquet")
    manifest = {
        "counts": {"read": 10_000, "kept": 10_000 - len(rejects), "rejected": len(rejects)},
        "stages": [
            {
                "name": "image_filter",
                "kind": "map",
                "in": 10_000,
                "kept": 10_000 - n_big,
                "rejected": n_big,
                "reasons": {"min_side": n_big},
            },
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return {"rejects": rejects, "duplicates": dups}


@pytest.fixture(scope="module")
def listing_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("listing")
    truth = write_listing_run(out)
    html = render_report(load_run(out))
    return out, truth, html, parse(html).root


def test_rejects_are_listed_per_reason_bounded_paged_and_linked(listing_run):
    out, truth, html, dom = listing_run
    listing = [n for n in dom.iter() if n.attrs.get("data-listing") == "rejects"][0]
    blocks = {(d.attrs["data-stage"], d.attrs["data-reason"]): d for d in listing.find_all("details")}
    assert set(blocks) == {("image_filter", "min_side"), (HOSTILE, HOSTILE)}
    big = blocks[("image_filter", "min_side")]
    cap = reject_listing.MAX_LISTED_PER_REASON
    assert big.attrs["data-count"] == "1234" and big.attrs["data-listed"] == str(cap)
    listed = [tr.attrs["data-key"] for tr in big.find_all("tr") if "data-key" in tr.attrs]
    all_keys = sorted(r["key"] for r in truth["rejects"] if r["reason"] == "min_side")
    assert listed == [all_keys[i] for i in evenly_spaced(len(all_keys), cap)]  # first and last included
    pages = [n for n in big.iter() if n.attrs.get("class") == "page"]
    assert len(pages) == -(-cap // reject_listing.ROWS_PER_PAGE)
    left = [n for n in big.iter() if "data-left-out" in n.attrs][0]
    assert left.attrs["data-left-out"] == str(1234 - cap)
    assert {a.attrs["href"] for a in big.find_all("a") if "data-file" in a.attrs} == {"rejects.parquet"}
    small = blocks[(HOSTILE, HOSTILE)]
    assert small.attrs["data-listed"] == "3" and not [n for n in small.iter() if "data-left-out" in n.attrs]
    assert HOSTILE not in html and HOSTILE in small.all_text()
    assert "jane.roe@example.org" not in html and "&lt;EMAIL&gt;" in html  # details are redacted
    # every in-page link of the report lands on an element of the report
    ids = {n.attrs["id"] for n in dom.iter() if "id" in n.attrs}
    hrefs = [a.attrs["href"] for a in dom.find_all("a")]
    assert all(h[1:] in ids for h in hrefs if h.startswith("#"))


def test_duplicate_groups_are_listed_largest_first_bounded_and_linked(listing_run):
    out, truth, html, dom = listing_run
    listing = [n for n in dom.iter() if n.attrs.get("data-listing") == "duplicates"][0]
    blocks = {d.attrs["data-kind"]: d for d in listing.find_all("details")}
    assert list(blocks) == ["phash", "exact"]  # near duplicates first, as in the gallery
    phash = blocks["phash"]
    assert phash.attrs["data-groups"] == "130" and phash.attrs["data-listed"] == str(
        duplicate_listing.MAX_LISTED_GROUPS
    )
    rows = [tr for tr in phash.find_all("tr") if "data-group" in tr.attrs]
    assert [tr.attrs["data-group"] for tr in rows] == [
        f"rep{g:04d}" for g in range(duplicate_listing.MAX_LISTED_GROUPS)
    ]
    assert rows[0].attrs["data-size"] == str(130 + 2)
    members = [c.all_text() for c in rows[0].find_all("code")]
    assert len(members) == duplicate_listing.MAX_MEMBERS_SHOWN
    dist = {d["key"]: d["distance"] for d in truth["duplicates"]}
    shown = [dist[k] for k in members]
    assert shown == sorted(shown, reverse=True) and shown[0] == 6.0  # largest distance first
    assert [n for n in rows[0].iter() if "data-left-out" in n.attrs][0].attrs["data-left-out"] == str(131 - 12)
    pages = [n for n in phash.iter() if n.attrs.get("class") == "page"]
    assert len(pages) == -(-duplicate_listing.MAX_LISTED_GROUPS // duplicate_listing.GROUPS_PER_PAGE)
    assert [n for n in phash.iter() if "data-left-out" in n.attrs][-1].attrs["data-left-out"] == "30"
    exact = blocks["exact"]
    assert [tr.attrs["data-group"] for tr in exact.find_all("tr") if "data-group" in tr.attrs] == [HOSTILE]
    assert {a.attrs["href"] for a in listing.find_all("a") if "data-file" in a.attrs} == {"duplicates.parquet"}
    assert "+218 more</div>" not in html


def test_gallery_more_links_to_the_listing_page_that_holds_the_group(listing_run, tmp_path):
    from mmcurate.report.duplicate_listing import DuplicateListing

    out, truth, _, _ = listing_run
    listing = DuplicateListing.from_run(load_run(out))
    per_page = duplicate_listing.GROUPS_PER_PAGE
    assert listing.href("phash", "rep0000").endswith("-p1")
    assert listing.href("phash", f"rep{per_page:04d}").endswith("-p2")
    assert listing.href("phash", "rep0120") is None  # not listed: the gallery says duplicates.parquet
    assert listing.href("exact", HOSTILE).startswith("#dupgroups-")


def test_listings_stay_bounded_as_the_run_grows(tmp_path):
    sizes = []
    for n in (2_000, 20_000):
        out = tmp_path / str(n)
        write_listing_run(out, n_big=n, n_groups=200)
        data = load_run(out)
        pairs = [("image_filter", "min_side")]
        sizes.append(
            len(reject_listing.reject_listing(data, pairs))
            + len(duplicate_listing.DuplicateListing.from_run(data).html())
        )
    assert abs(sizes[1] - sizes[0]) < 0.02 * sizes[0], sizes  # the same rows, whatever the run's size
    assert sizes[1] < 250_000
