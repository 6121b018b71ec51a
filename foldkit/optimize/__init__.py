"""`foldkit optimize`: the fastest artifact this machine runs, proven accurate against the original."""

from foldkit.optimize.optimize import MODEL_FILE, RECORD_FILE, OptimizeOptions, optimize_model
from foldkit.optimize.report import CandidateResult, OptimizeReport

__all__ = ["MODEL_FILE", "RECORD_FILE", "CandidateResult", "OptimizeOptions", "OptimizeReport", "optimize_model"]
