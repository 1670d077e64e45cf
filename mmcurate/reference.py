"""Reference sets for benchmark decontamination: the images a model will be evaluated on, indexed once and reused by
every run's `decontaminate` step.

An index is a directory:
- `reference.json`: the sets (name -> source, images, unreadable), the hash each column holds (fingerprints, as
  pipeline.reuse records them) and, when embedded, the CLIP model;
- `codes.parquet`: one row per readable reference image: set, id (its key in the source), sha256 of the original
  bytes, the fast pHash (integrity's), and optionally the CLIP image embedding.

Matching a sample (ReferenceIndex.match): an equal sha256 (exact), a pHash within `max_distance` bits (perceptual;
the nearest reference by brute-force Hamming search, mmcurate.ops.hamming_knn: about 0.1 s per 256 samples
against 1M references on 2 cores), or a CLIP cosine >= `min_cosine` (semantic; only when the index and the run
embed with the same model). The first kind that matches is reported, with its distance.

The sources are read with the run's readers (io.open_reader: tar shards, folders, list files, HF Parquet, COCO...),
so anything a run can curate can be a reference set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference.json"
CODES_FILE = "codes.parquet"
INDEX_VERSION = 1


@dataclass
class Match:
    row: int  # the reference row
    via: str  # "exact" | "perceptual" | "semantic"
    value: float  # 0 (exact), the Hamming distance, or the cosine


class ReferenceIndex:
    """A loaded index (module docstring)."""

    def __init__(self, path, info: dict, table):
        self.path = Path(path)
        self.info = info
        self.set_names = table.column("set").to_pylist()
        self.ids = table.column("id").to_pylist()
        digests = table.column("sha256").to_pylist()
        self._by_sha = {}
        for row, d in enumerate(digests):
            self._by_sha.setdefault(d, row)
        self.phash = np.asarray(table.column("phash").to_numpy(zero_copy_only=False), dtype=np.uint64)
        self.embeddings = None
        if "embedding" in table.column_names:
            from mmcurate.stages.embeddings import embedding_matrix

            x, ok, _ = embedding_matrix(table.column("embedding"), name="embedding")
            if not ok.all():
                raise ValueError(f"reference index {str(path)!r}: unusable embeddings; rebuild it")
            self.embeddings = x

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

    check = read_info  # what a run's pre-flight calls

    @classmethod
    def load(cls, path) -> ReferenceIndex:
        import pyarrow.parquet as pq

        info = cls.read_info(path)
        p = Path(os.path.expanduser(str(path)))
        return cls(p, info, pq.read_table(p / CODES_FILE))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def embedding_model(self):
        return self.info.get("embedding_model")

    def label(self, row: int) -> str:
        return f"{self.set_names[row]}:{self.ids[row]}"

    def match(
        self,
        sha256: list,
        phash: np.ndarray | None,
        phash_valid: np.ndarray | None,
        embeddings: np.ndarray | None,
        max_distance: int | None,
        min_cosine: float | None,
        num_threads: int | None = None,
    ) -> list[Match | None]:
        """Per sample, its first match (exact, then perceptual, then semantic) or None. phash/embeddings: None
        to skip that kind; rows whose phash_valid is False (or whose embedding is all zero) are not matched so."""
        n = len(sha256)
        out: list[Match | None] = [None] * n
        for i, d in enumerate(sha256):
            row = self._by_sha.get(d) if d is not None else None
            if row is not None:
                out[i] = Match(row, "exact", 0.0)
        if len(self) and phash is not None and max_distance is not None:
            todo = np.flatnonzero(np.array([m is None for m in out]) & phash_valid)
            if len(todo):
                from mmcurate.ops import hamming_knn

                dist, idx = hamming_knn(self.phash, 1, queries=phash[todo], device="cpu", num_threads=num_threads)
                for i, d, r in zip(todo.tolist(), dist[:, 0].tolist(), idx[:, 0].tolist()):
                    if 0 <= d <= max_distance:
                        out[i] = Match(int(r), "perceptual", float(d))
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


def build_reference(
    out,
    sets: dict[str, str],
    *,
    clip: dict | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Index the images of `sets` (name -> input path, read with io.open_reader's format detection) into `out`.
    clip: clip_embed's parameters ({model, weights, device, ...}) to store image embeddings too. Returns the
    reference.json written. Unreadable or image-less samples are counted per set, never indexed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmcurate.io import open_reader
    from mmcurate.ops import phash_bytes
    from mmcurate.pipeline.reuse import fingerprint
    from mmcurate.stages.embeddings import embedding_matrix

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} is not empty; pass --overwrite to rebuild the index there")
        if not (out / REFERENCE_FILE).is_file():
            raise ValueError(f"{str(out)!r} holds files that are not a reference index; choose an empty directory")
        shutil.rmtree(out)
    if not sets:
        raise ValueError("give at least one reference set (NAME=PATH)")
    embed = None
    if clip is not None:
        from mmcurate.pipeline.stage import registry

        embed = registry.create("clip_embed", {**clip, "text": False})
        embed.setup()
    cols: dict[str, list] = {"set": [], "id": [], "sha256": [], "phash": [], "embedding": []}
    info_sets = {}
    for name, path in sets.items():
        reader = open_reader(path)
        n_ok = n_bad = 0
        for shard in reader.shards():
            for batch in reader.read(shard, batch_size=batch_size):
                images = batch.column("image").to_pylist()
                codes = phash_bytes([b or b"" for b in images], exact=False)
                status = np.asarray(codes.status)
                ok = np.array([b is not None for b in images]) & (status == 0)
                if "read_reason" in batch.column_names:
                    ok &= np.asarray(batch.column("read_reason").is_null().to_numpy(zero_copy_only=False))
                emb = None
                if embed is not None and ok.any():
                    res = embed.process(batch.filter(pa.array(ok)))
                    vectors, usable, _ = embedding_matrix(res.kept.column("image_embedding"))
                    emb_keys = [k for k, u in zip(res.kept.column("key").to_pylist(), usable) if u]
                    emb = dict(zip(emb_keys, vectors))
                keys = batch.column("key").to_pylist()
                for i in np.flatnonzero(ok).tolist():
                    if emb is not None and keys[i] not in emb:
                        n_bad += 1
                        continue
                    cols["set"].append(name)
                    cols["id"].append(keys[i])
                    cols["sha256"].append(hashlib.sha256(images[i]).hexdigest())
                    cols["phash"].append(int(np.asarray(codes.codes)[i]))
                    cols["embedding"].append(emb[keys[i]].tolist() if emb is not None else None)
                    n_ok += 1
                n_bad += int((~ok).sum())
        info_sets[name] = {"source": os.fspath(path), "images": n_ok, "unreadable": n_bad}
        log(f"reference set {name}: {n_ok:,} images indexed, {n_bad:,} unreadable or without an image")
    table = {
        "set": pa.array(cols["set"], pa.string()),
        "id": pa.array(cols["id"], pa.string()),
        "sha256": pa.array(cols["sha256"], pa.string()),
        "phash": pa.array(cols["phash"], pa.uint64()),
    }
    if embed is not None:
        table["embedding"] = pa.array(cols["embedding"], pa.list_(pa.float32()))
    info = {
        "version": INDEX_VERSION,
        "sets": info_sets,
        "columns": {
            "sha256": fingerprint("sha256"),
            "phash": fingerprint("phash", exact=False),
        },
        "embedding_model": embed.column_fingerprints()["image_embedding"] if embed is not None else None,
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(pa.table(table), tmp / CODES_FILE)
    (tmp / REFERENCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return info
