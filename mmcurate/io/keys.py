"""Sample keys and how they map to tar member names.

WebDataset's rule: a member `DIR/BASE.EXT` belongs to the sample whose key is `DIR/BASE`, where BASE
ends at the first dot of the file name. Keys therefore keep their directories (`cats/001`), and a key
whose last component contains a dot (a folder image `img.v2.jpg`, a LLaVA id `a.b`) cannot be written
verbatim. The writer percent-escapes exactly the two characters that matter in the last component
('%' -> %25, '.' -> %2E) and the WebDataset reader undoes it, so every key survives a write/read round
trip unchanged. Keys from img2dataset (digits) and most datasets contain neither and look the same in
the tar.
"""
from __future__ import annotations

import json
import re

# WebDataset's own split (webdataset.tariterators.base_plus_ext).
_MEMBER_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_UNESCAPE_RE = re.compile(r"%(25|2E)")
_UNESCAPED = {"25": "%", "2E": "."}

# Suffixes (lower case) taken as the sample's image. Formats the decoder cannot read are still images:
# they reach the integrity stage and are rejected as "unsupported" instead of looking like a missing image.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jp2", "avif", "heic", "heif")

# What a reader does when the same key appears twice in one shard / input.
DUPLICATE_POLICIES = ("error", "suffix")


class DuplicateKeyError(ValueError):
    """Two samples of one shard (or one folder / LLaVA file) share a key."""


def split_member_name(name: str) -> tuple[str | None, str | None]:
    """Tar member name -> (raw key, lower-case suffix) by WebDataset's rule; (None, None) if it has no suffix."""
    if name.startswith("./"):
        name = name[2:]
    m = _MEMBER_RE.match(name)
    if not m:
        return None, None
    return m.group(1), m.group(2).lower()


def _split_last(key: str) -> tuple[str, str]:
    head, sep, last = key.rpartition("/")
    return head + sep, last


def key_to_member_base(key: str) -> str:
    """The member name prefix that reads back as `key` (directories kept, last component escaped)."""
    head, last = _split_last(key)
    return head + last.replace("%", "%25").replace(".", "%2E")


def member_base_to_key(base: str) -> str:
    head, last = _split_last(base)
    if "%" not in last:
        return base
    return head + _UNESCAPE_RE.sub(lambda m: _UNESCAPED[m.group(1)], last)


def check_key(key) -> str:
    """Raise ValueError unless `key` can name tar members: a non-empty relative POSIX path of non-empty
    components, none of them '.' or '..', without control characters."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid sample key {key!r}: must be a non-empty string")
    if key.startswith("/") or key.endswith("/") or "\\" in key:
        raise ValueError(f"invalid sample key {key!r}: must be a relative POSIX path ('a/b', not '/a', 'a/' or 'a\\b')")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid sample key {key!r}: empty, '.' or '..' path component")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"invalid sample key {key!r}: contains control characters")
    return key


class KeyRegistry:
    """Keys seen in one shard; applies the duplicate policy.

    "error" (default): a repeated key raises DuplicateKeyError — the samples cannot be told apart
    downstream (dedup, rejects and resume all join on the key). "suffix": the repeat is kept as a
    separate sample keyed `KEY~1` (`~2`, ...), so nothing is lost and keys stay unique.
    """

    def __init__(self, policy: str, where: str):
        if policy not in DUPLICATE_POLICIES:
            raise ValueError(f"on_duplicate_key={policy!r}; valid: {', '.join(DUPLICATE_POLICIES)}")
        self.policy = policy
        self.where = where
        self._seen: set[str] = set()

    def claim(self, key: str, detail: str = "") -> str:
        try:
            check_key(key)
        except ValueError as exc:
            raise ValueError(f"{self.where}: {exc}{' (' + detail + ')' if detail else ''}") from None
        if key not in self._seen:
            self._seen.add(key)
            return key
        if self.policy == "error":
            raise DuplicateKeyError(
                f"{self.where}: duplicate sample key {key!r}{' (' + detail + ')' if detail else ''}; "
                f"pass on_duplicate_key='suffix' to keep the repeats as {key}~1, {key}~2, ...")
        n = 1
        while f"{key}~{n}" in self._seen:
            n += 1
        renamed = f"{key}~{n}"
        self._seen.add(renamed)
        return renamed


INVALID_JSON_FIELD = "__invalid_json__"


def normalize_meta(text: str | None) -> str:
    """Per-sample metadata as JSON-object text.

    A valid JSON object is kept verbatim (original formatting and key order). Anything else (a parse
    error, a list, a bare string) is kept whole, as `{"__invalid_json__": "<the original text>"}`: every
    stage may json.loads the meta, and a stage that cares can reject on the marker.
    """
    if text is None or not text.strip():
        return "{}"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return text
    return json.dumps({INVALID_JSON_FIELD: text}, ensure_ascii=False)


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"))


def sniff_image_ext(data: bytes) -> str | None:
    """The suffix an image's magic bytes say it has (for paths without a usable extension), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)
