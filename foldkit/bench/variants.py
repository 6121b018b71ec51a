"""The benchmark's variants, one record each, and the model files they run.

ONNX Runtime folds Conv+BatchNormalization on its own (``ConvBNFusion``) at ``basic`` and above,
so an "unfolded" model run with default settings is secretly folded. Every variant therefore
names its model (unfolded, folded by foldkit, or int8), its runtime, ORT's optimization level and
the rewrites it disables, or OpenVINO's precision hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foldkit.bench.config import BenchConfig
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import require_input_file
from foldkit.runtime import CONV_BN_FUSION

UNFOLDED, FOLDED, INT8 = "unfolded", "folded", "int8"


@dataclass(frozen=True)
class Variant:
    """One way of running the network: which model, on which runtime, with which ORT settings."""

    name: str
    description: str
    model: str  # UNFOLDED, FOLDED (by foldkit) or INT8
    runtime: str = "ort"  # "ort", "openvino" (its own runtime, CPU) or "torch" (PyTorch eager)
    level: str = "all"  # ORT graph optimization level
    disabled: tuple[str, ...] = ()  # ORT rewrite rules switched off
    precision: str = "fp32"  # OpenVINO's inference precision hint: "fp32" or "default" (OpenVINO's own choice)

    @property
    def source(self) -> str:
        """Which kind of file the variant loads: "torch" (a saved module) or "ort" (the ONNX file, for OpenVINO too)."""
        return "torch" if self.runtime == "torch" else "ort"


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("ort-unfolded-noopt", "unfolded, every ORT graph optimization off", UNFOLDED, level="disable"),
    Variant("ort-unfolded-nofusion", "unfolded, ORT all but ConvBNFusion disabled", UNFOLDED, level="all",
            disabled=(CONV_BN_FUSION,)),
    Variant("ort-unfolded-default", "unfolded, ORT defaults (ORT fuses Conv+BN itself)", UNFOLDED, level="all"),
    Variant("ort-folded-disable", "folded by foldkit, ORT optimizations off", FOLDED, level="disable"),
    Variant("ort-folded-basic", "folded by foldkit, ORT basic", FOLDED, level="basic"),
    Variant("ort-folded-extended", "folded by foldkit, ORT extended", FOLDED, level="extended"),
    Variant("ort-folded-all", "folded by foldkit, ORT all", FOLDED, level="all"),
    Variant("torch-unfolded", "PyTorch eager, unfolded", UNFOLDED, runtime="torch"),
    Variant("torch-folded", "PyTorch eager, folded by foldkit", FOLDED, runtime="torch"),
    Variant("ort-int8-default", "int8 (QDQ), ORT defaults", INT8, level="all"),
    Variant("openvino-folded-fp32", "folded by foldkit, OpenVINO CPU, precision hint f32", FOLDED,
            runtime="openvino", precision="fp32"),
    Variant("openvino-folded-default", "folded by foldkit, OpenVINO CPU, its default precision (bf16 on AMX)",
            FOLDED, runtime="openvino", precision="default"),
    Variant("openvino-int8-default", "int8 (QDQ), OpenVINO CPU, its default precision", INT8, runtime="openvino",
            precision="default"),
)}


def parse_variants(text: str | None, *, int8: bool = False, openvino: bool = False) -> list[str]:
    """Variant names from ``a,b,c`` or ``all``; ``all`` has the int8 rows only when ``int8`` (a model for them
    exists) and the OpenVINO rows only when ``openvino`` (asked for: ``--providers openvino``)."""
    if not text or text == "all":
        return [name for name, v in VARIANTS.items()
                if (int8 or v.model != INT8) and (openvino or v.runtime != "openvino")]
    return require_known([v.strip() for v in text.split(",") if v.strip()])


def require_known(names: list[str]) -> list[str]:
    """``names``, if it is a non-empty list of variant names; else a FoldkitError that lists the known ones."""
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        problem = f"unknown variant(s) {', '.join(unknown)}" if unknown else "no variants given"
        raise FoldkitError(f"{problem}; known: {', '.join(VARIANTS)}")
    return names


ModelFiles = dict[tuple[str, str], Path]  # (runtime, model) → the file that variant loads


def prepare_models(config: BenchConfig, folder: Path, notes: list[str]) -> ModelFiles:
    """Write (into ``folder``) or find every model file the chosen variants load."""
    chosen = [VARIANTS[name] for name in config.variants]
    if config.weights is not None:
        require_input_file(config.weights, "weights")
    if Path(config.model).suffix.lower() == ".onnx":
        require_input_file(config.model, "model")
        files = _fold_onnx_file(config, folder, notes, chosen)
    else:
        files = export_darknet(config, folder, notes, torch={v.model for v in chosen if v.runtime == "torch"})
    if any(v.model == INT8 for v in chosen):
        files["ort", INT8] = _int8_model(config, files["ort", FOLDED], folder)
    return files


def export_darknet(config: BenchConfig, folder: Path, notes: list[str], *, torch: set[str]) -> ModelFiles:
    """A built-in name or .cfg → unfolded and folded ONNX (dynamic batch), and saved torch modules for ``torch``.

    The ONNX files come from foldkit's one Darknet export (:func:`foldkit.darknet.export.export_darknet`);
    without ``weights`` the weights and BatchNorm statistics are drawn, seeded, so folding really
    changes them.
    """
    import torch as pytorch

    from foldkit.darknet import export
    from foldkit.fold.torch import fold_module

    seed = None if config.weights else config.seed
    files: ModelFiles = {}
    for kind in (UNFOLDED, FOLDED):
        files["ort", kind] = folder / f"{kind}.onnx"
        result = export.export_darknet(config.model, files["ort", kind], weights=config.weights, seed=seed,
                                       img_size=config.img_size, batch=None, opset=config.opset, fold=kind == FOLDED)
    notes.append(f"weights: {result.weights_source}")
    if torch:
        model, _ = export.load_network(config.model, weights=config.weights, seed=seed, img_size=config.img_size)
        modules = {UNFOLDED: model, FOLDED: fold_module(model)[0] if FOLDED in torch else None}
        for kind in sorted(torch):
            files["torch", kind] = folder / f"torch-{kind}.pt"
            pytorch.save(modules[kind], files["torch", kind])
    return files


def _fold_onnx_file(config: BenchConfig, folder: Path, notes: list[str], chosen: list[Variant]) -> ModelFiles:
    """An .onnx model is the unfolded side; foldkit folds it for the folded side."""
    from foldkit.fold.onnx import fold_onnx
    from foldkit.onnxio.files import load_onnx, save_onnx

    if config.weights:
        raise FoldkitError("--weights goes with a .cfg or built-in model, not an .onnx file")
    torch_rows = [v.name for v in chosen if v.runtime == "torch"]
    if torch_rows:
        raise FoldkitError(f"{config.model}: variants {', '.join(torch_rows)} need a .cfg or built-in model")
    folded_model, report = fold_onnx(load_onnx(config.model), inplace=True)
    folded = folder / "folded.onnx"
    save_onnx(folded_model, folded)
    notes.append(f"folded side: {report.summary()}")
    return {("ort", UNFOLDED): Path(config.model), ("ort", FOLDED): folded}


def _int8_model(config: BenchConfig, folded: Path, folder: Path) -> Path:
    """The int8 row's model: the given file, or the folded model quantized by ``config.quantize``."""
    if config.int8_model and config.quantize:
        raise FoldkitError("give either an int8 model file or a quantizer, not both")
    if config.int8_model:
        if not Path(config.int8_model).is_file():
            raise FoldkitError(f"{config.int8_model}: no such file")
        return Path(config.int8_model)
    if config.quantize:
        return Path(config.quantize(folded, folder / "int8.onnx"))
    raise FoldkitError("an int8 variant needs an int8 model file (--int8-model) or a quantizer")
