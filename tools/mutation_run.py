"""Mutation run: plant each named bug in a copy of the repository and see whether the tests catch it.

A test suite is only as good as the wrong code it rejects. Each mutation below is a bug someone
could plausibly write (ε outside the square root, only NaN counted as non-finite, probes only
from U[0,1)...); this script applies each one to a fresh copy of the repository (the files git
tracks, plus untracked ones it does not ignore), runs the tests meant to catch it there, and
reports ``killed`` (a test failed) or ``survived`` (every test passed: a hole in the suite).
The unmutated copy runs the same tests first and must pass, or nothing is concluded.

Usage, from the repository root::

    python tools/mutation_run.py            # every mutation
    python tools/mutation_run.py --only eps-outside-sqrt --only parity-nan-only
    python tools/mutation_run.py --list

Exit status: 0 when every mutation is killed, 1 when one survives, 2 when a mutation no longer
applies (its text is not found exactly once: the code moved, update the table) or the baseline fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    """One planted bug: replace ``old`` (found exactly once in ``path``) with ``new``; ``tests`` should fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


PARITY_TESTS = ("tests/test_parity_compare.py", "tests/test_parity_probes.py")
FOLD_TESTS = ("tests/test_fold_float64_reference.py", "tests/test_affine.py")
MUTATIONS = (
    Mutation("parity-nan-only", "foldkit/parity.py", "finite_a, finite_b = np.isfinite(a64), np.isfinite(b64)",
             "finite_a, finite_b = ~np.isnan(a64), ~np.isnan(b64)", PARITY_TESTS),
    Mutation("parity-ids-under-rtol", "foldkit/parity.py", "passed=mismatches == 0",
             "passed=max_abs <= atol + rtol * ref_max", PARITY_TESTS),
    Mutation("parity-names-ignored", "foldkit/parity.py", "        if only_candidate or only_reference:",
             "        if False:", PARITY_TESTS),
    Mutation("probes-unit-range-only", "foldkit/probe.py", "enumerate(DISTRIBUTIONS.items())",
             "enumerate(list(DISTRIBUTIONS.items())[:1])", PARITY_TESTS),
    Mutation("probes-batch-1-only", "foldkit/probe.py", "return batch + which", "return batch", PARITY_TESTS),
    Mutation("probes-one-spatial-size", "foldkit/probe.py", "return SPATIAL_SIZES[which]",
             "return SPATIAL_SIZES[0]", PARITY_TESTS),
    Mutation("eps-outside-sqrt", "foldkit/fold/affine.py", "else np.sqrt(var + eps)", "else np.sqrt(var) + eps",
             FOLD_TESTS),
    Mutation("eps-dropped", "foldkit/fold/affine.py", "else np.sqrt(var + eps)", "else np.sqrt(var)", FOLD_TESTS),
    Mutation("eps-squared", "foldkit/fold/affine.py", "else np.sqrt(var + eps)", "else np.sqrt(var + eps * eps)",
             FOLD_TESTS),
    Mutation("leaky-slope-0.01", "foldkit/activations.py", "LEAKY_SLOPE = 0.1 ", "LEAKY_SLOPE = 0.01 ",
             ("tests/test_darknet_activations.py",)),
    Mutation("shift-without-mean", "foldkit/fold/affine.py", "shift = beta - mean * scale", "shift = beta - mean",
             FOLD_TESTS),
)


def repository_files(root: Path) -> list[str]:
    """What git tracks plus untracked files it does not ignore: the working tree as a developer has it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_repository(root: Path, target: Path) -> None:
    for name in repository_files(root):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target / name)


def apply(mutation: Mutation, copy: Path) -> None:
    path = copy / mutation.path
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise LookupError(f"{mutation.name}: {mutation.path} holds the text to mutate {found} times, not once; "
                          "the code moved: update this mutation")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[bool, str, float]:
    """Run ``tests`` in ``copy`` (its foldkit first on the path); return (passed, the first failure, seconds)."""
    env = dict(os.environ)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests that read ../shared find it from the copy too
        env.setdefault("FOLDKIT_SHARED", str(shared))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=copy,
                          env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - start
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    last = done.stdout.strip().splitlines()[-1:] or [""]
    return done.returncode == 0, failed[0] if failed else last[0], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name:<26} {m.path}: {m.old!r} -> {m.new!r}  [{', '.join(m.tests)}]")
        return 0 if args.list else 2
    with tempfile.TemporaryDirectory(prefix="foldkit-mutation-") as folder:
        baseline = Path(folder) / "baseline"
        copy_repository(REPO, baseline)
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        passed, detail, seconds = run_tests(baseline, tests)
        print(f"baseline (no mutation): {'passed' if passed else 'FAILED'} in {seconds:.0f}s ({detail})")
        if not passed:
            return 2
        survived = 0
        for mutation in chosen:
            copy = Path(folder) / mutation.name
            shutil.copytree(baseline, copy)
            try:
                apply(mutation, copy)
            except LookupError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            passed, detail, seconds = run_tests(copy, mutation.tests)
            survived += passed
            print(f"{mutation.name:<26} {'SURVIVED' if passed else 'killed':<9} {seconds:>5.0f}s  {detail}")
            shutil.rmtree(copy)
    print(f"{len(chosen) - survived} of {len(chosen)} mutations killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
