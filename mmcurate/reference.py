"""Reference sets for benchmark decontamination: the images a model will be evaluated on, indexed once and reused by
every run's `decontaminate` step.

An index is a directory:
- `reference.json`: the sets (name -> source, images, unreadable), the hash each column holds (fingerprints, as
  pipeline.reuse records them) and, when embedded, the CLIP model;
- `codes.parquet`: one row per readable reference image: set, id (its key in the source), sha256 of the original
  bytes, the fast pHash (integrity's), PDQ-256 of the image's 8 dihedral transforms (rotations and flips of the
  decoded pixels, hashed each: closer to a flipped copy's own hash than PDQ's DCT-derived variants, which land
  14-16 bits off) with the image's PDQ quality and the exact pHash of each transform (the verifying signal), and
  optionally the CLIP image embedding.

Matching a sample (ReferenceIndex.match), the first kind that matches is reported, with its distance:
- exact: an equal sha256;
- pdq: the sample's PDQ within `pdq_threshold` bits of one of a reference's 8 transforms, both images' PDQ quality
  at least `min_quality` (flat, blank and placeholder images hash unreliably), and, when `verify_phash` is set,
  the sample's pHash within that many bits of the same transform's pHash;
- perceptual: the fast pHash within `max_distance` bits;
- semantic: a CLIP cosine >= `min_cosine` (only when the index and the run embed with the same model).
Candidates are found by exact Hamming radius search (mmcurate.ops.HammingRangeIndex: multi-index hashing, built
once per process on the first batch and kept), and the best one is reported: the smallest (distance, row) among
the candidates within the radius, for pdq among those that pass the pHash verification (so a nearer transform
that fails it does not hide a farther one that passes). Against 1M references on 2 shared cores this matches
about 1,000 samples/s, 25x the brute force (benchmarks/README.md, bench_decontaminate_scale.py).

The sources are read with the run's readers (io.open_reader: tar shards, folders, list files, HF Parquet, COCO...),
so anything a run can curate can be a reference set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference.json"
CODES_FILE = "codes.parquet"
INDEX_VERSION = 2


#: The 8 dihedral transforms of a reference image, in pdqhash.compute_dihedral's order.
TRANSFORMS = ("identity", "rot90", "rot180", "rot270", "flip_x", "flip_y", "transpose", "anti_transpose")


def dihedral(img: np.ndarray) -> list[np.ndarray]:
    """The 8 transforms of an HxW[xC] image (TRANSFORMS' order; flip_x mirrors about the x axis, as PDQ names it),
    each a contiguous copy."""
    return [
        np.ascontiguousarray(t)
        for t in (
            img,
            np.rot90(img, 1),
            np.rot90(img, 2),
            np.rot90(img, 3),
            img[::-1],
            img[:, ::-1],
            np.swapaxes(img, 0, 1),
            np.swapaxes(np.rot90(img, 2), 0, 1),
        )
    ]


def dihedral_rgba(img: np.ndarray) -> list[np.ndarray]:
    """dihedral() of an HxWx3 image as opaque HxWx4 RGBA arrays: the pixels are moved as 4-byte words, which numpy
    copies several times faster than 3-byte ones (the transposes most), and ops.pdq / ops.phash hash an opaque
    RGBA image exactly as its RGB pixels."""
    h, w, _ = img.shape
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = img
    rgba[..., 3] = 255
    return [t.view(np.uint8).reshape(*t.shape, 4) for t in dihedral(rgba.view(np.uint32).reshape(h, w))]


@dataclass
class Match:
    row: int  # the reference row
    via: str  # "exact" | "pdq" | "perceptual" | "semantic"
    value: float  # 0 (exact), the Hamming distance, or the cosine
    transform: str | None = None  # pdq: the reference's transform that matched


@dataclass
class PdqQuery:
    """The samples' side of PDQ matching: codes uint8[n, 32] and quality from one exact decode (ops.pdq_bytes with
    phash=True gives the pHash of the same pixels), and the rule's settings."""

    codes: np.ndarray
    quality: np.ndarray
    phash: np.ndarray
    valid: np.ndarray
    threshold: int
    min_quality: int
    verify_phash: int | None


class ReferenceIndex:
    """A loaded index (module docstring). Held per reference: its codes (PDQ of the 8 transforms 256 B, their
    exact pHash 64 B, the fast pHash 8 B, quality 2 B), the digest 32 B + 16 B of sorted lookup keys, its set and
    id as Arrow strings (~400 B in all, memory_bytes), and the Hamming search indexes built on first use
    (ops.HammingRangeIndex: about 520 B for the PDQ transforms and 20 B for a pHash at 1M references)."""

    def __init__(self, path, info: dict, table):
        self.path = Path(path)
        self.info = info
        n = table.num_rows
        self._set = table.column("set").combine_chunks().dictionary_encode()
        self._id = table.column("id").combine_chunks()
        self._sha = _hex_digests(table.column("sha256"))
        # the digests' first 8 bytes as native integers (a byte-swapped array would be converted per search),
        # sorted stably: equal digests keep their row order
        key = self._sha[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
        self._sha_order = np.argsort(key, kind="stable")
        self._sha_key = key[self._sha_order]
        self.phash = _column_array(table.column("phash"), np.uint64)
        # PDQ of the 8 transforms, as one database of 8n codes (row r's transform k at 8r + k); pHash likewise.
        self.pdq = _fixed_width(table.column("pdq"), 8 * 32).reshape(8 * n, 32)
        self.pdq_quality = _column_array(table.column("pdq_quality"), np.int16)
        self.pdq_phash = _fixed_width(table.column("pdq_phash"), 8 * 8).view("<u8").reshape(8 * n)
        self.phash_exact = np.ascontiguousarray(self.pdq_phash[0::8])  # each image's own exact pHash
        self._searches: dict = {}  # (what, radius) -> ops.HammingRangeIndex, built once per process
        self.embeddings = None
        if "embedding" in table.column_names:
            from mmcurate.stages.embeddings import embedding_matrix

            x, ok, _ = embedding_matrix(table.column("embedding"), name="embedding")
            if not ok.all():
                raise ValueError(f"reference index {str(path)!r}: unusable embeddings; rebuild it")
            self.embeddings = x

    def _search(self, what, codes: np.ndarray, radius: int, num_threads):
        """The radius search over `codes` (named by `what`), built on first use and kept: its multi-index costs
        seconds at millions of references, a batch's search milliseconds."""
        from mmcurate.ops import HammingRangeIndex

        key = (what, radius)
        if key not in self._searches:
            self._searches[key] = HammingRangeIndex(codes, radius, num_threads=num_threads)
        return self._searches[key]

    def _match_pdq(self, out: list, q: PdqQuery, num_threads) -> None:
        todo = np.flatnonzero(np.array([m is None for m in out]) & q.valid & (q.quality >= q.min_quality))
        if not len(todo):
            return
        # One search structure over all 8n transform codes, whatever the quality floor: candidates of references
        # below it are dropped here (no 256 B per reference copy of the codes that pass).
        search = self._search("pdq", self.pdq, q.threshold, num_threads)
        pairs, dist = search.search(q.codes[todo], num_threads=num_threads)
        variant = pairs[:, 1]
        keep = self.pdq_quality[variant // 8] >= q.min_quality
        if q.verify_phash is not None:  # every candidate within the threshold is verified, not the nearest only
            keep &= np.bitwise_count(q.phash[todo[pairs[:, 0]]] ^ self.pdq_phash[variant]) <= q.verify_phash
        pairs, dist, variant = pairs[keep], dist[keep], variant[keep]
        for k in _nearest(pairs[:, 0], dist, variant):
            out[int(todo[pairs[k, 0]])] = Match(
                int(variant[k]) // 8, "pdq", float(dist[k]), transform=TRANSFORMS[variant[k] % 8]
            )

    @staticmethod
    def read_info(path) -> dict:
        """reference.json of the index at `path`, checked (FileNotFoundError / ValueError: one line, the fix)."""
        p = Path(os.path.expanduser(str(path)))
        if not (p / REFERENCE_FILE).is_file() or not (p / CODES_FILE).is_file():
            raise FileNotFoundError(
                f"{str(p)!r} is not a reference index (no {REFERENCE_FILE}/{CODES_FILE}); "
                "build one with `mmcurate reference build --set NAME=PATH --out DIR`"
            )
        info = json.loads((p / REFERENCE_FILE).read_text())
        if info.get("version") != INDEX_VERSION:
            raise ValueError(f"reference index {str(p)!r} has version {info.get('version')}; rebuild it")
        return info

    @classmethod
    def load(cls, path, embeddings: bool = True) -> ReferenceIndex:
        """The index at `path`; embeddings=False leaves the CLIP column unread (no semantic matching)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        info = cls.read_info(path)
        p = Path(os.path.expanduser(str(path)))
        columns = [c for c in pq.read_schema(p / CODES_FILE).names if embeddings or c != "embedding"]
        index = cls(p, info, pq.read_table(p / CODES_FILE, columns=columns))
        pa.default_memory_pool().release_unused()  # the file's decoded row groups, now copied into the index
        return index

    def __len__(self) -> int:
        return len(self._id)

    @property
    def memory_bytes(self) -> int:
        """Bytes the index holds: its codes, digests, names and the search structures built so far (not counting
        memory an allocator keeps after a load)."""
        arrays = (self._sha, self._sha_key, self._sha_order, self.phash, self.pdq, self.pdq_quality, self.pdq_phash)
        held = sum(a.nbytes for a in arrays) + self.phash_exact.nbytes + self._set.nbytes + self._id.nbytes
        held += 0 if self.embeddings is None else self.embeddings.nbytes
        return held + sum(s.memory_bytes for s in self._searches.values())

    @property
    def embedding_model(self):
        return self.info.get("embedding_model")

    def set_name(self, row: int) -> str:
        return self._set[row].as_py()

    def id(self, row: int) -> str:
        return self._id[row].as_py()

    def label(self, row: int) -> str:
        return f"{self.set_name(row)}:{self.id(row)}"

    def _rows_of_digests(self, digests: list) -> list[int | None]:
        """Per sha256 (hex, or None), the first reference row with that digest, or None: one sorted-key search for
        the batch, the full digest compared only where the first 8 bytes agree."""
        want = np.zeros((len(digests), 32), np.uint8)
        for i, d in enumerate(digests):
            if isinstance(d, str) and len(d) == 64:
                try:
                    want[i] = np.frombuffer(bytes.fromhex(d), np.uint8)
                except ValueError:
                    pass  # not hex: no reference has it
        keys = want[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
        lo, hi = np.searchsorted(self._sha_key, keys, "left"), np.searchsorted(self._sha_key, keys, "right")
        out: list[int | None] = [None] * len(digests)
        for i in np.flatnonzero(hi > lo).tolist():
            for row in self._sha_order[lo[i] : hi[i]].tolist():  # ascending rows
                if np.array_equal(self._sha[row], want[i]):
                    out[i] = int(row)
                    break
        return out

    def match(
        self,
        sha256: list,
        phash: np.ndarray | None,
        phash_valid: np.ndarray | None,
        embeddings: np.ndarray | None,
        max_distance: int | None,
        min_cosine: float | None,
        num_threads: int | None = None,
        pdq: PdqQuery | None = None,
        phash_exact: bool = False,
    ) -> list[Match | None]:
        """Per sample, its first match (exact, pdq, perceptual, semantic: the module docstring) or None.
        phash/embeddings/pdq: None to skip that kind; rows whose phash_valid is False (or whose embedding is all
        zero) are not matched so. phash_exact: the samples' pHashes are exact ones (imagehash's, as
        ops.pdq_bytes(phash=True) gives), matched against the references' exact pHash; else integrity's fast ones."""
        n = len(sha256)
        out: list[Match | None] = [None] * n
        for i, row in enumerate(self._rows_of_digests(sha256)):
            if row is not None:
                out[i] = Match(row, "exact", 0.0)
        if len(self) and pdq is not None:
            self._match_pdq(out, pdq, num_threads)
        if len(self) and phash is not None and max_distance is not None:
            todo = np.flatnonzero(np.array([m is None for m in out]) & phash_valid)
            if len(todo):
                codes = self.phash_exact if phash_exact else self.phash
                search = self._search("phash_exact" if phash_exact else "phash", codes, max_distance, num_threads)
                pairs, dist = search.search(phash[todo], num_threads=num_threads)
                for k in _nearest(pairs[:, 0], dist, pairs[:, 1]):
                    out[int(todo[pairs[k, 0]])] = Match(int(pairs[k, 1]), "perceptual", float(dist[k]))
        if len(self) and embeddings is not None and self.embeddings is not None and min_cosine is not None:
            todo = np.flatnonzero(np.array([m is None for m in out]) & (np.abs(embeddings).sum(axis=1) > 0))
            if len(todo):
                sims = embeddings[todo] @ self.embeddings.T  # unit rows: cosine
                best = sims.argmax(axis=1)
                for k, (i, r) in enumerate(zip(todo.tolist(), best.tolist())):
                    c = float(sims[k, r])
                    if c >= min_cosine:
                        out[i] = Match(int(r), "semantic", round(c, 4))
        return out


def _nearest(query: np.ndarray, dist: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Positions of each query's best candidate: the smallest (distance, row), as hamming_knn's ties go."""
    if not len(query):
        return np.zeros(0, np.int64)
    order = np.lexsort((row, dist, query))
    first = np.ones(len(order), bool)
    first[1:] = query[order[1:]] != query[order[:-1]]
    return order[first]


def _fixed_width(column, width: int) -> np.ndarray:
    """uint8[n * width]: the values of a fixed_size_binary(width) column, without a Python object per row (and
    without a copy when it is one chunk)."""
    import pyarrow as pa

    parts = []
    for arr in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        if not pa.types.is_fixed_size_binary(arr.type) or arr.type.byte_width != width or arr.null_count:
            raise ValueError(f"reference index: column of {arr.type} with {arr.null_count} nulls; rebuild the index")
        if len(arr):
            data = np.frombuffer(arr.buffers()[1], np.uint8)
            parts.append(data[arr.offset * width : (arr.offset + len(arr)) * width])
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _column_array(column, dtype) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=dtype)


def _hex_digests(column) -> np.ndarray:
    """uint8[n, 32]: the sha256 hex strings as bytes, parsed in numpy (no Python string per row)."""
    import pyarrow.compute as pc

    arr = pc.utf8_lower(column.combine_chunks())
    n = len(arr)
    if not n:
        return np.zeros((0, 32), np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + n + 1]
    chars = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    digit, letter = (chars >= ord("0")) & (chars <= ord("9")), (chars >= ord("a")) & (chars <= ord("f"))
    if arr.null_count or np.any(np.diff(offsets) != 64) or not np.all(digit | letter):
        raise ValueError("reference index: a sha256 that is not 64 hex digits; rebuild the index")
    nibble = np.where(letter, chars - (ord("a") - 10), chars - ord("0")).astype(np.uint8).reshape(n, 64)
    return (nibble[:, 0::2] << 4) | nibble[:, 1::2]


#: Reference rows per Parquet row group: the build holds at most this many rows of codes in memory.
ROW_GROUP_ROWS = 16_384
#: Bytes of transformed pixels hashed in one call (8 copies of each decoded image): bounds the build's memory.
TRANSFORM_BYTES = 256 << 20


def hash_transforms(images: list[np.ndarray], num_threads: int | None = None):
    """(PDQ uint8[n, 8 * 32], PDQ quality int16[n], exact pHash uint64[n, 8]) of each image's 8 transforms
    (TRANSFORMS' order), hashed in calls of at most TRANSFORM_BYTES of pixels: batched for the threads, bounded
    for memory. The transforms are copied (dihedral_rgba): strided views hash the same but read memory across
    rows, and the kernels are slower on them than numpy's copy of 4-byte pixels."""
    from mmcurate.ops import pdq, phash

    n = len(images)
    codes = np.zeros((n, 8 * 32), np.uint8)
    quality = np.zeros(n, np.int16)
    phashes = np.zeros((n, 8), np.uint64)
    start = 0
    while start < n:
        end, size = start, 0
        while end < n and (end == start or size + 32 * images[end].shape[0] * images[end].shape[1] <= TRANSFORM_BYTES):
            size += 32 * images[end].shape[0] * images[end].shape[1]  # 8 RGBA copies
            end += 1
        variants = [t for img in images[start:end] for t in dihedral_rgba(img)]
        hashed = pdq(variants, device="cpu", num_threads=num_threads)
        codes[start:end] = np.asarray(hashed.codes, np.uint8).reshape(end - start, 8 * 32)
        quality[start:end] = np.asarray(hashed.quality)[0::8]
        phashes[start:end] = np.asarray(phash(variants, device="cpu", num_threads=num_threads)).reshape(-1, 8)
        start = end
    return codes, quality, phashes


def build_reference(
    out,
    sets: dict[str, str],
    *,
    clip: dict | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    log=print,
    progress_seconds: float = 30.0,
) -> dict:
    """Index the images of `sets` (name -> input path, read with io.open_reader's format detection) into `out`.
    clip: clip_embed's parameters ({model, weights, device, ...}) to store image embeddings too. Returns the
    reference.json written. Unreadable or image-less samples are counted per set, never indexed.

    Streamed: rows are written as Parquet row groups as the sources are read (memory bounded by ROW_GROUP_ROWS
    rows and TRANSFORM_BYTES of pixels, at any number of images), with a progress line every
    `progress_seconds`. Each image is decoded once in full (its pixels give the 8 transforms, their PDQ and exact
    pHash) and once at a reduced DCT scale for the fast pHash, which a run's samples carry (integrity's
    ops.phash_bytes(exact=False): a different decode, so it cannot come from the full pixels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmcurate.io import open_reader
    from mmcurate.pipeline.reuse import fingerprint

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} is not empty; pass --overwrite to rebuild the index there")
        if not (out / REFERENCE_FILE).is_file():
            raise ValueError(f"{str(out)!r} holds files that are not a reference index; choose an empty directory")
    if not sets:
        raise ValueError("give at least one reference set (NAME=PATH)")
    embed = None
    if clip is not None:
        from mmcurate.pipeline.stage import registry

        embed = registry.create("clip_embed", {**clip, "text": False})
        embed.setup()
    fields = [
        ("set", pa.string()),
        ("id", pa.string()),
        ("sha256", pa.string()),
        ("phash", pa.uint64()),
        ("pdq", pa.binary(8 * 32)),
        ("pdq_quality", pa.int16()),
        ("pdq_phash", pa.binary(8 * 8)),
    ] + ([("embedding", pa.list_(pa.float32()))] if embed is not None else [])
    schema = pa.schema(fields)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info_sets = {}
    try:
        with pq.ParquetWriter(tmp / CODES_FILE, schema) as writer:
            pending: list = []
            for name, path in sets.items():
                reader = open_reader(path)
                n_ok = n_bad = 0
                t0 = last = time.monotonic()
                for shard in reader.shards():
                    for batch in reader.read(shard, batch_size=batch_size):
                        rows, bad = _reference_rows(batch, name, embed, schema)
                        n_ok, n_bad = n_ok + rows.num_rows, n_bad + bad
                        pending.append(rows)
                        if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                            pending = []
                        if time.monotonic() - last >= progress_seconds:
                            last = time.monotonic()
                            log(f"reference set {name}: {n_ok:,} images indexed ({n_ok / (last - t0):,.0f}/s)")
                info_sets[name] = {"source": os.fspath(path), "images": n_ok, "unreadable": n_bad}
                log(f"reference set {name}: {n_ok:,} images indexed, {n_bad:,} unreadable or without an image")
            if pending:
                writer.write_table(pa.concat_tables(pending))
        info = {
            "version": INDEX_VERSION,
            "sets": info_sets,
            "columns": {
                "sha256": fingerprint("sha256"),
                "phash": fingerprint("phash", exact=False),
                "pdq": fingerprint("pdq", exact=True, dihedral="transformed pixels"),
                "pdq_phash": fingerprint("phash", exact=True),
            },
            "embedding_model": embed.column_fingerprints()["image_embedding"] if embed is not None else None,
        }
        (tmp / REFERENCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)  # checked above: empty, or an index that --overwrite replaces
    tmp.rename(out)
    return info


def _reference_rows(batch, name: str, embed, schema):
    """(the index rows of a reader batch's readable images, how many samples were not indexed)."""
    import pyarrow as pa

    from mmcurate.ops import decode_images, phash_bytes
    from mmcurate.stages.embeddings import embedding_matrix

    images = batch.column("image").to_pylist()
    keys = batch.column("key").to_pylist()
    fast = phash_bytes([b or b"" for b in images], exact=False)  # integrity's pHash (and the decode statuses)
    ok = np.array([b is not None for b in images], bool) & (np.asarray(fast.status) == 0)
    if "read_reason" in batch.column_names:
        ok &= np.asarray(batch.column("read_reason").is_null().to_numpy(zero_copy_only=False))
    emb = None
    if embed is not None and ok.any():
        res = embed.process(batch.filter(pa.array(ok)))
        vectors, usable, _ = embedding_matrix(res.kept.column("image_embedding"))
        emb = dict(zip((k for k, u in zip(res.kept.column("key").to_pylist(), usable) if u), vectors))
    todo = np.flatnonzero(ok).tolist()
    pixels = decode_images([images[i] for i in todo], mode="RGB").images if todo else []
    usable = [(i, px) for i, px in zip(todo, pixels) if px is not None and (emb is None or keys[i] in emb)]
    keep = [i for i, _ in usable]
    codes, quality, phashes = hash_transforms([px for _, px in usable])
    columns = {
        "set": [name] * len(keep),
        "id": [keys[i] for i in keep],
        "sha256": [hashlib.sha256(images[i]).hexdigest() for i in keep],
        "phash": np.asarray(fast.codes, np.uint64)[keep],
        "pdq": [r.tobytes() for r in codes],
        "pdq_quality": quality,
        "pdq_phash": [r.astype("<u8").tobytes() for r in phashes],
    }
    if embed is not None:
        columns["embedding"] = [emb[keys[i]].tolist() for i in keep]
    return pa.table(columns, schema=schema), len(images) - len(keep)
