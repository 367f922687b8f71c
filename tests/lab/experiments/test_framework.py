"""The experiment framework (no root): options, results, the registry, reading the stack's answers."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from lab.experiments import available, get
from lab.experiments.base import Experiment, ExperimentError, parse_option_pairs, parse_size
from lab.experiments.results import Check, ExperimentResult
from lab.experiments.stack_answers import (
    connection_trace,
    endpoint,
    find_connection,
    snapshot_wscale,
    stack_state_sequence,
)


class Toy(Experiment):
    name = "toy"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "bytes": (1000, "b"), "seconds": (1.5, "s"), "trace": (True, "t"), "label": ("x", "l")}


def test_options_take_the_defaults_type_and_bad_ones_are_one_line_errors() -> None:
    toy = Toy()
    assert toy.parse_options({"bytes": "64K", "seconds": "2", "trace": "off", "label": "y"}) == {
        "bytes": 65536, "seconds": 2.0, "trace": False, "label": "y"}
    assert parse_size("10M") == 10 << 20 and parse_size("5k") == 5000 and parse_size("12") == 12
    with pytest.raises(ExperimentError, match=r"^experiment toy: unknown option 'byte' \(options: bytes,"):
        toy.parse_options({"byte": "1"})
    with pytest.raises(ExperimentError, match=r"option bytes: expected an integer .* got 'lots'$"):
        toy.parse_options({"bytes": "lots"})
    with pytest.raises(ExperimentError, match=r"option trace: expected true or false, got 'maybe'"):
        toy.parse_options({"trace": "maybe"})
    assert parse_option_pairs(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ExperimentError, match="--option 'novalue': expected KEY=VALUE"):
        parse_option_pairs(["novalue"])


def test_a_result_passes_only_with_checks_all_passing() -> None:
    assert not ExperimentResult.from_checks("x", [], {}).passed
    result = ExperimentResult.from_checks("x", [Check("a", True, "1 B"), Check("b", False, "2 B")], {"n": 1})
    assert result.to_json() == {"experiment": "x", "passed": False, "metrics": {"n": 1}, "checks": [
        {"name": "a", "passed": True, "detail": "1 B"}, {"name": "b", "passed": False, "detail": "2 B"}]}


def test_the_registry_finds_experiments_by_module_name() -> None:
    assert {"handshake", "bulk", "refused", "timeout"} <= set(available())
    for name in ("handshake", "bulk", "refused", "timeout"):
        experiment = get(name)
        assert experiment.name == name and experiment.summary and experiment.default_topology == "pair"
    with pytest.raises(ExperimentError, match=r"experiment 'nope': expected one of handshake, bulk"):
        get("nope")


def test_reading_snapshots_and_trace_events() -> None:
    assert endpoint({"local": "10.0.0.2:80"}, "local") == ("10.0.0.2", 80)
    assert endpoint({"remote_ip": "10.0.0.1", "remote_port": 5}, "remote") == ("10.0.0.1", 5)
    assert snapshot_wscale({"wscale": [7, 9]}) == (7, 9)
    assert snapshot_wscale({"snd_wscale": 2, "rcv_wscale": 3}) == (2, 3)
    connections = [{"local": "10.0.0.2:80", "remote": "10.0.0.1:1"},
                   {"local": "10.0.0.2:80", "remote": "10.0.0.1:2"}]
    assert find_connection(connections, remote=("10.0.0.1", 2)) is connections[1]
    assert find_connection(connections, remote=("10.0.0.1", 3)) is None
    events = [
        {"name": "inet_sock_set_state", "local_ip": "10.0.0.2", "local_port": 80, "remote_ip": "10.0.0.1",
         "remote_port": 1, "oldstate": "LISTEN", "newstate": "SYN_RECV"},
        {"name": "tcp_segment_in", "local_ip": "10.0.0.2", "local_port": 80, "remote_ip": "10.0.0.1",
         "remote_port": 1},
        {"name": "inet_sock_set_state", "local_ip": "10.0.0.2", "local_port": 80, "remote_ip": "10.0.0.1",
         "remote_port": 2, "oldstate": "SYN_RECV", "newstate": "ESTABLISHED"},
        {"name": "inet_sock_set_state", "local_ip": "10.0.0.2", "local_port": 80, "remote_ip": "10.0.0.1",
         "remote_port": 1, "oldstate": "SYN_RECV", "newstate": "ESTABLISHED"},
    ]
    mine = connection_trace(events, remote=("10.0.0.1", 1))
    assert stack_state_sequence(mine) == ["LISTEN", "SYN_RECV", "ESTABLISHED"]  # RFC spelling normalized
