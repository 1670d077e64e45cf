"""`mmcurate export RUN_DIR --format llava --out DIR`: a finished run of LLaVA-style instruction data back in
LLaVA's training format.

What DIR holds:
- `DIR/<split>.json` per split the run assigned (its `split` column), or one `DIR/data.json` without splits: a JSON
  list of the kept records in the run's order, each the record the run wrote out (`meta`) with its conversations
  from the `turns` column (the stages' edits: cleaned, redacted, turns removed) and every role spelled as LLaVA's
  trainers expect ("human" / "gpt"; user/assistant are written so). Every other key of the record stays; an entry
  without an `id` gets its mmcurate key as one, so its key survives reading the export back. Text-only entries
  keep having no `image`.
- `DIR/images/`: every image a kept record names, at the path the record names (so `image` stays as it was and
  `DIR/images` is LLaVA's `--image_folder`), as the original bytes: the first image of each record from the run's
  output shards, the further ones of multi-image records from the input's image_root under the reader's rules
  (io.paths.read_inside_root). A path that is absolute or climbs out with `..` (allow_outside_root) is written
  under `images/external/<hash>/<name>` and the record's `image` says so. `link=True` (`--link`): symlinks to the
  originals under image_root instead of copies.
- `DIR/README.md`: the dataset card: sources, recipe, counts and reject reasons, conversations and images, splits,
  and the sections of CARD_SECTIONS, read from the manifest's stats of the instruction steps when the recipe had
  them: the yes-ratio before and after `answer_balance` (per task type and template), the task mix (`task_mix`),
  the correct letters of multiple choice (`option_order`) and the question templates (`template_stats`);
  register_card_section adds more.
- `DIR/.mmcurate_export.json`: what this export wrote, so that `overwrite=True` (`--overwrite`) replaces an
  earlier export and deletes nothing else.

DIR must lie apart from the run directory and from the input (the JSON and its image_root), as
pipeline/output_dir.py asks of a run's output; it must be new or empty, or an earlier export with overwrite. The
export is written into a temporary sibling directory and moved into place at the end: a failed export leaves
nothing behind. Errors are ValueError / FileNotFoundError with one line that names the fix. These rules, the shard
images and the card's sources, recipe and counts are export/common.py's, shared by every format.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmcurate.export.common import (
    CARD,
    IMAGES,
    Run,
    ShardImages,
    exported_by,
    fail,
    join_card,
    load_run,
    run_sections,
    table,
    write_export,
)
from mmcurate.export.common import MARKER as MARKER  # the marker file, named here for llava's callers
from mmcurate.export.common import num as _num
from mmcurate.io.conversations import record_with_turns
from mmcurate.io.paths import is_inside, read_inside_root

NO_SPLIT_FILE = "data.json"
_COLUMNS = ("key", "meta", "turns", "image_paths", "image_ext", "shard")


@dataclass
class ExportResult:
    out: Path
    files: dict[str, int]  # JSON file -> conversations
    images: int  # image files written (or linked)
    conversations: int
    turns: int


@dataclass
class CardContext:
    """What a dataset card section may read."""

    run_dir: Path
    manifest: dict
    samples: Path  # the run's samples.parquet
    splits: dict[str, dict]  # file -> {"conversations", "turns", "images", "text_only", "multi_image"}

    def stage(self, name: str) -> dict | None:
        """The manifest's entry of the recipe step `name`, or None when the run did not have it."""
        return next((s for s in self.manifest.get("stages", []) if s.get("name") == name), None)


#: Sections of the dataset card after the built-in ones: each takes the CardContext and returns Markdown (a "## "
#: section) or None to leave nothing.
CARD_SECTIONS: list[Callable[[CardContext], str | None]] = []


def register_card_section(fn: Callable[[CardContext], str | None]) -> Callable[[CardContext], str | None]:
    """Add a section to every LLaVA dataset card (usable as a decorator)."""
    CARD_SECTIONS.append(fn)
    return fn


# ---------------------------------------------------------------------------------------------------------
# images


def image_dest(path: str) -> str:
    """Where an image the record names goes under images/: its own relative path, or, for an absolute path or one
    that climbs out with '..', external/<hash>/<name>."""
    norm = posixpath.normpath(path)
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm in (".", "") or "\x00" in norm:
        digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = posixpath.basename(norm.rstrip("/")).replace("\x00", "")
        name = name if name not in ("", ".", "..") else "image"
        return f"external/{digest}/{name}"
    return norm


class _Images:
    """Writes (or links) each image once under images/."""

    def __init__(self, tmp: Path, final: Path, root: str | None, options: dict, link: bool):
        self.dir, self.final_dir = tmp / IMAGES, final / IMAGES
        self.root_real = os.path.realpath(root) if root else None
        self.max_bytes = int(options.get("max_image_bytes") or (64 << 20))
        self.allow_outside = bool(options.get("allow_outside_root", False))
        self.link = link
        self.written: dict[str, str] = {}  # dest -> sha256 (or the link target)

    def _source(self, key: str, path: str) -> str:
        if self.root_real is None:
            fail(f"sample {key!r}: the run's manifest names no input to find image {path!r} in")
        real = os.path.realpath(os.path.join(self.root_real, path))
        if not self.allow_outside and not is_inside(real, self.root_real):
            fail(f"sample {key!r}: image {path!r} resolves outside image_root {self.root_real}")
        return real

    def _read(self, key: str, path: str) -> bytes:
        if self.root_real is None:
            fail(f"sample {key!r}: the run's manifest names no input to find image {path!r} in")
        data, reason, detail = read_inside_root(self.root_real, path, self.max_bytes, self.allow_outside)
        if data is None:
            why = f"{reason}: {detail}" if reason else "not found"
            fail(
                f"sample {key!r}: image {path!r} under image_root {self.root_real} cannot be read ({why}); "
                f"an export needs the run's input images for multi-image records and --link"
            )
        return data

    def add(self, key: str, path: str, data: bytes | None) -> str:
        """Place one image (data: its bytes from the run's shards, or None to read it from the input); returns its
        path relative to images/."""
        dest = image_dest(path)
        target = self.dir / dest
        if self.link:
            source = self._source(key, path)
            if not os.path.isfile(source):
                fail(f"sample {key!r}: image {path!r} is not a file under image_root {self.root_real} (--link)")
            if self.written.setdefault(dest, source) != source:
                fail(f"images {dest!r}: two different originals would share this name")
            if not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(source, target)
            return dest
        if data is None:
            data = self._read(key, path)
        digest = hashlib.sha256(data).hexdigest()
        seen = self.written.setdefault(dest, digest)
        if seen != digest:
            fail(f"images {dest!r}: samples name two different images by this path (sample {key!r})")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return dest


# ---------------------------------------------------------------------------------------------------------
# the export


def _with_image_paths(record: dict, dests: list[str], paths: list[str]) -> dict:
    if dests == paths:
        return record
    image = record.get("image")
    record = dict(record)
    record["image"] = dests if isinstance(image, list) else dests[0]
    return record


def llava_entry(key: str, meta: str | None, turns: list[dict] | None) -> dict:
    """The LLaVA record of a kept sample: its record with the conversations from `turns`, LLaVA's role names, and an
    id (its key) where it had none."""
    try:
        record = json.loads(meta) if meta else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    record = record_with_turns(record, turns, llava_roles=True)
    if record.get("id") in (None, ""):
        record = {"id": key, **{k: v for k, v in record.items() if k != "id"}}
    return record


def export_llava(run_dir, out, *, link: bool = False, overwrite: bool = False) -> ExportResult:
    """Export a finished run (see the module docstring)."""
    run = load_run(
        run_dir,
        need=_COLUMNS,
        why="--format llava exports runs that read LLaVA instruction data (input.format: llava)",
    )
    input_path, image_root, options = run.input_info()
    out = Path(out)
    inputs = [p for p in (input_path, image_root) if p]
    return write_export(
        run, out, "llava", overwrite, lambda tmp: _write(run, out, tmp, image_root, options, link), inputs=inputs
    )


def _write(run: Run, out: Path, tmp: Path, image_root, options, link) -> tuple[ExportResult, list[str]]:
    images = _Images(tmp, out, image_root, options, link)
    shard_images = ShardImages(run.dir)
    files: dict[str, dict] = {}
    handles: dict[str, object] = {}
    try:
        for split, r in run.rows(list(_COLUMNS), batch_size=1024):
            name = f"{split}.json" if split is not None else NO_SPLIT_FILE
            f = handles.get(name)
            if f is None:
                f = handles[name] = open(tmp / name, "w", encoding="utf-8")
                f.write("[\n")
                files[name] = dict.fromkeys(("conversations", "turns", "images", "text_only", "multi_image"), 0)
            stats = files[name]
            entry = llava_entry(r["key"], r["meta"], r["turns"])
            paths = list(r["image_paths"] or [])
            dests = []
            for i, p in enumerate(paths):
                data = None if link or i else shard_images.get(r["key"], r["shard"], r["image_ext"])
                dests.append(images.add(r["key"], p, data))
            if paths:
                entry = _with_image_paths(entry, dests, paths)
            f.write(("" if not stats["conversations"] else ",\n") + json.dumps(entry, ensure_ascii=False))
            stats["conversations"] += 1
            stats["turns"] += len(r["turns"] or [])
            stats["images"] += len(paths)
            stats["text_only"] += not paths
            stats["multi_image"] += len(paths) > 1
    finally:
        shard_images.close()
        for f in handles.values():
            f.write("\n]\n")
            f.close()
    ctx = CardContext(run.dir, run.manifest, run.samples, {k: dict(v) for k, v in files.items()})
    (tmp / CARD).write_text(dataset_card(ctx, link, len(images.written)), encoding="utf-8")
    own = sorted(files) + [CARD] + ([IMAGES] if images.written else [])
    result = ExportResult(
        out=out,
        files={k: v["conversations"] for k, v in files.items()},
        images=len(images.written),
        conversations=sum(v["conversations"] for v in files.values()),
        turns=sum(v["turns"] for v in files.values()),
    )
    return result, own


# ---------------------------------------------------------------------------------------------------------
# the dataset card


def _stats_section(ctx: CardContext, title: str, step: str, hint: str) -> str:
    s = ctx.stage(step)
    if s is None:
        return f"## {title}\n\nNot computed: {hint}\n"
    stats = s.get("stats") or {}
    rows = [(k, json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in stats.items()]
    body = table(("figure", "value"), rows) if rows else "The step reported no figures."
    return f"## {title}\n\nFrom the recipe step `{step}` ({s.get('rejected', 0):,} samples rejected).\n\n{body}\n"


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


@register_card_section
def yes_ratio_section(ctx: CardContext) -> str:
    """The yes-ratio among yes/no answers before and after `answer_balance`, answer classes, per task type and per
    question template."""
    s = ctx.stage("answer_balance")
    if s is None:
        return _stats_section(
            ctx, "Answers: yes-ratio", "answer_balance", "add `answer_balance` to the recipe to measure and balance it."
        )
    st = _dict(s.get("stats"))
    yes, no = st.get("yes"), st.get("no")
    removed = st.get("pairs_removed") or 0
    side = st.get("removed_class")
    after_yes = yes - removed if side == "yes" and isinstance(yes, int) else yes
    after_no = no - removed if side == "no" and isinstance(no, int) else no
    target = st.get("target")
    parts = [
        "## Answers: yes-ratio\n",
        'Share of "yes" among the yes/no answers (recipe step `answer_balance`'
        + (f", target {_num(target)} ± {_num(st.get('tolerance'))}" if target is not None else ", measured only")
        + "):\n",
        table(
            ("", "yes", "no", "yes-ratio"),
            [
                ("before", _num(yes), _num(no), _num(st.get("yes_ratio_before"))),
                ("after", _num(after_yes), _num(after_no), _num(st.get("yes_ratio_after"))),
            ],
        )
        + "\n",
    ]
    if removed:
        parts.append(
            f"{removed:,} {side or ''} question/answer pairs were removed: {_num(st.get('conversations_edited'))} "
            f"conversations lost pairs and stay, {_num(st.get('samples_rejected'))} samples whose every pair went "
            "were rejected (`answer_balance`).\n"
        )
    if st.get("warning"):
        parts.append(f"Warning: {_num(st['warning'])}\n")
    classes = _dict(st.get("answer_classes"))
    if classes:
        parts.append(
            "Answers by class (before):\n\n"
            + table(("class", "answers"), [(k, _num(v)) for k, v in classes.items()])
            + "\n"
        )
    per_type = _dict(st.get("per_task_type"))
    if per_type:
        parts.append(
            "Per task type:\n\n"
            + table(
                ("task type", "yes", "no", "yes-ratio", "removed"),
                [
                    (t, _num(d.get("yes")), _num(d.get("no")), _num(d.get("yes_ratio")), _num(d.get("removed")))
                    for t, d in per_type.items()
                    if isinstance(d, dict)
                ],
            )
            + "\n"
        )
    per_template = st.get("per_template")
    if isinstance(per_template, list) and per_template:
        parts.append(
            "The largest yes/no question templates:\n\n"
            + table(
                ("template", "yes", "no", "yes-ratio", "removed"),
                [
                    (
                        f"`{_num(d.get('template'))}`",
                        _num(d.get("yes")),
                        _num(d.get("no")),
                        _num(d.get("yes_ratio")),
                        _num(d.get("removed")),
                    )
                    for d in per_template
                    if isinstance(d, dict)
                ],
            )
            + "\n"
        )
    return "\n".join(parts)


@register_card_section
def task_mix_section(ctx: CardContext) -> str:
    """Conversations per task type (`task_mix`), and its caps when the recipe set a target mix."""
    s = ctx.stage("task_mix")
    if s is None:
        return _stats_section(ctx, "Task mix", "task_mix", "add `task_mix` to the recipe to count the task types.")
    st = _dict(s.get("stats"))
    counts = _dict(st.get("counts"))
    after = _dict(st.get("counts_after")) or counts
    total = sum(v for v in after.values() if isinstance(v, int)) or 1
    target = _dict(st.get("target"))
    caps = _dict(st.get("caps"))
    share = {t: f"{(after.get(t, 0) or 0) / total:.1%}" for t in counts}
    if target:
        header: tuple = ("task type", "conversations", "share", "target share", "before the cap")
        rows = [(t, _num(after.get(t, 0)), share[t], _num(target.get(t)), _num(counts.get(t))) for t in counts]
    else:
        header, rows = ("task type", "conversations", "share"), [(t, _num(counts.get(t)), share[t]) for t in counts]
    parts = [
        "## Task mix\n",
        "The task type of each kept conversation (recipe step `task_mix`, readable rules: curate/tasks.py), counted "
        "after dedup and the edits of the balancing steps:\n",
        table(header, rows) + "\n",
    ]
    if caps:
        parts.append(
            f"Capped to the target: {', '.join(f'{t} at {_num(c)}' for t, c in caps.items())} "
            f"({s.get('rejected', 0):,} samples rejected, `task_mix_cap`).\n"
        )
    return "\n".join(parts)


@register_card_section
def option_letters_section(ctx: CardContext) -> str | None:
    """The correct letter of the multiple-choice questions before and after `option_order`."""
    s = ctx.stage("option_order")
    if s is None:
        return None
    st = _dict(s.get("stats"))
    before, after = _dict(st.get("letters_before")), _dict(st.get("letters_after"))
    if not before:
        return "## Multiple choice\n\nNo multiple-choice question in the kept conversations.\n"
    letters = sorted(set(before) | set(after))
    return "\n".join(
        [
            "## Multiple choice\n",
            f"{_num(st.get('multiple_choice'))} multiple-choice questions; correct letters (recipe step "
            f"`option_order`, policy `{_num(st.get('policy'))}`; the chi-square test is against a uniform letter per "
            "option count):\n",
            table(
                ("", *letters, "chi-square", "p-value"),
                [
                    (
                        "before",
                        *(_num(before.get(k)) for k in letters),
                        _num(st.get("chi2_before")),
                        _num(st.get("p_value_before")),
                    ),
                    (
                        "after",
                        *(_num(after.get(k)) for k in letters),
                        _num(st.get("chi2_after")),
                        _num(st.get("p_value_after")),
                    ),
                ],
            )
            + "\n",
        ]
    )


@register_card_section
def templates_section(ctx: CardContext) -> str | None:
    """How varied the questions are (`template_stats`)."""
    s = ctx.stage("template_stats")
    if s is None:
        return None
    st = _dict(s.get("stats"))
    top = st.get("top") if isinstance(st.get("top"), list) else []
    parts = [
        "## Question templates\n",
        f"{_num(st.get('questions'))} questions, {_num(st.get('distinct_skeletons'))} distinct skeletons (objects, "
        f"numbers, colours and quotes masked); the 10 most used hold {_num(st.get('top10_share'))} of the questions; "
        f"distinct-2 {_num(st.get('distinct_2'))}, compression ratio {_num(st.get('compression_ratio'))} (recipe step "
        "`template_stats`, measured before its cap).\n",
    ]
    if top:
        parts.append(
            table(
                ("skeleton", "questions", "share"),
                [
                    (f"`{_num(d.get('skeleton'))}`", _num(d.get("questions")), _num(d.get("share")))
                    for d in top
                    if isinstance(d, dict)
                ],
            )
            + "\n"
        )
    if st.get("samples_capped"):
        parts.append(
            f"max_per_template {_num(st.get('max_per_template'))}: {_num(st.get('samples_capped'))} samples of "
            f"{_num(st.get('templates_capped'))} templates rejected (`template_cap`).\n"
        )
    return "\n".join(parts)


def dataset_card(ctx: CardContext, link: bool, n_images: int) -> str:
    total = {k: sum(v.get(k, 0) for v in ctx.splits.values()) for k in ("conversations", "turns", "images")}
    text_only = sum(v.get("text_only", 0) for v in ctx.splits.values())
    multi = sum(v.get("multi_image", 0) for v in ctx.splits.values())
    parts = [
        "# LLaVA instruction data curated by mmcurate\n",
        exported_by(ctx.run_dir, ctx.manifest, "llava"),
        "## Files\n",
        "\n".join(f"- `{name}`: {v['conversations']:,} conversations" for name, v in sorted(ctx.splits.items()))
        + f"\n- `{IMAGES}/`: {n_images:,} images, "
        + ("symlinks to the originals" if link else "the original bytes")
        + " (LLaVA's `--image_folder`; each record's `image` is relative to it)\n",
        'Each file is a JSON list of `{"id", "image", "conversations": [{"from": "human" | "gpt", "value"}]}` as '
        "LLaVA's trainers read it: `image` a path or a list of paths (multi-image), absent for text-only "
        "conversations; `<image>` placeholders stay in the text where the data had them.\n",
        *run_sections(ctx.manifest),
        f"Exported: {total['conversations']:,} conversations, {total['turns']:,} turns "
        f"({total['turns'] / max(total['conversations'], 1):.2f} per conversation), {total['images']:,} image "
        f"references ({multi:,} multi-image conversations), {text_only:,} text-only conversations.\n",
        "## Splits\n",
        table(
            ("file", "conversations", "turns", "images", "text-only"),
            [
                (
                    name,
                    f"{v['conversations']:,}",
                    f"{v.get('turns', 0):,}",
                    f"{v.get('images', 0):,}",
                    f"{v.get('text_only', 0):,}",
                )
                for name, v in sorted(ctx.splits.items())
            ],
        )
        + "\n"
        + (
            ""
            if any(n != NO_SPLIT_FILE for n in ctx.splits)
            else "\nThe run assigned no splits (add `split` to the recipe).\n"
        ),
    ]
    for section in CARD_SECTIONS:
        text = section(ctx)
        if text:
            parts.append(text)
    return join_card(parts)
