"""The node settings file: what `lab up` writes parses; every wrong field is one line naming it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from stack.attach import AttachError, load_attachable
from stack.node.__main__ import main
from stack.node.settings import SettingsError, load_settings, parse_settings

GOOD: dict[str, Any] = {
    "version": 1, "lab": "pair", "node": "s1", "namespace": "pair-s1", "tap": "tap0", "bridge": "br0",
    "offload": True, "process": True,
    "interface": {"name": "eth0", "address": "10.0.0.2/24", "mac": "02:00:00:00:00:02", "mtu": 1500,
                  "egress": {"delay_ms": 5.0, "jitter_ms": 1.0, "loss_pct": 2.0, "duplicate_pct": 0.0,
                             "reorder_pct": 0.0, "corrupt_pct": 0.5, "rate_mbit": 100.0},
                  "ingress": {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0, "duplicate_pct": 0.0,
                              "reorder_pct": 0.0, "corrupt_pct": 0.0, "rate_mbit": None}},
    "gateway": "10.0.0.1", "routes": [{"destination": "10.9.0.0/16", "gateway": "10.0.0.254"}],
    "apps": [{"app": "echo", "port": 7, "bytes": None}, {"app": "source", "port": 19, "bytes": 1000}],
    "state_dir": "/run/nslab/pair",
}


def test_what_lab_up_writes_parses_with_units_converted() -> None:
    settings = parse_settings(GOOD)
    assert (settings.node, settings.ip, settings.mtu) == ("s1", "10.0.0.2", 1500)
    assert settings.gateway == "10.0.0.1"
    assert settings.routes == (("10.9.0.0/16", "10.0.0.254"),)
    assert [(a.app, a.port, a.bytes) for a in settings.apps] == [("echo", 7, None), ("source", 19, 1000)]
    egress = settings.egress
    assert (egress.delay, egress.jitter, egress.loss, egress.corrupt, egress.rate_bps) == \
        (0.005, 0.001, 0.02, 0.005, 100e6)
    assert settings.ingress.is_transparent
    assert settings.control_socket == Path("/run/nslab/pair/nodes/s1.sock")


def broken(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return data


@pytest.mark.parametrize(("path", "value", "message"), [
    ("version", 2, "field version: 2"),
    ("lab", KeyError, "field lab: missing"),
    ("offload", "yes", "field offload: 'yes': expected bool"),
    ("interface.address", "10.0.0.300/24", "field interface.address: '10.0.0.300/24'"),
    ("interface.mtu", 20, "field interface.mtu: 20: outside 68 to 65535"),
    ("interface.egress.loss_pct", 120, "field interface.egress.loss_pct: 120: outside 0 to 100"),
    ("interface.egress.rate_mbit", 0, "field interface.egress.rate_mbit: 0: outside 0.001 to 32000"),
    ("interface.egress.rate_mbit", 1e-6, "field interface.egress.rate_mbit: 1e-06: outside 0.001 to 32000"),
    ("interface.egress.rate_mbit", 1e8, "field interface.egress.rate_mbit: 100000000.0: outside 0.001 to"),
    ("interface.egress.delay_ms", 10**14, "field interface.egress.delay_ms: 100000000000000: outside"),
    ("interface.egress.jitter_ms", 6.0, "field interface.egress.jitter_ms: 6.0: larger than delay_ms"),
    ("interface.ingress.duplicate_pct", 100.5, "field interface.ingress.duplicate_pct: 100.5: outside 0"),
    ("apps.0.bytes", 1 << 41, f"field apps[0].bytes: {1 << 41}: outside 0 to {1 << 40}"),
    ("gateway", "nowhere", "field gateway: 'nowhere': not an IPv4 address"),
    ("apps.1.app", "chargen", "field apps[1].app: 'chargen'"),
    ("apps.1.port", 7, "field apps[1].port: 7: two apps on one port"),
    ("routes.0.destination", "10.9.0.0/33", "field routes[0].destination"),
])
def test_each_wrong_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(broken(path, value), "nodes/s1.json")
    text = str(caught.value)
    assert text.startswith("nodes/s1.json: ") and message in text and "\n" not in text


def test_the_process_exits_2_with_one_line_for_a_bad_file(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s1.json"
    path.write_text('{\n  "version": 1,\n  "lab": pair\n}\n')
    assert main(["--settings", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:3: not JSON" in err
    assert main(["--settings", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.json")


def test_attach_refuses_a_node_whose_process_owns_the_tap(tmp_path: Path) -> None:
    nodes = tmp_path / "pair" / "nodes"
    nodes.mkdir(parents=True)
    (nodes / "s1.json").write_text(json.dumps(GOOD))
    with pytest.raises(AttachError, match="runs a stack process"):
        load_attachable("pair", "s1", tmp_path)
    with pytest.raises(AttachError, match="no pystack node 's2'"):
        load_attachable("pair", "s2", tmp_path)
    (nodes / "s1.json").write_text(json.dumps({**GOOD, "process": False}))
    assert load_attachable("pair", "s1", tmp_path).node == "s1"
