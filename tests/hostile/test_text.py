"""Hostile captions: every text stage does work linear in the text, rejects oversized text before any
pattern runs, and survives meta nested arbitrarily deep.

No wall-clock goals here (benchmarks/bench_text_adversarial.py measures those): each family runs in a
subprocess with a generous timeout, so a quadratic or exponential pattern fails the test instead of
hanging it, and growth from 100 KB to 1 MB must stay far below quadratic (x100), with slack for a
loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from mmcurate.pipeline.stage import StageError, registry
from tests.helpers import run_stage
from tests.hostile.builders_text import FAMILIES, PII_VALUES, pii_sentence

TEXT_STAGES = ("caption_clean", "caption_filter", "pii_redact")

_TIMER = textwrap.dedent("""
    import json, sys, time
    import pyarrow as pa
    from mmcurate.pipeline.stage import StageError, registry
    from tests.hostile.builders_text import adversarial

    family = sys.argv[1]

    def create(name):
        try:
            return registry.create(name, {"max_chars": None})   # the patterns themselves, no length guard
        except StageError:
            return registry.create(name, {})                    # a build without max_chars

    stages = {name: create(name) for name in ("caption_clean", "caption_filter", "pii_redact")}

    def batch(text):
        meta = json.dumps({"conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": text}]})
        return pa.table({"key": ["k"], "source": ["s"], "image": [b""], "image_ext": ["jpg"], "caption": [text],
                         "meta": [meta]})

    for stage in stages.values():
        stage.process(batch("warm up <b>1</b> a@b.org"))
    out = {}
    for size in (100_000, 1_000_000):
        b = batch(adversarial(family, size))
        for name, stage in stages.items():
            t0 = time.perf_counter()
            res = stage.process(b)
            assert res.kept.num_rows + res.rejected.num_rows == 1
            out.setdefault(name, {})[size] = time.perf_counter() - t0
    print(json.dumps(out))
""")


def _caption_batch(captions, metas=None):
    """One sample per caption (meta per sample, null by default), image bytes a placeholder."""
    n = len(captions)
    return pa.table(
        {
            "key": pa.array([f"{i:03d}" for i in range(n)], pa.string()),
            "source": pa.array(["s.tar"] * n, pa.string()),
            "image": pa.array([b"x"] * n, pa.binary()),
            "image_ext": pa.array(["jpg"] * n, pa.string()),
            "caption": pa.array(captions, pa.string()),
            "meta": pa.array(metas if metas is not None else [None] * n, pa.string()),
        }
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_text_stages_are_linear_on_adversarial_captions(family):
    # 100 KB of "!?" took 90 s in caption_filter and 1 MB of "<script>" 579 s in caption_clean before.
    try:
        out = subprocess.run(
            [sys.executable, "-c", _TIMER, family], capture_output=True, text=True, timeout=120, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{family}: the text stages did not finish 100 KB + 1 MB captions within 120 s")
    times = json.loads(out.stdout.strip().splitlines()[-1])
    for stage, by_size in times.items():
        small, large = by_size["100000"], by_size["1000000"]
        # linear: x10; quadratic: x100. Slack for timer noise on tiny times and a busy machine.
        assert large < max(30 * small, 1.0), f"{family} in {stage}: 100 KB {small:.3f} s, 1 MB {large:.3f} s"


@pytest.mark.parametrize("stage", TEXT_STAGES)
def test_max_chars_rejects_before_any_pattern(stage):
    # 5 MB of the worst families: with the default max_chars nothing but len() may run on it.
    code = textwrap.dedent(f"""
        import pyarrow as pa
        from tests.helpers import run_stage
        from tests.hostile.test_text import _caption_batch
        from tests.hostile.builders_text import adversarial
        texts = [adversarial(f, 5_000_000) for f in ("punct_bang_question", "script_open_tags", "untitled_digit_run")]
        _, res = run_stage({stage!r}, _caption_batch(texts + ["a dog running on the beach"]))
        assert res.rejected.column("reason").to_pylist() == ["text_too_long"] * 3, res.rejected.to_pydict()
        assert res.kept.column("key").to_pylist() == ["003"]
        detail = res.rejected.column("detail")[0].as_py()
        assert "max_chars 100000" in detail and "!?" not in detail
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_max_chars_bounds_and_null():
    text = "a dog on the beach " * 10  # 190 characters
    for stage in TEXT_STAGES:
        _, res = run_stage(stage, _caption_batch([text]), max_chars=100)
        assert res.rejected.column("reason").to_pylist() == ["text_too_long"], stage
        assert run_stage(stage, _caption_batch([text]), max_chars=None)[1].kept.num_rows == 1, stage


def test_pii_redact_max_chars_applies_to_meta_strings_and_turns():
    turn = "word " * 30_000
    meta = json.dumps({"conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": turn}]})
    _, res = run_stage("pii_redact", _caption_batch(["a dog on the beach"], [meta]))
    assert res.rejected.column("reason").to_pylist() == ["text_too_long"]
    assert "word" not in res.rejected.column("detail")[0].as_py()


@pytest.mark.parametrize("depth", [600, 100_000])
def test_pii_redact_deep_meta_is_a_reject_not_a_crash(depth):
    # meta nested 600 deep with redact_meta aborted the run with RecursionError before.
    deep = "[" * depth + json.dumps(pii_sentence()) + "]" * depth
    ok = json.dumps({"a": [[{"b": pii_sentence()}]]})
    _, res = run_stage("pii_redact", _caption_batch(["a dog on the beach", "a cat on the sofa"], [deep, ok]))
    assert res.rejected.column("reason").to_pylist() == ["meta_too_deep"]
    assert res.rejected.column("key").to_pylist() == ["000"]
    kept_meta = res.kept.column("meta")[0].as_py()
    assert PII_VALUES["email"] not in kept_meta and "<EMAIL>" in kept_meta


def test_pii_redact_meta_within_depth_bound_is_redacted():
    doc = pii_sentence()
    for _ in range(120):
        doc = {"x": [doc]}  # 240 levels: within the bound of 256
    _, res = run_stage("pii_redact", _caption_batch(["a dog on the beach"], [json.dumps(doc)]))
    assert res.rejected.num_rows == 0
    meta = res.kept.column("meta")[0].as_py()
    assert PII_VALUES["card"] not in meta and "<CREDIT_CARD>" in meta


@pytest.mark.parametrize("stage", TEXT_STAGES)
@pytest.mark.parametrize("bad", [True, 0, -5, 2.5, "100"])
def test_max_chars_validated(stage, bad):
    with pytest.raises(StageError, match="max_chars"):
        registry.create(stage, {"max_chars": bad})


@pytest.mark.parametrize(
    "params, key", [({"keep_original_text": "yes"}, "keep_original_text"), ({"redact_meta": 1}, "redact_meta")]
)
def test_pii_privacy_params_validated(params, key):
    with pytest.raises(StageError, match=key):
        registry.create("pii_redact", params)
