"""The report's "Instruction data" section (report/instruction_section.py).

A real run of the llava recipe on the built-in instruction sample (with a target task mix, so task_mix caps)
must show the manifest's figures and the kept samples' answer lengths; the default demo's report must not
have the section; hostile manifest values come out escaped, and values of the wrong type do not break it.
"""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import default_recipe_for
from mmcurate.instruction_sample import build_instruction_sample
from mmcurate.pipeline.executor import LocalExecutor
from mmcurate.pipeline.recipe import llava_recipe_dict, parse_recipe
from mmcurate.pipeline.schema import TURN_TYPE
from mmcurate.report import ReportObserver
from mmcurate.report.charts import format_number
from mmcurate.report.html_report import render_report
from mmcurate.report.instruction_section import has_instruction_data
from mmcurate.report.run_data import RunData, load_run

HOSTILE = "<img src=x onerror=alert('stat')></td><script>alert(1)</script>"
ANSWER_ROLES = {"gpt", "assistant"}


# ------------------------------------------------------------------------------------------------
# a small DOM


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


class Dom(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base", "embed"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", [])
        self.tags: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text.append(data)


def _section(html: str) -> Node | None:
    found = Dom(html).root.find_all("section", id="instruction")
    assert len(found) <= 1
    return found[0] if found else None


def _by_class(node: Node, tag: str, cls: str) -> list[Node]:
    return [n for n in node.find_all(tag) if n.attrs.get("class") == cls]


def _card(section: Node, key: str) -> Node:
    (card,) = section.find_all("div", data_card=key)
    return card


def _cells(card: Node, row_attr: str) -> dict[str, dict[str, str]]:
    """row_attr value -> {data-side: text} of the rows carrying row_attr."""
    out = {}
    for row in card.find_all("tr"):
        if row_attr in row.attrs:
            out[row.attrs[row_attr]] = {
                td.attrs["data-side"]: td.all_text() for td in row.find_all("td") if "data-side" in td.attrs
            }
    return out


def _stats(manifest: dict, name: str) -> dict:
    (entry,) = [s for s in manifest["stages"] if s["name"] == name]
    return entry["stats"]


# ------------------------------------------------------------------------------------------------
# a run of the llava recipe on the built-in instruction sample


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("llava_sample")
    build_instruction_sample(d, n=200)
    out = tmp_path_factory.mktemp("llava_run") / "out"
    r = llava_recipe_dict()
    r["input"]["path"] = str(d / "llava.json")
    r["input"]["options"] = {"image_root": str(d / "images")}
    r["output"].update(path=str(out), report=True)
    r["stages"] = [s if "task_mix" not in s else {"task_mix": {"target": {"yes_no": 0.15}}} for s in r["stages"]]
    manifest = LocalExecutor(parse_recipe(r), progress=False, observers=[ReportObserver()]).run()
    return out, manifest


def test_instruction_section_shows_the_run(llava_run):
    out, manifest = llava_run
    html = (out / "report.html").read_text(encoding="utf-8")
    section = _section(html)
    assert section is not None
    assert '<a href="#instruction">Instruction data</a>' in html

    # task mix: before and after from task_mix's stats (the target capped yes_no), kept from samples.parquet
    mix = _stats(manifest, "task_mix")
    assert mix["counts_after"]["yes_no"] < mix["counts"]["yes_no"]
    samples = pq.read_table(out / "samples.parquet", columns=["key", "turns", "task_type"])
    kept = Counter(samples.column("task_type").to_pylist())
    rows = _cells(_card(section, "task_mix"), "data-type")
    assert set(rows) == set(mix["counts"]) | set(kept)
    for t, row in rows.items():
        assert row["before"] == format_number(mix["counts"].get(t, 0)) if t in mix["counts"] else row["before"] == "–"
        assert row["after"] == format_number(mix["counts_after"][t])
        assert row["kept"] == format_number(kept[t])

    # yes-ratio before/after, overall and per task type
    balance = _stats(manifest, "answer_balance")
    card = _card(section, "answer_balance")
    text = card.all_text()
    assert f"{balance['yes_ratio_before']:.3f}" in text and f"{balance['yes_ratio_after']:.3f}" in text
    assert balance["yes_ratio_before"] > 0.6 and abs(balance["yes_ratio_after"] - 0.5) <= 0.02
    per_type = _cells(card, "data-type")
    yn = balance["per_task_type"]["yes_no"]
    assert per_type["yes_no"]["before"] == f"{yn['yes_ratio']:.3f}"
    assert balance["removed_class"] == "yes"
    assert per_type["yes_no"]["after"] == f"{(yn['yes'] - yn['removed']) / (yn['yes'] - yn['removed'] + yn['no']):.3f}"

    # the correct letter before/after, with the chi-square p-values
    options = _stats(manifest, "option_order")
    card = _card(section, "option_order")
    letters = _cells(card, "data-letter")
    assert set(letters) == set(options["letters_before"]) | set(options["letters_after"])
    for k, row in letters.items():
        assert row["before"] == format_number(options["letters_before"].get(k, 0))
        assert row["after"] == format_number(options["letters_after"].get(k, 0))
    assert options["p_value_before"] < 1e-3 < options["p_value_after"]
    assert f"p = {options['p_value_before']:.2e}" in card.all_text()
    assert f"p = {options['p_value_after']:.3f}" in card.all_text()
    assert card.find_all("svg")

    # question skeletons: the top ones with their shares, and the diversity figures
    tmpl = _stats(manifest, "template_stats")
    card = _card(section, "template_stats")
    skeletons = [td.all_text() for td in card.find_all("td") if td.attrs.get("class") == "skeleton"]
    assert skeletons == [t["skeleton"] for t in tmpl["top"][:10]]
    shares = [td.attrs["data-share"] for td in card.find_all("td") if "data-share" in td.attrs]
    assert shares == [f"{t['share']:.4f}" for t in tmpl["top"][:10]]
    text = card.all_text()
    assert f"{100 * tmpl['top10_share']:.1f}%" in text and f"{tmpl['distinct_2']:.3f}" in text
    assert f"{tmpl['compression_ratio']:.3f}" in text

    # answer lengths per task type: every answer turn of the kept samples, counted once
    answers: Counter = Counter()
    for turns, t in zip(samples.column("turns").to_pylist(), samples.column("task_type").to_pylist()):
        answers[t] += sum(1 for turn in turns or [] if turn["role"] in ANSWER_ROLES)
    hists = {h.attrs["data-type"]: int(h.attrs["data-n"]) for h in section.find_all("div", data_hist="answer_words")}
    assert hists == {t: n for t, n in answers.items() if n}
    assert all(h.find_all("svg") for h in section.find_all("div", data_hist="answer_words"))

    # example rejects: a card per (stage, reason) of rejects.parquet, with its count; a duplicate shows the kept
    # conversation it duplicates, from samples.parquet
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    by_reason = Counter((r["stage"], r["reason"]) for r in rejects)
    cards = {(c.attrs["data-stage"], c.attrs["data-reason"]): c for c in _by_class(section, "div", "card reason")}
    assert set(cards) == set(by_reason)
    assert {r for _, r in by_reason} >= {"duplicate_conversation", "answer_balance", "task_mix_cap"}
    for sr, c in cards.items():
        assert int(c.attrs["data-count"]) == by_reason[sr]
        keys = [x.attrs["data-key"] for x in _by_class(c, "div", "example")]
        assert keys == sorted(r["key"] for r in rejects if (r["stage"], r["reason"]) == sr)[:3]
    kept_turns = dict(zip(samples.column("key").to_pylist(), samples.column("turns").to_pylist()))
    dup_of = {d["key"]: d["duplicate_of"] for d in pq.read_table(out / "duplicates.parquet").to_pylist()}
    shown = 0
    for stage, reason in [
        ("instruction_dedup", "duplicate_conversation"),
        ("instruction_dedup", "near_duplicate_conversation"),
    ]:
        for example in _by_class(cards[(stage, reason)], "div", "example"):
            rep = dup_of[example.attrs["data-key"]]
            roles = [n.all_text() for n in _by_class(example, "span", "role")]
            if rep in kept_turns:  # the kept conversation it duplicates, from samples.parquet
                assert f"duplicates: {rep}" in example.all_text()
                assert roles == [t["role"] for t in kept_turns[rep][:6]]
                shown += 1
            else:  # its representative was rejected later: not in the outputs
                assert "duplicates:" not in example.all_text()
    assert shown


def test_default_demo_report_has_no_instruction_section(demo_input, tmp_path):
    out = tmp_path / "out"
    r = default_recipe_for(demo_input, out)
    LocalExecutor(parse_recipe(r), progress=False, observers=[ReportObserver()]).run()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert _section(html) is None and 'href="#instruction"' not in html
    assert not has_instruction_data(load_run(out))


# ------------------------------------------------------------------------------------------------
# conversations without instruction stages; hostile and malformed manifests


def _write_run(out: Path, manifest: dict, samples: pa.Table | None = None) -> RunData:
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    if samples is not None:
        pq.write_table(samples, out / "samples.parquet")
    return load_run(out)


def _turns(*pairs) -> list[dict]:
    return [{"role": r, "text": t} for q, a in pairs for r, t in (("human", q), ("gpt", a))]


def test_a_turns_column_alone_brings_the_section_with_exact_answer_lengths(tmp_path):
    manifest = {"run": {}, "counts": {"read": 3, "kept": 3, "rejected": 0}, "stages": []}
    turns = [
        _turns(("Is it red?", "Yes"), ("And blue?", "No, it is not blue")),
        _turns(("Describe it.", "A small red car parked by a tall tree")),
        None,
    ]
    samples = pa.table(
        {
            "key": ["a", "b", "c"],
            "turns": pa.array(turns, pa.list_(TURN_TYPE)),
            "task_type": ["yes_no", "captioning", None],
        }
    )
    section = _section(render_report(_write_run(tmp_path / "run", manifest, samples)))
    assert section is not None
    hists = {h.attrs["data-type"]: h for h in section.find_all("div", data_hist="answer_words")}
    assert {t: int(h.attrs["data-n"]) for t, h in hists.items()} == {"yes_no": 2, "captioning": 1}
    assert "median 9" in hists["captioning"].all_text() and "max 5 words" in hists["yes_no"].all_text()
    kept = _cells(_card(section, "task_mix"), "data-type")
    assert {t: row["kept"] for t, row in kept.items()} == {"yes_no": "1", "captioning": "1"}

    no_conversations = samples.set_column(1, "turns", pa.nulls(3, pa.list_(TURN_TYPE)))
    html = render_report(_write_run(tmp_path / "plain", manifest, no_conversations))
    assert _section(html) is None


def _hostile_manifest() -> dict:
    stages = [
        {
            "name": "answer_balance",
            "in": 10,
            "kept": 9,
            "rejected": 1,
            "stats": {
                "yes_ratio_before": HOSTILE,
                "yes_ratio_after": 0.5,
                "removed_class": HOSTILE,
                "warning": HOSTILE,
                "answer_classes": {HOSTILE: 3, "yes": HOSTILE},
                "per_task_type": {HOSTILE: {"yes": HOSTILE, "no": 2, "yes_ratio": 0.3}, "yes_no": HOSTILE},
                "per_template": [{"template": HOSTILE, "yes": 1, "no": 1, "yes_ratio": 0.5}, HOSTILE],
            },
        },
        {
            "name": "option_order",
            "in": 9,
            "kept": 9,
            "rejected": 0,
            "stats": {
                "policy": HOSTILE,
                "letters_before": {HOSTILE: 4, "A": 2},
                "letters_after": HOSTILE,
                "p_value_before": HOSTILE,
                "options": {HOSTILE: 1},
            },
        },
        {
            "name": "template_stats",
            "in": 9,
            "kept": 9,
            "rejected": 0,
            "stats": {
                "top10_share": HOSTILE,
                "distinct_2": float("nan"),
                "top": [{"skeleton": HOSTILE, "questions": 3, "share": 0.5}, {"skeleton": None}, 7],
            },
        },
        {
            "name": "task_mix",
            "in": 9,
            "kept": 9,
            "rejected": 0,
            "stats": {"counts": {HOSTILE: 5, "yes_no": 4}, "counts_after": HOSTILE, "target": [HOSTILE]},
        },
        {"name": "instruction_dedup", "in": 10, "kept": 10, "rejected": 0, "stats": {"shingle": HOSTILE}},
    ]
    return {"run": {"duration_s": 1.0}, "counts": {"read": 10, "kept": 9, "rejected": 1}, "stages": stages}


def test_instruction_section_escapes_hostile_manifest_values(tmp_path):
    rejects = pa.table(
        {
            "key": [HOSTILE],
            "source": ["s"],
            "stage": ["answer_balance"],
            "reason": [HOSTILE],
            "detail": [HOSTILE],
        }
    )
    data = _write_run(tmp_path / "run", json.loads(json.dumps(_hostile_manifest())))
    pq.write_table(rejects, tmp_path / "run" / "rejects.parquet")
    html = render_report(load_run(tmp_path / "run"))
    assert HOSTILE not in html and "<script" not in html.lower()
    dom = Dom(html)
    assert "script" not in dom.tags and "img" not in dom.tags
    section = _section(html)
    assert section is not None
    assert section.all_text().count(HOSTILE) >= 8  # shown as text: skeleton, template, policy, types, letters...
    skeletons = [td.all_text() for td in section.find_all("td") if td.attrs.get("class") == "skeleton"]
    assert HOSTILE in skeletons
    # numbers that are not numbers are shown as "–", never drawn or computed with
    facts = {
        th.all_text(): th.parent.find_all("td")[0].all_text()
        for th in section.find_all("th")
        if th.parent.tag == "tr" and th.parent.find_all("td")
    }
    assert facts["yes-ratio before"] == "–" and facts["yes-ratio after"] == "0.500"
    assert facts["top-10 share"] == "–" and facts["distinct-2"] == "–"
    letters = _cells(_card(section, "option_order"), "data-letter")
    assert letters["A"] == {"before": "2", "after": "–"}
    mix = _cells(_card(section, "task_mix"), "data-type")
    assert mix["yes_no"]["before"] == "4" and mix[HOSTILE]["before"] == "5"
    assert data.manifest["stages"][0]["name"] == "answer_balance"
