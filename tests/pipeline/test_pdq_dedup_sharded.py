"""phash_dedup with hash: pdq (issue 16) in sharded global mode gives memory mode's rejects and duplicate links,
and both equal star/connected linkage over every verified PDQ pair (brute force)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers import default_recipe_for, output_digests, run_local
from mmcurate.curate import dedup
from mmcurate.pipeline.global_phase import MemoryGlobalContext
from mmcurate.pipeline.global_sharded import ShardedGlobalContext, make_ids
from mmcurate.pipeline.stage import SAMPLE_ID, registry

#: identity codes only, no template labels: the columns the synthetic tables here have
PLAIN = {"hash": "pdq", "dihedral": False, "templates": "off"}


def _flip(words: np.ndarray, bits: int, rng, width: int) -> np.ndarray:
    out = words.copy()
    for b in rng.choice(width, bits, replace=False):
        out[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def _survivors(n=700, n_shards=5, seed=0):
    """Random PDQ codes with planted near copies (0..30 bits, chains), exact-pHash codes that agree (0..8 bits)
    or disagree (30+ bits) on a copy, quality 0 on some samples, nulls; cut into uneven shards."""
    rng = np.random.default_rng(seed)
    keys = [f"k{int(v):06d}" for v in rng.permutation(10 * n)[:n]]
    pdq = np.zeros((n, 4), np.uint64)
    ph = np.zeros(n, np.uint64)
    for i in range(n):
        j = int(rng.integers(i)) if i else 0
        if i and rng.random() < 0.4:
            pdq[i] = _flip(pdq[j], int(rng.integers(0, 31)), rng, 256)
            agree = rng.random() < 0.75
            ph[i] = _flip(ph[j : j + 1], int(rng.integers(0, 9) if agree else rng.integers(30, 40)), rng, 64)[0]
        else:
            pdq[i] = rng.integers(0, 2**63, size=4, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 4).astype(
                np.uint64
            )
            ph[i] = np.uint64(int(rng.integers(0, 2**63)) * 2)
    quality = rng.integers(1, 100, n).astype(np.int16)
    quality[rng.choice(n, 40, replace=False)] = 0
    valid = np.ones(n, bool)
    valid[rng.choice(n, 15, replace=False)] = False
    raw = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), n, [pa.array(valid).buffers()[1], pa.py_buffer(pdq.astype("<u8").tobytes())], null_count=-1
    )
    score = rng.random(n)
    score[rng.choice(n, 20, replace=False)] = np.nan
    table = pa.table(
        {
            "key": keys,
            "source": [f"src{i % 3}" for i in range(n)],
            "pdq": raw,
            "pdq_quality": pa.array(quality, pa.int16(), mask=~valid),
            "pdq_phash": pa.array(ph, pa.uint64(), mask=~valid),
            "clip_score": pa.array(score, pa.float64()).cast(pa.float32()),
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, n), n_shards - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _memory_table(shards, columns):
    parts = [
        t.select(columns).append_column(SAMPLE_ID, pa.array(make_ids(i, np.arange(t.num_rows))))
        for i, t in enumerate(shards)
    ]
    return pa.concat_tables(parts)


def _reversed_map(fn, tasks):
    tasks = list(tasks)
    return reversed([fn(t) for t in reversed(tasks)])


def _brute_force(table, threshold, verify, min_quality, keep, linkage):
    """{duplicate key: (representative key, pdq distance, phash distance)} over every pair, in pure numpy."""
    ok = table.column("pdq").is_valid().to_numpy(zero_copy_only=False) & (
        pc.fill_null(table.column("pdq_quality"), -1).to_numpy() >= min_quality
    )
    sub = table.filter(pa.array(ok))
    buf = np.frombuffer(sub.column("pdq").combine_chunks().buffers()[1], np.uint8)
    off = sub.column("pdq").combine_chunks().offset
    codes = buf[off * 32 : (off + sub.num_rows) * 32].view("<u8").reshape(-1, 4)
    ph = sub.column("pdq_phash").to_numpy().astype(np.uint64)
    n = sub.num_rows
    i, j = np.triu_indices(n, 1)
    d = np.bitwise_count(codes[i] ^ codes[j]).sum(axis=1)
    v = np.bitwise_count(ph[i] ^ ph[j])
    m = (d <= threshold) & (v <= (64 if verify is None else verify))
    keys = sub.column("key").to_pylist()
    scores = None if keep == "first" else sub.column("clip_score").to_numpy(zero_copy_only=False)
    rank = dedup.preference_rank(keys, scores)
    rep = dedup.link_groups(n, np.stack([i[m], j[m]], axis=1), rank, linkage=linkage)
    return {
        keys[k]: (
            keys[rep[k]],
            float(np.bitwise_count(codes[k] ^ codes[rep[k]]).sum()),
            float(np.bitwise_count(ph[k] ^ ph[rep[k]])),
        )
        for k in np.flatnonzero(rep != np.arange(n))
    }


@pytest.mark.parametrize("linkage", ["star", "connected"])
@pytest.mark.parametrize("keep", ["first", {"max": "clip_score"}])
@pytest.mark.parametrize("map_fn", [map, _reversed_map], ids=["map", "reversed"])
def test_sharded_pdq_dedup_equals_memory_and_brute_force(tmp_path, linkage, keep, map_fn):
    shards = _survivors()
    work = tmp_path / "_work"
    (work / "meta").mkdir(parents=True)
    for i, t in enumerate(shards):
        pq.write_table(t, work / "meta" / f"{i:05d}.parquet")
    ctx = ShardedGlobalContext(work, len(shards), map_fn=map_fn, parallelism=3)
    stage = registry.create("phash_dedup", {**PLAIN, "keep": keep, "linkage": linkage})
    table = _memory_table(shards, list(stage.requires))
    mem = stage.run(MemoryGlobalContext.from_table(table))
    sh = stage.run(ctx)
    assert sh.rejected.equals(mem.rejected)
    assert sh.duplicates.equals(mem.duplicates)
    assert mem.rejected.num_rows >= 50
    for k in ("samples", "duplicates", "groups", "without_hash", "max_distance_to_representative"):
        assert getattr(sh.stats, k) == getattr(mem.stats, k), k
    assert sh.stats.linked < table.num_rows and sh.stats.partitions["pairs"] > 0
    got = {r["key"]: (r["duplicate_of"], r["distance"], r["verify_distance"]) for r in sh.duplicates.to_pylist()}
    assert got == _brute_force(table, 22, 12, 1, keep, linkage)
    assert {r["kind"] for r in sh.duplicates.to_pylist()} == {"pdq"}
    assert set(sh.rejected.column("reason").to_pylist()) == {"duplicate_pdq"}
    # verification mattered: without it, more pairs link
    loose = registry.create("phash_dedup", {**PLAIN, "keep": keep, "linkage": linkage, "verify_phash": None})
    assert loose.run(MemoryGlobalContext.from_table(table)).rejected.num_rows > mem.rejected.num_rows
    # quality 0 samples are never linked, on either side
    q0 = set(table.filter(pc.equal(table.column("pdq_quality"), 0)).column("key").to_pylist())
    assert not q0 & (set(got) | {v[0] for v in got.values()})


def test_partitioned_linked_ids_256_bit_large_buckets():
    """Buckets above SMALL_GROUP (a cluster of near copies) take the 256-bit component path: the linked ids and
    components equal the brute-force pairs'."""
    from mmcurate.curate.hamming_partition import SMALL_GROUP, partitioned_linked_ids

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=(3, 4), dtype=np.uint64)
    rows = [_flip(base[k], int(rng.integers(0, 6)), rng, 256) for k in range(3) for _ in range(SMALL_GROUP + 20)]
    rows += [rng.integers(0, 2**63, size=4, dtype=np.uint64) for _ in range(200)]
    codes = np.stack(rows)
    ids = np.arange(len(codes), dtype=np.int64) * 7 + 1
    order = rng.permutation(len(codes))
    shards = [(ids[order[a:b]], codes[order[a:b]]) for a, b in ((0, 100), (100, 250), (250, len(codes)))]
    found = partitioned_linked_ids(shards, 10, n_partitions=3)
    i, j = np.triu_indices(len(codes), 1)
    m = np.bitwise_count(codes[i] ^ codes[j]).sum(axis=1) <= 10
    assert np.array_equal(found.ids, np.unique(ids[np.concatenate([i[m], j[m]])]))
    pos = {v: k for k, v in enumerate(ids)}
    got = dedup.connected_components(len(codes), np.vectorize(pos.get)(found.links).reshape(-1, 2))
    want = dedup.connected_components(len(codes), np.stack([i[m], j[m]], axis=1))
    assert np.array_equal(np.unique(got, return_inverse=True)[1], np.unique(want, return_inverse=True)[1])


def _pdq_recipe(demo_input, out, mode):
    r = default_recipe_for(demo_input, out, batch_size=16, workers=1, global_mode=mode)
    r["output"]["report"] = False
    r["stages"] = [{"phash_dedup": {"hash": "pdq"}} if "phash_dedup" in s else s for s in r["stages"]]
    return r


def test_recipe_pdq_sharded_equals_memory(demo_input, tmp_path):
    """A run with phash_dedup: {hash: pdq}: the sharded global phase writes memory mode's outputs byte for byte;
    the PDQ columns reach samples.parquet, duplicates.parquet holds kind pdq with both distances."""
    mem, sh = tmp_path / "memory", tmp_path / "sharded"
    run_local(_pdq_recipe(demo_input, mem, "memory"))
    manifest = run_local(_pdq_recipe(demo_input, sh, "sharded"))
    assert output_digests(sh) == output_digests(mem)
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["phash_dedup"]["mode"] == "sharded" and stages["phash_dedup"]["rejected"] > 0
    assert stages["phash_dedup"]["stats"]["mode"] == "pdq"
    dups = pq.read_table(sh / "duplicates.parquet").to_pylist()
    pdq = [d for d in dups if d["kind"] == "pdq"]
    assert pdq and all(d["distance"] <= 22 and d["verify_distance"] <= 12 for d in pdq)
    assert all(d["verify_distance"] is None for d in dups if d["kind"] not in ("pdq", "template"))
    assert all(d["transform"] is not None for d in dups if d["kind"] in ("pdq", "template"))  # dihedral matching
    samples = pq.read_table(sh / "samples.parquet")
    assert samples.schema.field("pdq").type == pa.binary(32) and "pdq_phash" in samples.column_names
    with tarfile.open(sorted((sh / "shards").rglob("*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        assert len(json.loads(tar.extractfile(member).read())["mmcurate"]["pdq"]) == 64  # Meta's hex form


def test_stored_pdq_columns_are_reused(demo_input, tmp_path):
    """A rerun over a hash: pdq run's output with other global settings reuses the stored PDQ columns (no decode)
    and gives what recomputing from the shards gives."""
    first = tmp_path / "first"
    r = default_recipe_for(demo_input, first)
    r["stages"] = [
        {"phash_dedup": {"hash": "pdq", "pdq_threshold": 0}} if "phash_dedup" in s else s for s in r["stages"]
    ]
    run_local(r)
    cols = json.loads((first / "manifest.json").read_text())["columns"]
    assert cols["pdq"]["fingerprint"] == {"fn": "pdq", "exact": True}
    assert cols["pdq_phash"]["fingerprint"] == {"fn": "phash", "exact": True}

    def rerun(out, input_):
        r = default_recipe_for(first, out)
        r["input"] = input_
        r["stages"] = [{"phash_dedup": {"hash": "pdq"}} if "phash_dedup" in s else s for s in r["stages"]]
        return run_local(r)

    reused = rerun(tmp_path / "reused", {"path": str(first), "format": "mmcurate"})
    st = next(s for s in reused["stages"] if s["name"] == "phash_dedup.map")
    assert st.get("reused") == st["in"] > 0
    computed = rerun(tmp_path / "computed", {"path": str(first / "shards"), "format": "webdataset"})
    assert not any(s.get("reused") for s in computed["stages"])
    a, b = (pq.read_table(tmp_path / d / "samples.parquet") for d in ("reused", "computed"))
    for c in ("key", "pdq", "pdq_quality", "pdq_phash"):
        assert a.column(c).equals(b.column(c)), c
    da, db = (pq.read_table(tmp_path / d / "duplicates.parquet") for d in ("reused", "computed"))
    assert da.equals(db)


def _dihedral_survivors(n=400, n_shards=4, seed=5):
    """Random codes for each sample's 8 transforms, with planted copies whose identity code lies near a transform
    of an earlier sample (any of the 8) and whose pHash agrees or not under that transform; cut into shards."""
    rng = np.random.default_rng(seed)
    pdq = rng.integers(0, 2**63, size=(n, 8, 4), dtype=np.uint64) * np.uint64(2)
    ph = rng.integers(0, 2**63, size=(n, 8), dtype=np.uint64) * np.uint64(2)
    for i in range(1, n):
        if rng.random() < 0.35:
            j, k = int(rng.integers(i)), int(rng.integers(8))
            pdq[i, 0] = _flip(pdq[j, k], int(rng.integers(0, 27)), rng, 256)
            agree = rng.random() < 0.8
            ph[i, 0] = _flip(ph[j, k : k + 1], int(rng.integers(0, 9) if agree else rng.integers(30, 40)), rng, 64)[0]
    quality = rng.integers(1, 100, n).astype(np.int16)
    quality[rng.choice(n, 20, replace=False)] = 0
    table = pa.table(
        {
            "key": [f"d{int(v):05d}" for v in rng.permutation(10 * n)[:n]],
            "source": ["s"] * n,
            "pdq": pa.array([c.astype("<u8").tobytes() for c in pdq[:, 0]], pa.binary(32)),
            "pdq_quality": pa.array(quality, pa.int16()),
            "pdq_phash": pa.array(ph[:, 0], pa.uint64()),
            "pdq_dihedral": pa.array([c.astype("<u8").tobytes() for c in pdq[:, 1:]], pa.binary(7 * 32)),
            "pdq_dihedral_phash": pa.array([c.astype("<u8").tobytes() for c in ph[:, 1:]], pa.binary(7 * 8)),
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, n), n_shards - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])], pdq, ph, quality


@pytest.mark.parametrize("linkage", ["star", "connected"])
def test_sharded_dihedral_pdq_dedup_equals_memory_and_brute_force(tmp_path, linkage):
    """Dihedral matching: the pigeonhole join with each sample's 8 transform codes finds memory mode's candidates
    (any transform of one within the threshold of the other's identity code), and both modes give the groups of
    every pair verified under its closest transform, computed here over all 16 comparisons of every pair."""
    from mmcurate.reference import TRANSFORMS

    shards, pdq, ph, quality = _dihedral_survivors()
    work = tmp_path / "_work"
    (work / "meta").mkdir(parents=True)
    for i, t in enumerate(shards):
        pq.write_table(t, work / "meta" / f"{i:05d}.parquet")
    stage = registry.create("phash_dedup", {"hash": "pdq", "templates": "off", "linkage": linkage})
    table = _memory_table(shards, list(stage.requires))
    mem = stage.run(MemoryGlobalContext.from_table(table))
    sh = stage.run(ShardedGlobalContext(work, len(shards), map_fn=_reversed_map, parallelism=3))
    assert sh.rejected.equals(mem.rejected) and sh.duplicates.equals(mem.duplicates)
    assert sh.stats.linked < table.num_rows
    # brute force over every pair: T_k(a) against b and T_k(b) against a; the transform maps a onto b
    keys = np.array(table.column("key").to_pylist())
    ok = np.flatnonzero(quality >= 1)
    a, b = (ok[x] for x in np.triu_indices(ok.size, 1))
    fwd = np.bitwise_count(pdq[a] ^ pdq[b, 0][:, None]).sum(-1)
    back = np.bitwise_count(pdq[b] ^ pdq[a, 0][:, None]).sum(-1)
    d = np.concatenate([fwd, back], axis=1)
    best = d.argmin(axis=1)
    k = best % 8
    vd = np.where(best < 8, np.bitwise_count(ph[a, k] ^ ph[b, 0]), np.bitwise_count(ph[b, k] ^ ph[a, 0]))
    linked = (d.min(axis=1) <= 22) & (vd <= 12)
    inverse = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}
    pair = {}
    for x, y, dist, kk, fw, v in zip(a, b, d.min(axis=1), k, best < 8, vd):
        t = int(kk) if fw else inverse[int(kk)]
        pair[(x, y)] = (float(dist), float(v), TRANSFORMS[t])
        pair[(y, x)] = (float(dist), float(v), TRANSFORMS[inverse[t]])
    rank = dedup.preference_rank(keys)
    rep = dedup.link_groups(len(keys), np.stack([a[linked], b[linked]], axis=1), rank, linkage=linkage)
    want = {keys[i]: (keys[rep[i]], *pair[(i, rep[i])]) for i in np.flatnonzero(rep != np.arange(len(keys)))}
    got = {
        r["key"]: (r["duplicate_of"], r["distance"], r["verify_distance"], r["transform"])
        for r in sh.duplicates.to_pylist()
    }
    assert got == want and len(got) >= 40
    assert {v[3] for v in got.values()} - {"identity"}  # links under other transforms
    plain = registry.create("phash_dedup", {"hash": "pdq", "templates": "off", "dihedral": False, "linkage": linkage})
    assert plain.run(MemoryGlobalContext.from_table(table)).rejected.num_rows < mem.rejected.num_rows
