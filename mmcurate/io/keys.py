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

import hashlib
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
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a tar name that was not UTF-8 comes back with surrogates: Arrow can't store it
        raise ValueError(f"invalid sample key {key!r}: not valid UTF-8") from None
    return key


def short_repr(text, limit: int = 120) -> str:
    """repr() of untrusted text for a one-line message: control characters escaped, long values cut."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 5] + "...'" + f"({len(text)} chars)"


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
        return self._claim_valid(key, detail)

    def claim_or_reject(self, key, detail: str = "") -> tuple[str, str | None, str | None]:
        """(key, None, None) for a usable key (duplicates follow the policy, as in claim); for a key that
        cannot name tar members (`..`, a leading '/', control characters, ...): (a substitute key, "bad_key",
        a one-line detail), so the sample becomes a reject instead of aborting the run."""
        try:
            check_key(key)
        except ValueError:
            digest = hashlib.sha256(str(key).encode("utf-8", "surrogatepass")).hexdigest()[:16]
            return (
                self.substitute(f"__bad_key__{digest}"),
                "bad_key",
                f"invalid sample key {short_repr(key)}: must be a relative POSIX path without '.'/'..' "
                f"components or control characters{' (' + detail + ')' if detail else ''}",
            )
        return self._claim_valid(key, detail), None, None

    def substitute(self, base: str) -> str:
        """A key for a row that stands for something unreadable (a bad key, a shard's damaged tail): `base`,
        or `base~N` when taken; deterministic and unique in this registry whatever the policy."""
        key, n = base, 0
        while key in self._seen:
            n += 1
            key = f"{base}~{n}"
        self._seen.add(key)
        return key

    def _claim_valid(self, key: str, detail: str) -> str:
        if key not in self._seen:
            self._seen.add(key)
            return key
        if self.policy == "error":
            raise DuplicateKeyError(
                f"{self.where}: duplicate sample key {key!r}{' (' + detail + ')' if detail else ''}; "
                f"pass on_duplicate_key='suffix' to keep the repeats as {key}~1, {key}~2, ..."
            )
        n = 1
        while f"{key}~{n}" in self._seen:
            n += 1
        renamed = f"{key}~{n}"
        self._seen.add(renamed)
        return renamed


INVALID_JSON_FIELD = "__invalid_json__"
# Deeper meta is a `bad_meta` reject: stages walk meta recursively (redact_meta), Python's json stops near
# 1,000 levels with RecursionError, and real per-sample metadata is a few levels deep.
MAX_META_DEPTH = 64


def _deeper_than(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # iterative: the check itself must not recurse
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((c, depth + 1) for c in v.values() if isinstance(c, (dict, list)))
        elif isinstance(v, list):
            stack.extend((c, depth + 1) for c in v if isinstance(c, (dict, list)))
    return False


def json_problem(value, text: str | None = None) -> str | None:
    """Why parsed JSON is unusable as sample metadata (nested deeper than MAX_META_DEPTH), else None. `text`
    (the source) lets shallow documents skip the walk."""
    if text is not None and text.count("{") + text.count("[") <= MAX_META_DEPTH:
        return None
    if _deeper_than(value, MAX_META_DEPTH):
        return f"JSON nested deeper than {MAX_META_DEPTH} levels"
    return None


def loads_untrusted(text: str):
    """json.loads for input data: ValueError (with a one-line reason) instead of RecursionError, and for
    documents nested deeper than MAX_META_DEPTH."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_META_DEPTH} levels") from None
    problem = json_problem(value, text)
    if problem:
        raise ValueError(problem)
    return value


def check_meta(text: str | None) -> tuple[str, str | None, str | None]:
    """(meta JSON-object text as normalize_meta gives it, reject reason, detail): a `.json` member nested
    deeper than MAX_META_DEPTH is rejected as "bad_meta" (with meta "{}"), not wrapped, so no stage has to
    walk it."""
    if text is not None and text.count("{") + text.count("[") > MAX_META_DEPTH:
        try:
            loads_untrusted(text)
        except ValueError as exc:
            if "nested deeper" in str(exc):
                return "{}", "bad_meta", f"meta {exc} ({len(text)} chars)"
    return normalize_meta(text), None, None


def normalize_meta(text: str | None) -> str:
    """Per-sample metadata as JSON-object text.

    A valid JSON object is kept verbatim (original formatting and key order). Anything else (a parse
    error, a list, a bare string) is kept whole, as `{"__invalid_json__": "<the original text>"}`: every
    stage may json.loads the meta, and a stage that cares can reject on the marker.
    """
    if text is None or not text.strip():
        return "{}"
    try:
        value = loads_untrusted(text)
    except ValueError:  # includes too deep (see check_meta for the readers' reject)
        value = None
    if isinstance(value, dict):
        return text
    return json.dumps({INVALID_JSON_FIELD: text}, ensure_ascii=False)


_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def sniff_image_ext(data: bytes) -> str | None:
    """The suffix an image's magic bytes say it has (for paths without a usable extension), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)
