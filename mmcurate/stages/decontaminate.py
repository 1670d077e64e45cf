"""decontaminate: remove the training samples that are copies of a benchmark's images (mmcurate.reference).

    - decontaminate: {references: [refs/vqa_test, refs/coco_val], max_distance: 4, min_cosine: 0.95}

Build the reference indexes once (`mmcurate reference build --set NAME=PATH ... --out DIR`); every run reuses them.
The map part matches each sample against every index (ReferenceIndex.match): the same bytes (sha256), a pHash
within ``max_distance`` bits (re-encodes, resizes; null: off), or, when the samples carry CLIP image embeddings
made with the index's model (clip_embed earlier in the recipe, and the index built with the same model), a cosine
>= ``min_cosine`` (null: off). It adds `benchmark_match` (JSON: set, id, kind, distance or cosine) and rejects
nothing; the global step rejects the matched samples with reason ``benchmark_overlap`` and the matched set and id
in the detail, and counts them per reference set and per kind (manifest stats, report).

Matching is an exact radius search (ops.HammingRangeIndex) whose multi-index each worker builds on its first
batch and keeps: against 1M references (8M PDQ transform codes) that first batch takes seconds and the index
adds about 0.5 KB per reference to the ~0.4 KB of codes loaded (benchmarks/README.md, decontamination at scale).

The pHash is integrity's fast pHash (the `phash` column when an earlier step left it, as integrity does; computed
here otherwise), the same function the index holds: put decontaminate before a `phash_dedup: {mode: exact}`, which
replaces that column with exact-mode codes. The default radius (4) is strict on purpose: pHash links unrelated
flat and letterboxed images at larger radii (benchmarks/README_dedup.md), and a removed training sample is lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.params import check_int, check_number, check_threads
from mmcurate.pipeline.schema import rejects_table
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    MapStage,
    StageError,
    StageResult,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.stages.batch import blob_views, text_only_rows, with_column

MATCH_COLUMN = "benchmark_match"
REASON = "benchmark_overlap"


@dataclass
class DecontaminateParams:
    references: list = field(default_factory=list)  # reference index directories
    pdq_threshold: int | None = 31  # PDQ-256 bits to the nearest of a reference's 8 transforms; null: no PDQ
    min_quality: int = 1  # PDQ quality below which an image is never matched by PDQ (flat, blank: 0)
    verify_phash: int | None = None  # also require the matched transform's pHash within this many bits
    max_distance: int | None = 4  # fast pHash bits; null: no pHash matching
    min_cosine: float | None = None  # CLIP image cosine; null: no semantic matching
    num_threads: int | None = None

    def validate(self):
        if not isinstance(self.references, list) or not self.references:
            raise ValueError("references must be a non-empty list of reference index directories")
        for r in self.references:
            if not isinstance(r, str) or not r:
                raise ValueError(f"references: {r!r} is not a path")
        check_int("pdq_threshold", self.pdq_threshold, 0, 255, optional=True)
        check_int("min_quality", self.min_quality, 0, 100)
        check_int("verify_phash", self.verify_phash, 0, 64, optional=True)
        check_int("max_distance", self.max_distance, 0, 64, optional=True)
        check_number("min_cosine", self.min_cosine, -1, 1, optional=True)
        check_threads(self.num_threads)


class ReferenceMatch(MapStage):
    """decontaminate's map part: the `benchmark_match` column (module docstring)."""

    name = "decontaminate"
    requires = ("key", "source", "image")
    Params = DecontaminateParams

    def __init__(self, **params):
        super().__init__(**params)
        self._indexes = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_indexes"] = None  # loaded again by setup() in the worker
        return state

    def preflight(self) -> None:
        from mmcurate.reference import ReferenceIndex

        for r in self.params.references:
            try:
                ReferenceIndex.read_info(r)
            except (FileNotFoundError, ValueError) as exc:
                raise StageError(f"stage '{self.name}': {exc}") from None

    def setup(self) -> None:
        if self._indexes is None:
            from mmcurate.reference import ReferenceIndex

            # Loaded once per worker; each index's Hamming search structures are built on the first batch and kept.
            semantic = self.params.min_cosine is not None
            self._indexes = [ReferenceIndex.load(r, embeddings=semantic) for r in self.params.references]

    def process(self, batch: pa.Table) -> StageResult:
        from mmcurate.ops import phash_bytes

        self.setup()
        p = self.params
        n = batch.num_rows
        has_image = ~text_only_rows(batch) & np.asarray(batch.column("image").is_valid(), dtype=bool)
        blobs = blob_views(batch.column("image"))
        if "sha256" in batch.column_names:
            sha = batch.column("sha256").to_pylist()
        else:
            sha = [hashlib.sha256(b).hexdigest() if h else None for b, h in zip(blobs, has_image)]
        query = self._pdq_query(blobs, has_image) if p.pdq_threshold is not None else None
        codes = valid = None
        exact = False  # which pHash the samples carry: integrity's fast one, or the exact one of the PDQ decode
        if p.max_distance is not None:
            if "phash" in batch.column_names:
                col = batch.column("phash")
                valid = np.asarray(col.is_valid(), dtype=bool) & has_image
                codes = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)
            elif query is not None:  # the PDQ decode gave an exact pHash already: no second decode
                codes, valid, exact = query.phash, query.valid, True
            else:
                res = phash_bytes([b or b"" for b in blobs], exact=False, num_threads=p.num_threads)
                codes, valid = np.asarray(res.codes, dtype=np.uint64), (np.asarray(res.status) == 0) & has_image
        matches: list = [None] * n
        for index in self._indexes:
            emb = self._embeddings(batch, index)
            found = index.match(
                sha, codes, valid, emb, p.max_distance, p.min_cosine, p.num_threads, pdq=query, phash_exact=exact
            )
            for i, m in enumerate(found):
                if m is not None and matches[i] is None and has_image[i]:
                    value = {"distance": int(m.value)} if m.via != "semantic" else {"cosine": m.value}
                    if m.transform is not None:
                        value["transform"] = m.transform
                    matches[i] = json.dumps(
                        {"set": index.set_name(m.row), "id": index.id(m.row), "kind": m.via, **value},
                        sort_keys=True,
                    )
        return StageResult(with_column(batch, MATCH_COLUMN, pa.array(matches, pa.string())))

    def _pdq_query(self, blobs: list, has_image: np.ndarray):
        """PDQ, its quality and the pHash of one exact decode per image (the references were hashed so too)."""
        from mmcurate.ops import pdq_bytes
        from mmcurate.reference import PdqQuery

        p = self.params
        res = pdq_bytes([b or b"" for b in blobs], exact=True, phash=True, num_threads=p.num_threads)
        return PdqQuery(
            codes=np.asarray(res.codes, np.uint8),
            quality=np.asarray(res.quality),
            phash=np.asarray(res.phash, np.uint64),
            valid=(np.asarray(res.status) == 0) & has_image,
            threshold=p.pdq_threshold,
            min_quality=p.min_quality,
            verify_phash=p.verify_phash,
        )

    def _embeddings(self, batch: pa.Table, index):
        """The batch's CLIP image embeddings (unit rows, zeros where unusable) when semantic matching applies."""
        if self.params.min_cosine is None or index.embeddings is None or "image_embedding" not in batch.column_names:
            return None
        from mmcurate.stages.embeddings import embedding_matrix

        x, ok, _ = embedding_matrix(batch.column("image_embedding"), dim=index.embeddings.shape[1])
        out = np.zeros((batch.num_rows, index.embeddings.shape[1]), np.float32)
        out[ok] = x
        return out


@dataclass
class DecontaminateStats(StepStats):
    samples: int | None = None
    removed: int | None = None
    by_set: dict | None = None  # reference set -> samples removed
    by_kind: dict | None = None  # exact / perceptual / semantic -> samples removed
    references: dict | None = None  # reference set -> images indexed


@registry.register
class Decontaminate(GlobalStage):
    """Removes samples that match a benchmark's reference images: same bytes, a pHash within max_distance, or a
    CLIP cosine >= min_cosine (module docstring). Reason: benchmark_overlap, with the matched set and id."""

    name = "decontaminate"
    Params = DecontaminateParams
    requires = ("key", "source", MATCH_COLUMN)

    def __init__(self, **params):
        super().__init__(**params)
        self.map_part = ReferenceMatch(**self.params.__dict__)

    def preflight(self) -> None:
        self.map_part.preflight()

    def run(self, ctx) -> GlobalResult:
        if MATCH_COLUMN not in ctx.column_names:
            raise StageError(f"stage '{self.name}': input lacks column {MATCH_COLUMN}")
        t0 = time.perf_counter()
        parts, n_rows = [], 0
        for t, n in ctx.map_fn(_matched_task, list(ctx.views())):
            n_rows += n
            if t.num_rows:
                parts.append(t)
        matched = pa.concat_tables(parts).sort_by(SAMPLE_ID) if parts else None
        infos = [json.loads(m) for m in (matched.column(MATCH_COLUMN).to_pylist() if matched else [])]
        details = [
            f"matches {m['set']}:{m['id']} "
            + {
                "exact": "(same bytes)",
                "pdq": f"(PDQ distance {m.get('distance')} to its {m.get('transform')})",
                "perceptual": f"(pHash distance {m.get('distance')})",
                "semantic": f"(CLIP cosine {m.get('cosine')})",
            }[m["kind"]]
            for m in infos
        ]
        keys = matched.column("key").to_pylist() if matched else []
        sources = matched.column("source").to_pylist() if matched else []
        rejected = with_sample_ids(
            rejects_table(keys, sources, self.name, REASON, details),
            matched.column(SAMPLE_ID).to_numpy() if matched else [],
        )
        from mmcurate.reference import ReferenceIndex

        references = {}
        for r in self.params.references:
            for name, s in ReferenceIndex.read_info(r)["sets"].items():
                references[name] = references.get(name, 0) + int(s["images"])
        stats = DecontaminateStats(
            samples=int(n_rows),
            removed=len(keys),
            by_set=dict(Counter(m["set"] for m in infos)),
            by_kind=dict(Counter(m["kind"] for m in infos)),
            references=references,
            seconds=round(time.perf_counter() - t0, 6),
        )
        return GlobalResult(rejected=rejected, stats=stats)


def _matched_task(view):
    """(the view's matched samples: SAMPLE_ID, key, source, match; its sample count)."""
    t = view.read(["key", "source", MATCH_COLUMN])
    hit = t.column(MATCH_COLUMN).is_valid()
    return t.filter(hit).select([SAMPLE_ID, "key", "source", MATCH_COLUMN]), t.num_rows
