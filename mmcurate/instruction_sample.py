"""The built-in instruction sample: LLaVA-style conversations about the built-in photos (mmcurate.sample_data), with
the truth about every entry, for `mmcurate demo --llava`, the tests and benchmarks/bench_instruction.py.

`synthetic_records(n, images, ...)` generates n conversations, deterministically from `seed`, of the task types
instruction data mixes: yes/no questions (yes over-represented: `yes_share`), multiple choice (the correct option
mostly at A: `letter_skew`; some with a "None of the above" option), counting, colours, text reading, grounding
boxes, detailed descriptions, reasoning, multi-turn dialogues and text-only conversations, from a few dozen question
templates (so templates dominate, as in generated data). No two generated conversations about one image are the same
or near copies; then `duplicate_share` of them are planted again as an exact copy (same image, the same text,
another id) or a near copy (case, punctuation or one word of a long answer changed).

`build_instruction_sample(out_dir)` writes `out_dir/llava.json` and its images under `out_dir/images` (the photos as
JPEGs; two of them again, byte for byte, under another path, and two re-encoded: exact and perceptual copies of an
image, whose conversations form one image group), `out_dir/truth.jsonl` (id -> what it is), plus entries a curation
must reject (broken conversations). Every short answer ("Yes", "No", "3", "Red", "B") in it is a valid answer.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: What is in each built-in photo (objects present), its colours, and a one-line caption.
PHOTO_SUBJECTS = {
    "astronaut": (
        ["astronaut", "flag", "spacesuit", "helmet", "badge"],
        ["white", "blue"],
        "An astronaut in a white spacesuit posing in front of a flag",
    ),
    "chelsea": (["cat", "whiskers", "ear", "eye", "fur"], ["orange", "brown"], "A tabby cat looking to the side"),
    "coffee": (
        ["cup", "saucer", "spoon", "table", "coffee"],
        ["white", "brown"],
        "A cup of coffee on a saucer with a spoon",
    ),
    "rocket": (
        ["rocket", "launch pad", "tower", "sky", "smoke"],
        ["white", "blue"],
        "A rocket on the launch pad under a clear sky",
    ),
    "hubble_deep_field": (
        ["galaxy", "star", "spiral", "sky"],
        ["black", "orange"],
        "Thousands of distant galaxies in the deep field",
    ),
    "retina": (["retina", "blood vessel", "optic disc"], ["orange", "red"], "A fundus photograph of a human retina"),
    "camera": (["man", "camera", "tripod", "coat", "building"], ["gray", "black"], "A man with a camera on a tripod"),
    "motorcycle_left": (
        ["motorcycle", "wheel", "seat", "engine", "exhaust"],
        ["red", "black"],
        "A red sports motorcycle seen from the left",
    ),
    "brick": (["brick", "wall", "mortar"], ["gray"], "A grey brick wall"),
    "coins": (["coin", "row", "background"], ["gray", "silver"], "Old coins arranged in rows"),
    "grass": (["grass", "blade", "leaf"], ["green"], "Green grass blades close up"),
    "gravel": (["gravel", "stone", "pebble"], ["gray"], "Grey gravel stones seen from above"),
    "ihc": (
        ["tissue", "cell", "stain"],
        ["purple", "brown"],
        "Tissue stained for immunohistochemistry under a microscope",
    ),
    "moon": (["moon", "crater", "surface"], ["gray", "white"], "The surface of the moon"),
}
GENERIC_OBJECTS = (
    "person dog cat car tree boat umbrella pizza horse bicycle clock bench bird bus train kite bottle chair "
    "laptop phone book vase bowl banana apple sign window door lamp cloud road"
).split()
COLORS = ("red", "blue", "green", "yellow", "white", "black", "gray", "brown", "orange", "purple", "pink")
WORDS = ("STOP", "OPEN", "EXIT", "SALE", "CAFE", "NASA", "POLICE", "TAXI", "HOTEL", "BAKERY")

YES_NO = (
    "Is there a {o} in the image?",
    "Is there a {o} in this picture?",
    "Can you see a {o} here?",
    "Does the image show a {o}?",
    "Is a {o} visible in the photo?",
    "Is there any {o} in the scene?",
)
YES_ANSWERS = ("Yes", "Yes", "Yes", "Yes, there is a {o} in the image.", "yes")
NO_ANSWERS = ("No", "No", "No", "No, there is no {o} in the image.", "no")
COLOR_Q = ("What color is the {o}?", "What is the color of the {o}?", "Which color is the {o} in the image?")
COUNT_Q = ("How many {o}s are there?", "How many {o}s can you count in the image?", "What is the number of {o}s?")
OCR_Q = ("What does the sign on the {o} say?", "What is written on the {o}?", "Read the text on the {o}.")
GROUND_Q = (
    "Please provide the bounding box coordinate of the region this sentence describes: the {o}.",
    "Give the bounding box of the {o} in the image.",
)
CAPTION_Q = (
    "Describe the image in detail.",
    "Provide a detailed description of the picture.",
    "What is happening in this image? Describe it thoroughly.",
    "Write a detailed caption for this photo.",
)
REASON_Q = (
    "Why might the {o} be here?",
    "What could be the purpose of the {o} in this scene?",
    "Explain why the {o} looks the way it does.",
)
MC_Q = (
    "What is the main subject of the image?",
    "Which object can be seen in the picture?",
    "What does this photo mainly show?",
)
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
SENTENCES = (
    "The lighting is soft and even across the frame.",
    "The background is slightly out of focus, which draws attention to the subject.",
    "Fine details are visible in the texture of the surfaces.",
    "The composition places the main subject near the centre.",
    "There are no people visible apart from what the picture is about.",
    "The colours are natural and not strongly saturated.",
    "Shadows suggest that the light comes from the upper left.",
    "The picture looks like it was taken with a good camera.",
    "Nothing in the frame seems to be moving.",
    "The edges of the frame are clean and without clutter.",
    "It appears to be a well balanced photograph.",
    "Several small details reward a closer look.",
)
REASONS = (
    "it is part of the scene the photographer wanted to show",
    "it is commonly found in places like this one",
    "it serves a practical purpose for whoever is there",
    "the picture was taken to document it",
    "its shape and position suggest it was placed there deliberately",
)
PHRASES = ("good morning", "thank you", "see you tomorrow", "where is the station", "how much is it", "I am hungry")
LANGUAGES = {
    "French": ("Bonjour", "Merci", "À demain", "Où est la gare", "Combien ça coûte", "J'ai faim"),
    "German": ("Guten Morgen", "Danke", "Bis morgen", "Wo ist der Bahnhof", "Wie viel kostet das", "Ich habe Hunger"),
    "Spanish": ("Buenos días", "Gracias", "Hasta mañana", "Dónde está la estación", "Cuánto cuesta", "Tengo hambre"),
}
WORDS_TO_SPELL = ("curation", "balance", "template", "picture", "question", "answer", "dataset", "language")

#: Task kinds and their share of the generated conversations (text-only ones come on top: `text_only_share`).
KIND_WEIGHTS = {
    "yes_no": 0.34,
    "multiple_choice": 0.12,
    "counting": 0.08,
    "color": 0.08,
    "ocr": 0.05,
    "grounding": 0.05,
    "captioning": 0.10,
    "reasoning": 0.08,
    "dialogue": 0.10,
}


def _turns(*pairs, placeholder: bool = True) -> list[dict]:
    out = []
    for i, (q, a) in enumerate(pairs):
        out.append({"from": "human", "value": ("<image>\n" + q) if placeholder and i == 0 else q})
        out.append({"from": "gpt", "value": a})
    return out


@dataclass
class _Gen:
    rng: np.random.Generator
    yes_share: float
    letter_skew: float
    subjects: dict = field(default_factory=dict)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def objects(self, stem):
        present, colors, caption = self.subjects.get(stem) or (None, None, None)
        if present is None:  # the same objects whenever this image comes up
            k = zlib.crc32(str(stem).encode()) % len(GENERIC_OBJECTS)
            present = [GENERIC_OBJECTS[(k + j * 7) % len(GENERIC_OBJECTS)] for j in range(4)]
            colors = [COLORS[k % len(COLORS)], COLORS[(k + 3) % len(COLORS)]]
            caption = f"A photo of a {present[0]} next to a {present[1]}"
        absent = [o for o in GENERIC_OBJECTS if o not in present]
        return present, absent, colors, caption

    def yes_no(self, stem):
        present, absent, _, _ = self.objects(stem)
        yes = self.rng.random() < self.yes_share
        o = self.pick(present if yes else absent)
        return (self.pick(YES_NO).format(o=o), self.pick(YES_ANSWERS if yes else NO_ANSWERS).format(o=o))

    def color(self, stem):
        present, _, colors, _ = self.objects(stem)
        o = self.pick(present)
        c = self.pick(colors)
        return self.pick(COLOR_Q).format(o=o), c.capitalize() if self.rng.random() < 0.7 else c

    def counting(self, stem):
        present, _, _, _ = self.objects(stem)
        return self.pick(COUNT_Q).format(o=self.pick(present)), str(int(self.rng.integers(0, 9)))

    def ocr(self, stem):
        present, _, _, _ = self.objects(stem)
        return self.pick(OCR_Q).format(o=self.pick(present)), self.pick(WORDS)

    def grounding(self, stem):
        present, _, _, _ = self.objects(stem)
        (x1, x2), (y1, y2) = np.sort(self.rng.random(2).round(2)), np.sort(self.rng.random(2).round(2))
        box = ", ".join(f"{v:.2f}" for v in (x1, y1, x2, y2))
        return self.pick(GROUND_Q).format(o=self.pick(present)), f"[{box}]"

    def captioning(self, stem):
        _, _, _, caption = self.objects(stem)
        picks = self.rng.choice(len(SENTENCES), 4, replace=False)
        return self.pick(CAPTION_Q), caption + ". " + " ".join(SENTENCES[i] for i in picks)

    def reasoning(self, stem):
        present, _, _, _ = self.objects(stem)
        o = self.pick(present)
        why = self.pick(REASONS)
        extra = SENTENCES[int(self.rng.integers(len(SENTENCES)))]
        return self.pick(REASON_Q).format(o=o), f"The {o} is probably there because {why}. {extra}"

    def multiple_choice(self, stem):
        present, absent, _, _ = self.objects(stem)
        right = present[0]
        wrong = list(self.rng.choice(absent, 3, replace=False))
        negative = self.rng.random() < 0.2
        k = 3 if negative else 4
        if self.rng.random() < self.letter_skew:
            slot = 0
        else:
            slot = int(self.rng.integers(k))
        options = wrong[: k - 1]
        options.insert(slot, right)
        if negative:  # "None of the above" first or in the middle, never last: negative_last moves it
            options.insert(int(self.rng.integers(k)), "None of the above")
        letters = "ABCDE"
        q = self.pick(MC_Q) + "\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options)) + "\n" + MC_SUFFIX
        return q, letters[options.index(right)]

    def pair(self, kind, stem):
        return getattr(self, kind)(stem)

    def conversation(self, kind, stem):
        if kind == "dialogue":
            first = self.yes_no(stem)
            return _turns(first, self.color(stem), self.reasoning(stem))
        return _turns(self.pair(kind, stem))

    def text_only(self, i):
        """A ShareGPT-style text-only question: arithmetic, a unit conversion, a word spelt backwards, a
        translation."""
        kind = int(self.rng.integers(4))
        x, y = int(self.rng.integers(2, 999)), int(self.rng.integers(2, 999))
        if kind == 0:
            op, val = (("plus", x + y), ("times", x * y), ("minus", x - y))[int(self.rng.integers(3))]
            pair = (f"What is {x} {op} {y}?", str(val))
        elif kind == 1:
            pair = (f"Convert {x} degrees Celsius to Fahrenheit.", f"{x * 9 / 5 + 32:g} degrees Fahrenheit.")
        elif kind == 2:
            w = self.pick(WORDS_TO_SPELL)
            pair = (f"Spell the word '{w}' backwards.", w[::-1])
        else:
            lang = self.pick(sorted(LANGUAGES))
            k = int(self.rng.integers(len(PHRASES)))
            pair = (f"Translate '{PHRASES[k]}' into {lang}.", LANGUAGES[lang][k])
        return _turns(pair, placeholder=False)


def _conversation_key(turns) -> tuple[str, frozenset]:
    """The normalised text of a conversation and its word bigrams."""
    from mmcurate.curate.text_dedup import normalize_text

    text = normalize_text("\n".join(t["value"] for t in turns))
    words = "".join(c if c.isalnum() else " " for c in text).split()
    return text, frozenset(zip(words, words[1:])) if len(words) > 1 else frozenset(words)


def _too_close(bigrams: frozenset, others: list, limit: float = 0.6) -> bool:
    for o in others:
        union = len(bigrams | o)
        if union and len(bigrams & o) / union >= limit:
            return True
    return False


def _near_copy(turns, rng) -> list[dict]:
    """A near copy: the longest answer with one word changed, or (a short conversation) a space before the question's
    last mark."""
    out = [dict(t) for t in turns]
    longest = max(range(len(out)), key=lambda i: len(out[i]["value"]) if out[i]["from"] == "gpt" else -1)
    words = out[longest]["value"].split(" ")
    if len(words) >= 12:
        i = int(rng.integers(1, len(words) - 1))
        words[i] = {"the": "a", "a": "the"}.get(words[i], words[i] + "s")
        out[longest]["value"] = " ".join(words)
    else:  # a space before the question's last mark: the same words, not the same text
        q = out[0]["value"]
        out[0]["value"] = q[:-1] + " " + q[-1] if q and q[-1] in "?.!" else q + " ?"
    return out


def synthetic_records(
    n: int,
    images: list[str | None],
    *,
    seed: int = 0,
    subjects: dict | None = None,
    yes_share: float = 0.75,
    letter_skew: float = 0.6,
    duplicate_share: float = 0.05,
    text_only_share: float = 0.08,
    id_prefix: str = "c",
    groups: dict | None = None,
) -> list[tuple[dict, dict]]:
    """n LLaVA records (module docstring) and the truth of each: {"id", "kind", "image", "duplicate_of", "copy"
    ("exact", "near" or None), "valid": True}. ``images``: the image path each conversation may name (cycled through
    in a seeded order; None: text-only); ``subjects``: {image path: (objects, colours, caption)} (default: generic
    objects); ``groups``: {image path: the image it copies}, so that no two conversations about one image (under any
    of its paths) are the same or near copies."""
    rng = np.random.default_rng(seed)
    gen = _Gen(rng, yes_share, letter_skew, subjects or {})
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    weights /= weights.sum()
    n_planted = int(round(n * duplicate_share))
    n_base = n - n_planted
    out: list[tuple[dict, dict]] = []
    seen: set = set()  # (image group, normalised text): no exact copy among the generated conversations
    near: dict = {}  # image group -> word bigrams of its conversations: no near copy either
    groups = groups or {}
    order = rng.permutation(len(images)) if images else np.zeros(0, np.int64)
    for i in range(n_base):
        image = images[int(order[i % len(order)])] if len(order) else None
        text_only = image is None or rng.random() < text_only_share
        group = None if text_only else groups.get(image, image)
        for _ in range(50):  # a conversation unlike every earlier one on this image
            if text_only:
                kind, turns = "text_only", gen.text_only(i)
            else:
                kind = kinds[int(rng.choice(len(kinds), p=weights))]
                turns = gen.conversation(kind, image)
            text, bigrams = _conversation_key(turns)
            if (group, text) not in seen and (text_only or not _too_close(bigrams, near.get(group, []))):
                break
        seen.add((group, text))
        if not text_only:
            near.setdefault(group, []).append(bigrams)
        rid = f"{id_prefix}{i:07d}"
        rec = {"id": rid, "conversations": turns} if text_only else {"id": rid, "image": image, "conversations": turns}
        out.append((rec, {"id": rid, "kind": kind, "image": rec.get("image"), "duplicate_of": None, "copy": None}))
    # planted copies: exact (the same conversation again) or near (long conversations only)
    sources = rng.choice(n_base, n_planted, replace=n_planted > n_base) if n_planted else []
    for j, source in enumerate(sources):  # distinct sources: no two copies of one conversation
        src, truth = out[int(source)]
        rid = f"{id_prefix}{n_base + j:07d}"
        long_enough = sum(len(t["value"].split()) for t in src["conversations"]) >= 12
        near = long_enough and rng.random() < 0.5
        turns = _near_copy(src["conversations"], rng) if near else json.loads(json.dumps(src["conversations"]))
        rec = {**src, "id": rid, "conversations": turns}
        out.append((rec, {**truth, "id": rid, "duplicate_of": src["id"], "copy": "near" if near else "exact"}))
    for _, truth in out:
        truth["valid"] = True
    return out


#: Entries a curation must reject (conversation_check's reasons), each on the first photo.
def broken_records(image: str) -> list[tuple[dict, dict]]:
    cases = [
        ("broken_empty_turn", _turns(("What is it?", "   ")), "empty_turn"),
        (
            "broken_order",
            [{"from": "gpt", "value": "Yes"}, {"from": "human", "value": "<image>\nIs it a cat?"}],
            "first_turn_not_human",
        ),
        (
            "broken_roles",
            [
                {"from": "human", "value": "<image>\nQ1"},
                {"from": "human", "value": "Q2"},
                {"from": "gpt", "value": "A"},
            ],
            "roles_not_alternating",
        ),
        ("broken_unanswered", [{"from": "human", "value": "<image>\nAnd then?"}], "unanswered_turn"),
        ("broken_placeholders", _turns(("<image>\nTwo images?", "One")), "image_placeholders"),
        (
            "broken_role_name",
            [{"from": "robot", "value": "<image>\nbeep"}, {"from": "gpt", "value": "No"}],
            "unknown_role",
        ),
    ]
    out = []
    for rid, turns, reason in cases:
        rec = {"id": rid, "image": image, "conversations": turns}
        out.append(
            (
                rec,
                {
                    "id": rid,
                    "kind": "broken",
                    "image": image,
                    "duplicate_of": None,
                    "copy": None,
                    "valid": False,
                    "broken": reason,
                },
            )
        )
    return out


def _jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def build_instruction_sample(out_dir, n: int = 360, seed: int = 0) -> dict:
    """Write the built-in instruction sample (module docstring) into out_dir; returns a summary: path (the JSON),
    image_root, n_entries, counts by kind, planted copies, broken entries."""
    from mmcurate.sample_data import load_photos

    out = Path(out_dir)
    images_dir = out / "images"
    photos = load_photos()
    paths, subjects, groups = [], {}, {}
    for stem, img in photos.items():
        img = img.copy()
        img.thumbnail((320, 320))
        rel = f"coco/{stem}.jpg"
        data = _jpeg(img)
        (images_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (images_dir / rel).write_bytes(data)
        paths.append(rel)
        subjects[rel] = PHOTO_SUBJECTS[stem]
        groups[rel] = stem
        if stem in ("chelsea", "rocket"):  # the same bytes under another path (a re-saved download)
            copy = f"mirror/{stem}_copy.jpg"
            (images_dir / copy).parent.mkdir(parents=True, exist_ok=True)
            (images_dir / copy).write_bytes(data)
            paths.append(copy)
            subjects[copy] = PHOTO_SUBJECTS[stem]
            groups[copy] = stem
        if stem in ("coffee", "motorcycle_left"):  # re-encoded: a perceptual copy
            again = f"resaved/{stem}.jpg"
            (images_dir / again).parent.mkdir(parents=True, exist_ok=True)
            (images_dir / again).write_bytes(_jpeg(img, quality=60))
            paths.append(again)
            subjects[again] = PHOTO_SUBJECTS[stem]
            groups[again] = stem
    entries = synthetic_records(n, paths, seed=seed, subjects=subjects, id_prefix="llava_", groups=groups)
    # a conversation of a mirrored image planted again on its original: one image group, a duplicate
    mirrored = next(((r, t) for r, t in entries if (r.get("image") or "").startswith("mirror/")), None)
    if mirrored is not None:
        r, t = mirrored
        rid = "llava_mirror_copy"
        entries.append(
            (
                {**r, "id": rid, "image": r["image"].replace("mirror/", "coco/").replace("_copy", "")},
                {
                    **t,
                    "id": rid,
                    "image": r["image"].replace("mirror/", "coco/").replace("_copy", ""),
                    "duplicate_of": r["id"],
                    "copy": "exact",
                },
            )
        )
    entries += broken_records(paths[0])
    path = out / "llava.json"
    path.write_text(json.dumps([r for r, _ in entries], ensure_ascii=False, indent=1), encoding="utf-8")
    with open(out / "truth.jsonl", "w", encoding="utf-8") as f:
        for _, t in entries:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    kinds: dict[str, int] = {}
    for _, t in entries:
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
    return {
        "path": str(path),
        "image_root": str(images_dir),
        "n_entries": len(entries),
        "kinds": kinds,
        "copies": sum(t["copy"] is not None for _, t in entries),
        "broken": sum(not t["valid"] for _, t in entries),
    }


def read_truth(out_dir) -> dict[str, dict]:
    """id -> truth of a built instruction sample."""
    with open(Path(out_dir) / "truth.jsonl", encoding="utf-8") as f:
        return {t["id"]: t for t in map(json.loads, f)}
