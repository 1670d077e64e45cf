"""The CLIP model registry: registry.json entries binding an open_clip architecture, a pretrained tag, the
embedding size, where the weights live, and the preprocessing those weights were trained with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mmcurate.models.preprocess import Preprocess

__all__ = ["ModelEntry", "get_entry", "list_models", "entries", "REGISTRY_PATH", "ensure_open_clip_config"]

REGISTRY_PATH = Path(__file__).with_name("registry.json")


@dataclass(frozen=True)
class ModelEntry:
    name: str  # "arch/tag", or the arch for a config without released weights
    arch: str  # open_clip architecture (model config name)
    pretrained: str | None  # open_clip pretrained tag; None for architectures without released weights
    embed_dim: int
    preprocess: Preprocess
    quick_gelu: bool = False  # OpenAI-trained weights need QuickGELU (open_clip's "-quickgelu" configs)
    hf_hub: str | None = None  # "org/repo" on the Hugging Face hub
    url: str | None = None  # direct download URL (open_clip caches these under ~/.cache/clip)
    files: tuple = ()  # weight file names in preference order
    config: Path | None = None  # our own open_clip JSON model config (custom architectures)
    default: bool = False

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
    return _load()


def list_models() -> list[str]:
    return [e.name for e in entries()]


def get_entry(name: str) -> ModelEntry:
    """An entry by its name ("ViT-B-32/openai"), or by architecture alone for the architecture's default."""
    if isinstance(name, ModelEntry):
        return name
    for e in entries():
        if e.name == name:
            return e
    for e in entries():
        if e.arch == name and e.default:
            return e
    raise KeyError(
        f"unknown CLIP model {name!r}; known: {list_models()} (a bare architecture name selects its default entry)"
    )


def ensure_open_clip_config(entry: ModelEntry) -> str:
    """Make the entry's architecture known to open_clip (custom JSON configs) and return the config name to
    build. OpenAI weights use open_clip's "-quickgelu" twin of the architecture."""
    import open_clip

    if entry.config is not None and entry.arch not in open_clip.list_models():
        if entry.config.stem != entry.arch:
            raise ValueError(
                f"config file {entry.config} must be named {entry.arch}.json (open_clip names "
                "architectures after their file)"
            )
        open_clip.add_model_config(entry.config)
    arch = f"{entry.arch}-quickgelu" if entry.quick_gelu else entry.arch
    if arch not in open_clip.list_models():
        raise KeyError(f"open_clip has no model config {arch!r} (registry entry {entry.name!r})")
    return arch
