"""clip_embed, clip_heads and clip_score_filter on instruction data: text_field picks what the image is compared
with (the caption, the question, the answer, or both), and text-only samples (`has_image` false) pass all three
untouched — null embeddings and score, no reject — in a stage and through a run. Random weights, tiny model."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import INPUT_SCHEMA
from mmcurate.pipeline.stage import StageError, registry
from mmcurate.stages.embeddings import embedding_array, embeddings_to_numpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


# key, image, has_image, question, answer (the caption is the answer, as the llava reader writes it)
ROWS = [
    ("a", _jpeg(0), True, "Is there a dog in the image?", "Yes"),
    ("t1", None, False, "What is the capital of France?", "Paris"),  # text-only
    ("b", _jpeg(1), True, "What colour is the car?", None),  # no answer: question_answer uses the question
    ("gone", None, True, "Where is the cat?", "On the mat"),  # names an image that is not there
    ("c", _jpeg(2), True, "   ", "Two"),  # blank question
    ("t2", None, False, "Say hello.", "Hello"),  # text-only
]


def _batch(rows=ROWS, conversation: bool = True) -> pa.Table:
    base = pa.table(
        {
            "key": [r[0] for r in rows],
            "source": ["s0"] * len(rows),
            "image": [r[1] for r in rows],
            "image_ext": ["jpg" if r[1] else None for r in rows],
            "caption": [r[4] for r in rows],
            "meta": ["{}"] * len(rows),
        },
        schema=INPUT_SCHEMA,
    )
    if not conversation:
        return base
    return (
        base.append_column("question", pa.array([r[3] for r in rows], pa.string()))
        .append_column("answer", pa.array([r[4] for r in rows], pa.string()))
        .append_column("has_image", pa.array([r[2] for r in rows], pa.bool_()))
    )


@pytest.fixture(scope="module")
def embedded(tiny_clip):
    out = {}
    for field in ("caption", "question", "answer", "question_answer"):
        st = registry.create("clip_embed", {**TINY, "text_field": field})
        out[field] = st.process(_batch())
    return out


def _ref(clip, texts: list[str]) -> np.ndarray:
    return clip.embed_texts(texts).astype(np.float16).astype(np.float32)


def test_text_only_rows_pass_clip_embed_with_null_columns(embedded):
    for field, res in embedded.items():
        assert res.kept.column("key").to_pylist() == ["a", "t1", "b", "c", "t2"], field
        assert res.rejected.column("key").to_pylist() == ["gone"]
        assert res.rejected.column("reason").to_pylist() == ["missing_image"]
        keys = res.kept.column("key").to_pylist()
        no_text = {"t1", "t2"} | _blank(field)
        assert res.kept.column("image_embedding").is_null().to_pylist() == [k in ("t1", "t2") for k in keys]
        for name in ("text_embedding", "clip_score"):
            assert res.kept.column(name).is_null().to_pylist() == [k in no_text for k in keys], (field, name)


def _blank(field: str) -> set[str]:
    """The image rows without text to embed under text_field."""
    return {"caption": {"b"}, "answer": {"b"}, "question": {"c"}, "question_answer": set()}[field]


def test_text_field_picks_the_text(embedded, tiny_clip):
    texts = {
        "caption": {"a": "Yes", "c": "Two"},
        "answer": {"a": "Yes", "c": "Two"},
        "question": {"a": "Is there a dog in the image?", "b": "What colour is the car?"},
        "question_answer": {"a": "Is there a dog in the image? Yes", "b": "What colour is the car?", "c": "Two"},
    }
    for field, want in texts.items():
        t = embedded[field].kept
        keys = t.column("key").to_pylist()
        txt = embeddings_to_numpy(t.column("text_embedding"))
        rows = [keys.index(k) for k in want]
        np.testing.assert_array_equal(txt[rows], _ref(tiny_clip, list(want.values())), err_msg=field)
        img = embeddings_to_numpy(t.column("image_embedding"))
        score = t.column("clip_score").to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(score[rows], (img[rows] * txt[rows]).sum(1), atol=3e-3)
    # the image embeddings do not depend on the text
    imgs = [embeddings_to_numpy(r.kept.column("image_embedding")) for r in embedded.values()]
    for x in imgs[1:]:
        np.testing.assert_array_equal(x, imgs[0])


def test_default_is_the_caption_and_unchanged_without_conversation_columns(tiny_clip):
    st = registry.create("clip_embed", dict(TINY))
    assert st.params.text_field == "caption"
    rows = [r for r in ROWS if r[2] and r[1] is not None]
    with_conv = st.process(_batch(rows)).kept
    plain = st.process(_batch(rows, conversation=False)).kept
    for name in ("image_embedding", "text_embedding", "clip_score"):
        assert with_conv.column(name).equals(plain.column(name))
        assert plain.column(name).null_count == (1 if name != "image_embedding" else 0)  # "b": no caption


def test_text_field_errors(tiny_clip):
    with pytest.raises(ValueError, match="text_field"):
        registry.create("clip_embed", {**TINY, "text_field": "prompt"})
    st = registry.create("clip_embed", {**TINY, "text_field": "question"})
    with pytest.raises(StageError, match="text_field 'question' needs the column"):
        st.process(_batch(conversation=False))


def test_text_only_rows_pass_clip_heads(tmp_path, embedded):
    import torch

    path = tmp_path / "aesthetic.pth"
    gen = torch.Generator().manual_seed(0)
    torch.save({"weight": torch.randn(1, 64, generator=gen), "bias": torch.zeros(1)}, path)
    st = registry.create("clip_heads", {"aesthetic_weights": str(path), "aesthetic_min": -1e9, "device": "cpu"})
    batch = embedded["question"].kept
    res = st.process(batch)
    assert res.kept.column("key").to_pylist() == batch.column("key").to_pylist()
    assert res.rejected.num_rows == 0
    is_text_only = [k in ("t1", "t2") for k in batch.column("key").to_pylist()]
    assert res.kept.column("aesthetic_score").is_null().to_pylist() == is_text_only
    # an image row without an embedding is still no_embedding
    broken = batch.set_column(
        batch.schema.get_field_index("image_embedding"),
        "image_embedding",
        embedding_array(
            np.ones((batch.num_rows, 64), np.float32), np.array([k != "a" for k in batch["key"].to_pylist()])
        ),
    )
    res = st.process(broken)
    assert res.rejected.column("key").to_pylist() == ["a"]
    assert res.rejected.column("reason").to_pylist() == ["no_embedding"]


def _scores_table(has_image: bool = True) -> pa.Table:
    keys = [f"k{i}" for i in range(8)]
    score = [0.9, None, 0.1, 0.5, None, 0.3, 0.7, None]
    image = [True, False, True, True, True, True, True, False]  # k4: an image without text: no_clip_score
    cols = {"key": keys, "source": ["s"] * 8, "clip_score": pa.array(score, pa.float32())}
    if has_image:
        cols["has_image"] = image
    return pa.table(cols)


@pytest.mark.parametrize("params", [{"threshold": 0.4}, {"keep_fraction": 0.5}])
def test_text_only_rows_pass_clip_score_filter(params):
    st = registry.create("clip_score_filter", params)
    res = run_on_table(st, _scores_table())
    rejected = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))
    # k1 and k7 are text-only: kept; k4 has an image but no score. keep_fraction: the top half of the 5 scored,
    # round(2.5) = 3 (0.9, 0.7, 0.5), the same cut as threshold 0.4
    assert rejected == {"k2": "clip_score", "k5": "clip_score", "k4": "no_clip_score"}
    stats = res.stats
    assert stats.text_only == 2
    assert stats.kept + stats.rejected == 6 and stats.no_clip_score == 1
    # without has_image (caption data) a null score is no_clip_score, as before
    plain = run_on_table(st, _scores_table(has_image=False))
    gone = dict(zip(plain.rejected.column("key").to_pylist(), plain.rejected.column("reason").to_pylist()))
    assert {k for k, r in gone.items() if r == "no_clip_score"} == {"k1", "k4", "k7"}
    assert plain.stats.text_only is None


def test_llava_run_with_clip_on_the_question_keeps_text_only_entries(tmp_path):
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import parse_recipe

    images = tmp_path / "in" / "images"
    images.mkdir(parents=True)
    entries = []
    for i in range(12):
        conv = [{"from": "human", "value": f"<image>\nIs object {i} red?"}, {"from": "gpt", "value": "Yes"}]
        if i % 3 == 0:  # text-only
            entries.append({"id": f"t{i}", "conversations": [{"from": "human", "value": f"Say {i}."}, conv[1]]})
            continue
        (images / f"{i}.jpg").write_bytes(_jpeg(i))
        entries.append({"id": f"s{i}", "image": f"{i}.jpg", "conversations": conv})
    path = tmp_path / "in" / "llava.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    for mode in ("memory", "sharded"):
        out = tmp_path / f"out_{mode}"
        recipe = {
            "input": {"format": "llava", "path": str(path), "options": {"image_root": str(images), "shard_size": 5}},
            "output": {"path": str(out), "report": False},
            "run": {"workers": 1, "global_mode": mode},
            "stages": [
                {"clip_embed": {**TINY, "text_field": "question"}},
                {"clip_score_filter": {"keep_fraction": 0.5}},
            ],
        }
        manifest = LocalExecutor(parse_recipe(recipe), progress=False).run()
        assert manifest["counts"]["accounting_ok"]
        samples = pq.read_table(out / "samples.parquet")
        keys = samples.column("key").to_pylist()
        assert {f"t{i}" for i in range(0, 12, 3)} <= set(keys), mode
        assert len([k for k in keys if k.startswith("s")]) == 4, mode  # the top half of the 8 scored
        rejects = pq.read_table(out / "rejects.parquet")
        assert set(rejects.column("reason").to_pylist()) == {"clip_score"}, mode
