"""Keypoint verification: link crops that a global hash cannot, without linking look-alikes.

PDQ moves ~60 of 256 bits under a 2-8 % crop and pHash ~10 of 64, so a crop is only a candidate at a pHash radius
where unrelated images (same watermark, retina tiles, flat graphics) are candidates too. What tells them apart is
geometry: a copy's local features match one-to-one under a single similarity transform (scale, shift, a small
rotation) across the image; a look-alike's match by chance or only inside a shared logo.

Per image (the map part, once): the luma of the decode that hashed the image, area-averaged so its longer side is
at most ``SIDE`` (native, ``ops.pdq_bytes(luma_side=SIDE)``), histogram-equalised (flat, low-contrast images still
get features), then up to ``FEATURES`` ORB keypoints (OpenCV). Stored as one blob (:func:`pack`): a
header (version, canonical height and width, count), the points in 1/64 pixel, the 32-byte descriptors: at most
4,616 bytes a sample.

Per candidate pair (:func:`inlier_counts`): descriptors matched by Hamming distance with Lowe's ratio test (one
match per point of the second image, the closest), then a similarity transform fitted by RANSAC (OpenCV's
estimateAffinePartial2D, 3 px); a pair whose transform scales by less than 1/3 or more than 3, or rotates by more
than 15 degrees, is not a copy (flips and right-angle rotations are PDQ's dihedral matching's job). Returned: the
inlier count and how far the transform moves the image's corners in fractions of the side (near 0 for a re-encode
or a resize: the two frames agree, so grid signals such as the template rule's can be compared cell by cell; a crop
moves them). Measured on the labelled set: benchmarks/README_near_dup.md, "Keypoint verification".
"""

from __future__ import annotations

import numpy as np

#: the canonical image's longer side (pixels): keypoints are found at this scale
SIDE = 256
#: ORB features kept per image
FEATURES = 128
#: canonical images with a shorter side below this get no keypoints (never linked by the keypoint pass)
MIN_SIDE = 32
#: Lowe's ratio test: a match must beat the second best by this factor
RATIO = 0.8
#: RANSAC reprojection threshold, canonical pixels
RANSAC_PX = 3.0
#: a copy's transform: scale within [1 / MAX_SCALE, MAX_SCALE], rotation within MAX_ROTATION degrees
MAX_SCALE = 3.0
MAX_ROTATION = 15.0
#: a transform moving no corner by more than this fraction of the side leaves the frame in place (re-encode, resize).
#: Keypoint positions put a small resize at up to ~1.5 % (such a pair is then treated as a crop); 2 % costs the
#: labelled set's 2-8 % crops recall (they go to the template rule, which refuses shifted grids)
ALIGNED_SHIFT = 0.01
#: inliers a verified copy needs (benchmarks/README_near_dup.md: 10 of 128 keeps precision >= 0.995 on the set)
DEFAULT_MIN_INLIERS = 10

VERSION = 1
_HEADER = np.dtype([("version", "<u2"), ("height", "<u2"), ("width", "<u2"), ("count", "<u2")])
_POINT_SCALE = 64.0  # points stored in 1/64 pixel as uint16 (SIDE * 64 < 65536)
DESCRIPTOR_BYTES = 32
MAX_BYTES = _HEADER.itemsize + FEATURES * (4 + DESCRIPTOR_BYTES)


def cv2():
    """OpenCV, or a one-line error saying how to install it."""
    try:
        import cv2 as _cv2
    except ImportError as e:  # pragma: no cover - the test environment has it
        raise ImportError(
            "keypoint verification needs OpenCV: pip install 'mmcurate[keypoints]' (opencv-python-headless)"
        ) from e
    return _cv2


def luma_thumbnail_reference(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """uint8[h, w]: PDQ's luma of a decoded image (HxW or HxWxC uint8) area-averaged so its longer side is at most
    ``side`` (never enlarged; sides rounded half to even, at least 1). The oracle of the native
    ``ops.pdq_bytes(luma_side=SIDE)``, which the map part uses (no second decode)."""
    from mmcurate.curate.local_detail import pdq_luma
    from mmcurate.ops.quality_reference import area_weights

    y = pdq_luma(image)
    h, w = y.shape
    f = min(1.0, side / max(h, w))
    th, tw = max(1, round(h * f)), max(1, round(w * f))
    return (area_weights(h, th) @ y @ area_weights(w, tw).T).round().clip(0, 255).astype(np.uint8)


def canonical(luma: np.ndarray) -> np.ndarray:
    """uint8[h, w] luma brought to the canonical size (:func:`luma_thumbnail_reference`; a thumbnail from
    ``ops.pdq_bytes(luma_side=SIDE)`` already is), then equalised."""
    luma = np.asarray(luma, np.uint8)
    luma = luma.reshape(luma.shape[0], luma.shape[1])
    if max(luma.shape) > SIDE:
        luma = luma_thumbnail_reference(luma)
    return cv2().equalizeHist(np.ascontiguousarray(luma))


#: ORB's detector settings: a low FAST threshold (equalised images) and small patches (256 px images)
ORB_PARAMS = {"fastThreshold": 5, "edgeThreshold": 15, "patchSize": 15}


def _detector():
    return cv2().ORB_create(nfeatures=FEATURES, **ORB_PARAMS)


def extract(lumas) -> list[bytes]:
    """One packed blob per uint8[h, w] luma image (any size): its canonical image's ORB keypoints."""
    orb = _detector()
    out = []
    for luma in lumas:
        img = canonical(luma)
        kp, des = [], None
        if min(img.shape) >= MIN_SIDE:  # ORB's pyramid needs room for its patches; a thumbnail has no keypoints
            kp = sorted(orb.detect(img, None), key=lambda k: -k.response)[:FEATURES]  # ORB can return a few more
            kp, des = orb.compute(img, kp)
        points = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
        out.append(pack(img.shape, points, des))
    return out


def pack(shape_hw, points: np.ndarray, descriptors) -> bytes:
    """The stored form: header, points (uint16, 1/64 px), descriptors (uint8[k, 32])."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    k = len(points)
    des = np.zeros((0, DESCRIPTOR_BYTES), np.uint8) if descriptors is None else np.asarray(descriptors, np.uint8)
    if des.shape != (k, DESCRIPTOR_BYTES) or k > FEATURES:
        raise ValueError(f"expected at most {FEATURES} points with {DESCRIPTOR_BYTES}-byte descriptors")
    header = np.array([(VERSION, shape_hw[0], shape_hw[1], k)], _HEADER)
    fixed = np.clip(np.rint(points * _POINT_SCALE), 0, 65535).astype("<u2")
    return header.tobytes() + fixed.tobytes() + des.tobytes()


def unpack(blob) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """((height, width), float32[k, 2] points, uint8[k, 32] descriptors) of a packed blob; ValueError if it is
    not one (another version, a truncated or padded blob)."""
    raw = np.frombuffer(memoryview(blob), np.uint8)
    if raw.size < _HEADER.itemsize:
        raise ValueError("keypoint blob shorter than its header")
    head = raw[: _HEADER.itemsize].view(_HEADER)[0]
    k = int(head["count"])
    if int(head["version"]) != VERSION or k > FEATURES or raw.size != _HEADER.itemsize + k * (4 + DESCRIPTOR_BYTES):
        raise ValueError("not a keypoint blob of this version (recompute the column)")
    if min(int(head["height"]), int(head["width"])) < 1:
        raise ValueError("keypoint blob of an empty image")
    at = _HEADER.itemsize
    points = raw[at : at + 4 * k].view("<u2").reshape(k, 2).astype(np.float32) / np.float32(_POINT_SCALE)
    des = raw[at + 4 * k :].reshape(k, DESCRIPTOR_BYTES)
    return (int(head["height"]), int(head["width"])), points, des


def _corner_shift(m: np.ndarray, shape_a, shape_b) -> float:
    """How far the transform a -> b moves a's corners, in fractions of b's sides (0: the frames agree)."""
    h, w = shape_a
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    mapped = corners @ m[:, :2].T + m[:, 2]
    return float(np.abs(mapped / (shape_b[1], shape_b[0]) - corners / (w, h)).max())


def match(a, b, matcher=None) -> tuple[int, float]:
    """(inliers, corner shift) of two unpacked keypoint sets; (0, inf) when they are no copy of each other."""
    cv = cv2()
    (shape_a, pa, da), (shape_b, pb, db) = a, b
    if len(pa) < 4 or len(pb) < 4:
        return 0, float("inf")
    matcher = matcher or cv.BFMatcher(cv.NORM_HAMMING)
    good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    # one-to-one: a point of b keeps only its closest match (repeated texture must not count twice)
    good.sort(key=lambda g: (g.distance, g.queryIdx))
    first: dict[int, object] = {}
    for g in good:
        first.setdefault(g.trainIdx, g)
    good = list(first.values())
    if len(good) < 4:
        return 0, float("inf")
    src = pa[[g.queryIdx for g in good]]
    dst = pb[[g.trainIdx for g in good]]
    # OpenCV's RANSAC seeds its own generator on every call: the same pair gets the same answer anywhere
    m, inliers = cv.estimateAffinePartial2D(src, dst, method=cv.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=500)
    if m is None:
        return 0, float("inf")
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    rotation = abs(float(np.degrees(np.arctan2(m[1, 0], m[0, 0]))))
    if not (1 / MAX_SCALE < scale < MAX_SCALE) or rotation > MAX_ROTATION:
        return 0, float("inf")
    return int(inliers.sum()), _corner_shift(m, shape_a, shape_b)


def inlier_counts(blobs, a, b) -> tuple[np.ndarray, np.ndarray]:
    """(int32 inliers, float64 corner shift) of the pairs (blobs[a[k]], blobs[b[k]]) of packed blobs (None: no
    keypoints, 0 inliers). Each pair is matched from the blob that sorts first, so the answer does not depend on the
    rows' order (memory and sharded mode fetch them in different orders)."""
    cv = cv2()
    matcher = cv.BFMatcher(cv.NORM_HAMMING)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    inliers = np.zeros(len(a), np.int32)
    shift = np.full(len(a), np.inf)
    cache: dict[int, tuple | None] = {}

    def load(i: int):  # (the blob's bytes, its unpacked keypoints), None without keypoints; once per row
        if i not in cache:
            blob = blobs[i]  # bytes or a buffer (an Arrow column's, zero-copy)
            cache[i] = None if blob is None else (bytes(blob), unpack(blob))
        return cache[i]

    for k, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        kx, ky = load(x), load(y)
        if kx is None or ky is None:
            continue
        if ky[0] < kx[0]:
            kx, ky = ky, kx
        inliers[k], shift[k] = match(kx[1], ky[1], matcher)
    return inliers, shift
