"""Fold normalizations and per-channel affine ops into the linear op beside them, in any ONNX graph.

The pass (:mod:`.folding`) walks the graph once and offers each node to the patterns registered
in :mod:`.patterns`, one file each; they share the graph view (:mod:`.graph`), the op layout table
(:mod:`.layout`), the BatchNormalization reading (:mod:`.batchnorm`) and the one fold arithmetic
(:mod:`foldkit.fold.affine`).
"""

from foldkit.fold.onnx.folding import PER_SAMPLE_NORMS, fold_onnx, node_counts

__all__ = ["PER_SAMPLE_NORMS", "fold_onnx", "node_counts"]
