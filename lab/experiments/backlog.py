"""`backlog`: a listener that never accepts, and more clients than its backlog, on both sides.

The seeds' two queues: the SYN queue holds half-open connections, the accept queue completed ones that
accept() has not taken. Linux admits `backlog + 1` connections to the accept queue (it drops a SYN only
when the queue holds *more* than the backlog) and then drops further SYNs silently: the client is not
refused, it retransmits its SYN with exponential backoff until a slot frees or it gives up (ETIMEDOUT).
This experiment shows both halves side by side:

1. a stack listener (`listen app none accept false`) and kernel clients from the kernel node: which
   connect, which sit in SYN_SENT retransmitting, which time out; the stack's `tables` queue lengths.
2. a kernel listener that never accepts and stack clients: the kernel's queue lengths, read with
   NETLINK_SOCK_DIAG (what `ss -ltn` shows: Recv-Q = accept queue, Send-Q = backlog).

Both clients use one SYN retransmission (kernel TCP_SYNCNT=1, stack `syn_retries=1`), so a dropped
client times out after 1 + 2 = 3 s on both sides and the whole experiment takes about 7 s.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from dataclasses import asdict
from typing import Any, ClassVar

from lab.build.control import StackClient
from lab.experiments.base import Experiment, Options
from lab.experiments.results import STEP_ERRORS, Check, ExperimentResult, step_failed
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import (
    counter_value,
    endpoint_port,
    read_trace,
    retransmissions_by_local_port,
    trace_cursor,
)
from lab.kernel.sockdiag import kernel_listener, kernel_tcp_sockets

# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------

TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
# Gaps between clients, so the first backlog+1 SYNs are the ones that get in (deterministic order).
CLIENT_GAP_SECONDS = 0.05
# When to look at the queues: after the first SYN retransmission (1 s) and before the timeout (3 s).
LOOK_AT_SECONDS = 2.0


def client_outcome_counts(outcomes: list[str]) -> dict[str, int]:
    """{"connected": n, "ETIMEDOUT": m, ...}: what the clients saw, by kind."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def judge_listener_side(side: str, backlog: int, clients: int, accept_queue: int,
                        outcomes: list[str], syn_retransmissions: list[int]) -> list[Check]:
    """The verdicts for one side: the accept queue holds backlog+1, the rest of the clients are left to
    retransmit their SYNs and time out (never refused: a full listener drops, it does not reset).

    `outcomes[i]` and `syn_retransmissions[i]` belong to client i."""
    admitted = min(clients, backlog + 1)
    counts = client_outcome_counts(outcomes)
    dropped = clients - admitted
    retransmitted = sorted(n for n, outcome in zip(syn_retransmissions, outcomes, strict=True)
                           if outcome != "connected")
    return [
        Check(f"{side}: accept queue holds backlog+1",
              accept_queue == admitted,
              f"backlog {backlog}, {clients} clients, accept queue {accept_queue} (expected {admitted})"),
        Check(f"{side}: clients beyond the queue time out, not refused",
              counts.get("connected", 0) == admitted and counts.get("ETIMEDOUT", 0) == dropped,
              f"outcomes {counts} (expected {admitted} connected, {dropped} ETIMEDOUT)"),
        Check(f"{side}: dropped clients retransmitted their SYN",
              len(retransmitted) == dropped and (dropped == 0 or min(retransmitted) >= 1),
              f"SYN retransmissions of the {dropped} dropped clients: {retransmitted}"),
    ]


class BacklogExperiment(Experiment):
    summary = "a listener that never accepts, more clients than its backlog: stack and Linux side by side"
    options: ClassVar[Options] = {
        "backlog": (2, "listen() backlog of both listeners"),
        "clients": (5, "clients per listener (more than backlog+1 to see drops)"),
        "port": (5100, "stack listener port; the kernel listener uses port+1"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        kernel_node, stack_node = lab.kernel_and_stack()
        backlog, clients, port = options["backlog"], options["clients"], options["port"]
        checks: list[Check] = []
        metrics: dict[str, Any] = {"backlog": backlog, "clients": clients}
        sides: dict[str, dict[str, Any]] = {}
        try:
            with lab.stack(stack_node) as stack:
                sides["stack listener"] = stack_listener_vs_kernel_clients(
                    lab, stack, kernel_node, stack_node, port, backlog, clients)
        except STEP_ERRORS as error:
            checks.append(step_failed("stack listener, kernel clients", error))
        try:
            sides["kernel listener"] = kernel_listener_vs_stack_clients(
                lab, kernel_node, stack_node, port + 1, backlog, clients)
        except STEP_ERRORS as error:
            checks.append(step_failed("kernel listener, stack clients", error))
        for side, seen in sides.items():
            metrics[side.replace(" ", "_")] = seen
            checks += judge_listener_side(side, backlog, clients, seen["accept_queue"], seen["outcomes"],
                                          seen["syn_retransmissions"])
        if "stack listener" in sides:
            seen = sides["stack listener"]
            pairs = zip(seen["syn_retransmissions"], seen["outcomes"], strict=True)
            dropped_syns = sum(resent + 1 for resent, outcome in pairs if outcome != "connected")
            checks.append(Check("stack listener: every dropped SYN counted as ListenOverflows",
                                seen["listen_overflows"] >= dropped_syns,
                                f"TcpExtListenOverflows +{seen['listen_overflows']} for {dropped_syns} SYNs "
                                f"sent past the full queue; SYN queue {seen['syn_queue']}"))
        if len(sides) == 2:
            ours, linux = sides["stack listener"], sides["kernel listener"]
            checks.append(Check(
                "both listeners admit the same number and drop the rest alike",
                ours["accept_queue"] == linux["accept_queue"]
                and sorted(ours["outcomes"]) == sorted(linux["outcomes"]),
                f"accept queue stack {ours['accept_queue']} / kernel {linux['accept_queue']}; a full accept "
                "queue drops the SYN (no RST): the client's SYN backoff decides when it gives up",
            ))
        return ExperimentResult.from_checks(self.name, checks, metrics)


def stack_listener_vs_kernel_clients(lab: RunningLab, stack: StackClient, kernel_node: str,
                                     stack_node: str, port: int, backlog: int,
                                     clients: int) -> dict[str, Any]:
    """Part 1: kernel clients (TCP_SYNCNT=1) against a stack listener that never accepts."""
    address = lab.address(stack_node)
    namespace = lab.node(kernel_node).namespace
    # Resolve ARP both ways first: a kernel SYN held back for ARP would leave with the later ones in one
    # burst, all reaching the SYN queue before the accept queue fills, and no SYN would be dropped.
    stack.ping(lab.address(kernel_node), count=1, timeout=1.0)
    overflows_before = counter_value(stack.stats()["counters"], "TcpExtListenOverflows")
    stack.listen(port, app="none", backlog=backlog, accept=False)
    sockets: list[socket.socket] = []
    try:
        for _ in range(clients):
            client = lab.kernel_socket(kernel_node)
            sockets.append(client)
            client.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
            client.setblocking(False)
            client.connect_ex((address, port))
            time.sleep(CLIENT_GAP_SECONDS)
        time.sleep(max(0.0, LOOK_AT_SECONDS - clients * CLIENT_GAP_SECONDS))
        listener = stack_listener_row(stack.tables(), port)
        by_port = {s.local_port: s for s in kernel_tcp_sockets(namespace) if s.remote_port == port}
        local_ports = [s.getsockname()[1] for s in sockets]
        retransmissions = [by_port[p].retransmits if p in by_port else -1 for p in local_ports]
        states_seen = [by_port[p].state if p in by_port else "gone" for p in local_ports]
        outcomes = wait_for_connects(sockets, deadline=time.monotonic() + 3.0)
        overflows = counter_value(stack.stats()["counters"], "TcpExtListenOverflows") - overflows_before
    finally:
        for client in sockets:
            client.close()
        stack.close_listener(port)
    return {"accept_queue": listener.get("accept_queue", -1), "syn_queue": listener.get("syn_queue", -1),
            "backlog_stored": listener.get("backlog", -1), "outcomes": outcomes,
            "states_at_2s": states_seen, "syn_retransmissions": retransmissions,
            "listen_overflows": overflows}


def wait_for_connects(sockets: list[socket.socket], *, deadline: float) -> list[str]:
    """Each non-blocking connect's outcome: "connected" or the errno name it failed with."""
    outcomes: dict[int, str] = {}
    while len(outcomes) < len(sockets) and time.monotonic() < deadline:
        waiting = [s for i, s in enumerate(sockets) if i not in outcomes]
        _, writable, _ = select.select([], waiting, [], max(0.0, deadline - time.monotonic()))
        for client in writable:
            code = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            outcome = "connected" if code == 0 else errno.errorcode.get(code, str(code))
            outcomes[sockets.index(client)] = outcome
    return [outcomes.get(i, "pending") for i in range(len(sockets))]


def stack_listener_row(tables: dict[str, Any], port: int) -> dict[str, Any]:
    for row in tables.get("listening", []):
        if endpoint_port(row.get("local", "")) == port or row.get("port") == port:
            return row
    return {}


def kernel_listener_vs_stack_clients(lab: RunningLab, kernel_node: str, stack_node: str, port: int,
                                     backlog: int, clients: int) -> dict[str, Any]:
    """Part 2: stack clients (syn_retries=1) against a kernel listener that never accepts."""
    from stack.tcp.config import TcpConfig

    namespace = lab.node(kernel_node).namespace
    address = lab.address(kernel_node)
    listener = lab.kernel_socket(kernel_node)
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    hold = 3.5  # admitted clients stay connected past the moment we read the queues

    def client(index: int) -> None:
        with lab.stack(stack_node, timeout=15.0) as control:
            results[index] = control.connect(address, port, send=0, recv=0, timeout=6.0, hold=hold)

    with lab.stack(stack_node) as stack:
        cursor = trace_cursor(stack)
        stack.config(syn_retries=1)
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(backlog)
            for thread in threads:
                thread.start()
                time.sleep(CLIENT_GAP_SECONDS)
            time.sleep(max(0.0, LOOK_AT_SECONDS - clients * CLIENT_GAP_SECONDS))
            row = kernel_listener(namespace, port)
            for thread in threads:
                thread.join(timeout=hold + 15.0)
        finally:
            stack.config(syn_retries=TcpConfig().syn_retries)
            listener.close()
        events, _ = read_trace(stack, cursor)
    outcomes = [connect_outcome(r) for r in results]
    by_port = retransmissions_by_local_port(events, port)
    admitted_ports = {endpoint_port(r.get("local")) for r in results if r and not r.get("error")}
    # A failed connect's answer does not name its ephemeral port: the trace does, for every SYN resent.
    dropped_counts = iter(sorted(n for p, n in by_port.items() if p not in admitted_ports))
    retransmissions = [by_port.get(endpoint_port(r.get("local")) or -1, 0) if outcome == "connected"
                       else next(dropped_counts, 0) for r, outcome in zip(results, outcomes, strict=True)]
    return {"accept_queue": row.recv_queue if row else -1, "backlog_stored": row.send_queue if row else -1,
            "listener": asdict(row) if row else None, "outcomes": outcomes,
            "syn_retransmissions": retransmissions,
            "connect_seconds": [r.get("connect_seconds") for r in results]}


def connect_outcome(result: dict[str, Any]) -> str:
    """"connected", the errno name a stack `connect` failed with, or "no answer" (the request failed)."""
    if not result:
        return "no answer"
    return str(result["error"]) if result.get("error") else "connected"
