"""int8 after the fold: ONNX Runtime's static quantizer plus measured steps, with proof of the cost.

``quantize_onnx`` is the pass (``foldkit quantize``); ``quantized_model_path`` gives bench an int8
model for a float one. The SNR gate itself (``foldkit check --min-snr``) is in :mod:`foldkit.parity`.
"""

from foldkit.quantize.options import STEPS, QuantizeOptions
from foldkit.quantize.quantize import quantize_onnx, quantized_model_path
from foldkit.quantize.report import QuantizeReport

__all__ = ["STEPS", "QuantizeOptions", "QuantizeReport", "quantize_onnx", "quantized_model_path"]
