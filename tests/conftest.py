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


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory) -> dict[str, Path]:
    """The built-in yolov3-tiny, seeded random weights, 128×128, dynamic batch: raw heads, and decoded in the graph.

    One export of each for every test that needs a small detector with thousands of candidate boxes
    (the NMS graph and Triton tests append their own NMS tails to the decoded one).
    """
    from foldkit.darknet.export import export_darknet

    folder = tmp_path_factory.mktemp("tiny_yolo")
    export_darknet("yolov3-tiny", folder / "raw.onnx", img_size=128, batch=None)
    export_darknet("yolov3-tiny", folder / "decoded.onnx", img_size=128, batch=None, decode=True)
    return {"raw": folder / "raw.onnx", "decoded": folder / "decoded.onnx"}
