"""``foldkit inspect``: layers, norms, and which norms fold (and why not)."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.defaults import BN_VARIANTS

NAME = "inspect"
HELP = "list layers and norms, and say which norms fold (and why not)"
DESCRIPTION = (
    "For a Darknet cfg: every layer with its type, output shape and fold verdict, and the choices foldkit made "
    "where Darknet differs from itself. For an ONNX model: every norm node and whether it folds, with the reason."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a built-in name, a .cfg or an .onnx path")
    options.add_image_size(parser, default_help="a cfg's [net] width and height")
    parser.add_argument("--bn-variant", choices=BN_VARIANTS, default="alexeyab",
                        help="the BatchNorm ε a cfg's weights will be read with (named in the fork choices)")


def run(args: argparse.Namespace) -> int:
    from foldkit.inspect import inspect_target

    print(inspect_target(args.target, bn_variant=args.bn_variant, img_size=args.img_size))
    return EXIT_OK
