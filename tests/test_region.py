"""YOLOv2 ``[region]`` heads: Darknet's region decoding on planted boxes, metadata, ``foldkit detect``.

Boxes are planted as the logits Darknet's region layer would invert (FORMAT-ZOO §3.3):
``bx = (col + σ(tx))/W``, ``bw = exp(tw)·anchor_w/W`` with anchors in grid cells, objectness σ,
class probabilities a softmax over the class logits. Every other cell has objectness σ(−20).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from foldkit.darknet.head_decode import HeadSpec
from foldkit.deploy.detect import detect_images
from foldkit.deploy.letterbox import Letterbox
from foldkit.deploy.yolo import decode_heads, heads_from_metadata, postprocess
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import add_metadata, network_metadata

SIZE, GRID, CLASSES = 64, 4, 3
CELL = SIZE / GRID
ANCHORS = ((1.0, 1.5), (2.5, 2.0))  # grid cells, as in a [region] section
REGION = HeadSpec(anchors=ANCHORS, classes=CLASSES, kind="region")
IDENTITY = Letterbox.identity(SIZE, SIZE)
# anchor, row, col, cx, cy, w, h (input pixels), class, objectness
PLANTED = [(1, 2, 1, 20.8, 41.6, 30.0, 20.0, 2, 0.95), (0, 0, 3, 55.0, 7.0, 8.0, 9.0, 1, 0.9)]
CLASS_LOGIT = 6.0  # the planted class; the others 0, so its softmax probability is e⁶/(e⁶ + 2)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def region_map(boxes=PLANTED) -> np.ndarray:
    """A raw (1, A·(5+C), H, W) [region] head map holding exactly ``boxes``."""
    depth = CLASSES + 5
    raw = np.zeros((1, len(ANCHORS) * depth, GRID, GRID))
    raw[0, [a * depth + 4 for a in range(len(ANCHORS))]] = -20.0
    for a, row, col, cx, cy, w, h, cls, obj in boxes:
        base = a * depth
        raw[0, base + 0, row, col] = _logit(cx / CELL - col)
        raw[0, base + 1, row, col] = _logit(cy / CELL - row)
        raw[0, base + 2, row, col] = np.log(w / (ANCHORS[a][0] * CELL))
        raw[0, base + 3, row, col] = np.log(h / (ANCHORS[a][1] * CELL))
        raw[0, base + 4, row, col] = _logit(obj)
        raw[0, base + 5 + cls, row, col] = CLASS_LOGIT
    return raw.astype(np.float32)


def _expected_score(obj: float) -> float:
    return obj * np.exp(CLASS_LOGIT) / (np.exp(CLASS_LOGIT) + CLASSES - 1)


def _assert_planted(found) -> None:
    assert len(found) == len(PLANTED)
    by_class = {d.class_id: d for d in found}
    for _, _, _, cx, cy, w, h, cls, obj in PLANTED:
        np.testing.assert_allclose(by_class[cls].box, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), atol=1e-3)
        assert by_class[cls].score == pytest.approx(_expected_score(obj), rel=1e-5)


def test_region_decode_recovers_planted_boxes_with_softmax_scores():
    found = postprocess(decode_heads([region_map()], [REGION], (SIZE, SIZE)), [IDENTITY], conf=0.5, iou=0.45)[0]
    _assert_planted(found)


def test_region_is_not_decoded_as_yolo():
    """The same map read as a [yolo] head (anchors in pixels, logistic classes) gives other boxes and scores."""
    yolo = HeadSpec(anchors=ANCHORS, classes=CLASSES)
    region = decode_heads([region_map()], [REGION], (SIZE, SIZE))
    as_yolo = decode_heads([region_map()], [yolo], (SIZE, SIZE))
    np.testing.assert_allclose(region[..., :2], as_yolo[..., :2])  # centres agree: both σ plus the cell
    assert not np.allclose(region[..., 2:4], as_yolo[..., 2:4])  # sizes: grid cells, not pixels
    assert not np.allclose(region[..., 5:], as_yolo[..., 5:])  # softmax, not logistic


def test_region_softmax_sums_to_one_per_anchor():
    rng = np.random.default_rng(0)
    decoded = decode_heads([rng.normal(size=(2, len(ANCHORS) * (CLASSES + 5), GRID, GRID))], [REGION], (SIZE, SIZE))
    np.testing.assert_allclose(decoded[..., 5:].sum(axis=-1), 1.0, rtol=1e-12)
    assert ((decoded[..., 4] > 0) & (decoded[..., 4] < 1)).all()


def test_region_without_softmax_keeps_the_class_scores_raw():
    """AlexeyAB's region layer leaves the class entries raw when softmax=0 (FORMAT-ZOO §3.2), as --decode does."""
    spec = HeadSpec(anchors=ANCHORS, classes=CLASSES, kind="region", softmax=False)
    decoded = decode_heads([region_map()], [spec], (SIZE, SIZE))
    a, row, col, *_ = PLANTED[0]
    index = (a * GRID + row) * GRID + col
    np.testing.assert_allclose(decoded[0, index, 5:], [0.0, 0.0, CLASS_LOGIT])


def test_metadata_carries_region_heads(tmp_path):
    from foldkit.darknet.plan import plan_network

    cfg = tmp_path / "region.cfg"
    cfg.write_text(f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\n"
                   f"[convolutional]\nfilters={len(ANCHORS) * (CLASSES + 5)}\nsize=1\nstride={int(CELL)}\n"
                   "activation=linear\n"
                   f"[region]\nanchors={','.join(str(v) for pair in ANCHORS for v in pair)}\nclasses={CLASSES}\n"
                   f"num={len(ANCHORS)}\ncoords=4\nsoftmax=1\n")
    info = plan_network(cfg).info
    props = network_metadata(info, (1, 3, SIZE, SIZE))
    assert json.loads(props["foldkit.yolo_heads"])[0]["kind"] == "region"
    specs = heads_from_metadata(props)
    assert specs == [REGION]


@pytest.mark.parametrize("extra, message", [({"coords": 5}, "coords"), ({"tree": "9k.tree"}, "tree")])
def test_undecodable_region_heads_are_refused(extra, message):
    head = {"kind": "region", "classes": CLASSES, "anchors": ANCHORS, "coords": 4, "softmax": True} | extra
    with pytest.raises(FoldkitError, match=message):
        heads_from_metadata({"foldkit.yolo_heads": json.dumps([head])})


def _constant_head_model(path, raw: np.ndarray, heads_json: str | None) -> None:
    """An ONNX model whose head0 is ``raw`` whatever the image (image·0 + raw), with foldkit's head metadata."""
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    head = helper.make_tensor_value_info("head0", TensorProto.FLOAT, list(raw.shape))
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "planted"], ["head0"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"),
             numpy_helper.from_array(raw, "planted")]
    model = helper.make_model(helper.make_graph(nodes, "region", [image], [head], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    if heads_json is not None:
        add_metadata(model, {"foldkit.yolo_heads": heads_json, "foldkit.decoded": "false"})
    onnx.save(model, path)


def test_detect_finds_boxes_planted_in_a_region_head(tmp_path):
    heads = json.dumps([{"kind": "region", "classes": CLASSES, "anchors": ANCHORS, "coords": 4, "softmax": True}])
    _constant_head_model(tmp_path / "yolov2.onnx", region_map(), heads)
    Image.new("RGB", (SIZE, SIZE), (90, 120, 30)).save(tmp_path / "img.png")
    results = detect_images(tmp_path / "yolov2.onnx", [tmp_path / "img.png"], conf=0.5)
    _assert_planted(results[0].detections)


def test_detect_region_anchors_given_by_hand(tmp_path):
    """A model without metadata: --anchors in grid cells with head_kind='region' decodes the same boxes."""
    _constant_head_model(tmp_path / "bare.onnx", region_map(), None)
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "img.png")
    anchors = ",".join(str(v) for pair in ANCHORS for v in pair)
    results = detect_images(tmp_path / "bare.onnx", [tmp_path / "img.png"], conf=0.5, classes=CLASSES,
                            anchors=anchors, head_kind="region")
    _assert_planted(results[0].detections)


def test_in_graph_region_decoding_matches_deploy_decoding(tmp_path):
    """``--decode``'s decoder (YoloDecoder, torch) and detect's (numpy) give the same boxes and scores.

    The network samples its input every CELL pixels ([local_avgpool] size 1), so the head map is planted
    in the input image itself.
    """
    import torch

    from foldkit.darknet.build import build_model
    from foldkit.darknet.decode import YoloDecoder

    depth = len(ANCHORS) * (CLASSES + 5)
    cfg = tmp_path / "planted.cfg"
    cfg.write_text(f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels={depth}\n"
                   f"[local_avgpool]\nsize=1\nstride={int(CELL)}\npadding=0\n"
                   f"[region]\nanchors={','.join(str(v) for pair in ANCHORS for v in pair)}\nclasses={CLASSES}\n"
                   f"num={len(ANCHORS)}\nsoftmax=1\n")
    raw = np.random.default_rng(3).normal(size=(2, depth, GRID, GRID)).astype(np.float32)
    raw[:1] = region_map()
    image = np.zeros((2, depth, SIZE, SIZE), np.float32)
    image[:, :, ::int(CELL), ::int(CELL)] = raw
    with torch.no_grad():
        in_graph = YoloDecoder(build_model(cfg)).eval()(torch.from_numpy(image)).double().numpy()
    np.testing.assert_allclose(in_graph, decode_heads([raw], [REGION], (SIZE, SIZE)), rtol=2e-5, atol=1e-4)
    _assert_planted(postprocess(in_graph[:1], [IDENTITY], conf=0.5, iou=0.45)[0])
