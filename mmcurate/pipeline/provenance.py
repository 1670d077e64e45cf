"""What a run's results were made from, in a few hashes: the manifest's ``provenance``, the report's header.

    {"recipe_sha256": ..., "input_fingerprint": ..., "models": [{"stage", "model", "weights", "weights_sha256"}]}

- ``recipe_sha256``: sha256 of the resolved recipe as canonical JSON (sorted keys, no spaces): two runs with the
  same hash ran the same stages with the same parameters on the same paths.
- ``input_fingerprint``: sha256 over the manifest's ``inputs`` (each shard's path, sample count and sha256, in
  order). Inputs listed without a sha256 (folders, a LLaVA JSON's images) count by path and samples only.
- ``models``: each recipe stage whose parameters include ``weights`` (clip_embed, negative_synthesis, ...): its
  model, its ``weights`` parameter, and the sha256 of the checkpoint file it loads (resolved the way the loader
  resolves it: the file, the checkpoint in a directory, or the local cache), ``"random"`` for random weights, or
  null when the file cannot be found from the driver. Hashing reads the checkpoint once per run (about 1 s per
  GB on one core).
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["PROVENANCE", "RANDOM", "recipe_sha256", "input_fingerprint", "model_provenance", "provenance"]

#: The manifest's key.
PROVENANCE = "provenance"
RANDOM = "random"


def recipe_sha256(recipe: dict) -> str:
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def input_fingerprint(inputs: list) -> str:
    h = hashlib.sha256()
    for item in inputs if isinstance(inputs, list) else []:
        d = item if isinstance(item, dict) else {"shard": item}
        h.update(json.dumps([d.get("shard"), d.get("samples"), d.get("sha256")], default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _weights_sha256(model, weights) -> str | None:
    from mmcurate.io import sha256_file
    from mmcurate.models.loader import resolve_weights

    try:
        path = resolve_weights(model, weights, allow_download=False)
    except (OSError, ValueError, KeyError):  # not found from here (a worker-only path, an unknown name)
        return None
    return sha256_file(path) if path is not None else None


def model_provenance(stages: list[tuple[str, dict]]) -> list[dict]:
    """One entry per stage (``(name, params)`` as the recipe lists them) that loads weights."""
    from mmcurate.pipeline.stage import registry

    out = []
    for name, params in stages:
        try:
            stage = registry.create(name, params)
        except Exception:  # noqa: BLE001 - the recipe was validated; a stage that does not build has no model here
            continue
        p = getattr(stage, "params", None)
        if p is None or not hasattr(p, "weights"):
            continue
        model = p.model_name() if hasattr(p, "model_name") else getattr(p, "model", None)
        if p.weights == RANDOM:
            digest = RANDOM
        else:
            digest = _weights_sha256(model, p.weights)
        out.append(
            {
                "stage": name,
                "model": model if isinstance(model, (str, type(None))) else json.dumps(model, sort_keys=True),
                "weights": p.weights,
                "weights_sha256": digest,
            }
        )
    return out


def provenance(recipe, inputs: list) -> dict:
    """The manifest's ``provenance`` of a run of `recipe` (a pipeline.recipe.Recipe) over `inputs` (the manifest's
    ``inputs``)."""
    return {
        "recipe_sha256": recipe_sha256(recipe.to_dict()),
        "input_fingerprint": input_fingerprint(inputs),
        "models": model_provenance(recipe.stages),
    }
