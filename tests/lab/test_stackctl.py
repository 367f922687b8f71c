"""The control client (`lab.build.control`) against a protocol double, and the lab's pure helpers for
experiments: TCP_INFO parsing, tracefs line parsing, the silent-address eBPF program, option parsing,
the experiment registry, and plans read back from a running lab's plan.json. No root needed.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lab.build.control import StackClient, StackCommandFailed, StackControlError, wait_for_hello
from lab.experiments import available, get
from lab.experiments.base import (
    Check,
    Experiment,
    ExperimentError,
    ExperimentResult,
    parse_option_pairs,
    parse_size,
)
from lab.experiments.stack_answers import (
    connection_trace,
    endpoint,
    find_connection,
    snapshot_wscale,
    stack_state_sequence,
)
from lab.kernel.silent import drop_program
from lab.kernel.sockets import parse_tcp_info, tcp_info
from lab.kernel.tracepoints import connection_events, parse_trace_line, port_filter, state_sequence
from lab.topology import plan_from_text
from lab.topology.plan import plan_from_json

Handler = Callable[[dict[str, Any]], bytes | None]


class ProtocolDouble:
    """A control-socket server speaking protocol v1 from a table of handlers (one thread per client)."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                self.requests.append(request)
                answer = self.handler(request)
                if answer is None:
                    return  # hang up without answering
                try:
                    conn.sendall(answer)
                except BrokenPipeError:
                    return  # the client gave up waiting

    def close(self) -> None:
        self.server.close()


def reply(**fields: Any) -> bytes:
    return json.dumps({"ok": True, **fields}).encode() + b"\n"


def refuse(error: str, errno_name: str | None = None) -> bytes:
    return json.dumps({"ok": False, "error": error, "errno": errno_name}).encode() + b"\n"


def standard_handler(request: dict[str, Any]) -> bytes | None:
    command = request["cmd"]
    if command == "hello":
        return reply(node="s1", lab="pair", pid=42, address="10.0.0.2/24", offload=True)
    if command == "ss":
        return reply(connections=[{"state": "ESTABLISHED", "local": "10.0.0.2:80", "remote": "10.0.0.1:40000",
                                   "mss": 1448, "wscale": [7, 9], "sack": True, "timestamps": True}])
    if command == "connect":
        if request["port"] == 1:
            return refuse("connection refused", "ECONNREFUSED")
        return reply(local="10.0.0.2:50000", remote=f"{request['addr']}:{request['port']}",
                     sent=request["send"], received=0, error=None)
    if command == "split":  # one answer delivered in two pieces
        return b'{"ok": true, "par' + b't": 2}\n'
    if command == "garbage":
        return b"not json\n"
    if command == "noisy":
        return b'{"answer": 1}\n'
    if command == "hangup":
        return None
    return refuse(f"unknown command {command!r}")


@pytest.fixture
def double(tmp_path: Path) -> Iterator[ProtocolDouble]:
    server = ProtocolDouble(tmp_path / "s1.sock", standard_handler)
    yield server
    server.close()


def test_requests_are_one_json_line_and_answers_lose_ok(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client:
        hello = client.hello()
        assert hello == {"node": "s1", "lab": "pair", "pid": 42, "address": "10.0.0.2/24", "offload": True}
        [connection] = client.ss()
        assert connection["state"] == "ESTABLISHED"
        assert client.request("split") == {"part": 2}
    assert double.requests[:2] == [{"cmd": "hello"}, {"cmd": "ss"}]


def test_a_refused_connect_is_a_result_not_an_exception(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client:
        answer = client.connect("10.0.0.1", 1)
        assert answer == {"error": "ECONNREFUSED", "message": "connection refused"}
        ok = client.connect("10.0.0.1", 7, send=10, recv="eof", shutdown=True)
        assert ok["sent"] == 10 and ok["error"] is None
    sent = double.requests[-1]
    assert sent == {"cmd": "connect", "addr": "10.0.0.1", "port": 7, "send": 10, "recv": "eof",
                    "shutdown": True, "timeout": 10.0, "nodelay": False, "close": "close", "hold": 0.0,
                    "keepalive": False}


def test_a_failed_command_raises_with_its_errno(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client, pytest.raises(StackCommandFailed) as failure:
        client.request("frobnicate")
    assert str(failure.value) == "frobnicate: unknown command 'frobnicate'"
    assert failure.value.exit_code == 1


@pytest.mark.parametrize(("command", "message"), [
    ("garbage", "garbage: the node answered a line that is not JSON: b'not json'"),
    ("noisy", "noisy: the node answered without an `ok` field: b'{\"answer\": 1}'"),
    ("hangup", "hangup: the node closed the control connection"),
])
def test_broken_answers_are_one_line_errors(double: ProtocolDouble, command: str, message: str) -> None:
    with StackClient(double.path) as client, pytest.raises(StackControlError) as failure:
        client.request(command)
    assert str(failure.value) == message


def test_no_socket_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(StackControlError) as failure:
        StackClient(tmp_path / "missing.sock").hello()
    assert str(failure.value).startswith(f"control socket {tmp_path / 'missing.sock'}: No such file")


def test_a_slow_answer_times_out_and_the_connection_is_dropped(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(request: dict[str, Any]) -> bytes:
        gate.wait(5)
        return reply()

    server = ProtocolDouble(tmp_path / "slow.sock", slow)
    try:
        client = StackClient(server.path, timeout=0.2)
        with pytest.raises(StackControlError, match=r"ss: no answer from .* within 0.2 s"):
            client.ss()
        assert client._sock is None  # a late answer must not be read as the next request's
    finally:
        gate.set()
        server.close()


def test_wait_for_hello_stops_when_the_process_is_dead(tmp_path: Path) -> None:
    client = StackClient(tmp_path / "never.sock")
    with pytest.raises(StackControlError, match="exited before answering hello"):
        wait_for_hello(client, 5.0, alive=lambda: False)
    with pytest.raises(StackControlError, match=r"no hello within 0.1 s"):
        wait_for_hello(client, 0.1)


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


# --- kernel-side helpers ---------------------------------------------------------------------


def test_tcp_info_of_a_real_loopback_connection() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        info = tcp_info(client)
        assert info["state"] == "ESTABLISHED"
        assert info["options"]["timestamps"] and info["options"]["sack"] and info["options"]["wscale"]
        assert info["snd_mss"] > 0 and info["rto"] >= 200_000  # microseconds
        assert tcp_info(listener)["state"] == "LISTEN"
    finally:
        for sock in (client, server, listener):
            sock.close()
    with pytest.raises(ValueError, match="tcp_info of 10 bytes"):
        parse_tcp_info(bytes(10))


def test_trace_lines_parse_and_select_one_connection() -> None:
    def state_line(time: str, sport: int, old: str, new: str) -> str:
        return (f"  <idle>-0 [000] ..s1. {time}: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
                f"sport={sport} dport=80 saddr=10.0.0.1 daddr=10.0.0.2 saddrv6=::1 daddrv6=::1 "
                f"oldstate=TCP_{old} newstate=TCP_{new}")

    lines = [
        "# tracer: nop",
        state_line("100.000100", 0, "CLOSE", "SYN_SENT"),  # before the ephemeral port is chosen
        state_line("100.000300", 4000, "SYN_SENT", "ESTABLISHED"),
        state_line("100.000400", 4001, "SYN_SENT", "ESTABLISHED"),  # another connection
        "  python-9 [001] ..... 100.000500: tcp_send_reset: skbaddr=0 skaddr=0 src=10.0.0.2:80 "
        "dest=10.0.0.1:4002 state=UNKNOWN reason=NO_SOCKET",
    ]
    events = [e for e in map(parse_trace_line, lines) if e is not None]
    assert len(events) == 4 and events[0].time == 100.0001
    assert events[3].fields["saddr"] == "10.0.0.2" and events[3].ports == (80, 4002)
    mine = connection_events(events, ("10.0.0.1", 4000), ("10.0.0.2", 80))
    assert state_sequence(mine) == ["CLOSE", "SYN_SENT", "ESTABLISHED"]
    assert port_filter([80, 7, 80]) == "sport == 7 || dport == 7 || sport == 80 || dport == 80"


def test_the_silent_address_program_is_nine_instructions_with_the_address() -> None:
    program = drop_program(__import__("ipaddress").IPv4Address("10.0.0.250"))
    assert len(program) == 9 * 8
    assert program[4 * 8 + 4:4 * 8 + 8] == (0x0A0000FA).to_bytes(4, "little")
    high = drop_program(__import__("ipaddress").IPv4Address("192.168.1.1"))  # above 2**31: signed imm
    assert high[4 * 8 + 4:4 * 8 + 8] == (0xC0A80101).to_bytes(4, "little")


# --- the experiment framework ---------------------------------------------------------------


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


def test_a_plan_reads_back_from_its_json_with_the_same_digest() -> None:
    plan = plan_from_text(Path("topologies/router.yaml").read_text(), source="router.yaml", name="rt")
    assert plan_from_json(plan.to_json()) == plan
    off = plan_from_text("name: x\nnodes:\n  h1: {kind: kernel}\n  s1: {kind: pystack, process: false}\n"
                         "links:\n  - endpoints: [h1:eth0, s1:eth0]\n    subnet: 10.0.0.0/24\n")
    assert off.node("s1").process is False and off.node("h1").process is True
    assert plan_from_json(off.to_json()).digest() == off.digest()


def test_node_settings_name_the_default_route_once() -> None:
    """The stack process adds `gateway` as its default route; `routes` holds only the others."""
    from lab.build.wiring import pystack_settings

    plan = plan_from_text(Path("topologies/router.yaml").read_text(), source="router.yaml", name="rt")
    node = next(n for n in plan.nodes if n.kind == "pystack")
    settings = pystack_settings(plan, node, "/run/nslab/rt")
    assert settings["gateway"] == str(node.gateway) and settings["process"] is True
    assert all(r["destination"] != "0.0.0.0/0" for r in settings["routes"])


def test_lab_run_lists_an_experiments_options_without_a_lab() -> None:
    from typer.testing import CliRunner

    from lab.cli import app

    result = CliRunner().invoke(app, ["run", "timeout", "--options", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["syn_retries"] == {
        "default": 3, "help": "SYN retransmissions before giving up (both sides); 3 takes ~15 s"}
    unknown = CliRunner().invoke(app, ["run", "timeout", "--option", "retries=2"])
    assert unknown.exit_code == 2
