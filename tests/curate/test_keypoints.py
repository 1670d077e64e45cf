"""curate.keypoints (issue 16): the stored keypoint blob round-trips and refuses what it is not; a crop or a resize of
a photo matches under one similarity transform with many inliers (a crop moves the frame, a resize does not); an
unrelated photo, a flipped copy and a flat image do not; the answer does not depend on the pair's order."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from mmcurate.curate import keypoints

pytest.importorskip("cv2")


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


@pytest.fixture(scope="module")
def photos():
    astronaut = Image.fromarray(skimage.data.astronaut()).resize((384, 384), Image.BICUBIC)
    coffee = Image.fromarray(skimage.data.coffee())
    w, h = astronaut.size
    return {
        "astronaut": astronaut,
        "crop": astronaut.crop((10, 6, w - 12, h - 16)),  # ~6 % of each side
        "resize": astronaut.resize((200, 200), Image.BICUBIC),
        "coffee_small": coffee.resize((250, 167), Image.BICUBIC),  # 600 x 400 -> 250 x 167: its sides round
        "mirror": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "coffee": coffee,
        "flat": Image.new("RGB", (300, 200), (90, 120, 150)),
    }


@pytest.fixture(scope="module")
def blobs(photos):
    names = list(photos)
    return names, keypoints.extract([_luma(photos[n]) for n in names])


def _pair(blobs, x, y):
    names, packed = blobs
    inliers, shift = keypoints.inlier_counts(packed, [names.index(x)], [names.index(y)])
    return int(inliers[0]), float(shift[0])


def test_pack_round_trips_and_refuses_other_blobs(blobs):
    names, packed = blobs
    for blob in packed:
        assert len(blob) <= keypoints.MAX_BYTES
        (h, w), points, des = keypoints.unpack(blob)
        assert max(h, w) <= keypoints.SIDE and points.dtype == np.float32 and des.shape == (len(points), 32)
        assert ((points >= 0) & (points <= keypoints.SIDE)).all()
        assert keypoints.pack((h, w), points, des) == blob
    photo = packed[names.index("astronaut")]
    assert len(keypoints.unpack(photo)[1]) == keypoints.FEATURES
    with pytest.raises(ValueError, match="this version"):
        keypoints.unpack(photo[:-1])
    with pytest.raises(ValueError, match="this version"):
        keypoints.unpack(b"\x02\x00" + photo[2:])
    with pytest.raises(ValueError, match="header"):
        keypoints.unpack(b"\x01")
    with pytest.raises(ValueError, match="empty image"):
        keypoints.unpack(keypoints.pack((0, 5), np.zeros((0, 2)), None))
    with pytest.raises(ValueError, match="at most"):
        keypoints.pack((10, 10), np.zeros((3, 2)), np.zeros((2, 32), np.uint8))


def test_a_crop_and_a_resize_match_under_one_transform(blobs):
    crop_inliers, crop_shift = _pair(blobs, "astronaut", "crop")
    resize_inliers, resize_shift = _pair(blobs, "astronaut", "resize")
    assert crop_inliers >= 3 * keypoints.DEFAULT_MIN_INLIERS
    assert resize_inliers >= 3 * keypoints.DEFAULT_MIN_INLIERS
    assert crop_shift > keypoints.ALIGNED_SHIFT  # a crop moves the frame: grids do not line up
    assert resize_shift <= keypoints.ALIGNED_SHIFT  # a resize does not
    inliers, shift = _pair(blobs, "coffee", "coffee_small")
    assert inliers >= 2 * keypoints.DEFAULT_MIN_INLIERS and shift <= keypoints.ALIGNED_SHIFT


@pytest.mark.parametrize("other", ["coffee", "mirror", "flat"])
def test_unrelated_flipped_and_flat_images_do_not_match(blobs, other):
    inliers, _ = _pair(blobs, "astronaut", other)
    assert inliers < keypoints.DEFAULT_MIN_INLIERS


def test_flat_image_has_no_keypoints_and_none_blobs_match_nothing(blobs):
    names, packed = blobs
    assert len(keypoints.unpack(packed[names.index("flat")])[1]) == 0
    inliers, shift = keypoints.inlier_counts([packed[0], None], [0, 1], [1, 0])
    assert inliers.tolist() == [0, 0] and np.isinf(shift).all()


def test_the_answer_does_not_depend_on_the_pairs_order(blobs):
    names, packed = blobs
    n = len(names)
    a, b = np.triu_indices(n, 1)
    forward = keypoints.inlier_counts(packed, a, b)
    backward = keypoints.inlier_counts(packed[::-1], n - 1 - a, n - 1 - b)
    swapped = keypoints.inlier_counts(packed, b, a)
    for other in (backward, swapped):
        np.testing.assert_array_equal(forward[0], other[0])
        np.testing.assert_array_equal(forward[1], other[1])


@pytest.mark.parametrize("shape", [(1, 1), (20, 20), (31, 300), (4, 5000), (5000, 2), (64, 9000)])
def test_tiny_and_extreme_images_get_no_keypoints_without_failing(shape):
    luma = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    (h, w), points, _ = keypoints.unpack(keypoints.extract([luma])[0])
    assert max(h, w) <= max(keypoints.SIDE, max(shape)) and min(h, w) >= 1
    assert len(points) == 0
