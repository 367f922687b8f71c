"""JSON views of the stack's state for the control socket: `ss`, `tables`, `arp`.

`ss_json` filters like ss(8) does, on the node, so a client asking about one port of a node holding
ten thousand connections gets those few, with how many matched and how many there are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stack.net.arp import NeighbourEntry
from stack.tcp.snapshot import ConnectionSnapshot, TablesSnapshot
from stack.tcp.state import TcpState
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


#: What `ss --state` takes: a state (Linux's names, or ss's spelling: "time-wait", "fin-wait-1"), "all",
#: or "connected" (every state but LISTEN and CLOSE, as ss says it).
SS_STATE_WORDS = (*(state.value for state in TcpState), "all", "connected")


def ss_state_name(text: str) -> str | None:
    """The state word `text` stands for ("syn-recv" -> "SYN_RECV", "fin-wait-1" -> "FIN_WAIT1"), or None."""
    word = text.strip().upper().replace("-", "_").replace("WAIT_1", "WAIT1").replace("WAIT_2", "WAIT2")
    if word in ("ALL", "CONNECTED"):
        return word.lower()
    return word if word in SS_STATE_WORDS else None


def ss_json(snapshots: Iterable[ConnectionSnapshot], *, state: str | None = None, port: int | None = None,
            sport: int | None = None, dport: int | None = None, address: str | None = None,
            limit: int | None = None) -> dict[str, Any]:
    """The connections matching every filter given (None: any), at most `limit` of them, as
    ``{"connections": [...], "matched": N, "total": M}``; `port` is either end's, `sport` the local
    one, `dport` the remote one, `address` either end's IPv4 address."""
    wanted = ss_state_name(state) if state is not None else "all"
    connections: list[dict[str, Any]] = []
    matched = total = 0
    for s in snapshots:
        total += 1
        if wanted == "connected" and s.state in ("LISTEN", "CLOSE"):
            continue
        if wanted not in ("all", "connected") and s.state != wanted:
            continue
        if port is not None and port not in (s.local_port, s.remote_port):
            continue
        if (sport is not None and s.local_port != sport) or (dport is not None and s.remote_port != dport):
            continue
        if address is not None and address not in (s.local_ip, s.remote_ip):
            continue
        matched += 1
        if limit is None or len(connections) < limit:
            connections.append(connection_json(s))
    return {"connections": connections, "matched": matched, "total": total}
