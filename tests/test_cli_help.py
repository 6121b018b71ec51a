"""The command line as a person meets it: help for every option, exit codes, clean warnings, pipes."""

import argparse
import warnings

import pytest

from foldkit.cli import build_parser
from foldkit.cli.codes import EXIT_CODES_EPILOG
from foldkit.cli.feedback import one_line_warnings


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_and_the_epilog_names_exit_codes(name):
    parser = _subcommands()[name]
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert undocumented == [], f"{name}: options without help: {undocumented}"
    text = parser.format_help()
    assert EXIT_CODES_EPILOG.split(" · ")[0] in text and "3 internal error" in text
    assert parser.description and "``" not in parser.description  # plain words, no RST markup


def test_defaults_are_shown_and_choices_listed():
    commands = _subcommands()
    check = " ".join(commands["check"].format_help().split())
    assert "(default: 1e-06)" in check and "(default: 0.0001)" in check and "(default: 0)" in check
    detect = " ".join(commands["detect"].format_help().split())
    assert "(default: detections)" in detect and "{yolo,region}" in detect
    assert "ort-unfolded-nofusion" in commands["bench"].format_help()  # --variants lists the names


def test_warnings_are_one_line_in_foldkits_voice(capsys):
    with one_line_warnings("quantize"):
        warnings.warn("random calibration is for smoke tests only\nsecond line", UserWarning, stacklevel=1)
        warnings.warn("random calibration is for smoke tests only\nsecond line", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "foldkit quantize: warning: random calibration is for smoke tests only\n"
