"""Shared fixtures: seeded models and the optional ../shared/darknet cfg collection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_darknet_dir() -> Path | None:
    """The real Darknet cfg files beside the checkout (FOLDKIT_SHARED overrides), if present."""
    candidates = [Path(os.environ["FOLDKIT_SHARED"]) / "darknet"] if "FOLDKIT_SHARED" in os.environ else []
    candidates.append(REPO.parent / "shared" / "darknet")
    return next((c for c in candidates if (c / "yolov3.cfg").is_file()), None)


@pytest.fixture
def shared_darknet() -> Path:
    folder = shared_darknet_dir()
    if folder is None:
        pytest.skip("../shared/darknet (real Darknet cfg files) is not present")
    return folder
