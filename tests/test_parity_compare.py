"""The comparator: exact outputs exactly, non-finite values never, and a bounded fuzz over both.

Each case names the wrong comparator it catches: float64 rounding of integers, int64 overflow in
the difference, a tolerance applied to ids, only NaN counted as non-finite (Inf slipping through).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from foldkit.parity import compare_outputs

I64 = np.iinfo(np.int64)


@pytest.mark.parametrize("candidate,reference", [
    (np.array([I64.max], np.int64), np.array([I64.min], np.int64)),  # their difference overflows int64
    (np.array([I64.min], np.int64), np.array([0], np.int64)),  # |INT64_MIN| is not an int64
    (np.array([2**63], np.uint64), np.array([0], np.uint64)),  # the uint64 high bit
    (np.array([2**53 + 1], np.int64), np.array([2**53], np.int64)),  # equal once rounded to float64
    (np.array([5, 7], np.int64), np.array([5, 8], np.int64)),  # an id off by one, within rtol=0.5 of max|ref|
    (np.array([True, False]), np.array([True, True])),
    (np.array(["cat", "dog"], dtype=object), np.array(["cat", "dig"], dtype=object)),
    (np.array(["cat"]), np.array(["cau"])),
])
def test_exact_outputs_that_differ_fail_whatever_the_tolerance(candidate, reference):
    report = compare_outputs([candidate], [reference], atol=1.0, rtol=0.5)
    output = report.outputs[0]
    assert not report.passed and output.exact and output.mismatches == 1
    assert compare_outputs([reference], [reference.copy()], atol=0, rtol=0).passed
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON even with inf errors
    assert "FAILED (exact: 1 element(s) differ)" in report.format()


def test_the_exact_difference_is_reported_without_overflow():
    output = compare_outputs([np.array([I64.max])], [np.array([I64.min])]).outputs[0]
    assert output.max_abs == float(2**64 - 1)


def test_outputs_of_another_type_fail_as_a_difference():
    report = compare_outputs([np.array([1, 2], np.int32)], [np.array([1, 2], np.int64)])
    assert not report.passed and "type int32 in candidate, int64 in reference" in report.outputs[0].problem
    report = compare_outputs({"y": np.zeros(2, np.float32)}, {"y": np.zeros(2, np.int64)})
    assert not report.passed and "type float32" in report.format()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values_never_pass(bad):
    finite = np.array([1.0, 2.0, 3.0], np.float32)
    broken = finite.copy()
    broken[1] = bad
    for candidate, reference in ((broken, finite), (finite, broken), (broken, broken.copy())):
        output = compare_outputs([candidate], [reference], atol=1e30, rtol=1e30).outputs[0]
        assert not output.passed and output.nonfinite_candidate + output.nonfinite_reference >= 1


def test_the_table_leads_with_what_decides():
    ref = np.array([1e-9, 10.0], np.float32)
    text = compare_outputs([ref + np.float32(5e-4)], [ref]).format()
    header = next(line for line in text.splitlines() if "output" in line)
    assert header.split()[:5] == ["output", "shape", "max|a-b|", "allowed", "used"]
    assert "max rel" not in text and "1.001e-03" in text  # allowed = 1e-6 + 1e-4 · 10
    assert "0.5" in text.split("1.001e-03")[1].split()[0]  # used ≈ 5e-4 / 1.001e-3


# ---- fuzz: a fixed number of seeded cases (bounded time, reproducible from the seed in the message) ----

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.str_]
FUZZ_CASES = 400


def _random_array(rng: np.random.Generator, dtype) -> np.ndarray:
    shape = tuple(int(s) for s in rng.integers(0, 4, rng.integers(0, 4)))
    if dtype is np.str_:
        return rng.choice(np.array(["a", "bb", "", "ccc"], dtype="<U8"), shape)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _perturbed(rng: np.random.Generator, array: np.ndarray) -> tuple[np.ndarray, str]:
    """A copy with one element changed, and how: 'exact', 'nonfinite' or 'float'."""
    other = array.copy()
    i = int(rng.integers(array.size))
    value = array.flat[i]
    kind = array.dtype.kind
    how = "exact"
    if kind == "U":
        other.flat[i] = value + "x"
    elif kind == "b":
        other.flat[i] = not value
    elif kind in "iu":
        info = np.iinfo(array.dtype)
        other.flat[i] = info.min if value != info.min else info.max
    elif rng.random() < 0.3:
        other.flat[i], how = rng.choice([np.inf, -np.inf, np.nan]), "nonfinite"
    else:  # more than the tolerance below allows, whichever side is the reference
        other.flat[i], how = value + array.dtype.type(1.0 + float(np.abs(array).max())), "float"
    return other, how


def test_fuzz_the_comparator():
    rng = np.random.default_rng(20)
    for case in range(FUZZ_CASES):
        dtype = DTYPES[case % len(DTYPES)]
        a = np.asarray(_random_array(rng, dtype))
        same = compare_outputs([a.copy()], [a])
        assert same.passed and same.outputs[0].max_abs == 0, f"case {case}: {dtype} equal to itself fails"
        json.dumps(same.to_dict(), allow_nan=False)
        same.format()
        if a.size == 0:
            continue
        b, how = _perturbed(rng, a)
        for candidate, reference in ((b, a), (a, b)):
            report = compare_outputs([candidate], [reference], atol=0.5, rtol=0.25)
            output = report.outputs[0]
            assert not report.passed, f"case {case}: {dtype} changed ({how}) passes: {a!r} vs {b!r}"
            if how == "exact":
                assert output.exact and output.mismatches == 1, f"case {case}"
            json.dumps(report.to_dict(), allow_nan=False)
            report.format()


def test_fuzz_the_probes():
    """Random input declarations: every probe keeps fixed dims, gives each dynamic one two sizes, one per name."""
    from foldkit.probe import ORT_TYPES, InputSpec, make_probes

    rng = np.random.default_rng(21)
    dtypes = list(ORT_TYPES.values())
    for case in range(60):
        specs = []
        for i in range(int(rng.integers(1, 4))):
            dims = [[int(rng.integers(1, 5)), "batch", "n", None][int(rng.integers(4))]
                    for _ in range(rng.integers(0, 5))]
            specs.append(InputSpec(f"in{i}", dtypes[int(rng.integers(len(dtypes)))], tuple(dims)))
        batch = int(rng.integers(1, 4))
        probes = make_probes(specs, seed=case, batch=batch)
        assert len(probes) in (3, 6), f"case {case}"
        for spec in specs:
            shapes = {p.feeds[spec.name].shape for p in probes}
            for axis, dim in enumerate(spec.shape):
                sizes = {s[axis] for s in shapes}
                if isinstance(dim, int):
                    assert sizes == {dim}, f"case {case}: fixed dim {dim} changed to {sizes}"
                else:
                    assert len(sizes) == 2, f"case {case}: dynamic '{dim}' tried at {sizes} only"
                    assert dim is not None or axis != 0 or sizes == {batch, batch + 1}, f"case {case}: {sizes}"
            assert all(p.feeds[spec.name].dtype == np.dtype(spec.dtype) for p in probes), f"case {case}"
            assert all(np.isfinite(p.feeds[spec.name].astype(np.float64)).all() for p in probes), f"case {case}"
        for probe in probes:  # a dynamic dimension named twice has one size in the probe
            named = {}
            for spec in specs:
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, str):
                        assert named.setdefault(dim, probe.feeds[spec.name].shape[axis]) == \
                            probe.feeds[spec.name].shape[axis], f"case {case}: '{dim}' has two sizes"
