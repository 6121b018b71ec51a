"""Darknet's letterbox_image / resize_image arithmetic (foldkit.darknet.preprocess).

Hand-worked cases run everywhere; where pjreddie's libdarknet is installed the tensors are compared
with its own letterbox_image and resize_image, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_real_dir
from darknet_detections import load

from foldkit.darknet.preprocess import letterbox_image, letterbox_size, resize_image, to_unit
from foldkit.deploy.detect import load_image


def test_columns_are_point_sampled_and_the_last_column_copied():
    """2 → 3 columns: samples at 0, 0.5 and the last pixel; 3 → 2: the first and the last pixel (no averaging)."""
    row = np.array([[[0.0, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(resize_image(row, 3, 1)[0, 0], [0.0, 0.5, 1.0])
    row3 = np.array([[[0.2, 0.9, 0.4]]], dtype=np.float32)
    np.testing.assert_array_equal(resize_image(row3, 2, 1)[0, 0], np.float32([0.2, 0.4]))


def test_last_row_keeps_only_its_first_term():
    """2 → 42 rows: the last row samples at 0.99999994 (float32), so Darknet keeps (1 − dy)·row 0 ≈ 6e-8 of a
    white image — not the last source row. Every other row of a constant image stays that constant."""
    white = np.ones((3, 2, 3), dtype=np.float32)
    out = resize_image(white, 3, 42)
    np.testing.assert_allclose(out[:, :-1], 1.0, atol=1e-6)
    assert 0 < out[:, -1].max() < 1e-6


def test_letterbox_size_is_integer_and_centred():
    assert letterbox_size(768, 576, 416, 416) == (416, 312)  # dog.jpg: 576·416 // 768
    assert letterbox_size(121, 90, 64, 64) == (64, 47)  # 90·64 = 5760, // 121 = 47 (round() would give 48)
    tensor, (new_w, new_h) = letterbox_image(np.zeros((90, 121, 3), np.uint8), 64, 64)
    assert (new_w, new_h) == (64, 47)
    gray = np.all(tensor == 0.5, axis=(0, 2))
    assert gray[:8].all() and not gray[8:55].any() and gray[55:].all()  # (64 − 47) // 2 = 8 rows above, 9 below


def test_pixels_are_bytes_over_255_in_double():
    """load_image_stb: (float)byte / 255. — a double division rounded once to float32."""
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_unit(values), (values / 255.0).astype(np.float32))


@pytest.fixture(scope="module")
def libdarknet():
    lib = load()
    if lib is None:
        pytest.skip("pjreddie's libdarknet (Debian package darknet) is not installed")
    return lib


@pytest.mark.parametrize("source,target", [((5, 7), (11, 3)), ((1, 5), (4, 9)), ((6, 1), (3, 4)), ((13, 17), (13, 17)),
                                           ((300, 200), (7, 5)), ((3, 3), (100, 100)), ((2, 2), (5, 42)),
                                           ((5, 2000), (1, 416))])
def test_resize_is_bit_identical_to_libdarknet(libdarknet, source, target):
    """(width, height) pairs: down, up, one-pixel sources, same size, and the last-row case above."""
    rng = np.random.default_rng(sum(source) * 100 + sum(target))
    image = rng.random((3, source[1], source[0]), dtype=np.float32)
    np.testing.assert_array_equal(resize_image(image, *target), libdarknet.resize(image, *target))


@pytest.mark.parametrize("size", [(416, 416), (320, 192), (97, 61)])
def test_letterbox_of_photos_is_bit_identical_to_libdarknet(libdarknet, size):
    """Darknet's test photos, decoded by PIL here and by Darknet's stb there: the same float32 tensor."""
    real = shared_real_dir()
    if real is None:
        pytest.skip("../shared/real (Darknet's test photos; set FOLDKIT_SHARED) is not present")
    for photo in sorted((real / "photos").glob("*.jpg")):
        ours, _ = letterbox_image(load_image(photo), *size)
        np.testing.assert_array_equal(ours, libdarknet.letterbox(photo, *size), err_msg=photo.name)
