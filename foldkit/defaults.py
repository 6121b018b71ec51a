"""One home for the constants that several layers share: opset, tolerances, names and limits.

Darknet's activation names and rounded constants live with their formulas in :mod:`foldkit.activations`.

Framework-free (no torch, no onnx), so every layer may import it.
"""

from __future__ import annotations

DEFAULT_OPSET = 17

# Parity: an output passes when max|a − b| ≤ ATOL + RTOL · max|reference|.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-4

BN_EPS = 1e-5  # Darknet adds 1e-5 inside the square root (AlexeyAB; pjreddie on GPU); PyTorch's default too

INPUT_NAME = "images"  # the image input of every model foldkit writes

# The one memory rule (foldkit.limits): work whose estimate exceeds this share of the machine's
# physical memory is refused before anything is allocated, with the estimate in the message (a cfg
# typo such as filters=1000000000, a --batch of a million, a constant that expands to terabytes).
# The largest zoo cfg, yolov4-p6 at 1280×1280, needs 3.7 GiB.
MEMORY_FRACTION = 0.5
UNKNOWN_MEMORY_BYTES = 1 << 40  # assumed where the system does not say how much memory it has
MAX_TEXT_INPUT_BYTES = 64 * 2**20  # a text input read whole (class names): far above any real one

# The choices several layers name (the CLI lists them; each owning module checks them).
BN_VARIANTS = ("alexeyab", "pjreddie")  # Darknet's two BatchNorm ε placements (darknet/weights.py)
EXPORT_ROUTES = ("auto", "direct", "torchscript", "dynamo")  # how a Darknet network reaches ONNX
OPT_LEVEL_NAMES = ("disable", "basic", "extended", "all")  # ONNX Runtime graph optimization levels
HEAD_KINDS = ("yolo", "region")  # the detection heads foldkit decodes
RESIZE_METHODS = ("darknet", "pil")  # how an image is resized into the letterbox (deploy/letterbox.py)
DEFAULT_RESIZE = "darknet"  # a network exported from a Darknet cfg sees what Darknet feeds it
DETECT_ENGINES = ("local", "ray")  # where detect runs its batches (deploy/engines/)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # ORT's static calibration methods
TRITON_KINDS = ("cpu", "gpu")  # a Triton instance group's kind
TRITON_BACKENDS = ("auto", "onnxruntime", "openvino", "python")  # auto: the deployment record's, else onnxruntime
MIN_EXPORT_OPSET = 11  # the oldest opset foldkit's torch export writes
OPENVINO_PRECISIONS = ("fp32", "default", "bf16", "fp16")  # OpenVINO's precision hints; default: its own choice

# YOLO post-processing: Darknet's detection threshold and NMS IoU, and the rows an in-graph NMS returns per image.
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
DEFAULT_MAX_DET = 300
MAX_MAX_DET = 100_000  # more rows per image than any detector yields; a larger value is a typo
OPTIMIZE_MIN_SNR_DB = 30.0  # `foldkit optimize`'s default accuracy gate: every output's held-out SNR
OPTIMIZE_BUDGET_S = 20.0  # `foldkit optimize`'s default time for the interleaved latency rounds

# Input sizes (foldkit/darknet/sizes.py): the img_size that leaves height and width free, the names of those
# dimensions in the graph, and how detect fits an image into a dynamic model's input (deploy/sizing.py).
DYNAMIC_SIZE = "dynamic"
HEIGHT_DIM, WIDTH_DIM = "height", "width"
LETTERBOX_MODES = ("square", "rect")  # square: the full input size; rect: only up to the next stride multiple
DEFAULT_LETTERBOX = "square"
