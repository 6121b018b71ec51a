"""Option types and option groups several commands share.

Each type refuses what the API could not use with argparse's one-line error, so a bad value is
exit 2 before any work starts.
"""

from __future__ import annotations

import argparse
import math

from foldkit.defaults import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    DYNAMIC_SIZE,
    MAX_MAX_DET,
    MIN_EXPORT_OPSET,
    OPENVINO_PRECISIONS,
)

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit here


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, unless it has none worth showing (None, off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        shown = not hidden and "%(default)" not in text
        if shown and (action.option_strings or action.nargs in ("?", "*")):
            text += " (default: %(default)s)"
        return text


def integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, not {value}")
    return value


def positive(text: str) -> int:
    return integer(text, 1, None, "a positive integer")


def max_det(text: str) -> int:
    return integer(text, 1, MAX_MAX_DET, f"a detection count from 1 to {MAX_MAX_DET}")


def seed(text: str) -> int:
    return integer(text, 0, MAX_SEED, f"a seed from 0 to {MAX_SEED}")


def opset(text: str) -> int:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    return integer(text, MIN_EXPORT_OPSET, newest, f"an opset from {MIN_EXPORT_OPSET} to {newest} (this onnx's newest)")


def batch(text: str) -> int | None:
    """A batch size, or None for 'dynamic'."""
    if text == "dynamic":
        return None
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"batch must be at least 1 or 'dynamic', not {text!r}") from None


def image_size(text: str) -> int | tuple[int, int]:
    """An input size: ``N`` (square) or ``HxW`` (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    what = "an input size N or HxW (height x width) of positive integers"
    if len(parts) == 1:
        return integer(parts[0], 1, None, what)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
    height, width = (integer(part, 1, None, what) for part in parts)
    return height if height == width else (height, width)


def export_image_size(text: str) -> int | tuple[int, int] | str:
    """``N``, ``HxW``, or ``dynamic``: height and width left free in the exported graph."""
    if text == DYNAMIC_SIZE:
        return text
    try:
        return image_size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected N, HxW (height x width) or {DYNAMIC_SIZE!r}, not {text!r}") \
            from None


def add_image_size(parser: argparse.ArgumentParser, *, default_help: str = "", default: int | None = None) -> None:
    """``--img-size N|HxW``: the input size a command builds, runs or times the network at."""
    text = "input size: N (square) or HxW, height x width"
    parser.add_argument("--img-size", type=image_size, metavar="N|HxW", default=default,
                        help=text if default is not None else f"{text} (default: {default_help})")


def batch_list(text: str) -> list[int]:
    return [integer(b, 1, None, "comma-separated batch sizes of at least 1") for b in text.split(",")]


def real(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text}")
    return value


def tolerance(text: str) -> float:
    return real(text, 0.0, math.inf, "a finite tolerance ≥ 0")


def fraction(text: str) -> float:
    return real(text, 0.0, 1.0, "a number from 0 to 1")


def snr(text: str) -> float:
    return real(text, -1000.0, 1000.0, "a signal-to-noise ratio in dB")


def scale(text: str) -> float:
    return real(text, 1e-6, 1e6, "a positive finite number")


def comma_list(text: str) -> list[str]:
    """``a, b,,c`` → ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def add_tolerances(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atol", type=tolerance, default=DEFAULT_ATOL,
                        help="absolute tolerance: an output passes when max|a − b| ≤ atol + rtol · max|reference|")
    parser.add_argument("--rtol", type=tolerance, default=DEFAULT_RTOL,
                        help="tolerance relative to each reference output's max |value|")


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=OPENVINO_PRECISIONS, default="fp32",
                        help="OpenVINO's inference precision hint (with --providers openvino); default: OpenVINO's "
                             "own choice (bf16 on CPUs with AMX, f32 elsewhere)")


def add_seed(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seed", type=seed, default=0, help=f"seed of {what}")


def add_calibration(parser: argparse.ArgumentParser) -> None:
    """The calibration data of quantize and optimize: images or an .npy batch, or seeded noise for smoke tests."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--calib", help="a folder of images (preprocessed as detect does) or an .npy NCHW batch")
    source.add_argument("--calib-random", type=positive, metavar="N",
                        help="N seeded random inputs (smoke tests only: not representative data)")
