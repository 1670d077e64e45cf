"""The report header's provenance line: the model and its weights, the recipe hash and the input fingerprint.

From the manifest's ``provenance`` (pipeline.provenance). A manifest written before it existed still gets the
recipe hash and input fingerprint (computed here from its recipe and inputs, with the same functions) and the
models from its recipe, their weights marked "not recorded". Random weights are shown in red: every result that
depends on the model is meaningless. Hashes are shortened to 12 hex digits; the full value is in the tooltip.

This module depends on nothing of html_report (which imports it).
"""

from __future__ import annotations

from mmcurate.pipeline.provenance import PROVENANCE, RANDOM, input_fingerprint, recipe_sha256
from mmcurate.report.html_parts import e
from mmcurate.report.run_data import RunData

__all__ = ["provenance_header", "PROVENANCE_CSS"]

SHORT = 12

PROVENANCE_CSS = """
.provenance{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:10px;font-size:12.5px;color:#495057}
.provenance .label{color:var(--muted);text-transform:uppercase;font-size:11px;letter-spacing:.05em;margin-right:4px}
.provenance code{font-size:12px}
.provenance .random{color:var(--bad);font-weight:700}
"""


def _hash(value) -> str:
    if not isinstance(value, str) or not value:
        return '<span class="muted">not recorded</span>'
    return f'<code title="{e(value)}">{e(value[:SHORT])}</code>'


def _models(data: RunData, recorded) -> list[dict]:
    if isinstance(recorded, list):
        return [m for m in recorded if isinstance(m, dict)]
    out = []  # an older manifest: the recipe's stages with a weights parameter, their hash not recorded
    recipe = data.run.get("recipe")
    steps = recipe.get("stages") if isinstance(recipe, dict) else None
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        for name, params in step.items():
            if isinstance(params, dict) and ("weights" in params or "model" in params):
                weights = params.get("weights")
                out.append(
                    {
                        "stage": name,
                        "model": params.get("model"),
                        "weights": weights,
                        "weights_sha256": RANDOM if weights == RANDOM else None,
                    }
                )
    return out


def _model_item(m: dict) -> str:
    model = m.get("model") if m.get("model") is not None else "default model"
    digest = m.get("weights_sha256")
    if digest == RANDOM or m.get("weights") == RANDOM:
        weights = '<span class="random" data-weights="random">random weights</span>'
    elif isinstance(digest, str) and digest:
        weights = f"weights sha256 {_hash(digest)}"
    else:
        weights = '<span class="muted" data-weights="unknown">weights not hashed</span>'
    return (
        f'<span data-provenance="model" data-stage="{e(m.get("stage"))}"><span class="label">model</span>'
        f"<code>{e(model)}</code> ({e(m.get('stage'))}) · {weights}</span>"
    )


def provenance_header(data: RunData) -> str:
    """The provenance line (HTML) for the header."""
    recorded = data.manifest.get(PROVENANCE)
    recorded = recorded if isinstance(recorded, dict) else {}
    recipe = data.run.get("recipe")
    recipe_hash = recorded.get("recipe_sha256") or (recipe_sha256(recipe) if isinstance(recipe, dict) else None)
    inputs = data.manifest.get("inputs")
    fingerprint = recorded.get("input_fingerprint") or (input_fingerprint(inputs) if isinstance(inputs, list) else None)
    items = [_model_item(m) for m in _models(data, recorded.get("models"))]
    if not items:
        items.append('<span data-provenance="model"><span class="label">model</span>none (no stage loads one)</span>')
    items.append(f'<span data-provenance="recipe"><span class="label">recipe</span>{_hash(recipe_hash)}</span>')
    n_inputs = len(inputs) if isinstance(inputs, list) else 0
    items.append(
        f'<span data-provenance="input"><span class="label">input</span>{_hash(fingerprint)} '
        f'<span class="muted">({n_inputs:,} file(s))</span></span>'
    )
    return f'<div class="provenance">{"".join(items)}</div>'
