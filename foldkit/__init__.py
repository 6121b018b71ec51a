"""foldkit: fold BatchNorm into convolutions, export lean ONNX graphs, prove nothing changed."""

__version__ = "0.1.0"

from foldkit.darknet import DarknetModel, build_model  # noqa: E402
from foldkit.errors import FoldkitError  # noqa: E402
from foldkit.export import export_onnx  # noqa: E402
from foldkit.fold.report import FoldEntry, FoldReport  # noqa: E402
from foldkit.fold.torch import fold_module  # noqa: E402
from foldkit.nn import ConvNormAct, DarknetConv2D_BN_Leaky, randomize_batchnorm  # noqa: E402

__all__ = [
    "__version__", "DarknetModel", "build_model", "FoldkitError", "export_onnx", "FoldEntry",
    "FoldReport", "fold_module", "ConvNormAct", "DarknetConv2D_BN_Leaky", "randomize_batchnorm",
]
