"""Shared fixtures: the optional data beside the checkout.

``../shared`` (or the folder ``FOLDKIT_SHARED`` names) may hold ``darknet/`` (real Darknet cfgs, AlexeyAB's
zoo in ``darknet/zoo/``) and ``real/`` (pjreddie's trained yolov3-tiny, Darknet's test photos, two trained
ONNX classifiers). Tests that need them skip, saying which folder is missing; docs/testing.md says where
each comes from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir(name: str, marker: str) -> Path | None:
    """``shared/NAME`` beside the checkout (FOLDKIT_SHARED overrides) when it holds MARKER."""
    candidates = [Path(os.environ["FOLDKIT_SHARED"]) / name] if "FOLDKIT_SHARED" in os.environ else []
    candidates.append(REPO.parent / "shared" / name)
    return next((c for c in candidates if (c / marker).is_file()), None)


def shared_darknet_dir() -> Path | None:
    """The real Darknet cfg files, if present."""
    return _shared_dir("darknet", "yolov3.cfg")


def shared_real_dir() -> Path | None:
    """Trained weights and real photos (pjreddie's yolov3-tiny, Darknet's photos), if present."""
    return _shared_dir("real", "yolov3-tiny.weights")


@pytest.fixture
def shared_darknet() -> Path:
    folder = shared_darknet_dir()
    if folder is None:
        pytest.skip("../shared/darknet (real Darknet cfg files; set FOLDKIT_SHARED) is not present")
    return folder


@pytest.fixture
def shared_real() -> Path:
    folder = shared_real_dir()
    if folder is None:
        pytest.skip("../shared/real (pjreddie's trained yolov3-tiny and Darknet's photos; set FOLDKIT_SHARED) "
                    "is not present")
    return folder
