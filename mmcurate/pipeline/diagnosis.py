"""Warnings a finished run gives about itself: a stage that ran a model with random weights (``weights:
random``: everything it computed is meaningless), shards that could not be read to the end, and one reason that
rejected most of the input — which nearly always means a setting, not the data (captions not found, images
looked up in the wrong folder), so the warning names the setting that usually fixes it."""

from __future__ import annotations

#: A reason that rejects more than this share of the samples read gets a warning.
MAJORITY = 0.5

#: reason -> what usually fixes it when it rejects most of a run.
LIKELY_FIX = {
    "caption_missing": "the captions were not found: for an image folder pass input.options.captions (a "
    "CSV/JSONL of file names and captions), for shards check input.options.caption_ext",
    "missing_image": "the images were not found: for LLaVA JSON set input.options.image_root to the folder the "
    "`image` paths are relative to; for shards check input.options.image_exts",
    "path_outside_root": "the image paths point outside the input root: set input.options.image_root to their "
    "folder, or input.options.allow_outside_root: true if reading outside it is intended",
    "not_a_file": "the image paths are not regular files: check input.path / input.options.image_root",
    "too_large": "raise input.options.max_image_bytes (reader) or the stage's max_pixels if these images are "
    "legitimate",
    "corrupt": "most images do not decode: check that the input holds images (input.format, image_exts)",
    "unsupported": "most images are in a format the decoder does not read (JPEG, PNG, WebP are)",
    "bad_key": "most sample keys are unusable: check how the shards were written",
    "text_too_long": "most texts exceed the stage's max_chars: raise it if these texts are legitimate",
    "min_side": "image_filter's min_side rejects most images: lower it or use preset: none",
    "aspect_ratio": "image_filter's aspect bounds reject most images: widen them (preset cogvlm allows 6)",
}


#: stage -> what its random weights make meaningless (the default: its outputs).
RANDOM_WEIGHTS_EFFECT = {
    "clip_embed": "its embeddings, scores and everything derived from them (semantic dedup, CLIP score filter, "
    "balance) are meaningless",
    "negative_synthesis": "its CLIP check that an object is absent is meaningless",
}


def random_weight_stages(manifest: dict) -> list[str]:
    """The recipe's stages (as the manifest records the recipe) that load a model with ``weights: random``."""
    stages = ((manifest.get("run") or {}).get("recipe") or {}).get("stages") or []
    out = []
    for step in stages:
        if not isinstance(step, dict):
            continue
        for name, params in step.items():
            if isinstance(params, dict) and params.get("weights") == "random":
                out.append(name)
    return out


def random_weights_warning(stage: str) -> str:
    effect = RANDOM_WEIGHTS_EFFECT.get(stage, "its outputs are meaningless")
    return f"stage {stage} ran with random weights: {effect}; set weights: PATH"


def run_warnings(manifest: dict) -> list[str]:
    """One line each, most important first."""
    out = [random_weights_warning(stage) for stage in random_weight_stages(manifest)]
    errors = manifest.get("shard_errors") or []
    if errors:
        first = errors[0]
        out.append(
            f"{len(errors)} input shard(s) could not be read to the end; the samples before the damage "
            f"were curated (e.g. {first['shard']}: {first['detail']}); see manifest.json shard_errors, "
            f"or set run.on_shard_error: fail to stop on them"
        )
    read = manifest.get("counts", {}).get("read", 0)
    if read:
        for stage in manifest.get("stages", []):
            for reason, n in sorted(stage.get("reasons", {}).items(), key=lambda kv: -kv[1]):
                if n > MAJORITY * read:
                    fix = LIKELY_FIX.get(reason, f"check the parameters of stage {stage['name']!r}")
                    out.append(f"stage {stage['name']!r} rejected {n:,} of {read:,} samples as {reason!r}: {fix}")
    return out
