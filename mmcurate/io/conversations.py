"""A LLaVA record's conversation as turns, and turns back into the record: one rule for the reader, the
conversation stages and the export.

A record (LLaVA-1.5 mix665k, LLaVA-Pretrain, ShareGPT4V, multi-image sets) is
`{"id", "image": "a.jpg" | ["a.jpg", "b.jpg"] (or absent: text-only), "conversations": [{"from", "value"}, ...]}`.

Turns: one `{"role", "text"}` per element of `conversations`, in order.
- role: the turn's `from` (or `role`, as some converted sets write it), stripped and lower-cased, then
  normalised: human and user -> "human"; gpt and assistant -> "gpt"; "system" stays; any other string stays
  as it is (conversation_check rejects it as `unknown_role`); None when missing or not a string.
- text: the turn's `value` (or `content`) when it is a string, `<image>` placeholders kept where they are;
  None when missing or not a string. An element that is not an object is `{"role": None, "text": None}`.
  conversation_check rejects both as `malformed_turn`; nothing here raises on a malformed record.
- `conversations` missing or not a list: no turns (None).

Back: `record_with_turns(record, turns)` writes edited turns into the record, keeping every other key of the
record and of each turn. A turn whose role and text are unchanged keeps its original object (its `from`
spelling: "user" stays "user"); an edited one gets the new text (and role) in the keys it used. When turns were
removed or added, the remaining ones are matched to the originals in order by (role, text). With
`llava_roles=True` (the export) every role is written as LLaVA spells it: "human" / "gpt".
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
HUMAN, GPT, SYSTEM = "human", "gpt", "system"
ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT, "system": SYSTEM}
#: Roles a conversation may hold (conversation_check); "system" only where its allow_system says.
KNOWN_ROLES = (HUMAN, GPT, SYSTEM)


def normalize_role(value) -> str | None:
    """The normalised role of a turn's `from` value (see the module docstring)."""
    if not isinstance(value, str):
        return None
    r = value.strip().lower()
    return ROLE_ALIASES.get(r, r)


def _keys(turn: dict) -> tuple[str, str]:
    """(role key, text key) of a turn object: from/value, or role/content where the object uses those."""
    role_key = "role" if "from" not in turn and "role" in turn else "from"
    text_key = "content" if "value" not in turn and "content" in turn else "value"
    return role_key, text_key


def parse_turn(obj) -> dict:
    """{"role", "text"} of one element of `conversations`."""
    if not isinstance(obj, dict):
        return {"role": None, "text": None}
    role_key, text_key = _keys(obj)
    text = obj.get(text_key)
    return {"role": normalize_role(obj.get(role_key)), "text": text if isinstance(text, str) else None}


def turns_from_record(record) -> list[dict] | None:
    """The record's turns; None when it has no `conversations` list."""
    conv = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(conv, list):
        return None
    return [parse_turn(t) for t in conv]


def image_paths(record) -> list[str]:
    """Every image the record names, in order, as '/'-separated paths: `image` as a string or a list (null and
    empty entries dropped; other values as their text). [] for a text-only record."""
    image = record.get("image") if isinstance(record, dict) else None
    items = image if isinstance(image, list) else [image]
    return [str(i).replace("\\", "/") for i in items if i is not None and i != ""]


def first_text(turns, role: str) -> str | None:
    """The text of the first turn with this role that has text."""
    for t in turns or ():
        if t["role"] == role and t["text"] is not None:
            return t["text"]
    return None


def without_placeholders(text: str) -> str:
    """The text with its <image> placeholders removed: a line that held one has its spaces collapsed, the whole
    stripped ("<image>\nWhat is it?" -> "What is it?", "First: <image> then" -> "First: then")."""
    if IMAGE_TOKEN not in text:
        return text.strip()
    lines = [
        " ".join(line.replace(IMAGE_TOKEN, " ").split()) if IMAGE_TOKEN in line else line for line in text.split("\n")
    ]
    return "\n".join(lines).strip()


def question_text(turns) -> str | None:
    """The first human turn without its <image> placeholders (without_placeholders)."""
    q = first_text(turns, HUMAN)
    return None if q is None else without_placeholders(q)


def count_placeholders(turns) -> int:
    return sum(t["text"].count(IMAGE_TOKEN) for t in turns or () if t["text"] is not None)


def conversation_columns(turns) -> tuple[int, str | None, str | None]:
    """(n_turns, question, answer) of a conversation's turns (None: no conversation)."""
    return len(turns or ()), question_text(turns), first_text(turns, GPT)


def _match(originals: list[dict], turns: list[dict]) -> list[int | None]:
    """For each new turn, the index of the original it comes from (None: a new turn)."""
    if len(originals) == len(turns):
        return list(range(len(turns)))
    out: list[int | None] = []
    j = 0
    for t in turns:
        k = next((k for k in range(j, len(originals)) if originals[k] == t), None)
        out.append(k)
        if k is not None:
            j = k + 1
    return out


def _llava_role(role: str | None) -> str | None:
    return {HUMAN: "human", GPT: "gpt"}.get(role, role)


def record_with_turns(record: dict, turns: list[dict] | None, *, llava_roles: bool = False) -> dict:
    """The record with `conversations` rewritten from `turns` (see the module docstring); the record itself is
    not modified. turns None leaves the conversations as they are."""
    if turns is None:
        return dict(record)
    conv = record.get("conversations")
    originals_raw = conv if isinstance(conv, list) else []
    originals = [parse_turn(o) for o in originals_raw]
    out = []
    for t, k in zip(turns, _match(originals, turns)):
        role, text = t["role"], t["text"]
        obj = originals_raw[k] if k is not None else None
        if not isinstance(obj, dict):
            if obj is not None and originals[k] == t:
                out.append(obj)  # a malformed element nothing edited: as it was
            else:
                out.append({"from": _llava_role(role) if llava_roles else role, "value": text})
            continue
        new = dict(obj)
        role_key, text_key = _keys(obj)
        if llava_roles and role is not None:
            new[role_key] = _llava_role(role)
        elif originals[k]["role"] != role:
            new[role_key] = role
        if originals[k]["text"] != text:
            new[text_key] = text
        out.append(new)
    return {**record, "conversations": out}
