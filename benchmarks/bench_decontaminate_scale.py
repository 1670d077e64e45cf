"""Benchmark: benchmark decontamination against millions of reference images (mmcurate.reference).

Matching (per size): ReferenceIndex.match as the decontaminate stage calls it (batches of 256 samples, PDQ at the
stage's threshold, the fast pHash within 4 bits), its search structures built once on the first batch, against
the algorithm main used until now, measured in the same run on the same samples: hamming_knn(k=1) brute force
over the 8N transform codes and the N fast pHashes, nearest then verify. faiss IndexBinaryMultiHash range search
over the same 8N codes is a third peer for the PDQ search alone (16 tables of 16 bits, nflip=1: exact at r <= 31
by pigeonhole, 16 * 2 > 31; its range_search keeps distances below its radius, so r + 1 is passed). The three
must report the same matches; the brute force and faiss run on a subset of the samples at large sizes (their
rates are per sample, so the subset does not bias them).

References are synthetic, with realistic clustered PDQ codes (as bench_hamming256.pdq_like_codes: an image is a
latent vector, each of its 8 transforms a different random projection of it plus per-bit noise, thresholded at
the row's median; unrelated codes are then 0.01% ~ 76, 1% ~ 94, median 128 bits apart), their exact pHash per
transform (a 64-bit projection of the same kind), a fast pHash a few bits off the identity's, 2% of them flat
(PDQ quality 0). Samples: half planted copies of a random reference's random transform (re-encode noise: 0..20
PDQ bits, 0..3 pHash bits; a tenth are byte copies), half unrelated images from other latents. Recall/precision:
planted copies found with their reference row, unrelated samples not matched.

Load (at --load-size): the index written as codes.parquet, ReferenceIndex.load's seconds and resident memory,
then the search structures' build seconds and bytes. Build: `mmcurate reference build` (build_reference) over
JPEGs made from scikit-image's photos, images/s, with the transform hashing batched (hash_transforms) against
main's per-image calls on the same decoded pixels.

Usage: python benchmarks/bench_decontaminate_scale.py [--sizes 100000 1000000 5000000] [--samples 2048]
       [--pdq-threshold 31] [--out benchmarks/results/decontaminate_scale.json]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmcurate.ops import hamming_knn
from mmcurate.reference import TRANSFORMS, PdqQuery, ReferenceIndex, _nearest

BATCH = 256  # the stage's batch
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _median_bits(v: np.ndarray) -> np.ndarray:
    """Rows of float projections -> packed codes with the row's upper half of bits set (as PDQ's median)."""
    half = v.shape[1] // 2 - 1
    return np.packbits(v > np.partition(v, half, axis=1)[:, half : half + 1], axis=1, bitorder="little")


class Generator:
    """Clustered PDQ and pHash codes of images (module doc); the same projections for references and samples."""

    def __init__(self, seed: int = 0, latent: int = 48, noise: float = 0.6):
        rng = np.random.default_rng(seed)
        self.latent = latent
        self.pdq_proj = rng.standard_normal((8, latent, 256)).astype(np.float32)
        self.phash_proj = rng.standard_normal((8, latent, 64)).astype(np.float32)
        self.bank = (noise * rng.standard_normal((1 << 16, 256))).astype(np.float32)  # reused noise rows: speed

    def images(self, z: np.ndarray, rng):
        """(pdq uint8[n, 8, 32], exact pHash uint64[n, 8]) of latents z."""
        n = len(z)
        pdq = np.empty((n, 8, 32), np.uint8)
        ph = np.empty((n, 8), np.uint64)
        for k in range(8):
            v = z @ self.pdq_proj[k]
            v += self.bank[rng.integers(0, len(self.bank), n)]
            pdq[:, k] = _median_bits(v)
            w = z @ self.phash_proj[k] + self.bank[rng.integers(0, len(self.bank), n), :64]
            ph[:, k] = _median_bits(w).view("<u8")[:, 0]
        return pdq, ph

    def references(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        pdq = np.empty((n, 8, 32), np.uint8)
        ph = np.empty((n, 8), np.uint64)
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            pdq[s:e], ph[s:e] = self.images(rng.standard_normal((e - s, self.latent)).astype(np.float32), rng)
        fast = ph[:, 0] ^ flips64(rng, n, 3)
        quality = np.where(rng.random(n) < 0.02, 0, rng.integers(40, 101, n)).astype(np.int16)
        return pdq, ph, fast, quality


def flips64(rng, n: int, most: int) -> np.ndarray:
    """n 64-bit masks of at most `most` random bits."""
    out = np.zeros(n, np.uint64)
    k = rng.integers(0, most + 1, n)
    for t in range(most):
        out |= np.where(k > t, np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64), np.uint64(0))
    return out


def flip_bits(codes: np.ndarray, rng, most: int) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1)
    for row in bits:
        row[rng.choice(bits.shape[1], rng.integers(0, most + 1), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def digests(n: int, rng):
    """n random sha256 hex digests as an Arrow string array (no Python string per row)."""
    import pyarrow as pa

    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    chars = np.empty((n, 64), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = HEX[raw >> 4], HEX[raw & 15]
    offsets = np.arange(n + 1, dtype=np.int32) * 64
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def reference_table(pdq, ph, fast, quality, sha):
    """The codes.parquet table of the references (binary columns zero-copy from the arrays)."""
    import pyarrow as pa

    n = len(pdq)
    return pa.table(
        {
            "set": pa.array(["bench"]).take(pa.array(np.zeros(n, np.int32))),
            "id": pa.array(np.char.add("r", np.arange(n).astype(str))),
            "sha256": sha,
            "phash": pa.array(fast, pa.uint64()),
            "pdq": pa.FixedSizeBinaryArray.from_buffers(pa.binary(256), n, [None, pa.py_buffer(pdq)]),
            "pdq_quality": pa.array(quality, pa.int16()),
            "pdq_phash": pa.FixedSizeBinaryArray.from_buffers(pa.binary(64), n, [None, pa.py_buffer(ph)]),
        }
    )


def make_samples(gen: Generator, refs, sha, n: int, seed: int):
    """Planted copies (first half, of references with PDQ quality >= 1) and unrelated images (second half)."""
    pdq, ph, fast, quality = refs
    rng = np.random.default_rng(seed)
    half = n // 2
    rows = rng.choice(np.flatnonzero(quality >= 1), half, replace=False)
    transform = rng.integers(0, 8, half)
    z = rng.standard_normal((n - half, gen.latent)).astype(np.float32)
    other_pdq, other_ph = gen.images(z, rng)
    codes = np.concatenate([flip_bits(pdq[rows, transform], rng, 20), other_pdq[:, 0]])
    exact = np.concatenate([ph[rows, transform] ^ flips64(rng, half, 3), other_ph[:, 0]])
    # a transformed copy's fast pHash is its own image's: the reference's only for the identity
    fast_s = np.where(transform == 0, fast[rows] ^ flips64(rng, half, 2), rng.integers(0, 2**64, half, np.uint64))
    fast_s = np.concatenate([fast_s, other_ph[:, 0] ^ flips64(rng, n - half, 3)])
    sha_s = digests(n, rng).to_pylist()
    for i in np.flatnonzero(rng.random(half) < 0.1):  # byte copies
        sha_s[i] = sha[int(rows[i])].as_py()
    return {
        "sha": sha_s,
        "pdq": np.ascontiguousarray(codes),
        "exact_phash": exact,
        "fast_phash": fast_s,
        "planted_rows": rows,
        "planted_transform": transform,
    }


def query(s, lo: int, hi: int, threshold: int, verify):
    n = hi - lo
    return PdqQuery(s["pdq"][lo:hi], np.full(n, 60), s["exact_phash"][lo:hi], np.ones(n, bool), threshold, 1, verify)


def match_new(index, s, lo, hi, threshold, verify):
    return index.match(
        s["sha"][lo:hi],
        s["fast_phash"][lo:hi],
        np.ones(hi - lo, bool),
        None,
        4,
        None,
        pdq=query(s, lo, hi, threshold, verify),
    )


class BruteForce:
    """The matching main did until now: hamming_knn(k=1) over the quality-selected 8N codes and the N fast pHashes,
    the nearest within the radius, then (pdq) its pHash verified."""

    def __init__(self, index: ReferenceIndex, min_quality: int = 1):
        self.index = index
        self.rows = np.flatnonzero(np.repeat(index.pdq_quality >= min_quality, 8))
        self.codes = index.pdq if len(self.rows) == len(index.pdq) else np.ascontiguousarray(index.pdq[self.rows])

    def match(self, s, lo, hi, threshold, verify):
        ix = self.index
        out = [None] * (hi - lo)
        for i, row in enumerate(ix._rows_of_digests(s["sha"][lo:hi])):  # the same lookup: not what is compared
            if row is not None:
                out[i] = ("exact", row, 0)
        todo = [i for i in range(hi - lo) if out[i] is None]
        dist, idx = hamming_knn(self.codes, 1, queries=s["pdq"][lo:hi][todo], device="cpu")
        for i, d, j in zip(todo, dist[:, 0].tolist(), idx[:, 0].tolist()):
            variant = int(self.rows[j])
            ok = verify is None or int(np.bitwise_count(s["exact_phash"][lo + i] ^ ix.pdq_phash[variant])) <= verify
            if 0 <= d <= threshold and ok:
                out[i] = ("pdq", variant // 8, d, TRANSFORMS[variant % 8])
        todo = [i for i in range(hi - lo) if out[i] is None]
        dist, idx = hamming_knn(ix.phash, 1, queries=s["fast_phash"][lo:hi][todo], device="cpu")
        for i, d, j in zip(todo, dist[:, 0].tolist(), idx[:, 0].tolist()):
            if 0 <= d <= 4:
                out[i] = ("perceptual", j, d)
        return out


def as_tuple(m):
    if m is None:
        return None
    return (m.via, m.row, int(m.value)) + ((m.transform,) if m.via == "pdq" else ())


def faiss_pdq(faiss, index: ReferenceIndex, threshold: int):
    """IndexBinaryMultiHash over the 8N transform codes (module doc)."""
    mh = faiss.IndexBinaryMultiHash(256, 16, 16)
    mh.nflip = 1
    mh.add(np.ascontiguousarray(index.pdq))
    return mh


def faiss_match_pdq(mh, index: ReferenceIndex, codes: np.ndarray, threshold: int):
    """(per query: (row, distance, transform) of the best candidate of quality >= 1, or None)."""
    lims, dist, ids = mh.range_search(codes, threshold + 1)
    q = np.repeat(np.arange(len(codes)), np.diff(lims).astype(np.int64))
    keep = index.pdq_quality[ids // 8] >= 1
    q, dist, ids = q[keep], dist[keep].astype(np.int64), ids[keep]
    out = [None] * len(codes)
    for k in _nearest(q, dist, ids):
        out[int(q[k])] = (int(ids[k]) // 8, int(dist[k]), TRANSFORMS[ids[k] % 8])
    return out


def bench_matching(n: int, gen: Generator, args, faiss) -> dict:
    t0 = time.perf_counter()
    refs = gen.references(n, seed=args.seed)
    sha = digests(n, np.random.default_rng(args.seed + 2))
    index = ReferenceIndex("synthetic", {"sets": {}}, reference_table(*refs, sha))
    samples = make_samples(gen, refs, sha, args.samples, args.seed + 3)
    pdq_codes = refs[0]
    del refs
    gc.collect()
    row: dict = {"references": n, "transform_codes": 8 * n, "samples": args.samples, "generate_seconds": 0.0}
    row["generate_seconds"] = round(time.perf_counter() - t0, 1)
    thr, verify = args.pdq_threshold, None
    # main's brute force first, on a subset (every batch costs the same: a per-sample rate); its quality-selected
    # copy of the codes is freed before our search structures are built (peak memory)
    half = args.samples // 2
    sub = min(args.samples, args.brute_force_samples)
    picks = np.r_[0 : sub // 2, half : half + sub // 2]
    sub_samples = {k: np.asarray(v)[picks] for k, v in samples.items() if k in ("pdq", "exact_phash", "fast_phash")}
    sub_samples["sha"] = [samples["sha"][i] for i in picks]
    brute = BruteForce(index)
    t = time.perf_counter()
    old = []
    for lo in range(0, len(picks), BATCH):
        old += brute.match(sub_samples, lo, min(len(picks), lo + BATCH), thr, verify)
    row["brute_force"] = {"samples": len(picks), "samples_per_second": round(len(picks) / (time.perf_counter() - t), 1)}
    del brute
    gc.collect()
    rss0 = _rss()
    # the stage's path: the first batch builds the search structures, later batches reuse them
    t = time.perf_counter()
    got = match_new(index, samples, 0, BATCH, thr, verify)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for lo in range(BATCH, args.samples, BATCH):
        got += match_new(index, samples, lo, min(args.samples, lo + BATCH), thr, verify)
    steady = time.perf_counter() - t
    searches = {f"{what}@{r}": s for (what, r), s in index._searches.items()}
    row["new"] = {
        "first_batch_seconds": round(first, 3),
        "samples_per_second": round((args.samples - BATCH) / steady, 1),
        "search_index_bytes_per_reference": {k: round(s.memory_bytes / n, 1) for k, s in searches.items()},
        "plans": {k: s.plan["description"] for k, s in searches.items()},
        "rss_added_gib": round((_rss() - rss0) / 2**30, 3),
    }
    ours = [as_tuple(m) for m in got]
    # recall / precision on the planted set
    found = [m is not None and m[1] == r for m, r in zip(ours[:half], samples["planted_rows"])]
    row["recall"] = round(float(np.mean(found)), 4)
    row["false_matches"] = int(sum(m is not None for m in ours[half:]))
    row["kinds"] = {k: sum(m is not None and m[0] == k for m in ours) for k in ("exact", "pdq", "perceptual")}
    print(json.dumps(row), flush=True)

    row["brute_force"]["same_matches"] = old == [ours[i] for i in picks]
    row["speedup_vs_brute_force"] = round(
        row["new"]["samples_per_second"] / row["brute_force"]["samples_per_second"], 1
    )
    print(json.dumps(row["brute_force"]), flush=True)

    if faiss is not None and n <= args.faiss_max:
        t = time.perf_counter()
        mh = faiss_pdq(faiss, index, thr)
        build = time.perf_counter() - t
        fsub = min(args.samples, args.faiss_samples)
        fpicks = np.r_[0 : fsub // 2, half : half + fsub // 2]
        codes = samples["pdq"][fpicks]
        t = time.perf_counter()
        fm = faiss_match_pdq(mh, index, codes, thr)
        fs = time.perf_counter() - t
        # ours, PDQ alone on the same codes (the search structure is already built)
        q = PdqQuery(
            codes, np.full(len(codes), 60), samples["exact_phash"][fpicks], np.ones(len(codes), bool), thr, 1, None
        )
        t = time.perf_counter()
        mine: list = [None] * len(codes)
        for lo in range(0, len(codes), BATCH):
            part: list = [None] * min(BATCH, len(codes) - lo)
            sl = slice(lo, lo + len(part))
            index._match_pdq(part, PdqQuery(q.codes[sl], q.quality[sl], q.phash[sl], q.valid[sl], thr, 1, None), None)
            mine[sl] = part
        ms = time.perf_counter() - t
        row["pdq_search_only"] = {
            "samples": len(codes),
            "new_samples_per_second": round(len(codes) / ms, 1),
            "faiss_multihash_samples_per_second": round(len(codes) / fs, 1),
            "faiss_build_seconds": round(build, 1),
            "faiss_same_matches": fm == [(m.row, int(m.value), m.transform) if m else None for m in mine],
            "speedup_vs_faiss_multihash": round(fs / ms, 1),
        }
        del mh
        print(json.dumps(row["pdq_search_only"]), flush=True)
    del index, pdq_codes
    gc.collect()
    return row


def bench_load(n: int, gen: Generator, args) -> dict:
    """codes.parquet of n references, ReferenceIndex.load seconds and memory, search-structure build."""
    import pyarrow.parquet as pq

    from mmcurate.reference import CODES_FILE, INDEX_VERSION, REFERENCE_FILE

    refs = gen.references(n, seed=args.seed)
    sha = digests(n, np.random.default_rng(args.seed + 2))
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        pq.write_table(reference_table(*refs, sha), Path(d) / CODES_FILE, row_group_size=16_384)
        (Path(d) / REFERENCE_FILE).write_text(json.dumps({"version": INDEX_VERSION, "sets": {}}))
        samples = make_samples(gen, refs, sha, BATCH, args.seed + 3)
        del refs, sha
        gc.collect()
        rss0 = _rss()
        t = time.perf_counter()
        index = ReferenceIndex.load(d, embeddings=False)
        load = time.perf_counter() - t
        rss1 = _rss()
        held1 = index.memory_bytes
        t = time.perf_counter()
        match_new(index, samples, 0, BATCH, args.pdq_threshold, None)
        first = time.perf_counter() - t
        rss2 = _rss()
        held2 = index.memory_bytes
        row = {
            "references": n,
            "file_mib": round(os.path.getsize(Path(d) / CODES_FILE) / 2**20, 1),
            "load_seconds": round(load, 2),
            "loaded_bytes_per_reference": round((rss1 - rss0) / n, 1),  # resident
            "loaded_held_bytes_per_reference": round(held1 / n, 1),  # the index's arrays
            "first_batch_seconds": round(first, 2),
            "search_bytes_per_reference": round((rss2 - rss1) / n, 1),
            "search_held_bytes_per_reference": round((held2 - held1) / n, 1),
            "total_gib": round((rss2 - rss0) / 2**30, 3),
        }
    print(json.dumps(row), flush=True)
    return row


def photo_jpegs(n: int, seed: int) -> list[bytes]:
    """n JPEGs: random crops (256..640 px) of scikit-image's photos, re-encoded at quality 85..95."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [
        Image.fromarray(getattr(data, k)()).convert("RGB")
        for k in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    ]
    out = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        w, h = img.size
        cw, ch = int(rng.integers(min(w, 256), w + 1)), int(rng.integers(min(h, 256), h + 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(256, 641))
        buf = io.BytesIO()
        img.crop((x, y, x + cw, y + ch)).resize((side, side * ch // cw)).save(
            buf, "JPEG", quality=int(rng.integers(85, 96))
        )
        out.append(buf.getvalue())
    return out


def bench_build(args) -> dict:
    from mmcurate.ops import decode_images, pdq, phash, phash_bytes
    from mmcurate.reference import build_reference, dihedral, hash_transforms

    blobs = photo_jpegs(args.build_images, args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        src = Path(d) / "refs"
        src.mkdir()
        for i, b in enumerate(blobs):
            (src / f"img{i:05d}.jpg").write_bytes(b)
        t = time.perf_counter()
        info = build_reference(Path(d) / "index", {"photos": str(src)}, log=lambda m: None)
        seconds = time.perf_counter() - t
    # where the time goes, on the same images
    t = time.perf_counter()
    phash_bytes(blobs, exact=False)
    fast = time.perf_counter() - t
    t = time.perf_counter()
    pixels = decode_images(blobs, mode="RGB").images
    decode = time.perf_counter() - t
    sub = pixels[: min(len(pixels), 64)]
    t = time.perf_counter()
    hash_transforms(sub)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    for img in sub:  # main's per-image calls
        v = dihedral(img)
        pdq(v)
        phash(v)
    per_image = time.perf_counter() - t
    row = {
        "images": info["sets"]["photos"]["images"],
        "mean_pixels": int(np.mean([p.shape[0] * p.shape[1] for p in pixels])),
        "build_images_per_second": round(len(blobs) / seconds, 1),
        "fast_phash_decode_images_per_second": round(len(blobs) / fast, 1),
        "full_decode_images_per_second": round(len(blobs) / decode, 1),
        "transform_hashing_images_per_second": round(len(sub) / batched, 1),
        "transform_hashing_per_image_calls_images_per_second": round(len(sub) / per_image, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--pdq-threshold", type=int, default=31, help="the stage's default")
    ap.add_argument("--brute-force-samples", type=int, default=256)
    ap.add_argument("--faiss-samples", type=int, default=1024)
    ap.add_argument("--faiss-max", type=int, default=1_000_000, help="largest size faiss runs at (memory)")
    ap.add_argument("--load-size", type=int, default=1_000_000)
    ap.add_argument("--build-images", type=int, default=300)
    ap.add_argument("--only", choices=["all", "match", "load", "build"], default="all")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="where the temporary index files go")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "decontaminate_scale.json"))
    args = ap.parse_args(argv)
    faiss = None
    if not args.no_faiss:
        import faiss
    out = Path(args.out)
    results = json.loads(out.read_text()) if args.only != "all" and out.exists() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "faiss": getattr(faiss, "__version__", None),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # a shared machine: context
    }
    results["settings"] = {"pdq_threshold": args.pdq_threshold, "max_distance": 4, "batch": BATCH}
    gen = Generator(seed=args.seed)
    if args.only in ("all", "match"):
        results["matching"] = [bench_matching(n, gen, args, faiss) for n in args.sizes]
    if args.only in ("all", "load"):
        results["load"] = bench_load(args.load_size, gen, args)
    if args.only in ("all", "build"):
        results["build"] = bench_build(args)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    import resource

    results["machine"]["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
