"""The control protocol against a StackNode on a memory wire (no root): every command, errors, concurrency."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stack.aio import AsyncioDriver, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.node.apps import handler_for
from stack.node.apps.content import pattern_sha256
from stack.node.control import ControlServer
from stack.node.runtime import StackNode
from stack.node.trace_ring import TraceRing
from stack.tcp.config import TcpConfig

NODE_IP, PEER_IP = "10.0.0.1", "10.0.0.2"


class Client:
    """A protocol v1 client on the loop (the lab's StackClient is the blocking twin)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def raw(self, line: bytes) -> dict[str, Any]:
        self.writer.write(line + b"\n")
        await self.writer.drain()
        answer = await asyncio.wait_for(self.reader.readline(), 15.0)
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1
        return json.loads(answer)

    async def __call__(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await self.raw(json.dumps({"cmd": cmd, **fields}).encode())


def run_node(tmp_path: Path, body: Callable[[Client, Host, StackNode, Callable[[], Awaitable[Client]]],
                                            Awaitable[Any]]) -> Any:
    """A node (10.0.0.1) with a control socket, and a peer host (10.0.0.2) serving echo:7, http:80,
    source:19 (1 MB) and a silent port 9 (nothing listens: RST)."""

    async def main() -> Any:
        config = TcpConfig(time_wait=0.2)
        trace = TraceRing()
        host = Host(f"{NODE_IP}/24", "02:00:00:00:00:01", seed=1, tcp=config, trace=trace.sink)
        peer = Host(f"{PEER_IP}/24", "02:00:00:00:00:02", seed=2, tcp=TcpConfig(time_wait=0.2))
        async with AsyncioDriver([host, peer], [MemoryWire(host, peer)]) as driver:
            for port, app, size in ((7, "echo", None), (80, "http", None), (19, "source", 1_000_000)):
                await start_server(handler_for(app, size), peer, PEER_IP, port)
            node = StackNode(host, driver, trace)
            control = ControlServer(node, tmp_path / "nodes" / "n.sock", lambda: {"node": "n", "pid": 1},
                                    lambda: {"TapRxFrames": 0})
            await control.start()

            async def new_client() -> Client:
                return Client(*await asyncio.open_unix_connection(str(control.path)))

            try:
                return await body(await new_client(), peer, node, new_client)
            finally:
                await node.stop()
                await control.close()
                assert not control.path.exists()

    return asyncio.run(asyncio.wait_for(main(), 30.0))


def test_hello_stats_and_protocol_errors(tmp_path: Path) -> None:
    async def body(ctl: Client, *_: Any) -> list[dict[str, Any]]:
        return [await ctl("hello"), await ctl("stats"), await ctl.raw(b"{not json"), await ctl("fly"),
                await ctl.raw(b'["hello"]'), await ctl("listen"), await ctl("listen", port="80"),
                await ctl("config", tcp={"warp": 9}), await ctl("config", tcp={"syn_retries": "x"}),
                await ctl("connect", addr=PEER_IP, port=7, keepalive=True, hold=0.1),
                await ctl("connect", addr=PEER_IP, port=7, keep_alive=True), await ctl("hello")]

    (hello, stats, not_json, unknown, not_object, missing, wrong_type, bad_field, bad_value, keepalive,
     misspelt, again) = run_node(tmp_path, body)
    assert hello == {"ok": True, "node": "n", "pid": 1} == again  # errors did not break the connection
    assert stats["ok"] and stats["counters"]["TapRxFrames"] == 0 and "TcpActiveOpens" in stats["counters"]
    for answer in (not_json, unknown, not_object, missing, wrong_type, bad_field, bad_value, misspelt):
        assert answer["ok"] is False and answer["error"] and "\n" not in answer["error"]
        assert answer["errno"] is None
    assert "unknown command 'fly'" in unknown["error"]
    assert "'port' is required" in missing["error"] and "'port'" in wrong_type["error"]
    assert "unknown TCP field 'warp'" in bad_field["error"]
    assert keepalive["ok"] and keepalive["error"] is None
    assert misspelt["ok"] is False and "unknown field(s) 'keep_alive'" in misspelt["error"]


def test_connect_sends_and_receives_the_pattern_and_reports_states(tmp_path: Path) -> None:
    async def body(ctl: Client, *_: Any) -> list[dict[str, Any]]:
        echo = await ctl("connect", addr=PEER_IP, port=7, send=300_000, recv="eof", shutdown=True)
        source = await ctl("connect", addr=PEER_IP, port=19, recv="eof", close="close")
        refused = await ctl("connect", addr=PEER_IP, port=9)
        partial = await ctl("connect", addr=PEER_IP, port=19, recv=1000, close="abort")
        undigested = await ctl("connect", addr=PEER_IP, port=7, send=70_000, recv="eof", shutdown=True,
                               digest_sent=False)
        return [echo, source, refused, partial, undigested]

    echo, source, refused, partial, undigested = run_node(tmp_path, body)
    assert undigested["sent"] == undigested["received"] == 70_000 and undigested["sent_sha256"] is None
    assert undigested["received_sha256"] == pattern_sha256(70_000)
    assert echo["ok"] and echo["error"] is None
    assert echo["sent"] == echo["received"] == 300_000
    assert echo["sent_sha256"] == echo["received_sha256"] == pattern_sha256(300_000)
    assert echo["local"].startswith(f"{NODE_IP}:") and echo["remote"] == f"{PEER_IP}:7"
    assert echo["connect_seconds"] > 0 and echo["goodput_bps"] > 0
    states = [state for _, state in echo["states"]]
    assert states[:2] == ["SYN_SENT", "ESTABLISHED"] and states[-1] == "TIME_WAIT"  # FIN sent first
    assert echo["snapshot"]["remote"] == f"{PEER_IP}:7" and echo["snapshot"]["mss"] == 1460 - 12
    assert source["received"] == 1_000_000 and source["received_sha256"] == pattern_sha256(1_000_000)
    assert refused["ok"] and refused["error"] == "ECONNREFUSED" and refused["connect_seconds"] is None
    assert partial["received"] >= 1000 and partial["error"] is None


def test_listen_tables_close_and_a_listener_that_never_accepts(tmp_path: Path) -> None:
    async def body(ctl: Client, peer: Host, node: StackNode, new_client: Any) -> list[Any]:
        answers = [await ctl("listen", port=5000, app="echo"), await ctl("listen", port=5000, app="http"),
                   await ctl("listen", port=5001, app="none", backlog=2, accept=False),
                   await ctl("listen", port=5002, app="telnet")]
        reader, writer = await open_connection(peer, NODE_IP, 5000)
        writer.write(b"ping")
        answers.append(await reader.readexactly(4))
        pending = [asyncio.ensure_future(open_connection(peer, NODE_IP, 5001)) for _ in range(2)]
        await asyncio.wait(pending, timeout=2.0)
        answers.append(await ctl("tables"))
        answers.append(await ctl("ss"))
        answers.append(await ctl("close", port=5001))
        answers.append(await ctl("close", port=5001))
        writer.close()
        return answers

    echo, dup, silent, unknown, echoed, tables, ss, closed, again = run_node(tmp_path, body)
    assert echo == {"ok": True, "port": 5000} and silent == {"ok": True, "port": 5001}
    assert dup["ok"] is False and dup["errno"] == "EADDRINUSE"
    assert unknown["ok"] is False and "telnet" in unknown["error"]
    assert echoed == b"ping"
    listening = {entry["local"]: entry for entry in tables["listening"]}
    assert listening[f"{NODE_IP}:5000"]["app"] == "echo"
    held = listening[f"{NODE_IP}:5001"]
    assert held["backlog"] == 2 and held["accept_queue"] == 2 and held["app"] == "none"
    assert any(c["local"] == f"{NODE_IP}:5000" for c in tables["established"])
    assert any(c["state"] == "ESTABLISHED" and c["local"] == f"{NODE_IP}:5000" for c in ss["connections"])
    assert closed == {"ok": True, "closed": 1} and again == {"ok": True, "closed": 0}


def test_http_get_ping_arp_trace_and_config(tmp_path: Path) -> None:
    async def body(ctl: Client, *_: Any) -> list[dict[str, Any]]:
        return [await ctl("http_get", addr=PEER_IP, port=80, path="/bytes/200000", count=3),
                await ctl("http_get", addr=PEER_IP, port=80, path="/missing"),
                await ctl("ping", addr=PEER_IP, count=2, timeout=1.0),
                await ctl("ping", addr="10.0.0.99", count=1, timeout=0.2),
                await ctl("arp"), await ctl("trace", since=0),
                await ctl("config", tcp={"syn_retries": 2, "initial_rto": 2}),
                await ctl("http_get", addr=PEER_IP, port=9, path="/")]

    got, missing, ping, lost, arp, trace, config, refused = run_node(tmp_path, body)
    assert got["connections"] == 1
    assert [(r["status"], r["bytes"], r["sha256"]) for r in got["responses"]] == \
        [(200, 200_000, pattern_sha256(200_000))] * 3
    assert missing["responses"][0]["status"] == 404
    assert len(ping["replies"]) == 2 and all(r is not None and 0 <= r < 1 for r in ping["replies"])
    assert lost["replies"] == [None]
    assert any(n["ip"] == PEER_IP and n["mac"] == "02:00:00:00:00:02" for n in arp["neighbours"])
    names = {event["name"] for event in trace["events"]}
    assert "inet_sock_set_state" in names and "tcp_segment_out" not in names
    assert trace["next"] == trace["events"][-1]["seq"] + 1
    assert config == {"ok": True, "tcp": {"syn_retries": 2, "initial_rto": 2}}
    assert refused["ok"] is False and refused["errno"] == "ECONNREFUSED"


def test_a_long_request_never_blocks_another_connection(tmp_path: Path) -> None:
    async def body(ctl: Client, peer: Host, node: StackNode, new_client: Any) -> tuple[float, dict[str, Any]]:
        other = await new_client()
        slow = asyncio.ensure_future(ctl("connect", addr=PEER_IP, port=7, send=10, recv=10, hold=1.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        answer = await other("ss")
        quick = time.monotonic() - started
        assert (await slow)["received"] == 10
        return quick, answer

    quick, answer = run_node(tmp_path, body)
    assert answer["ok"] and quick < 0.5
    assert len(answer["connections"]) == 1 and answer["connections"][0]["state"] == "ESTABLISHED"



def test_every_bad_request_gets_an_answer_and_the_connection_goes_on(tmp_path: Path) -> None:
    """Too deep, too large, out of range, unreadable: each an error object, then `hello` still works."""

    async def body(ctl: Client, *_: Any) -> list[dict[str, Any]]:
        too_long = b'{"cmd": "hello", "pad": "' + b"x" * (2 << 20) + b'"}'
        digits = b'{"cmd": "listen", "port": ' + b"9" * 5000 + b"}"
        return [await ctl.raw(b"[" * 100_000), await ctl.raw(too_long),
                await ctl("listen", port=5000, backlog=10**12), await ctl.raw(digits),
                await ctl("config", tcp={"somaxconn": 10**12}), await ctl("ping", addr=PEER_IP, timeout=-1),
                await ctl("hello"), await ctl("stats")]

    *bad, hello, stats = run_node(tmp_path, body)
    assert [answer["ok"] for answer in bad] == [False] * 6
    deep, long, backlog, digits, somaxconn, timeout = (answer["error"] for answer in bad)
    assert deep == "request nested deeper than 8 levels"
    assert long.startswith("request longer than 1048576 bytes")
    assert backlog == "listen: field 'backlog': 1000000000000 is outside 0 to 65535"
    assert digits.startswith("request holds a value the node cannot read")
    assert somaxconn == "config: 'somaxconn'=1000000000000: expected a number from 0 to 65535"
    assert timeout == "ping: field 'timeout': -1 is outside 0.001 to 3600"
    assert hello == {"ok": True, "node": "n", "pid": 1}
    assert stats["counters"]["ControlRequests"] == 8
