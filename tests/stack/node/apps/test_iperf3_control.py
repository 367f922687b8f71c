"""The control socket's `iperf3` command (what `lab stack ... connect --app iperf3` asks) against the
iperf3 app of a peer on a memory wire, its refused fields, and `connect`'s goodput timed to the last ACK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stack.aio import start_server
from stack.node.apps import handler_for
from tests.stack.node.test_control import PEER_IP, run_node


def test_iperf3_command_runs_a_test_against_the_peers_iperf3_app(tmp_path: Path) -> None:
    async def body(ctl: Any, peer: Any, node: Any, new_client: Any) -> list[dict[str, Any]]:
        await start_server(handler_for("iperf3"), peer, PEER_IP, 5201)
        return [await ctl("iperf3", addr=PEER_IP, seconds=1, parallel=2),
                await ctl("iperf3", addr=PEER_IP, seconds=1, reverse=True),
                await ctl("iperf3", addr=PEER_IP, port=5299, seconds=1),
                await ctl("iperf3", addr=PEER_IP, parallel=0),
                await ctl("iperf3", addr=PEER_IP, seconds=0)]

    forward, reverse, refused, no_streams, no_time = run_node(tmp_path, body)
    assert forward["ok"] and forward["parallel"] == 2 and not forward["reverse"]
    assert forward["sent_bytes"] == forward["received_bytes"] > 0
    assert reverse["ok"] and reverse["reverse"] and reverse["sent_bytes"] == reverse["received_bytes"] > 0
    assert not refused["ok"] and refused["errno"] == "ECONNREFUSED"
    assert not no_streams["ok"] and "parallel" in no_streams["error"] and "1 to 128" in no_streams["error"]
    assert not no_time["ok"] and "seconds" in no_time["error"]


def test_connect_goodput_counts_until_the_last_ack(tmp_path: Path) -> None:
    async def body(ctl: Any, peer: Any, node: Any, new_client: Any) -> dict[str, Any]:
        return await ctl("connect", addr=PEER_IP, port=7, send=2_000_000, recv="eof", shutdown=True)

    answer = run_node(tmp_path, body)
    assert answer["ok"] and answer["error"] is None and answer["sent"] == answer["received"] == 2_000_000
    assert answer["seconds"] >= answer["buffered_seconds"] > 0
    assert 0 < answer["goodput_bps"] <= answer["buffered_goodput_bps"]
