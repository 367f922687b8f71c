"""Reading what a stack node answers: its trace events, connection snapshots and counters.

Experiments compare the stack with the kernel through these: a connection's trace events picked by
endpoint, its state sequence (named as Linux's `inet_sock_set_state` names them), window scales,
counters by their nstat names, and a cursor into the node's trace ring to read only what comes next.
"""

from __future__ import annotations

from typing import Any

from lab.build.control import StackClient

FAR_FUTURE_SEQ = 2**53  # `trace since` this: no events, only the ring's next sequence number


def endpoint(record: dict[str, Any], side: str) -> tuple[str, int]:
    """("10.0.0.2", 80) for side "local" or "remote", from `local_ip`/`local_port` or `local: "ip:port"`."""
    if f"{side}_ip" in record:
        return str(record[f"{side}_ip"]), int(record[f"{side}_port"])
    address, _, port = str(record.get(side, ":0")).rpartition(":")
    return address, int(port or 0)


def connection_trace(events: list[dict[str, Any]], local: tuple[str, int] | None = None,
                     remote: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """The stack's trace events of one connection, chosen by its local and/or remote endpoint."""
    return [e for e in events
            if (local is None or endpoint(e, "local") == local)
            and (remote is None or endpoint(e, "remote") == remote)]


def stack_state_sequence(events: list[dict[str, Any]]) -> list[str]:
    """["LISTEN", "SYN_RECV", "ESTABLISHED", ...] from the stack's inet_sock_set_state events."""
    states: list[str] = []
    for event in events:
        if event.get("name") != "inet_sock_set_state":
            continue
        if not states:
            states.append(str(event.get("oldstate", "?")))
        states.append(str(event.get("newstate", "?")))
    return states


def snapshot_wscale(snapshot: dict[str, Any]) -> tuple[int, int]:
    """(snd, rcv) window-scale shifts of a connection snapshot (either field spelling)."""
    if "wscale" in snapshot and isinstance(snapshot["wscale"], list | tuple):
        snd, rcv = snapshot["wscale"]
        return int(snd), int(rcv)
    return int(snapshot.get("snd_wscale", 0)), int(snapshot.get("rcv_wscale", 0))


def find_connection(connections: list[dict[str, Any]], *, local: tuple[str, int] | None = None,
                    remote: tuple[str, int] | None = None) -> dict[str, Any] | None:
    for connection in connections:
        if (local is None or endpoint(connection, "local") == local) and \
                (remote is None or endpoint(connection, "remote") == remote):
            return connection
    return None


def trace_cursor(client: StackClient) -> int:
    """The trace ring's next sequence number: read events after it to see only what comes next."""
    return int(client.trace(since=FAR_FUTURE_SEQ).get("next", 0))


def endpoint_port(text: object) -> int | None:
    """The port of an "ip:port" endpoint string, as the control socket writes them."""
    _, _, port = str(text).rpartition(":")
    return int(port) if port.isdigit() else None


def counter_value(counters: dict[str, Any], name: str) -> int:
    """A counter from `stats` by its nstat name ("TcpExtListenOverflows", "TcpRetransSegs"), whether the
    node groups counters (tcp: {...}) or not and whether it keeps the Tcp/TcpExt prefix; 0 when absent."""
    bare = name.removeprefix("TcpExt") if name.startswith("TcpExt") else name.removeprefix("Tcp")
    for key in (name, bare, f"Tcp{bare}", f"TcpExt{bare}"):
        value = counters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    for group in counters.values():
        if isinstance(group, dict):
            found = counter_value(group, name)
            if found:
                return found
    return 0


def event_ports(event: dict[str, Any]) -> tuple[int | None, int | None]:
    """(local port, remote port) of a stack trace event."""
    local = event.get("local_port", endpoint_port(event.get("local", "")))
    remote = event.get("remote_port", endpoint_port(event.get("remote", "")))
    return local, remote


def read_trace(client: StackClient, since: int) -> tuple[list[dict[str, Any]], int]:
    """Trace events after `since`, and the cursor to pass next time."""
    answer = client.trace(since)
    return list(answer.get("events", [])), int(answer.get("next", since))


def retransmissions_by_local_port(events: list[dict[str, Any]], remote_port: int,
                                  name: str = "tcp_retransmit_skb") -> dict[int, int]:
    """How many `name` events each connection to `remote_port` logged, by its local port."""
    counts: dict[int, int] = {}
    for event in events:
        local, remote = event_ports(event)
        if event.get("name") == name and remote == remote_port and local is not None:
            counts[local] = counts.get(local, 0) + 1
    return counts
