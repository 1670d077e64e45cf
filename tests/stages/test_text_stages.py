"""The caption stages as pipeline stages: accounting, columns, params validation, pickling."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from helpers import assert_accounted, run_stage
from mmcurate.pipeline.schema import INPUT_SCHEMA
from mmcurate.pipeline.stage import MapStage, StageError, registry
from mmcurate.stages.text import summarize_redactions

CAPTIONS = [
    "<p>A golden retriever &amp; a cat on the sofa</p>",
    None,
    "IMG_1234.jpg",
    "ok",
    "Ein Hund läuft am Strand entlang",
    "Contact jane@example.org or +1 (415) 555-2671 for prints of this photo",
    "",
    "cafÃ© terrace at night!!!!!!!!",
    "   \u200b\ufffd   ",
    "Image not available",
    "一只狗在海滩上奔跑",
    "Red vintage car parked on a street in Havana, card 4111 1111 1111 1111",
]


def make_batch(captions=CAPTIONS, meta=None) -> pa.Table:
    n = len(captions)
    return pa.table(
        {
            "key": [f"{i:05d}" for i in range(n)],
            "source": ["shard-000.tar"] * n,
            "image": [bytes([i % 256]) * 3 for i in range(n)],
            "image_ext": ["jpg"] * n,
            "caption": captions,
            "meta": meta if meta is not None else ['{"url": "https://example.com/%d.jpg"}' % i for i in range(n)],  # noqa: UP031 - JSON braces
        },
        schema=INPUT_SCHEMA,
    )


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_registered():
    names = set(registry.names())
    assert {"caption_clean", "caption_filter", "pii_redact"} <= names
    for name in ("caption_clean", "caption_filter", "pii_redact"):
        stage = registry.create(name, None)
        assert isinstance(stage, MapStage) and "caption" in stage.requires
        assert stage.describe()["name"] == name


# ----------------------------------------------------------------------------------------------
# caption_clean
# ----------------------------------------------------------------------------------------------


def test_caption_clean():
    batch = make_batch()
    _, res = run_stage("caption_clean", batch)
    assert_accounted(batch, res, "caption_clean")
    assert res.rejected.num_rows == 0
    kept = res.kept
    assert kept.column("caption_original").to_pylist() == CAPTIONS
    cleaned = kept.column("caption").to_pylist()
    assert cleaned[0] == "A golden retriever & a cat on the sofa"
    assert cleaned[1] is None
    assert cleaned[7] == "café terrace at night!!!"
    assert cleaned[8] == ""  # empty stays in the batch
    assert kept.column("meta").to_pylist() == batch.column("meta").to_pylist()
    assert kept.schema.field("caption").type == pa.string()


def test_caption_clean_twice_keeps_first_original():
    batch = make_batch()
    _, first = run_stage("caption_clean", batch)
    _, second = run_stage("caption_clean", first.kept, lowercase=True)
    assert second.kept.column("caption_original").to_pylist() == CAPTIONS
    assert second.kept.column("caption").to_pylist()[0] == "a golden retriever & a cat on the sofa"
    assert second.kept.column_names.count("caption_original") == 1


def test_caption_clean_empty_batch_and_all_null():
    _, res = run_stage("caption_clean", make_batch([]))
    assert res.kept.num_rows == 0 and "caption_original" in res.kept.column_names
    _, res = run_stage("caption_clean", make_batch([None, None]))
    assert res.kept.column("caption").to_pylist() == [None, None]


# ----------------------------------------------------------------------------------------------
# caption_filter
# ----------------------------------------------------------------------------------------------


def reasons_by_key(res):
    return dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))


def test_caption_filter_defaults():
    batch = run_stage("caption_clean", make_batch())[1].kept
    _, res = run_stage("caption_filter", batch)
    assert_accounted(batch, res, "caption_filter")
    assert reasons_by_key(res) == {
        "00001": "caption_missing",
        "00002": "too_few_words",
        "00003": "too_few_words",
        "00006": "caption_missing",
        "00008": "caption_missing",
        "00009": "boilerplate",
    }
    assert "language" not in res.kept.column_names  # no whitelist: no language model
    details = res.rejected.column("detail").to_pylist()
    assert all(details) and "not_available" in details[-1]


def test_caption_filter_language_whitelist():
    batch = run_stage("caption_clean", make_batch())[1].kept
    _, res = run_stage("caption_filter", batch, languages=["en"])
    assert_accounted(batch, res, "caption_filter")
    reasons = reasons_by_key(res)
    assert reasons["00004"] == "language" and reasons["00010"] == "language"
    kept = res.kept.to_pydict()
    assert set(kept["language"]) == {"en"}
    assert all(0.0 < s <= 1.0 for s in kept["language_score"])
    assert res.kept.schema.field("language_score").type == pa.float32()
    detail = res.rejected.filter(pc.equal(res.rejected.column("key"), "00004")).column("detail")[0].as_py()
    assert detail.startswith("de (")

    _, res = run_stage("caption_filter", batch, languages=["en", "zh", "de"])
    assert "00004" not in reasons_by_key(res) and "00010" not in reasons_by_key(res)


def test_caption_filter_detect_language_without_whitelist():
    batch = make_batch(["a dog running on the beach", "un chien qui court sur la plage", "x"])
    _, res = run_stage("caption_filter", batch, detect_language=True)
    assert res.kept.column("language").to_pylist() == ["en", "fr"]
    assert reasons_by_key(res) == {"00002": "too_few_words"}


def test_caption_filter_bounds_and_extra_boilerplate():
    batch = make_batch(
        ["a short caption", "a much longer caption that goes on and on", "Photo by Jane Doe", "Image not available"]
    )
    _, res = run_stage("caption_filter", batch, max_chars=20, extra_boilerplate=["photo by .*"], boilerplate=False)
    assert reasons_by_key(res) == {"00001": "text_too_long", "00002": "boilerplate"}
    _, res = run_stage("caption_filter", batch, min_words=0, min_chars=0, boilerplate=False)
    assert res.rejected.num_rows == 0


def test_caption_filter_never_imports_the_language_model_without_whitelist():
    code = (
        "import sys, pyarrow as pa\n"
        "from mmcurate.pipeline.stage import registry\n"
        "s = registry.create('caption_filter', {}); s.setup()\n"
        "s.process(pa.table({'key': ['a'], 'source': ['s'], 'caption': ['a dog on a beach']}))\n"
        "assert 'py3langid' not in sys.modules, 'py3langid imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_caption_filter_pickles_without_the_model():
    stage = registry.create("caption_filter", {"languages": ["en"]})
    stage.setup()
    assert stage._identifier is not None
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._identifier is None
    res = clone.process(make_batch(["a dog running on the beach", "ein Hund läuft am Strand"]))
    assert res.kept.column("key").to_pylist() == ["00000"]


def test_caption_filter_unknown_language_fails_at_setup():
    stage = registry.create("caption_filter", {"languages": ["en", "xx"]})
    with pytest.raises(StageError, match=r"languages \['xx'\].*valid: .*\ben\b"):
        stage.setup()


# ----------------------------------------------------------------------------------------------
# pii_redact
# ----------------------------------------------------------------------------------------------


def test_pii_redact_caption_and_original():
    batch = run_stage("caption_clean", make_batch())[1].kept
    _, res = run_stage("pii_redact", batch)
    assert_accounted(batch, res, "pii_redact")
    kept = res.kept.to_pydict()
    assert kept["caption"][5] == "Contact <EMAIL> or <PHONE> for prints of this photo"
    assert kept["caption"][11].endswith("card <CREDIT_CARD>")
    # the text caption_clean kept as original must not leak what was redacted
    assert "jane@" not in kept["caption_original"][5] and "<EMAIL>" in kept["caption_original"][5]
    assert kept["caption_original"][0] == CAPTIONS[0]
    counts = [json.loads(c) for c in kept["pii_redactions"]]
    assert counts[5] == {"email": 1, "phone": 1} and counts[11] == {"credit_card": 1}
    assert counts[0] == {} and counts[1] == {}
    assert summarize_redactions(res.kept.column("pii_redactions")) == {"credit_card": 1, "email": 1, "phone": 1}
    assert kept["meta"] == batch.column("meta").to_pylist()  # nothing to redact in meta: untouched


def test_pii_redact_meta():
    meta = [
        '{"url": "https://u:pw@example.com/4111111111111111.jpg", "note": "by a@example.com"}',
        '{"url": "https://example.com/1.jpg", "width": 1920}',
        "not json",
    ]
    batch = make_batch(["a dog running on the beach"] * 3, meta=meta)
    _, res = run_stage("pii_redact", batch, redact_meta=True)
    kept = res.kept.to_pydict()
    assert json.loads(kept["meta"][0]) == {
        "url": "https://<URL_CREDENTIALS>@example.com/4111111111111111.jpg",
        "note": "by <EMAIL>",
    }
    assert kept["meta"][1:] == meta[1:]  # untouched byte for byte
    assert json.loads(kept["pii_redactions"][0]) == {"email": 1, "url_credentials": 1}


def test_pii_reject_if_found():
    batch = make_batch()
    _, res = run_stage("pii_redact", batch, reject_if_found=True, kinds=["email", "credit_card"])
    assert_accounted(batch, res, "pii_redact")
    assert reasons_by_key(res) == {"00005": "pii", "00011": "pii"}
    details = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("detail").to_pylist()))
    assert details == {"00005": "email=1", "00011": "credit_card=1"}
    assert res.kept.column("caption").to_pylist() == [c for i, c in enumerate(CAPTIONS) if i not in (5, 11)]


def test_pii_kinds_and_tokens():
    batch = make_batch(["mail a@example.com or call +44 20 7946 0958"])
    _, res = run_stage("pii_redact", batch, kinds=["phone"], tokens={"phone": "[tel]"})
    assert res.kept.column("caption").to_pylist() == ["mail a@example.com or call [tel]"]


# ----------------------------------------------------------------------------------------------
# The three stages in sequence
# ----------------------------------------------------------------------------------------------


def test_clean_filter_redact_chain_accounts_for_every_row():
    batch = make_batch()
    rejected = []
    for name, params in (("caption_clean", {}), ("caption_filter", {"languages": ["en", "zh"]}), ("pii_redact", {})):
        _, res = run_stage(name, batch, **params)
        assert res.kept.num_rows + res.rejected.num_rows == batch.num_rows
        rejected.append(res.rejected)
        batch = res.kept
    all_rejected = pa.concat_tables(rejected)
    assert batch.num_rows + all_rejected.num_rows == len(CAPTIONS)
    assert set(batch.column_names) >= {"caption_original", "language", "language_score", "pii_redactions"}
    assert sorted(batch.column("key").to_pylist() + all_rejected.column("key").to_pylist()) == [
        f"{i:05d}" for i in range(len(CAPTIONS))
    ]


# ----------------------------------------------------------------------------------------------
# Params validation: misuse names the bad key
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage, params, key",
    [
        ("caption_clean", {"strip_htm": True}, "strip_htm"),
        ("caption_clean", {"lowercase": "yes"}, "lowercase"),
        ("caption_clean", {"max_repeat_punct": 0}, "max_repeat_punct"),
        ("caption_filter", {"min_words": -1}, "min_words"),
        ("caption_filter", {"min_chars": 2.5}, "min_chars"),
        ("caption_filter", {"max_chars": 3}, "max_chars"),
        ("caption_filter", {"languages": "en"}, "languages"),
        ("caption_filter", {"languages": ["English"]}, "languages"),
        ("caption_filter", {"min_language_confidence": 1.5}, "min_language_confidence"),
        ("caption_filter", {"extra_boilerplate": ["(unclosed"]}, "extra_boilerplate"),
        ("caption_filter", {"extra_boilerplate": "foo"}, "extra_boilerplate"),
        ("caption_filter", {"boilerplate": 1}, "boilerplate"),
        ("pii_redact", {"kinds": ["email", "ssn"]}, "kinds"),
        ("pii_redact", {"kinds": []}, "kinds"),
        ("pii_redact", {"tokens": {"mail": "<M>"}}, "tokens"),
        ("pii_redact", {"tokens": {"email": "<EMAIL1>"}}, "tokens.email"),
        ("pii_redact", {"redact_meta": "no"}, "redact_meta"),
    ],
)
def test_params_errors_name_the_key(stage, params, key):
    with pytest.raises(StageError) as err:
        registry.create(stage, params)
    message = str(err.value)
    assert stage in message and key in message


def test_unknown_key_lists_valid_ones():
    with pytest.raises(StageError, match=r"unknown parameter\(s\) 'langs'.*valid: .*languages"):
        registry.create("caption_filter", {"langs": ["en"]})


def test_stages_pickle():
    batch = make_batch()
    for name, params in (
        ("caption_clean", {"lowercase": True}),
        ("pii_redact", {"kinds": ["email"]}),
        ("caption_filter", {"extra_boilerplate": ["photo by .*"]}),
    ):
        stage = registry.create(name, params)
        clone = pickle.loads(pickle.dumps(stage))
        a, b = stage.process(batch), clone.process(batch)
        assert a.kept.equals(b.kept) and a.rejected.equals(b.rejected)


# ----------------------------------------------------------------------------------------------
# Privacy by default, max_chars
# ----------------------------------------------------------------------------------------------

LLAVA_META = json.dumps(
    {
        "id": "x1",
        "image": "a.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nmy mail is jane@example.org"},
            {"from": "gpt", "value": "A dog. Call +1 (415) 555-2671."},
        ],
    }
)


def test_pii_redact_meta_and_turns_by_default():
    batch = run_stage(
        "caption_clean",
        make_batch(["a dog, mail jane@example.org"] * 2, meta=[LLAVA_META, '{"url": "https://example.com/a.jpg"}']),
    )[1].kept
    _, res = run_stage("pii_redact", batch)
    kept = res.kept.to_pydict()
    turns = json.loads(kept["meta"][0])["conversations"]
    assert turns[0]["value"] == "<image>\nmy mail is <EMAIL>" and turns[1]["value"] == "A dog. Call <PHONE>."
    assert kept["meta"][1] == '{"url": "https://example.com/a.jpg"}'
    assert all("jane@" not in c for c in kept["caption_original"] + kept["caption"])
    assert json.loads(kept["pii_redactions"][0]) == {"email": 2, "phone": 1}


def test_pii_redact_opt_outs():
    batch = run_stage("caption_clean", make_batch(["a dog, mail jane@example.org"], meta=[LLAVA_META]))[1].kept
    kept = run_stage("pii_redact", batch, keep_original_text=True)[1].kept.to_pydict()
    assert kept["caption"] == ["a dog, mail <EMAIL>"]
    assert kept["caption_original"] == ["a dog, mail jane@example.org"] and kept["meta"] == [LLAVA_META]
    kept = run_stage("pii_redact", batch, redact_meta=False)[1].kept.to_pydict()
    assert kept["meta"] == [LLAVA_META] and kept["caption_original"] == ["a dog, mail <EMAIL>"]
    kept = run_stage("pii_redact", batch, keep_original_text=True, redact_meta=True)[1].kept.to_pydict()
    assert "jane@" not in kept["meta"][0] and kept["caption_original"] == ["a dog, mail jane@example.org"]


def test_text_too_long_is_accounted_in_every_text_stage():
    batch = make_batch(["a dog on the beach", "x " * 100, None])
    for name in ("caption_clean", "caption_filter", "pii_redact"):
        stage, res = run_stage(name, batch, max_chars=50)
        assert_accounted(batch, res, name)
        assert reasons_by_key(res).get("00001") == "text_too_long", name
        assert "x x" not in res.rejected.column("detail")[0].as_py()
    assert registry.create("caption_clean", None).params.max_chars == 100_000
