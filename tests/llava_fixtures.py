"""LLaVA-style instruction data built from the built-in sample photos (mmcurate.sample_data, scikit-image's photos;
no download): the kinds of entries the real sets hold, each with the truth of whether it is a valid sample.

`build_llava_mix(d)` writes d/llava.json (or .jsonl) and its images under d/images (the image_root), and returns
the entries with their truth. The mix follows what LLaVA-1.5's mix665k, LLaVA-Pretrain 558k, ShareGPT4V and the
multi-image sets hold:
- VQA with short answers ("Yes", "No", "3", "Red", "B"), one question per entry and several entries on one image;
- multi-turn conversations about one image;
- LLaVA-Pretrain captions ("<image>\\nDescribe..."), a placeholder after the text, and none at all;
- ShareGPT4V-style long descriptions, with markup, entities and mojibake to clean;
- text-only ShareGPT conversations (no image), with user/assistant roles;
- multi-image and interleaved entries (`image` a list, placeholders in the text);
- personal data in a turn;
- and the broken entries a curation must reject: an empty turn, roles out of order, an unknown role, a turn whose
  value is not text, a question without an answer, a missing image file, placeholders that do not match.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

VALID, INVALID = True, False


def _turns(*pairs, roles=("human", "gpt")) -> list[dict]:
    out = []
    for q, a in pairs:
        out.append({"from": roles[0], "value": q})
        if a is not None:
            out.append({"from": roles[1], "value": a})
    return out


def photo_files(max_photos: int | None = 8) -> dict[str, bytes]:
    """{stem: JPEG bytes} of the sample photos, as q90 JPEGs of at most 320 px a side."""
    from mmcurate.sample_data import load_photos

    out = {}
    for stem, img in load_photos(max_photos).items():
        img = img.copy()
        img.thumbnail((320, 320))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out[stem] = buf.getvalue()
    return out


def llava_entries(stems: list[str]) -> list[tuple[dict, bool, str]]:
    """(record, valid, what) for images named coco/<stem>.jpg (the first len(stems) photos)."""
    a, b, c, d = (f"coco/{s}.jpg" for s in stems[:4])
    e, f = (f"sharegpt4v/{s}.jpg" for s in stems[4:6])
    entries = [
        # VQA: short answers, several entries (different questions) on the same image
        ({"id": "vqa_yes", "image": a, "conversations": _turns(("<image>\nIs there a person?", "Yes"))}, VALID, "yes"),
        ({"id": "vqa_no", "image": a, "conversations": _turns(("<image>\nIs it raining?", "No"))}, VALID, "no"),
        ({"id": "vqa_count", "image": b, "conversations": _turns(("<image>\nHow many cups?", "3"))}, VALID, "count"),
        (
            {"id": "vqa_color", "image": c, "conversations": _turns(("<image>\nWhat color is it?", "Red"))},
            VALID,
            "color",
        ),
        (
            {
                "id": "vqa_mc",
                "image": d,
                "conversations": _turns(
                    ("<image>\nWhat is shown?\nA. a dog\nB. a rocket\nC. a cup\nAnswer with the option's letter.", "B")
                ),
            },
            VALID,
            "option letter",
        ),
        # multi-turn (mix665k's llava_instruct)
        (
            {
                "id": "multi_turn",
                "image": b,
                "conversations": _turns(
                    ("<image>\nWhat is in the cup?", "Coffee with latte art."),
                    ("Is it hot?", "Yes"),
                    ("What could the person do next?", "Drink it while it is warm, or add sugar first."),
                ),
            },
            VALID,
            "multi-turn",
        ),
        # LLaVA-Pretrain captions: placeholder first, placeholder last, none (0 placeholders, 1 image)
        (
            {
                "id": "pretrain_1",
                "image": c,
                "conversations": _turns(("<image>\nRender a clear and concise summary.", "a cat on a rug")),
            },
            VALID,
            "pretrain caption",
        ),
        (
            {
                "id": "pretrain_2",
                "image": d,
                "conversations": _turns(("Write a terse caption.\n<image>", "rocket on the pad")),
            },
            VALID,
            "placeholder last",
        ),
        (
            {
                "id": "no_placeholder",
                "image": a,
                "conversations": _turns(("Describe the image briefly.", "An astronaut.")),
            },
            VALID,
            "no placeholder",
        ),
        # ShareGPT4V long description with markup, entities and mojibake
        (
            {
                "id": "sharegpt4v_1",
                "image": e,
                "conversations": _turns(
                    (
                        "<image>\nDescribe this image in detail.",
                        "The image shows a <b>detailed</b> scene &amp; its caf\u00c3\u00a9 colours.<br>It is "
                        "well lit\u200b and sharp.",
                    )
                ),
            },
            VALID,
            "markup to clean",
        ),
        (
            {
                "id": "sharegpt4v_2",
                "image": f,
                "conversations": _turns(("<image>\nWhat is happening here?", "Nothing much; a still scene.")),
            },
            VALID,
            "long description",
        ),
        # text-only ShareGPT conversations, user/assistant roles
        (
            {
                "id": "text_only_1",
                "conversations": _turns(("What is 2+2?", "4"), ("And times 3?", "12"), roles=("user", "assistant")),
            },
            VALID,
            "text-only",
        ),
        (
            {"id": "text_only_2", "conversations": _turns(("Say hello in French.", "Bonjour"))},
            VALID,
            "text-only",
        ),
        # multi-image and interleaved
        (
            {
                "id": "multi_image",
                "image": [a, b],
                "conversations": _turns(("<image>\n<image>\nWhich picture is darker?", "The second"))
                + _turns(("Why?", "It has less light.")),
            },
            VALID,
            "multi-image",
        ),
        (
            {
                "id": "interleaved",
                "image": [c, d, e],
                "conversations": _turns(
                    ("First: <image> then <image> and finally <image>. Which one is a rocket?", "The second one.")
                ),
            },
            VALID,
            "interleaved",
        ),
        # personal data in a turn (kept, redacted)
        (
            {
                "id": "with_pii",
                "image": c,
                "conversations": _turns(("<image>\nWho took it? Mail me at jane.doe@example.org", "I cannot tell.")),
            },
            VALID,
            "pii",
        ),
        # broken entries
        (
            {"id": "empty_turn", "image": a, "conversations": _turns(("<image>\nWhat is it?", "   "))},
            INVALID,
            "empty_turn",
        ),
        (
            {
                "id": "not_alternating",
                "image": b,
                "conversations": [
                    {"from": "human", "value": "<image>\nQ1"},
                    {"from": "human", "value": "Q2"},
                    {"from": "gpt", "value": "A"},
                ],
            },
            INVALID,
            "roles_not_alternating",
        ),
        (
            {
                "id": "unknown_role",
                "image": c,
                "conversations": [{"from": "robot", "value": "<image>\nbeep"}, {"from": "gpt", "value": "Yes"}],
            },
            INVALID,
            "unknown_role",
        ),
        (
            {
                "id": "value_not_text",
                "image": d,
                "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": None}],
            },
            INVALID,
            "malformed_turn",
        ),
        (
            {"id": "unanswered", "image": a, "conversations": _turns(("<image>\nAnd then?", None))},
            INVALID,
            "unanswered_turn",
        ),
        (
            {"id": "missing_file", "image": "coco/not_there.jpg", "conversations": _turns(("<image>\nWhat?", "No"))},
            INVALID,
            "missing_image",
        ),
        (
            {"id": "placeholders", "image": a, "conversations": _turns(("<image>\n<image>\nTwo?", "One"))},
            INVALID,
            "image_placeholders",
        ),
        ({"id": "no_conversations", "image": b}, INVALID, "no_conversation"),
    ]
    return entries


def build_llava_mix(d: Path, fmt: str = "json", copies: int = 1) -> tuple[Path, list[tuple[dict, bool, str]]]:
    """d/llava.<fmt> with its images under d/images; `copies` > 1 repeats the set with new ids (a larger run).
    Returns (path, [(record, valid, what)])."""
    files = photo_files(8)
    stems = list(files)
    images = d / "images"
    for i, stem in enumerate(stems):
        sub = "coco" if i < 4 else "sharegpt4v"
        p = images / sub / f"{stem}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[stem])
    base = llava_entries(stems)
    entries = []
    for k in range(copies):
        for rec, valid, what in base:
            rec = json.loads(json.dumps(rec))
            if k and "id" in rec:
                rec["id"] = f"{rec['id']}_{k}"
            entries.append((rec, valid, what))
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"llava.{fmt}"
    records = [r for r, _, _ in entries]
    if fmt == "json":
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path, entries
