"""The one registry of Darknet layer types: every route covers every type, and a gap fails loudly.

Four routes dispatch on the registry: the planner (section type → describer), the ``.weights``
layout, the PyTorch builder and the ONNX writer (plan class → function). A type forgotten in any
of them must name itself rather than fall through to a silent pass-through.
"""

from __future__ import annotations

import pytest

from foldkit import build_model
from foldkit.darknet import build, layout, planner, specs, to_onnx
from foldkit.darknet.plan import plan_network
from foldkit.darknet.registry import LAYER_TYPES, SECTION_TYPES, RegistryError, lookup, require_all
from foldkit.darknet.to_onnx import darknet_to_onnx
from foldkit.darknet.weights import WeightsHeader, expected_floats
from foldkit.errors import FoldkitError

ROUTES = {
    ".weights layout": layout._RECORDS,
    "PyTorch builder": build._MODULES,
    "ONNX writer": to_onnx._WRITERS,
}


def test_the_planner_covers_exactly_the_registered_section_types():
    assert set(planner._DESCRIBERS) == set(SECTION_TYPES)


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_covers_exactly_the_registered_layer_types(route):
    assert set(ROUTES[route]) == set(LAYER_TYPES)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", LAYER_TYPES, ids=lambda kind: kind.__name__)
def test_a_type_dropped_from_a_route_is_named(route, kind):
    table = {key: value for key, value in ROUTES[route].items() if key is not kind}
    with pytest.raises(RegistryError, match=rf"the {route} has no entry for Darknet layer type\(s\) {kind.__name__}$"):
        require_all(table, LAYER_TYPES, route)
    with pytest.raises(RegistryError, match=rf"no entry for Darknet layer type {kind.__name__}$"):
        lookup(table, object.__new__(kind), route)


def test_a_section_type_dropped_from_the_planner_is_named():
    describers = {key: value for key, value in planner._DESCRIBERS.items() if key != "local"}
    with pytest.raises(RegistryError, match=r"the planner has no entry for Darknet layer type\(s\) local$"):
        require_all(describers, SECTION_TYPES, "planner")


CFG = "[net]\nchannels=3\nheight=8\nwidth=8\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"


def test_dispatch_without_an_entry_fails_instead_of_passing_through(tmp_path, monkeypatch):
    """With Conv removed from a route, building, converting or sizing a conv network names the type."""
    cfg = tmp_path / "t.cfg"
    cfg.write_text(CFG)
    (tmp_path / "t.weights").write_bytes(WeightsHeader().pack() + bytes(4 * (4 + 4 * 27)))
    plan = plan_network(cfg)
    monkeypatch.delitem(build._MODULES, specs.Conv)
    with pytest.raises(RegistryError, match="PyTorch builder has no entry for Darknet layer type Conv"):
        build_model(cfg)
    monkeypatch.delitem(to_onnx._WRITERS, specs.Conv)
    with pytest.raises(RegistryError, match="ONNX writer has no entry for Darknet layer type Conv"):
        darknet_to_onnx(cfg, tmp_path / "t.weights")
    monkeypatch.delitem(layout._RECORDS, specs.Conv)
    with pytest.raises(RegistryError, match=".weights layout has no entry for Darknet layer type Conv"):
        expected_floats(plan)
    monkeypatch.delitem(planner._DESCRIBERS, "convolutional")
    with pytest.raises(FoldkitError, match=r"\[convolutional\] layer 0 is not supported"):
        plan_network(cfg)


def test_the_planner_makes_only_the_classes_the_registry_lists(tmp_path, monkeypatch):
    cfg = tmp_path / "t.cfg"
    cfg.write_text(CFG)
    monkeypatch.setitem(SECTION_TYPES, "convolutional", (specs.Local,))
    with pytest.raises(RegistryError, match="made a Conv of a \\[convolutional\\], which the registry does not list"):
        plan_network(cfg)
