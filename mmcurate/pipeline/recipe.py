"""YAML recipes: what to read, which stages to run with which parameters, where to write.

    input:  {path: "shards/*.tar", format: auto}          # webdataset | folder | llava | auto
    output: {path: out/, shard_size: 1000}
    run:    {workers: 1, batch_size: 256}                 # optional; global_mode: auto | memory | sharded
    stages:
      - integrity: {}
      - image_filter: {min_side: 200}

Every key is checked: an unknown key is an error that names it and lists the valid ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmcurate.pipeline.params import check_choice, check_int
from mmcurate.pipeline.stage import GlobalStage, MapStage, StageError, registry

TOP_KEYS = {"input", "output", "run", "stages"}
INPUT_KEYS = {"path", "format", "options"}
OUTPUT_KEYS = {"path", "shard_size", "report"}
RUN_KEYS = {"workers", "batch_size", "threads_per_worker", "global_mode", "on_shard_error", "limit"}
# warn: a shard that cannot be read to its end contributes the samples before the damage, and the run warns and
# lists it in manifest.json shard_errors (webdataset's warn_and_continue); fail: the run stops with an error.
SHARD_ERROR_POLICIES = ("warn", "fail")
# "auto": the executor picks (local: memory; Ray: sharded). The outputs are the same in every mode.
GLOBAL_MODES = ("auto", "memory", "sharded")

DEFAULT_RECIPE_YAML = """\
# mmcurate default recipe: DataComp-style basic filtering plus exact and perceptual dedup.
input:
  path: data/shards        # a directory of WebDataset .tar shards, a glob, a folder of images, or a LLaVA .json
  format: auto
output:
  path: curated
  shard_size: 1000         # samples per output WebDataset shard
run:
  workers: 1               # processes for the map stages (native kernels use all cores inside each)
  batch_size: 256
  on_shard_error: warn     # a truncated/unreadable shard: curate the samples before the damage and warn; fail: stop
stages:
  - integrity: {}                         # full decode; corrupt/truncated/unsupported/too-large rejected
  # integrity also stores sharpness, brightness, ... low_information (the report shows them); to reject on them:
  # - image_quality: {min_sharpness: 50, min_brightness: 15, max_brightness: 240, reject_low_information: true}
  - image_filter: {preset: datacomp}      # min side 200, aspect ratio <= 3 (preset cogvlm: 1/6..6)
  - caption_clean: {}                     # HTML, entities, mojibake, control characters, whitespace
  - caption_filter: {min_words: 3, min_chars: 6}
  - pii_redact: {}                        # e-mails, phones, national IDs, cards, IPs, URL credentials
  - exact_dedup: {}                       # sha256 of the original bytes
  - phash_dedup: {}                       # perceptual near-duplicates (default radius from measurement)
"""

LLAVA_RECIPE_YAML = """\
# mmcurate instruction recipe: LLaVA-style conversations (one image, or none, and many question/answer turns).
# The unit is the conversation: short answers ("Yes", "No", "3", "Red", "B") are answers, never rejects; images
# are checked, not deduplicated (different questions about one image are different samples).
input:
  path: data/llava.json    # a LLaVA .json list or .jsonl (mix665k, LLaVA-Pretrain, ShareGPT4V, text-only entries)
  format: llava
  options: {}              # image_root: where the images are (default: the JSON's directory)
output:
  path: curated
  shard_size: 1000         # samples per output WebDataset shard; `mmcurate export RUN --format llava` gives JSON back
run:
  workers: 1               # processes for the map stages (native kernels use all cores inside each)
  batch_size: 256
  on_shard_error: warn
stages:
  - integrity: {}                         # every image decodes (text-only conversations pass untouched)
  - conversation_check: {}                # roles alternate from the human turn, no empty turn, <image> per image
  - conversation_clean: {}                # HTML, entities, mojibake, control characters in every turn
  - answer_filter: {}                     # answers by task type: refusals; too-short descriptions/reasons
  - pii_redact: {}                        # e-mails, phones, national IDs, cards, IPs in every turn
  - instruction_dedup: {}                 # same image (sha256 / pHash) + same or near-copy conversation
  - answer_balance: {yes_ratio: 0.5}      # remove the fewest yes (or no) pairs to reach 50% +- 2% yes
  - option_order: {policy: shuffle}       # balance the correct letter of multiple choice (report: measure only)
  - template_stats: {}                    # question skeletons; max_per_template: N caps samples per skeleton
  - task_mix: {}                          # task type per conversation; target: {type: share} caps a type
  - split: {ratios: [0.8, 0.1, 0.1]}      # train/val/test; an image group never spans two splits
# Optional, with a CLIP model (clip_embed's model and weights parameters), before split:
#  - clip_embed: {text_field: question}   # image-question relevance (caption | question | answer | question_answer)
#  - clip_score_filter: {threshold: 0.2}  # text-only conversations pass
#  - negative_synthesis: {strategy: popularity}  # POPE-style "Is there a ...?" -> "No", marked synthetic
"""

_RECIPE_HEAD = """\
input:
  path: data/shards        # tar shards, a glob, an image folder, a list file, HF Parquet, COCO JSON, an earlier run
  format: auto
output:
  path: curated
  shard_size: 1000
run:
  workers: 1
  batch_size: 256
  on_shard_error: warn
"""

# The CLIP stages' weights: a local checkpoint (file or Hugging Face style directory), the local caches, or a hub
# download only with allow_download: true (`mmcurate models` lists the names).
COGVLM_RECIPE_YAML = (
    """\
# CogVLM-style image-text filtering: wide aspect ratios (1/6..6), cleaned captions, PII redacted, exact and
# perceptual duplicates removed.
"""
    + _RECIPE_HEAD
    + """\
stages:
  - integrity: {}
  - image_filter: {preset: cogvlm}        # aspect ratio 1/6..6, no size floor (add min_side: N for one)
  - caption_clean: {}
  - caption_filter: {min_words: 3, min_chars: 6}
  - pii_redact: {}
  - exact_dedup: {}
  - phash_dedup: {}
"""
)

DATACOMP_CLIP_RECIPE_YAML = (
    """\
# DataComp's CLIP-score baseline: basic filtering, then the top 30% of samples by image-caption CLIP score
# (ViT-L-14 OpenAI in the paper).
"""
    + _RECIPE_HEAD
    + """\
stages:
  - integrity: {}
  - image_filter: {preset: datacomp}      # min side 200, aspect <= 3
  - caption_clean: {}
  - caption_filter: {min_words: 2, languages: [en], detect_language: true}
  - exact_dedup: {}
  - clip_embed: {model: ViT-L-14/openai, weights: null}   # weights: PATH of the checkpoint (or allow_download: true)
  - clip_score_filter: {keep_fraction: 0.3}
"""
)

SEMANTIC_RECIPE_YAML = (
    """\
# Semantic curation: CLIP image embeddings, SemDeDup near-duplicates, then cluster-balanced sampling.
"""
    + _RECIPE_HEAD
    + """\
stages:
  - integrity: {}
  - image_filter: {preset: datacomp}
  - caption_clean: {}
  - caption_filter: {}
  - exact_dedup: {}
  - phash_dedup: {}
  - clip_embed: {model: ViT-B-32, weights: null}       # weights: PATH of the checkpoint (or allow_download: true)
  - semantic_dedup: {eps: 0.05}
  - balance: {fraction: 0.5}                          # or target: N samples
"""
)

#: The recipes `mmcurate recipe NAME` prints (`mmcurate recipe list`: their first comment lines).
RECIPES = {
    "default": DEFAULT_RECIPE_YAML,
    "cogvlm": COGVLM_RECIPE_YAML,
    "datacomp-clip": DATACOMP_CLIP_RECIPE_YAML,
    "semantic": SEMANTIC_RECIPE_YAML,
    "llava": LLAVA_RECIPE_YAML,
}


@dataclass
class Recipe:
    input_path: str
    input_format: str = "auto"
    input_options: dict = field(default_factory=dict)
    output_path: str = "curated"
    shard_size: int = 1000
    report: bool = True
    workers: int = 1
    batch_size: int = 256
    threads_per_worker: int | None = None
    # memory: the global steps over one in-memory table of the survivors' columns; sharded: through per-shard
    # and per-partition tasks (pipeline.global_sharded), same outputs, no worker holding the whole dataset
    global_mode: str = "auto"
    on_shard_error: str = "warn"
    limit: int | None = None  # the first N samples only (pipeline.input): a quick try on a slice
    stages: list[tuple[str, dict]] = field(default_factory=list)

    def build_stages(self) -> list:
        return [registry.create(name, params) for name, params in self.stages]

    def to_dict(self) -> dict:
        return {
            "input": {"path": self.input_path, "format": self.input_format, "options": self.input_options},
            "output": {"path": self.output_path, "shard_size": self.shard_size, "report": self.report},
            "run": {
                "workers": self.workers,
                "batch_size": self.batch_size,
                "threads_per_worker": self.threads_per_worker,
                "global_mode": self.global_mode,
                "on_shard_error": self.on_shard_error,
                **({"limit": self.limit} if self.limit is not None else {}),
            },
            "stages": [{name: params} for name, params in self.stages],
        }


def _check_keys(section: str, given: dict, valid: set):
    if not isinstance(given, dict):
        raise StageError(f"recipe '{section}' must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - valid)
    if unknown:
        raise StageError(
            f"recipe '{section}': unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}"
        )


def _positive_int(section: str, key: str, value, allow_none=False):
    try:
        return check_int(f"recipe '{section}.{key}'", value, 1, optional=allow_none)
    except ValueError as exc:
        raise StageError(str(exc)) from None


def _choice(section: str, key: str, value, choices):
    try:
        return check_choice(f"recipe '{section}.{key}'", value, choices)
    except ValueError as exc:
        raise StageError(str(exc)) from None


def parse_recipe(
    data: dict,
    input_path: str | None = None,
    output_path: str | None = None,
    workers: int | None = None,
    global_mode: str | None = None,
    limit: int | None = None,
    from_run: str | None = None,
) -> Recipe:
    """Validate a recipe mapping (command-line overrides win) and check every stage's parameters. from_run: an
    earlier run's output directory as the input (format mmcurate, its own options dropped), so the stages reuse
    the columns that run stored (pipeline.reuse)."""
    if not isinstance(data, dict):
        raise StageError("a recipe must be a mapping with keys: " + ", ".join(sorted(TOP_KEYS)))
    data = copy.deepcopy(data)
    _check_keys("recipe", data, TOP_KEYS)
    inp = data.get("input") or {}
    out = data.get("output") or {}
    run = data.get("run") or {}
    _check_keys("input", inp, INPUT_KEYS)
    _check_keys("output", out, OUTPUT_KEYS)
    _check_keys("run", run, RUN_KEYS)
    if from_run is not None:
        if input_path is not None:
            raise StageError("give either --input or --from, not both")
        inp = {"path": str(from_run), "format": "mmcurate"}
    path = input_path or inp.get("path")
    if not path:
        raise StageError("recipe 'input.path' is required (or pass --input)")
    mode = global_mode if global_mode is not None else run.get("global_mode", "auto")
    _choice("run", "global_mode", mode, GLOBAL_MODES)
    on_shard_error = _choice("run", "on_shard_error", run.get("on_shard_error", "warn"), SHARD_ERROR_POLICIES)
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise StageError("recipe 'stages' must be a non-empty list like [{integrity: {}}, {image_filter: {...}}]")
    stages = []
    for i, entry in enumerate(stages_raw):
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            ((name, params),) = entry.items()
            params = params or {}
        else:
            raise StageError(
                f"recipe 'stages[{i}]' must be a stage name or a one-key mapping {{name: {{params}}}}, got {entry!r}"
            )
        stages.append((str(name), params))
    recipe = Recipe(
        input_path=str(path),
        input_format=str(inp.get("format", "auto")),
        input_options=dict(inp.get("options") or {}),
        output_path=str(output_path or out.get("path", "curated")),
        shard_size=_positive_int("output", "shard_size", out.get("shard_size", 1000)),
        report=bool(out.get("report", True)),
        workers=_positive_int("run", "workers", workers if workers is not None else run.get("workers", 1)),
        batch_size=_positive_int("run", "batch_size", run.get("batch_size", 256)),
        threads_per_worker=_positive_int("run", "threads_per_worker", run.get("threads_per_worker"), allow_none=True),
        global_mode=mode,
        on_shard_error=on_shard_error,
        limit=_positive_int("run", "limit", limit if limit is not None else run.get("limit"), allow_none=True),
        stages=stages,
    )
    names = [n for n, _ in stages]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StageError(f"recipe lists stage(s) more than once: {', '.join(dupes)}")
    for stage in recipe.build_stages():  # validates names and parameters now, not mid-run
        if not isinstance(stage, (MapStage, GlobalStage)):
            raise StageError(f"stage {stage.name!r} is neither a map nor a global stage")
    return recipe


def load_recipe(path: str | Path, **overrides) -> Recipe:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"recipe file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise StageError(f"recipe {p} is not valid YAML: {exc}") from exc
    return parse_recipe(data, **overrides)


def default_recipe_dict() -> dict:
    return yaml.safe_load(DEFAULT_RECIPE_YAML)


def llava_recipe_dict() -> dict:
    return yaml.safe_load(LLAVA_RECIPE_YAML)
