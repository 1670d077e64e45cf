"""load_clip: build a registry model and load its weights from an explicit source.

Weights come from, in order: the file or directory the caller names, the local caches (the Hugging Face
hub cache, open_clip's ~/.cache/clip, a flat cache_dir), and a hub download only with allow_download=True.
Checkpoints are read with safetensors or torch.load(weights_only=True) only. A checkpoint whose recorded tag
or preprocessing disagrees with the registry entry is refused (open_clip #1068: a checkpoint loaded by path
silently took the default preprocessing).

The model is resolved together with its weights (:func:`entry_for`): an open_clip_config.json beside the checkpoint
(a hub snapshot, an open_clip export) supplies the preprocessing when the name leaves it open (a bare architecture,
a user mapping without ``preprocess``), and is checked against it when the name states it (ARCH/TAG).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mmcurate.device import choose_device
from mmcurate.models.preprocess import Preprocess
from mmcurate.models.registry import (
    HF_FILES,
    ModelEntry,
    ensure_open_clip_config,
    entries,
    preprocess_from_open_clip,
    resolve_model,
)

__all__ = [
    "load_clip",
    "entry_for",
    "weights_config",
    "resolve_weights",
    "save_weights",
    "WeightsNotFoundError",
    "WeightsMismatchError",
    "resolve_torch_device",
    "resolve_precision",
    "RANDOM",
]

RANDOM = "random"
#: The open_clip export / hub snapshot config beside a checkpoint (model_cfg, preprocess_cfg).
OPEN_CLIP_CONFIG = "open_clip_config.json"
#: safetensors metadata keys that record what a checkpoint is (written by save_weights).
META_ARCH, META_TAG, META_PREPROCESS = "mmcurate.arch", "mmcurate.pretrained", "mmcurate.preprocess"
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_PRECISIONS = ("fp32", "fp16", "bf16")


class WeightsNotFoundError(FileNotFoundError):
    pass


class WeightsMismatchError(ValueError):
    pass


# -- device and precision --------------------------------------------------------------------------------
def resolve_torch_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" / "cuda:N" as given, an error without a GPU
    (the rule is mmcurate.device's)."""
    import torch

    return choose_device(
        device,
        torch.cuda.is_available,
        lambda: f"device={device!r} but torch sees no CUDA device; use device='cpu' or 'auto'",
        allow_index=True,
    )


def resolve_precision(precision: str, device: str) -> str:
    """ "auto": fp16 on a GPU (CLIP inference loses nothing measurable), fp32 on the CPU (fp16 is slow there)."""
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {_PRECISIONS}, got {precision!r}")
    return precision


# -- finding the weights -------------------------------------------------------------------------------
def _default_clip_cache() -> Path:
    return Path(os.path.expanduser("~/.cache/clip"))


def _hf_cached(repo: str, filename: str, cache_dir) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no hub client: look in the standard layout ourselves
        root = (
            Path(cache_dir)
            if cache_dir
            else Path(
                os.environ.get(
                    "HF_HUB_CACHE", Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"
                )
            )
        )
        hits = sorted((root / f"models--{repo.replace('/', '--')}" / "snapshots").glob(f"*/{filename}"))
        return hits[-1] if hits else None
    hit = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir) if cache_dir else None)
    return Path(hit) if isinstance(hit, str) and os.path.isfile(hit) else None


def _cache_candidates(entry: ModelEntry, cache_dir) -> list[Path]:
    """Every place a cached copy could be, in the order they are tried (also listed in the error)."""
    places = []
    if entry.hf_hub:
        root = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
        for f in entry.files:
            places.append(
                (
                    "hf",
                    Path(os.path.expanduser(str(root)))
                    / f"models--{entry.hf_hub.replace('/', '--')}"
                    / "snapshots"
                    / "*"
                    / f,
                    f,
                )
            )
    flat = [Path(cache_dir)] if cache_dir else []
    if entry.url_file:
        flat.append(_default_clip_cache())
    for d in flat:
        for f in entry.weight_file_names():
            places.append(("file", d / f, f))
    return places


def _find_in_dir(entry: ModelEntry, d: Path) -> Path:
    for f in entry.weight_file_names():
        if (d / f).is_file():
            return d / f
    found = sorted(p for p in d.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsNotFoundError(
            f"no checkpoint in {d}: expected one of {entry.weight_file_names()} "
            f"(or a single {'/'.join(_CHECKPOINT_SUFFIXES)} file)"
        )
    raise WeightsNotFoundError(
        f"several checkpoints in {d} ({[p.name for p in found]}) and none named "
        f"{entry.weight_file_names()}: pass the file itself as weights="
    )


def _is_random(weights) -> bool:
    return isinstance(weights, str) and weights == RANDOM


def weights_config(weights) -> tuple[dict | None, Path | None]:
    """The parsed open_clip_config.json that comes with ``weights`` (in the directory, or beside the file) and its
    path; (None, None) when there is none (or weights is None / "random")."""
    if weights is None or _is_random(weights):
        return None, None
    p = Path(os.path.expanduser(str(weights)))
    cfg_path = p / OPEN_CLIP_CONFIG if p.is_dir() else p.parent / OPEN_CLIP_CONFIG
    if not cfg_path.is_file():
        return None, None
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise WeightsMismatchError(f"{cfg_path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise WeightsMismatchError(f"{cfg_path} is not an open_clip config (a mapping with model_cfg, preprocess_cfg)")
    return cfg, cfg_path


def entry_for(model, weights=None) -> ModelEntry:
    """The registry entry for ``model`` (a name, a user mapping, an entry) loaded with ``weights``: the weights'
    open_clip_config.json decides the preprocessing where the name leaves it open (registry.resolve_model)."""
    cfg, where = weights_config(weights)
    return resolve_model(model, cfg, str(where) if where else OPEN_CLIP_CONFIG)


def resolve_weights(entry, weights=None, cache_dir=None, allow_download: bool = False) -> Path | None:
    """The checkpoint file to load, or None for weights="random"."""
    entry = entry_for(entry, weights)
    if _is_random(weights):
        return None
    if weights is not None:
        p = Path(os.path.expanduser(str(weights)))
        if p.is_file():
            return p
        if p.is_dir():
            return _find_in_dir(entry, p)
        raise WeightsNotFoundError(f"weights={str(weights)!r} is neither a file nor a directory")
    for kind, pattern, fname in _cache_candidates(entry, cache_dir):
        if kind == "hf":
            hit = _hf_cached(entry.hf_hub, fname, cache_dir)
            if hit is not None:
                return hit
        elif pattern.is_file():
            return pattern
    if allow_download:
        return _download(entry, cache_dir)
    checked = sorted({str(p) for _, p, _ in _cache_candidates(entry, cache_dir)}) or [
        "(no cache location: pass cache_dir=)"
    ]
    hub = f" from hf-hub {entry.hf_hub}" if entry.hf_hub else (f" from {entry.url}" if entry.url else "")
    how = (
        f"pass allow_download=True to fetch them{hub}, "
        if (entry.hf_hub or entry.url)
        else "this architecture has no released weights, "
    )
    raise WeightsNotFoundError(
        f"no weights for CLIP model {entry.name!r}: expected a file named one of {entry.weight_file_names()}. "
        f"Checked: {checked}. Pass weights='/path/to/{entry.weight_file_names()[0]}' (or a directory holding it), "
        f"or {how}or weights='random' for a randomly initialised model (tests only)."
    )


def _download(entry: ModelEntry, cache_dir) -> Path:
    if not entry.pretrained or not (entry.hf_hub or entry.url):
        raise WeightsNotFoundError(f"{entry.name!r} has no released weights to download; pass weights=")
    from open_clip.pretrained import download_pretrained

    # open_clip's form: "org/repo/" (its standard files) or "org/repo/file"
    one = entry.files[0] if len(entry.files) == 1 and tuple(entry.files) != HF_FILES else ""
    cfg = {"hf_hub": f"{entry.hf_hub}/{one}" if entry.hf_hub else "", "url": entry.url or ""}
    path = download_pretrained(cfg, cache_dir=str(cache_dir) if cache_dir else None)
    if not path:
        raise WeightsNotFoundError(f"download of {entry.name!r} weights returned nothing")
    return Path(path)


# -- provenance checks (#1068) -------------------------------------------------------------------------
def _safetensors_metadata(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def check_provenance(entry: ModelEntry, path: Path) -> None:
    """Refuse a checkpoint that records (or is stored under the name of) other weights than the entry's."""
    meta = _safetensors_metadata(path)
    if META_ARCH in meta and meta[META_ARCH] != entry.arch:
        raise WeightsMismatchError(
            f"{path} holds architecture {meta[META_ARCH]!r}, registry entry {entry.name!r} is {entry.arch!r}"
        )
    if META_TAG in meta and (meta[META_TAG] or None) != entry.pretrained:
        raise WeightsMismatchError(
            f"{path} holds weights for tag {meta[META_TAG]!r} but registry entry {entry.name!r} is tag "
            f"{entry.pretrained!r}, whose preprocessing may differ; load it as '{entry.arch}/{meta[META_TAG]}'"
        )
    if META_PREPROCESS in meta:
        diff = entry.preprocess.differences(Preprocess.from_dict(json.loads(meta[META_PREPROCESS])))
        if diff:
            raise WeightsMismatchError(f"{path} was saved with other preprocessing than {entry.name!r}: {diff}")
    oc_cfg = path.parent / "open_clip_config.json"
    if oc_cfg.is_file():  # a hub snapshot or a local-dir export records the preprocessing it was trained with
        with open(oc_cfg, encoding="utf-8") as f:
            cfg = json.load(f)
        pp = cfg.get("preprocess_cfg")
        if pp:  # the keys it states (open_clip's hub configs often give mean and std only)
            try:
                stated = preprocess_from_open_clip(
                    {**entry.preprocess.to_open_clip(), **pp}, entry.preprocess.image_size, str(oc_cfg)
                )
            except ValueError as exc:
                raise WeightsMismatchError(str(exc)) from None
            diff = entry.preprocess.differences(stated)
            if diff:
                raise WeightsMismatchError(
                    f"{oc_cfg} states other preprocessing than registry entry {entry.name!r}: {diff}"
                )
        model_cfg = cfg.get("model_cfg") or {}
        dim = model_cfg.get("embed_dim")
        if dim is not None and int(dim) != entry.embed_dim:
            raise WeightsMismatchError(
                f"{oc_cfg} has embed_dim {dim}, registry entry {entry.name!r} has {entry.embed_dim}"
            )
        if "quick_gelu" in model_cfg and bool(model_cfg["quick_gelu"]) != uses_quick_gelu(entry):
            raise WeightsMismatchError(
                f"{oc_cfg} says quick_gelu={bool(model_cfg['quick_gelu'])}, registry entry {entry.name!r} builds "
                f"{'with' if uses_quick_gelu(entry) else 'without'} QuickGELU: the activations would be wrong"
            )
    where = str(path)
    own = {m for m in _marks(entry) if m}
    for other in _same_arch(entry):
        if other.pretrained == entry.pretrained:
            continue
        if any(m in where for m in _marks(other) if m and m not in own):
            raise WeightsMismatchError(
                f"{path} is the checkpoint of {other.name!r}, not of {entry.name!r}; "
                f"load it as {other.name!r} so its own preprocessing is used"
            )


def _marks(entry: ModelEntry) -> tuple:
    """What a path holding the entry's checkpoint contains: its hub cache folder, its download's file name."""
    return (entry.hf_hub and f"models--{entry.hf_hub.replace('/', '--')}", entry.url_file)


def _same_arch(entry: ModelEntry) -> list[ModelEntry]:
    """The curated entries of the entry's architecture, then the pairs open_clip knows for it."""
    out = [e for e in entries() if e.arch == entry.arch]
    if entry.config is None:  # an open_clip architecture
        import open_clip

        from mmcurate.models.registry import open_clip_entry

        seen = {e.pretrained for e in out}
        for arch, tag in open_clip.list_pretrained():
            if arch == entry.arch and tag not in seen:
                try:
                    out.append(open_clip_entry(arch, tag))
                except (KeyError, ValueError):
                    continue
    return out


def uses_quick_gelu(entry: ModelEntry) -> bool:
    """Whether load_clip builds the entry with QuickGELU (the entry says so, or its architecture's config does)."""
    if entry.quick_gelu:
        return True
    import open_clip

    cfg = open_clip.get_model_config(entry.arch)
    if cfg is None and entry.config is not None:
        with open(entry.config, encoding="utf-8") as f:
            cfg = json.load(f)
    return bool((cfg or {}).get("quick_gelu", False))


# -- building -----------------------------------------------------------------------------------------
def _build(entry: ModelEntry, device: str, precision: str, seed: int, allow_download: bool = False):
    import open_clip
    import torch

    arch = ensure_open_clip_config(entry)
    hf_text = ((open_clip.get_model_config(arch) or {}).get("text_cfg") or {}).get("hf_model_name")
    if hf_text and not allow_download and _hf_cached(hf_text, "config.json", None) is None:
        # transformers would fetch the text tower's config from the hub to build it
        raise WeightsNotFoundError(
            f"{entry.name}'s text tower is the Hugging Face model {hf_text!r}, whose config.json is not in the "
            "Hugging Face cache; allow_download=True fetches it"
        )
    previous = logging.root.manager.disable
    # open_clip warns "initialized randomly" although the weights are loaded right after: silence it
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = open_clip.create_model(
                arch, pretrained=None, precision=precision, device=device, force_quick_gelu=entry.quick_gelu
            )
    except ImportError as exc:  # timm towers (EVA, SigLIP) need timm, Hugging Face text towers transformers
        raise RuntimeError(
            f"building {arch} needs the {exc.name or 'missing'} package, which is not installed "
            f"(pip install {exc.name or '...'}): {exc}"
        ) from exc
    finally:
        logging.disable(previous)
    model.eval()
    out_dim = model.visual.output_dim if hasattr(model.visual, "output_dim") else None
    if out_dim is not None and out_dim != entry.embed_dim:
        raise ValueError(
            f"registry entry {entry.name!r} says embed_dim {entry.embed_dim}, the {arch} model outputs {out_dim}"
        )
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    if size != entry.preprocess.image_size:
        raise ValueError(
            f"registry entry {entry.name!r} preprocesses to {entry.preprocess.image_size}, "
            f"the {arch} model takes {size}"
        )
    return model


def load_clip(
    name,
    weights=None,
    cache_dir=None,
    allow_download: bool = False,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
):
    """Build the model `name` and load its weights -> :class:`mmcurate.models.ClipModel`.

    name: a registry name, any open_clip ARCH/TAG, a bare architecture (its curated default, or the preprocessing
        of the weights' open_clip_config.json), a user mapping {arch, pretrained, embed_dim, preprocess, config}
        or a ModelEntry.
    weights: a checkpoint file (.safetensors, .bin, .pt, .pth), a directory holding one, None (look in
        the caches, then download if allow_download) or "random" (seeded random init; for tests).
    """
    import open_clip.factory
    import torch

    from mmcurate.models.embed import ClipModel

    entry = entry_for(name, weights)
    dev = resolve_torch_device(device)
    prec = resolve_precision(precision, dev)
    path = resolve_weights(entry, weights, cache_dir, allow_download)
    if path is not None:
        check_provenance(entry, path)
    model = _build(entry, dev, prec, seed, allow_download=allow_download)
    if path is not None:
        try:
            open_clip.factory.load_checkpoint(model, str(path), strict=True, weights_only=True, device="cpu")
        except RuntimeError as e:
            raise WeightsMismatchError(
                f"{path} does not fit {entry.name!r} ({entry.arch}{', QuickGELU' if entry.quick_gelu else ''}): {e}"
            ) from e
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]
    return ClipModel(model, entry, device=dev, dtype=dtype, weights=path, allow_download=allow_download)


def save_weights(clip, path) -> Path:
    """Write a ClipModel's weights as safetensors, recording the architecture, tag and preprocessing in the
    file's metadata so a later load under another entry is refused."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes .safetensors files, got {path.name!r}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in clip.model.state_dict().items()}
    meta = {
        META_ARCH: clip.entry.arch,
        META_TAG: clip.entry.pretrained or "",
        META_PREPROCESS: json.dumps(clip.preprocess.to_dict()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path
