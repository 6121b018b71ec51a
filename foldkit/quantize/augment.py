"""Held-out images made from the calibration images: seeded crops, mirrors and aspect stretches.

A handful of photos is too few to both calibrate on and judge on. Each variant is a different
input to the network (objects at another scale and place, mirrored, with another letterbox
padding), so the int8 error measured on it is not the error on the image the ranges were fitted
to; it is still the same scenes, which flatters the result somewhat, and every report says so.
The variants are written as PNG files, so they go through the same preprocessing hook as the
calibration images themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foldkit.deploy.detect import load_image

CROP_SIDE = (0.55, 0.9)  # each side of a crop, as a fraction of the image's
STRETCH = (0.8, 1.25)  # width scale of a variant against its height


def write_variants(images: list[Path], count: int, seed: int, folder: Path) -> list[Path]:
    """``count`` seeded variants of each image in ``images``, written as PNGs under ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for index, path in enumerate(images):
        image = load_image(path)
        for variant in range(count):
            out = folder / f"{index:04d}-{variant}.png"
            Image.fromarray(_variant(image, rng, mirror=variant % 2 == 0)).save(out)
            written.append(out)
    return written


def _variant(image: np.ndarray, rng: np.random.Generator, *, mirror: bool) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    crop_h = max(1, round(height * rng.uniform(*CROP_SIDE)))
    crop_w = max(1, round(width * rng.uniform(*CROP_SIDE)))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = image[top:top + crop_h, left:left + crop_w]
    if mirror:
        crop = crop[:, ::-1]
    stretched_w = max(1, round(crop_w * rng.uniform(*STRETCH)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((stretched_w, crop_h),
                                                                         Image.Resampling.BILINEAR))
