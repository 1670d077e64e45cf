"""COCO captions (format `coco`): a `captions_*.json` object with `images` [{id, file_name, width, height, ...}]
and `annotations` [{id, image_id, caption}].

- Images are read from `image_root`, the input root (nothing outside it is read: a file_name that resolves outside
  is `path_outside_root` unless allow_outside_root). Default: for `captions_<split>.json`, the folder `<split>`
  beside the JSON's folder (`coco/annotations/captions_train2017.json` -> `coco/train2017`), else `<split>` inside
  the JSON's folder, else the JSON's folder itself.
- One sample per image, keyed by its COCO id: caption = the caption of its annotation with the lowest id; meta =
  the image record (`id` as `coco_id`) plus `captions` (every caption, by annotation id) and `annotation_ids`.
  An image without annotations is a sample with caption null. `per_caption: true`: one sample per annotation,
  keyed `<image id>_<annotation id>`, with `annotation_id` in meta (an image without annotations still gives one
  sample, keyed by its id).
- Samples are in image-id order (then annotation id); shards are fixed chunks: `FILE@00000` covers [0, shard_size).
- An image whose file is not on disk is a row with image null (the integrity stage rejects it, missing_image). An
  annotation whose image_id is not among the images, or a malformed image or annotation record, is a
  `bad_annotation` reject (keyed `annotation_<id>` / `image_<index>`). A file whose annotations hold no caption at
  all (an instances_*.json) is an error. Repeated image ids follow on_duplicate_key.
"""

from __future__ import annotations

import json
import os
import re

from mmcurate.io.base import DEFAULT_MAX_IMAGE_BYTES, check_flag
from mmcurate.io.image_files import Entry, ImageFileReader, split_ext
from mmcurate.io.keys import short_repr
from mmcurate.io.table import meta_text, missing_images_note

_SPLIT_RE = re.compile(r"^captions_(.+)\.json$", re.IGNORECASE)


def default_image_root(path: str) -> str:
    """The image folder of a COCO captions file when image_root is not given (see the module docstring)."""
    folder = os.path.dirname(os.path.abspath(path))
    m = _SPLIT_RE.match(os.path.basename(path))
    if m:
        for candidate in (os.path.join(os.path.dirname(folder), m.group(1)), os.path.join(folder, m.group(1))):
            if os.path.isdir(candidate):
                return candidate
    return folder


def _valid_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool) and value != ""


def _id_order(value) -> tuple:
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


class CocoReader(ImageFileReader):
    format = "coco"
    what = "COCO captions file"
    _CACHE_ATTRS = ("_entries", "_samples", "_images")

    def __init__(
        self,
        path,
        *,
        image_root: str | os.PathLike | None = None,
        per_caption: bool = False,
        shard_size: int = 1000,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        allow_outside_root: bool = False,
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            if os.path.exists(self.path):
                raise ValueError(f"COCO captions file {self.path!r} is not a regular file")
            raise FileNotFoundError(f"COCO captions file {self.path!r} does not exist")
        root = os.fspath(image_root) if image_root is not None else default_image_root(self.path)
        if image_root is not None and not os.path.isdir(root):
            raise FileNotFoundError(f"image_root {root!r} is not a directory")
        self.per_caption = check_flag("per_caption", per_caption)
        self._init_files(
            self.path,
            root,
            shard_size=shard_size,
            on_duplicate_key=on_duplicate_key,
            max_image_bytes=max_image_bytes,
            allow_outside_root=allow_outside_root,
        )
        self._images: list[dict] | None = None  # each listed image's meta (without captions)
        self._samples: list[tuple[int, list, int | None]] | None = None  # (image index, its annotations, chosen)
        self._n_annotations = self._n_bad = 0
        self.entries()  # parse now: a malformed file fails when the reader is opened, not mid-run

    def _parse(self) -> tuple[list, list]:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
            except RecursionError:
                raise ValueError(f"{self.path}: JSON nested too deep to parse") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError(
                f"{self.path}: not a COCO captions file (expected an object with 'images' and 'annotations' lists)"
            )
        annotations = data.get("annotations")
        if not isinstance(annotations, list):
            raise ValueError(f"{self.path}: 'annotations' is missing or not a list")
        if annotations and not any(isinstance(a, dict) and "caption" in a for a in annotations):
            raise ValueError(
                f"{self.path}: no annotation has a 'caption' (an instances_*.json?); give the captions_*.json file"
            )
        return data["images"], annotations

    def _list(self) -> list[Entry]:
        images, annotations = self._parse()
        keys = self._keys()
        rejects: list[Entry] = []
        valid: list[tuple[object, int]] = []  # (id, index) of the usable image records
        for i, img in enumerate(images):
            if not isinstance(img, dict) or not _valid_id(img.get("id")) or not isinstance(img.get("file_name"), str):
                detail = f"image record {i} needs an 'id' (number or string) and a 'file_name' string"
                rejects.append(Entry(keys.substitute(f"image_{i}"), None, None, None, "bad_annotation", detail))
                continue
            valid.append((img["id"], i))
        valid.sort(key=lambda t: _id_order(t[0]))
        captions: dict[object, list[tuple[object, str]]] = {}
        index_of = {image_id: None for image_id, _ in valid}
        self._n_annotations = len(annotations)
        for j, ann in enumerate(annotations):
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            name = f"annotation_{ann_id if _valid_id(ann_id) else f'index_{j}'}"
            if not isinstance(ann, dict) or not _valid_id(ann_id) or not isinstance(ann.get("caption"), str):
                why = f"annotation {j} needs an 'id' and a 'caption' string"
            elif not _valid_id(ann.get("image_id")) or ann["image_id"] not in index_of:
                why = f"annotation {ann_id!r}: image_id {short_repr(ann.get('image_id'))} is not among the images"
            else:
                captions.setdefault(ann["image_id"], []).append((ann_id, ann["caption"]))
                continue
            key, _, _ = keys.claim_or_reject(name)
            rejects.append(Entry(key, None, None, None, "bad_annotation", why))
        self._n_bad = len(rejects)

        entries: list[Entry] = []
        self._images, self._samples = [], []
        for image_id, i in valid:
            img = images[i]
            anns = sorted(captions.get(image_id, ()), key=lambda t: _id_order(t[0]))
            rel = img["file_name"].replace("\\", "/")
            ext = split_ext(rel)[1]
            meta = {"coco_id": image_id, **{k: v for k, v in img.items() if k != "id"}}
            self._images.append(meta)
            image_index = len(self._images) - 1
            chosen = range(len(anns)) if self.per_caption and anns else [0 if anns else None]
            for c in chosen:
                key = str(image_id) if c is None or not self.per_caption else f"{image_id}_{anns[c][0]}"
                key, reason, detail = keys.claim_or_reject(key, f"image record {i}")
                self._samples.append((image_index, anns, c))
                row = len(self._samples) - 1
                entries.append(Entry(key, None if reason else rel, ext, row, reason, detail))
        return entries + rejects

    def _text(self, root_real: str, entry: Entry):
        image_index, anns, chosen = self._samples[entry.row]
        meta = dict(self._images[image_index])
        meta["captions"] = [c for _, c in anns]
        meta["annotation_ids"] = [a for a, _ in anns]
        if self.per_caption and chosen is not None:
            meta["annotation_id"] = anns[chosen][0]
        text, reason, detail = meta_text(meta, f"image {meta['coco_id']!r}")
        if reason is not None:
            return None, "{}", reason, detail
        return (anns[chosen][1] if chosen is not None else None), text, None, None

    def entries(self) -> list[Entry]:
        if self._entries is None or self._samples is None:
            self._entries = self._list()
        return self._entries

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "shards": len(self.shards()),
            "samples": len(self.entries()),
            "options": {"image_root": self.root, "per_caption": self.per_caption, **self._file_options()},
        }

    def start_notes(self) -> list[str]:
        entries = self.entries()
        notes = []
        if entries and not self._n_annotations:
            notes.append(f"COCO file {self.path!r} lists {len(entries):,} images but no caption annotations")
        if self._n_bad:
            notes.append(
                f"{self._n_bad:,} image or annotation records of {self.path!r} are malformed or name an image id "
                f"not among the images: they will be rejected as bad_annotation"
            )
        notes.extend(missing_images_note(self.root, entries, f"images of {self.path!r}", "image_root"))
        return notes
