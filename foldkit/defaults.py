"""One home for the constants that several layers share: opset, tolerances, activation names.

Framework-free (no torch, no onnx), so every layer may import it.
"""

from __future__ import annotations

DEFAULT_OPSET = 17

# Parity: an output passes when max|a − b| ≤ ATOL + RTOL · max|reference|.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-4

BN_EPS = 1e-5  # Darknet adds 1e-5 inside the square root (AlexeyAB; pjreddie on GPU); PyTorch's default too
LEAKY_SLOPE = 0.1  # Darknet's leaky slope (activations.h), also keras-yolo3's LeakyReLU(alpha=0.1)

# Every activation Darknet defines (AlexeyAB activations.c get_activation; FORMAT-ZOO §12.1), all built.
ACTIVATION_NAMES = (
    "leaky", "relu", "logistic", "tanh", "mish", "swish", "linear", "relu6", "elu", "selu", "gelu", "relie",
    "ramp", "revleaky", "loggy", "plse", "stair", "hardtan", "lhtan", "hard_mish", "normalize_channels",
    "normalize_channels_softmax", "normalize_channels_softmax_maxval",
)
# Darknet's rounded constants (activations.h), kept rather than the exact SELU/GELU ones so outputs match it.
SELU_LAMBDA, SELU_ALPHA = 1.0507, 1.6732
GELU_C1, GELU_C3 = 0.797885, 0.035677  # 0.5·x·(1 + tanh(C1·x + C3·x³))
NORMALIZE_CHANNELS_EPS = 0.0001  # added to the per-pixel sum by normalize_channels*

INPUT_NAME = "images"  # the image input of every model foldkit writes

# A Darknet network whose float32 parameters plus per-image activations exceed this is refused before
# anything is allocated (a typo such as filters=1000000000). The largest zoo cfg, yolov4-p6 at
# 1280×1280, needs 3.7 GiB.
MAX_NETWORK_BYTES = 16 * 2**30

# The choices several layers name (the CLI lists them; each owning module checks them).
BN_VARIANTS = ("alexeyab", "pjreddie")  # Darknet's two BatchNorm ε placements (darknet/weights.py)
EXPORT_ROUTES = ("auto", "direct", "torchscript", "dynamo")  # how a Darknet network reaches ONNX
OPT_LEVEL_NAMES = ("disable", "basic", "extended", "all")  # ONNX Runtime graph optimization levels
HEAD_KINDS = ("yolo", "region")  # the detection heads foldkit decodes
DETECT_ENGINES = ("local", "ray")  # where detect runs its batches (deploy/engines/)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # ORT's static calibration methods
TRITON_KINDS = ("cpu", "gpu")  # a Triton instance group's kind
MIN_EXPORT_OPSET = 11  # the oldest opset foldkit's torch export writes
