"""The CLIP model registry: what a model name (or a recipe's model mapping) means -- an open_clip architecture, a
pretrained tag, the embedding size, where the weights live, and the preprocessing those weights were trained with.

A name resolves, in order, to:

* a curated registry.json entry (``"ViT-B-32/openai"``), or a bare architecture's curated default (``"ViT-B-32"``);
* any pair open_clip knows (``open_clip.list_pretrained()``: ``"ViT-B-16-SigLIP2/webli"``,
  ``"EVA02-L-14/merged2b_s4b_b131k"``, ``"ViT-bigG-14/laion2b_s39b_b160k"``...), built from open_clip's pretrained
  cfg (mean, std, interpolation, resize_mode, QuickGELU, hf_hub / url) and model config (embed_dim, image size).
  A bare architecture open_clip knows but the registry has no default for is an error listing its tags, unless
  the weights' own open_clip_config.json supplies the preprocessing (:func:`resolve_model`);
* a user entry from a recipe mapping (:func:`user_entry`): ``{arch, pretrained, embed_dim, preprocess, config}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mmcurate.models.preprocess import Preprocess

__all__ = [
    "ModelEntry",
    "get_entry",
    "resolve_model",
    "user_entry",
    "open_clip_entry",
    "describe_models",
    "list_models",
    "entries",
    "REGISTRY_PATH",
    "ensure_open_clip_config",
    "HF_FILES",
    "USER_KEYS",
]

REGISTRY_PATH = Path(__file__).with_name("registry.json")
#: The weight files an open_clip hub repository holds, in preference order.
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: The keys of a user entry (a recipe's ``model:`` mapping).
USER_KEYS = ("arch", "pretrained", "embed_dim", "preprocess", "config")
#: Where an entry came from (ModelEntry.source).
SOURCES = ("registry", "open_clip", "user", "weights")


@dataclass(frozen=True)
class ModelEntry:
    name: str  # "arch/tag", or the arch for a config without released weights
    arch: str  # open_clip architecture (model config name)
    pretrained: str | None  # open_clip pretrained tag; None for architectures without released weights
    embed_dim: int
    preprocess: Preprocess
    quick_gelu: bool = False  # the weights need QuickGELU (OpenAI-trained; open_clip's "-quickgelu" configs)
    hf_hub: str | None = None  # "org/repo" on the Hugging Face hub
    url: str | None = None  # direct download URL (open_clip caches these under ~/.cache/clip)
    files: tuple = ()  # weight file names in preference order
    config: Path | None = None  # our own open_clip JSON model config (custom architectures)
    default: bool = False
    # "registry" (registry.json), "open_clip" (open_clip's pretrained cfg), "user" (a recipe mapping) or
    # "weights" (preprocessing read from the checkpoint's open_clip_config.json)
    source: str = "registry"

    @property
    def url_file(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def weight_file_names(self) -> list[str]:
        names = list(self.files)
        if self.url_file:
            names.append(self.url_file)
        return names


def _parse(raw: dict, base: Path) -> ModelEntry:
    required = {"name", "arch", "pretrained", "embed_dim", "preprocess"}
    missing = required - set(raw)
    if missing:
        raise ValueError(f"registry entry {raw.get('name', '?')!r} lacks {sorted(missing)}")
    known = required | {"quick_gelu", "hf_hub", "url", "files", "config", "default"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"registry entry {raw['name']!r} has unknown keys {sorted(unknown)}")
    cfg = raw.get("config")
    return ModelEntry(
        name=raw["name"],
        arch=raw["arch"],
        pretrained=raw["pretrained"],
        embed_dim=int(raw["embed_dim"]),
        preprocess=Preprocess.from_dict(raw["preprocess"]),
        quick_gelu=bool(raw.get("quick_gelu", False)),
        hf_hub=raw.get("hf_hub"),
        url=raw.get("url"),
        files=tuple(raw.get("files", ())),
        config=(base / cfg) if cfg else None,
        default=bool(raw.get("default", False)),
    )


@cache
def _load(path: str = str(REGISTRY_PATH)) -> tuple[ModelEntry, ...]:
    p = Path(path)
    with open(p, encoding="utf-8") as f:
        data = json.load(f)
    out = tuple(_parse(raw, p.parent) for raw in data["models"])
    names = [e.name for e in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate registry names {sorted(dup)} in {p}")
    for arch in {e.arch for e in out}:
        defaults = [e.name for e in out if e.arch == arch and e.default]
        if len(defaults) > 1:
            raise ValueError(f"architecture {arch!r} has several default entries: {defaults}")
    return out


def entries() -> tuple[ModelEntry, ...]:
    """The curated registry.json entries."""
    return _load()


def list_models() -> list[str]:
    """The curated entries' names (any open_clip ARCH/TAG resolves too: see get_entry)."""
    return [e.name for e in entries()]


def describe_models() -> list[dict]:
    """What ``mmcurate models`` prints: one dict per curated entry (name, arch, pretrained, embed_dim, default,
    preprocess, quick_gelu, hf_hub, url, files), then one note saying which other names resolve. Imports
    neither torch nor open_clip."""
    out = []
    for e in entries():
        out.append(
            {
                "name": e.name,
                "arch": e.arch,
                "pretrained": e.pretrained,
                "embed_dim": e.embed_dim,
                "default": e.default,
                "preprocess": e.preprocess.to_dict(),
                "quick_gelu": e.quick_gelu,
                "hf_hub": e.hf_hub,
                "url": e.url,
                "files": list(e.weight_file_names()),
                "source": e.source,
            }
        )
    out.append(
        {
            "name": "ARCH/TAG",
            "source": "open_clip",
            "note": "any architecture/pretrained-tag pair open_clip knows (open_clip.list_pretrained(): ViT-H-14, "
            "ViT-bigG-14, SigLIP/SigLIP2, EVA-CLIP, ...) resolves too, with open_clip's preprocessing for that tag; "
            "weights: PATH (a file, or a directory with open_clip_config.json whose preprocess_cfg is used); "
            "a recipe may also give model: {arch, pretrained, embed_dim, preprocess, config}",
        }
    )
    return out


# -- open_clip-backed entries ---------------------------------------------------------------------------
def _open_clip():
    import open_clip

    return open_clip


def _model_image_size(model_cfg: dict, arch: str) -> int:
    size = (model_cfg.get("vision_cfg") or {}).get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{arch}: only square model inputs are supported, its image_size is {list(size)}")
        size = size[0]
    return int(size)


def _arch_config(arch: str) -> dict:
    cfg = _open_clip().get_model_config(arch)
    if cfg is None:
        raise KeyError(f"open_clip has no model config {arch!r}")
    return cfg


def preprocess_from_open_clip(cfg: dict, image_size: int, what: str) -> Preprocess:
    """A Preprocess from an open_clip pretrained cfg / preprocess_cfg (keys it lacks: open_clip's defaults, the size
    the model's), with a one-line error naming ``what`` when mmcurate's loaders cannot do that preprocessing."""
    merged = {
        "size": image_size,
        **{k: cfg[k] for k in ("size", "mean", "std", "interpolation", "resize_mode") if k in cfg},
    }
    try:
        return Preprocess.from_open_clip(merged)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _hf_hub(hf: str | None) -> tuple[str | None, tuple]:
    """open_clip's hf_hub ("org/repo/" or "org/repo/file") -> (repo, weight file names)."""
    hf = (hf or "").strip()
    if not hf:
        return None, HF_FILES
    parts = hf.split("/")
    repo = "/".join(parts[:2])
    fname = "/".join(parts[2:]).strip("/")
    return repo, ((fname,) if fname else HF_FILES)


def open_clip_entry(arch: str, tag: str) -> ModelEntry:
    """The entry open_clip's own create_model(arch, pretrained=tag) would use: its pretrained cfg (mean, std,
    interpolation, resize_mode, quick_gelu, hf_hub, url) and model config (embed_dim, image size)."""
    oc = _open_clip()
    pcfg = oc.get_pretrained_cfg(arch, tag)
    if not pcfg:
        raise KeyError(f"open_clip knows no pretrained tag {tag!r} for {arch!r}")
    model_cfg = _arch_config(arch)
    name = f"{arch}/{tag}"
    hf_hub, files = _hf_hub(pcfg.get("hf_hub"))
    return ModelEntry(
        name=name,
        arch=arch,
        pretrained=tag,
        embed_dim=int(model_cfg["embed_dim"]),
        preprocess=preprocess_from_open_clip(pcfg, _model_image_size(model_cfg, arch), name),
        quick_gelu=bool(pcfg.get("quick_gelu", False)),
        hf_hub=hf_hub,
        url=pcfg.get("url") or None,
        files=files,
        source="open_clip",
    )


def _tags(arch: str) -> list[str]:
    return [t for a, t in _open_clip().list_pretrained() if a == arch]


def _weights_entry(arch: str, model_cfg: dict, oc_config: dict, where: str, base: ModelEntry | None) -> ModelEntry:
    """An entry whose preprocessing (and QuickGELU) is the checkpoint's own open_clip_config.json's."""
    pp = preprocess_from_open_clip(oc_config.get("preprocess_cfg") or {}, _model_image_size(model_cfg, arch), where)
    oc_model = oc_config.get("model_cfg") or {}
    quick = bool(oc_model.get("quick_gelu", model_cfg.get("quick_gelu", False)))
    if base is not None and not base.preprocess.differences(pp) and base.quick_gelu == quick:
        return base  # the checkpoint states exactly what the curated default does
    return ModelEntry(
        name=arch,
        arch=arch,
        pretrained=None,
        embed_dim=int(model_cfg["embed_dim"]),  # what the build gives; check_provenance compares the file's
        preprocess=pp,
        quick_gelu=quick,
        files=HF_FILES,
        config=base.config if base is not None else None,
        source="weights",
    )


def _lookup(name: str) -> tuple[ModelEntry | None, str | None]:
    """(entry, None) for a name that states its weights; (default entry or None, arch) for a bare architecture."""
    for e in entries():
        if e.name == name:
            return e, None
    for e in entries():
        if e.arch == name and e.default:
            return e, name
    if "/" in name:
        arch, tag = name.split("/", 1)
        oc = _open_clip()
        if oc.get_pretrained_cfg(arch, tag):
            return open_clip_entry(arch, tag), None
        if arch in oc.list_models():
            tags = _tags(arch)
            raise KeyError(
                f"open_clip knows no pretrained tag {tag!r} for {arch!r}; its tags: {tags or '(none)'}"
                if tags
                else f"{arch!r} has no released weights in open_clip; give model as a mapping {{arch, preprocess}} "
                "or name the architecture alone with weights: a directory holding open_clip_config.json"
            )
    elif name in _open_clip().list_models():
        return None, name
    raise KeyError(
        f"unknown CLIP model {name!r}; curated: {list_models()} (a bare architecture name selects its default "
        "entry); any ARCH/TAG of open_clip.list_pretrained() works too, or a mapping {arch, preprocess, ...}"
    )


def get_entry(name) -> ModelEntry:
    """An entry by its name ("ViT-B-32/openai", "ViT-B-16-SigLIP2/webli"), a bare architecture with a curated
    default ("ViT-B-32"), a user mapping ({arch, preprocess, ...}) or an entry (returned as is). A bare
    architecture without a default is a KeyError listing its tags (resolve_model also accepts it when the
    weights' open_clip_config.json states the preprocessing)."""
    return resolve_model(name)


def resolve_model(model, oc_config: dict | None = None, where: str = "open_clip_config.json") -> ModelEntry:
    """The entry for a recipe's ``model`` (a name, a user mapping or an entry), given the parsed
    open_clip_config.json that came with the weights (``oc_config``; None when there is none), found at ``where``.

    The checkpoint's preprocess_cfg decides the preprocessing when the name leaves it open: a bare architecture
    (its curated default only if the two agree) or a user mapping without ``preprocess``. A name that states the
    weights (ARCH/TAG, a registry name, a mapping with preprocess) keeps its own, and load_clip refuses a
    checkpoint whose config disagrees (loader.check_provenance)."""
    if isinstance(model, ModelEntry):
        return model
    if isinstance(model, dict):
        return user_entry(model, oc_config=oc_config, where=where)
    if not isinstance(model, str) or not model:
        raise KeyError(f"model must be a registry name or a mapping {{arch, preprocess, ...}}, got {model!r}")
    entry, bare = _lookup(model)
    if bare is None:
        return entry
    has_pp = oc_config is not None and bool(oc_config.get("preprocess_cfg"))
    if has_pp:
        model_cfg = _arch_config(bare) if entry is None or entry.config is None else _json(entry.config)
        return _weights_entry(bare, model_cfg, oc_config, where, entry)
    if entry is not None:
        return entry
    tags = _tags(bare)
    if not tags:
        raise KeyError(
            f"{bare!r} has no released weights in open_clip and no registry entry; give model as a mapping "
            "{arch, preprocess: {...}} or weights: a directory holding open_clip_config.json"
        )
    raise KeyError(
        f"{bare!r} has no curated default; name its weights: one of {[f'{bare}/{t}' for t in tags]}, "
        "or give weights: a directory holding open_clip_config.json (its preprocess_cfg is used)"
    )


# -- user entries --------------------------------------------------------------------------------------
def _json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _user_error(msg: str) -> KeyError:
    return KeyError(f"model mapping: {msg}")


def user_entry(raw: dict, oc_config: dict | None = None, where: str = "open_clip_config.json") -> ModelEntry:
    """An entry from a recipe mapping: ``arch`` (an open_clip architecture, or the name of ``config``),
    ``pretrained`` (optional tag: open_clip's cfg for it gives the defaults), ``embed_dim`` (optional; the
    config's), ``preprocess`` ({image_size, mean, std, interpolation, resize_mode}; needed unless the tag or the
    weights' open_clip_config.json states it; keys left out come from those, image_size from the model config)
    and ``config`` (optional path to an open_clip model JSON named ARCH.json). Errors are one-line KeyErrors."""
    unknown = sorted(set(raw) - set(USER_KEYS))
    if unknown:
        raise _user_error(f"unknown key(s) {unknown}; valid: {list(USER_KEYS)}")
    arch = raw.get("arch")
    if not isinstance(arch, str) or not arch or "/" in arch:
        raise _user_error(f"arch must be an open_clip architecture name (no '/'), got {arch!r}")
    tag = raw.get("pretrained")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise _user_error(f"pretrained must be a tag (a non-empty string) or null, got {tag!r}")
    config = raw.get("config")
    model_cfg = None
    if config is not None:
        if not isinstance(config, (str, os.PathLike)) or not str(config):
            raise _user_error(f"config must be the path of an open_clip model JSON, got {config!r}")
        config = Path(os.path.expanduser(str(config)))
        if not config.is_file():
            raise _user_error(f"config {str(config)!r} is not a file")
        if config.stem != arch:
            raise _user_error(
                f"config file {config.name!r} must be named {arch}.json (open_clip names models after the file)"
            )
        try:
            model_cfg = _json(config)
        except (OSError, ValueError) as exc:
            raise _user_error(f"config {str(config)!r} is not valid JSON: {exc}") from None
        lacking = [
            k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(model_cfg, dict) or k not in model_cfg
        ]
        if lacking:
            raise _user_error(f"config {str(config)!r} is not an open_clip model config (it lacks {lacking})")
        known = _open_clip().get_model_config(arch)
        if known is not None and known != model_cfg:
            raise _user_error(
                f"arch {arch!r} is already an open_clip config that differs from {str(config)!r}; rename the file "
                "and arch"
            )
    else:
        model_cfg = _open_clip().get_model_config(arch)
        ours = [e.config for e in entries() if e.arch == arch and e.config is not None]
        if model_cfg is None and ours:  # a registry architecture of our own (mmcurate-tiny)
            config, model_cfg = ours[0], _json(ours[0])
        if model_cfg is None:
            raise _user_error(f"open_clip has no architecture {arch!r}; give config: path/to/{arch}.json")
    size = _model_image_size(model_cfg, arch)
    known_entry = None
    if tag is not None:
        pcfg = _open_clip().get_pretrained_cfg(arch, tag)
        if pcfg:
            known_entry = open_clip_entry(arch, tag)
    # The preprocessing the weights are known to need: the tag's, else the checkpoint's config.
    base_pp = known_entry.preprocess if known_entry is not None else None
    base_what = f"open_clip's {arch}/{tag}"
    if base_pp is None and oc_config is not None and oc_config.get("preprocess_cfg"):
        base_pp, base_what = preprocess_from_open_clip(oc_config["preprocess_cfg"], size, where), where
    pp_raw = raw.get("preprocess")
    if pp_raw is None:
        if base_pp is None:
            raise _user_error(
                "preprocess {image_size, mean, std, interpolation, resize_mode} is required: neither a pretrained tag "
                "open_clip knows nor an open_clip_config.json beside the weights states it"
            )
        pp = base_pp
    else:
        if not isinstance(pp_raw, dict):
            raise _user_error(
                f"preprocess must be a mapping {{image_size, mean, std, interpolation, resize_mode}}, got {pp_raw!r}"
            )
        bad = sorted(set(pp_raw) - {"image_size", "mean", "std", "interpolation", "resize_mode"})
        if bad:
            raise _user_error(
                f"unknown preprocess key(s) {bad}; valid: image_size, mean, std, interpolation, resize_mode"
            )
        if base_pp is None:
            lacking = [k for k in ("mean", "std", "interpolation", "resize_mode") if k not in pp_raw]
            if lacking:
                raise _user_error(
                    f"preprocess lacks {lacking}: with no known tag or open_clip_config.json nothing else states them"
                )
            start = {"image_size": size}
        else:
            start = base_pp.to_dict()
        try:
            pp = Preprocess.from_dict({**start, **pp_raw})
        except (TypeError, ValueError) as exc:
            raise _user_error(f"preprocess: {exc}") from None
        if base_pp is not None:
            diff = base_pp.differences(pp)
            if diff:
                raise _user_error(f"preprocess disagrees with {base_what}: {'; '.join(diff)}")
    if pp.image_size != size:
        raise _user_error(f"preprocess image_size {pp.image_size} but the {arch} model takes {size}")
    dim = raw.get("embed_dim")
    cfg_dim = int(model_cfg["embed_dim"])
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise _user_error(f"embed_dim must be a positive int, got {dim!r}")
        if dim != cfg_dim:
            raise _user_error(f"embed_dim {dim} but the {arch} config says {cfg_dim}")
    quick = known_entry.quick_gelu if known_entry is not None else bool(model_cfg.get("quick_gelu", False))
    if known_entry is None and oc_config is not None:
        quick = bool((oc_config.get("model_cfg") or {}).get("quick_gelu", quick))
    return ModelEntry(
        name=f"{arch}/{tag}" if tag else arch,
        arch=arch,
        pretrained=tag,
        embed_dim=cfg_dim,
        preprocess=pp,
        quick_gelu=quick,
        hf_hub=known_entry.hf_hub if known_entry is not None else None,
        url=known_entry.url if known_entry is not None else None,
        files=known_entry.files if known_entry is not None else HF_FILES,
        config=config,
        source="user",
    )


def ensure_open_clip_config(entry: ModelEntry) -> str:
    """Make the entry's architecture known to open_clip (custom JSON configs) and return the config name to
    build. Weights that need QuickGELU use open_clip's "-quickgelu" twin of the architecture where there is one
    (load_clip also forces QuickGELU on the build, for architectures without a twin)."""
    import open_clip

    if entry.config is not None and entry.arch not in open_clip.list_models():
        if entry.config.stem != entry.arch:
            raise ValueError(
                f"config file {entry.config} must be named {entry.arch}.json (open_clip names "
                "architectures after their file)"
            )
        open_clip.add_model_config(entry.config)
    if entry.arch not in open_clip.list_models():
        raise KeyError(f"open_clip has no model config {entry.arch!r} (registry entry {entry.name!r})")
    twin = f"{entry.arch}-quickgelu"
    if entry.quick_gelu and twin in open_clip.list_models():
        return twin
    return entry.arch
