"""`mmcurate validate RECIPE`: check a recipe, its input and its model weights without running it.

Each check is one line of what was found; a failed check says what to do. Nothing is written and only the
input's listing, its first batch and one decoded image are read, so it takes seconds on any input.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmcurate.pipeline.recipe import Recipe


@dataclass
class Check:
    name: str  # what was checked: recipe, input, captions, decode, weights, note
    ok: bool
    line: str


def _first_batch(reader, shards, batch_size: int):
    for shard in shards[:3]:  # the first shards can be empty (a run that kept nothing of one)
        for batch in reader.read(shard, batch_size=batch_size):
            if batch.num_rows:
                return shard, batch
    return None, None


def check_input(recipe: Recipe) -> list[Check]:
    import pyarrow.compute as pc

    from mmcurate.pipeline.input import open_input

    try:
        reader = open_input(recipe)
        shards = reader.shards()
    except Exception as exc:  # noqa: BLE001 - the reader's one-line errors are the finding
        return [Check("input", False, f"{recipe.input_path}: {' '.join(str(exc).split())}")]
    counts = [reader.count(s) for s in shards]
    known = sum(c for c in counts if c is not None)
    size = f", {known:,} samples" + (" in the shards that say" if None in counts else "") if known else ""
    checks = [Check("input", bool(shards), f"{reader.format}: {recipe.input_path} ({len(shards):,} shards{size})")]
    if not shards:
        checks[-1].line += ": no shards found; check input.path and input.format"
        return checks
    checks += [Check("note", True, note) for note in reader.start_notes()]
    shard, batch = _first_batch(reader, shards, min(recipe.batch_size, 64))
    if batch is None:
        checks.append(Check("samples", False, "the first shards hold no samples"))
        return checks
    n = batch.num_rows
    bad = batch.filter(pc.is_valid(batch.column("read_reason"))) if "read_reason" in batch.column_names else None
    if bad is not None and bad.num_rows:
        reasons = ", ".join(sorted(set(bad.column("read_reason").to_pylist())))
        checks.append(Check("samples", False, f"{bad.num_rows} of the first {n} samples are unreadable ({reasons})"))
    captions = n - batch.column("caption").null_count
    # Without captions a caption_filter rejects every sample (caption_missing): a problem only for such a recipe.
    needs = any(name == "caption_filter" for name, _ in recipe.stages)
    checks.append(
        Check(
            "captions",
            captions > 0 or not needs,
            f"{captions} of the first {n} samples have a caption"
            + ("" if captions or not needs else ": caption_filter would reject them all; see the notes above"),
        )
    )
    images = [b for b in batch.column("image").to_pylist() if b]
    if not images:
        checks.append(Check("decode", n == 0, f"none of the first {n} samples has image bytes"))
        return checks
    from mmcurate import ops

    dec = ops.decode_images(images[:1], mode="RGB", device="cpu")
    status = ops.Status(int(dec.status[0])).name
    if status == "ok":
        h, w = dec.images[0].shape[:2]
        checks.append(Check("decode", True, f"first image of {shard}: {w}x{h}, decodes"))
    else:
        checks.append(Check("decode", False, f"first image of {shard}: {status}: {dec.errors[0]}"))
    return checks


def check_weights(recipe: Recipe) -> list[Check]:
    """Every stage with model weights: where they would be loaded from (never downloads)."""
    checks = []
    for stage in recipe.build_stages():
        name, p = stage.name, stage.params
        if not hasattr(p, "weights") or not hasattr(p, "model"):
            continue
        from mmcurate.models.loader import RANDOM, resolve_weights

        if p.weights == RANDOM:
            checks.append(
                Check("weights", False, f"{name}: weights: random: its embeddings and scores would be meaningless")
            )
            continue
        try:
            path = resolve_weights(p.model, p.weights, allow_download=False)
            checks.append(Check("weights", True, f"{name}: {p.model} from {path}"))
        except Exception as exc:  # noqa: BLE001 - the loader's one-line error is the finding
            msg = " ".join(str(exc).split())
            if getattr(p, "allow_download", False):
                checks.append(Check("weights", True, f"{name}: {p.model}: not cached; the run will download them"))
            else:
                checks.append(Check("weights", False, f"{name}: {msg}"))
    return checks


def validate(recipe: Recipe) -> list[Check]:
    """The checks of a parsed recipe (parsing checked its keys and every stage's parameters already)."""
    stages = ", ".join(n for n, _ in recipe.stages)
    return [
        Check("recipe", True, f"{len(recipe.stages)} stages ({stages})"),
        *check_input(recipe),
        *check_weights(recipe),
    ]
