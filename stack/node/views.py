"""JSON views of the stack's state for the control socket: `ss`, `tables`, `arp`."""

from __future__ import annotations

from typing import Any

from stack.net.arp import NeighbourEntry
from stack.tcp.snapshot import ConnectionSnapshot, TablesSnapshot
from stack.wire.ethernet import mac_to_str


def connection_json(snapshot: ConnectionSnapshot) -> dict[str, Any]:
    s = snapshot
    return {
        "state": s.state, "local": f"{s.local_ip}:{s.local_port}", "remote": f"{s.remote_ip}:{s.remote_port}",
        "snd_una": s.snd_una, "snd_nxt": s.snd_nxt, "snd_wnd": s.snd_wnd, "rcv_nxt": s.rcv_nxt,
        "rcv_wnd": s.rcv_wnd, "cwnd": s.cwnd, "ssthresh": s.ssthresh, "srtt": s.srtt, "rttvar": s.rttvar,
        "rto": s.rto, "retransmissions": s.retransmissions, "sack_holes": [list(h) for h in s.sack_holes],
        "send_queue": s.send_queue, "recv_queue": s.recv_queue, "mss": s.mss,
        "wscale": [s.snd_wscale, s.rcv_wscale], "sack": s.sack, "timestamps": s.timestamps,
        "congestion": s.congestion, "in_recovery": s.in_recovery,
    }


def tables_json(tables: TablesSnapshot, apps: dict[int, str]) -> dict[str, Any]:
    """The seeds' three tables; `apps` names what serves each listening port."""
    return {
        "bound": [{"local": f"{b.ip}:{b.port}", "state": b.state} for b in tables.bound],
        "listening": [{"local": f"{entry.ip}:{entry.port}", "backlog": entry.backlog,
                       "syn_queue": entry.syn_queue, "accept_queue": entry.accept_queue,
                       "app": apps.get(entry.port)} for entry in tables.listening],
        "established": [connection_json(c) for c in tables.established],
    }


def neighbour_json(entry: NeighbourEntry) -> dict[str, Any]:
    return {"ip": ".".join(str(b) for b in entry.ip), "state": getattr(entry.state, "name", str(entry.state)),
            "mac": mac_to_str(entry.mac) if entry.mac is not None else None, "probes_sent": entry.probes_sent}
