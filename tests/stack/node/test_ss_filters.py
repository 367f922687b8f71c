"""`ss` filters like ss(8) on the node: state, ports, address, a limit, and how many matched of how many."""

from __future__ import annotations

import dataclasses

import pytest

from stack.node.requests import RequestError, parse_request
from stack.node.views import ss_json, ss_state_name
from stack.tcp.snapshot import ConnectionSnapshot

BASE = ConnectionSnapshot(
    state="ESTABLISHED", local_ip="10.0.0.2", local_port=80, remote_ip="10.0.0.1", remote_port=40000,
    snd_una=1, snd_nxt=1, snd_wnd=65535, rcv_nxt=1, rcv_wnd=65535, cwnd=14480, ssthresh=1 << 30,
    srtt=0.001, rttvar=0.0005, rto=0.201, retransmissions=0, sack_holes=(), send_queue=0, recv_queue=0,
    mss=1448, snd_wscale=7, rcv_wscale=7, sack=True, timestamps=True, congestion="cubic", in_recovery=False)


def snapshots() -> list[ConnectionSnapshot]:
    rows = [dataclasses.replace(BASE, remote_port=40000 + i) for i in range(5)]
    rows.append(dataclasses.replace(BASE, state="TIME_WAIT", local_port=7, remote_port=50000))
    rows.append(dataclasses.replace(BASE, state="SYN_SENT", local_port=33000, remote_ip="10.0.0.9",
                                    remote_port=80))
    return rows


def test_no_filter_answers_everything_with_counts() -> None:
    answer = ss_json(snapshots())
    assert answer["matched"] == answer["total"] == 7 and len(answer["connections"]) == 7
    assert set(answer["connections"][0]) >= {"state", "local", "remote", "srtt", "rto", "cwnd"}


@pytest.mark.parametrize(("filters", "matched"), [
    ({"state": "established"}, 5),
    ({"state": "time-wait"}, 1),
    ({"state": "TIME_WAIT"}, 1),
    ({"state": "connected"}, 7),
    ({"port": 80}, 6),  # five served on 80 and one connecting to a peer's 80
    ({"sport": 80}, 5),
    ({"dport": 80}, 1),
    ({"address": "10.0.0.9"}, 1),
    ({"address": "10.0.0.2", "port": 7}, 1),
    ({"state": "established", "port": 7}, 0),
])
def test_filters_combine_like_ss(filters: dict, matched: int) -> None:
    answer = ss_json(snapshots(), **filters)
    assert answer["matched"] == matched and answer["total"] == 7
    assert len(answer["connections"]) == matched


def test_the_limit_bounds_the_rows_not_the_count() -> None:
    answer = ss_json(snapshots(), state="established", limit=2)
    assert len(answer["connections"]) == 2 and answer["matched"] == 5 and answer["total"] == 7


def test_ss_spellings_of_states() -> None:
    assert ss_state_name("fin-wait-1") == "FIN_WAIT1"
    assert ss_state_name("syn-recv") == "SYN_RECV"
    assert ss_state_name("Connected") == "connected"
    assert ss_state_name("listening") is None


def test_the_request_checks_each_filter() -> None:
    command, fields = parse_request(b'{"cmd":"ss","state":"time-wait","port":80,"limit":10}')
    assert command == "ss" and fields["state"] == "time-wait" and fields["port"] == 80
    assert fields["address"] is None and fields["limit"] == 10
    for bad, words in ((b'{"cmd":"ss","state":"napping"}', "expected a state"),
                       (b'{"cmd":"ss","port":0}', "outside 1 to 65535"),
                       (b'{"cmd":"ss","address":"10.0.0"}', "not an IPv4 address"),
                       (b'{"cmd":"ss","limit":0}', "outside 1 to 1000000"),
                       (b'{"cmd":"ss","colour":"red"}', "unknown field")):
        with pytest.raises(RequestError, match=words):
            parse_request(bad)
