"""Lab 5, windows, loss and congestion: one bulk transfer each way over a link that delays and loses.

The link (topology `lossy-link.yaml` beside this file) adds 10 ms and loses 1 % of packets each way,
in the stack's TAP path. Both senders use CUBIC (the machine's default is BBR: the kernel socket is
set with TCP_CONGESTION, the stack's `congestion` setting is cubic), so like is compared with like.

1. Linux sends to a discard listener of the stack's. Its congestion window, ssthresh and srtt come from the
   `tcp:tcp_probe` tracepoint (one event per ACK it receives), its retransmissions from
   `tcp:tcp_retransmit_skb`, fast retransmits and timeouts from the namespace's /proc/net/netstat.
2. The stack sends to a Linux reader. Its window, ssthresh and srtt come from `ss` every 20 ms, its
   retransmissions and the cause of each window cut (fast retransmit or timeout) from its trace.
3. Both senders drawn side by side.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from lab.build.state import LabError
from lab.experiments.kernel_peers import KernelServer
from lab.experiments.stack_answers import counter_value, endpoint, find_connection, trace_cursor
from lab.kernel.sockets import congestion_of, counter_deltas, kernel_netstat, namespace_socket, tcp_info
from lab.kernel.tracepoints import KernelTrace, TraceUnavailable, traceable_port
from lab.kernel.transfers import pattern_chunks, receive_all
from lab.tools.capture import capturing
from lab.tutorials import Session, Step
from lab.tutorials.plots import congestion_plot, publish
from lab.tutorials.senders import kernel_series, median, series_json, series_of, stack_series

CONGESTION = "cubic"
BYTES = 3 * 1024 * 1024
READER_PORT = 5500
POLL_SECONDS = 0.02
# The stack's client queues all its data and its FIN at once: most of the transfer is sent in FIN_WAIT1.
SENDING_STATES = ("ESTABLISHED", "FIN_WAIT1", "CLOSE_WAIT", "LAST_ACK", "CLOSING")
TRANSFER_TIMEOUT = 40.0
KERNEL_EVENTS = ("tcp/tcp_probe", "tcp/tcp_retransmit_skb")
KERNEL_COUNTERS = ("TcpExtTCPFastRetrans", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes",
                   "TcpExtTCPSackRecovery",
                   "TcpExtTCPRenoRecovery", "TcpExtTCPSpuriousRTOs")
STACK_COUNTERS = ("TCPFastRetrans", "TCPTimeouts", "RetransSegs")


@contextmanager
def control_captures(session: Session, part: str, port: int) -> Iterator[None]:
    """Both ends captured while the block runs, keeping only SYN, FIN and RST segments: the
    handshake and the close, not megabytes of data (the trace and ss tell the rest)."""
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    wanted = f"tcp port {port} and tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0"
    with ExitStack() as captures:
        for node in (kernel, stack_node):
            path = session.artifact("pcap", session.path(f"{part}-{node}.pcap"))
            captures.enter_context(capturing(lab, node, path, bpf_filter=wanted))
        yield


def send_until_acknowledged(sender: socket.socket, size: int) -> float:
    """Send `size` bytes and wait until the receiver has acknowledged all of them; the seconds it took.

    Only then is the socket shut down: `tcp:tcp_probe` fires in tcp_rcv_established, so ACKs that
    arrive after our FIN (in FIN_WAIT1) would be missing from the picture."""
    started = time.monotonic()
    for chunk in pattern_chunks(size):
        sender.sendall(chunk)
    deadline = started + TRANSFER_TIMEOUT
    while time.monotonic() < deadline:
        info = tcp_info(sender)
        if info["unacked"] == 0 and info.get("notsent_bytes", 0) == 0:
            break
        time.sleep(0.005)
    seconds = time.monotonic() - started
    sender.shutdown(socket.SHUT_WR)
    return seconds


def kernel_sends(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    namespace = lab.node(kernel).namespace
    discard_port = traceable_port()  # the stack's discard listener; tcp_probe is filtered on it
    with lab.stack(stack_node) as control:
        control.listen(discard_port, app="discard")
    sender = namespace_socket(namespace, congestion=CONGESTION)
    sender.settimeout(TRANSFER_TIMEOUT)
    trace: KernelTrace | None = None
    try:
        trace = KernelTrace(lab.name, (discard_port,), KERNEL_EVENTS).start()
    except TraceUnavailable as error:
        session.say(f"(tcp_probe unavailable: {error}; only the counters are read)")
    before = kernel_netstat(namespace)
    try:
        with control_captures(session, "linux-sends", discard_port):
            started = time.monotonic()
            sender.connect((lab.address(stack_node), discard_port))
            local = sender.getsockname()
            algorithm = congestion_of(sender)
            seconds = send_until_acknowledged(sender, BYTES)
            info = tcp_info(sender)
        events = trace.events() if trace else []
    finally:
        sender.close()
        if trace:
            trace.stop()
        with lab.stack(stack_node) as control:
            control.close_listener(discard_port)
    grew = counter_deltas(before, kernel_netstat(namespace), KERNEL_COUNTERS)
    series = kernel_series(f"Linux sender (h1, {algorithm})", events, (local[0], local[1]), started)
    session.say(f"Linux sent {BYTES} bytes with {algorithm} in {seconds:.2f} s "
                f"({BYTES * 8 / seconds / 1e6:.1f} Mbit/s); tcp_probe logged {len(series.samples)} ACKs.")
    session.say(f"It retransmitted {info['total_retrans']} segments: "
                f"TCPFastRetrans +{grew['TcpExtTCPFastRetrans']} "
                f"(three duplicate ACKs or SACK said a segment was lost), TCPTimeouts "
                f"+{grew['TcpExtTCPTimeouts']} (the retransmission timer fired, tcp_retransmit_timer), "
                f"TCPLossProbes +{grew['TcpExtTCPLossProbes']} (tail loss probes, a Linux extra).")
    session.metric("kernel_sender", {"series": series_json(series), "counters": grew,
                                     "total_retrans": info["total_retrans"], "congestion": algorithm,
                                     "seconds": round(seconds, 3), "goodput_bps": round(BYTES * 8 / seconds),
                                     "srtt_ms_median": median(s.srtt_ms for s in series.samples)})
    session.check("Linux sender uses the same congestion control as the stack", algorithm == CONGESTION,
                  f"TCP_CONGESTION {algorithm}")
    session.check("Linux sender retransmitted what the link lost", info["total_retrans"] > 0,
                  f"total_retrans {info['total_retrans']}, "
                  f"tcp_retransmit_skb events {len(series.retransmits)}, "
                  f"fast {grew['TcpExtTCPFastRetrans']}, timeouts {grew['TcpExtTCPTimeouts']}")
    if trace:
        session.check("tcp_probe traced the Linux sender's window", len(series.samples) > 10,
                      f"{len(series.samples)} samples, "
                      f"cwnd up to {max((s.cwnd for s in series.samples), default=0):g}")


class StackPoller(threading.Thread):
    """`ss` of one stack connection every POLL_SECONDS, while it lasts."""

    def __init__(self, session: Session, node: str, remote: tuple[str, int], started: float) -> None:
        super().__init__(daemon=True)
        self.client = session.lab.stack(node)
        self.remote = remote
        self.started = started
        self.rows: list[tuple[float, dict[str, Any]]] = []
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            self.poll()
        except (OSError, LabError, ValueError) as error:  # the step says what stopped the sampling
            self.error = f"{type(error).__name__}: {error}"

    def poll(self) -> None:
        with self.client:
            while not self._stop_event.is_set():
                connections = self.client.request("ss").get("connections", [])
                row = find_connection(connections, remote=self.remote)
                if row is not None and row.get("state") in SENDING_STATES:
                    self.rows.append((round(time.monotonic() - self.started, 4), row))
                self._stop_event.wait(POLL_SECONDS)

    def finish(self) -> None:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(3.0)


def stack_sends(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    address = lab.address(kernel)

    def serve(conn: Any) -> dict[str, Any]:
        conn.settimeout(TRANSFER_TIMEOUT)
        got = receive_all(conn)
        conn.close()
        return {"received": got.received}

    with lab.stack(stack_node, timeout=TRANSFER_TIMEOUT + 20) as control:
        previous = control.config().get("tcp", {}).get("congestion", CONGESTION)
        config = control.config(congestion=CONGESTION).get("tcp", {})
        before = control.stats()
        cursor = trace_cursor(control)
        started = time.monotonic()
        poller = StackPoller(session, stack_node, (address, READER_PORT), started)
        try:
            with control_captures(session, "stack-sends", READER_PORT), \
                    KernelServer(lab, kernel, READER_PORT, serve) as server:
                poller.start()
                try:
                    answer = control.connect(address, READER_PORT, send=BYTES, shutdown=True, recv="eof",
                                             timeout=TRANSFER_TIMEOUT)
                    served = server.result()
                finally:
                    poller.finish()
        finally:
            control.config(congestion=previous)
        after = control.stats()
        events = control.trace(since=cursor).get("events", [])
    grew = {name: counter_value(after, name) - counter_value(before, name) for name in STACK_COUNTERS}
    local = endpoint(answer, "local") if answer.get("local") else ("", 0)
    series = stack_series(f"stack sender (s1, {config.get('congestion', CONGESTION)})", poller.rows, events,
                          local, started)
    seconds = float(answer.get("seconds") or 0.0)
    session.say(f"The stack sent {served.get('received')} bytes with {config.get('congestion', CONGESTION)} "
                f"in {seconds:.2f} s; ss was read {len(poller.rows)} times during the transfer"
                + (f" (sampling stopped: {poller.error})." if poller.error else "."))
    session.say(f"It retransmitted RetransSegs +{grew['RetransSegs']}: fast retransmits "
                f"+{grew['TCPFastRetrans']} (the window cut to 0.7 of itself, CUBIC's beta), timeouts "
                f"+{grew['TCPTimeouts']} (cwnd back to one segment, slow start again).")
    session.metric("stack_sender", {"series": series_json(series), "counters": grew,
                                    "seconds": round(seconds, 3),
                                    "error": answer.get("error"), "congestion": config.get("congestion"),
                                    "srtt_ms_median": median(s.srtt_ms for s in series.samples)})
    session.check("stack sender: every byte arrived",
                  served.get("received") == BYTES and not answer.get("error"),
                  f"received {served.get('received')} of {BYTES}, error {answer.get('error')}")
    session.check("stack sender retransmitted what the link lost", grew["RetransSegs"] > 0,
                  f"RetransSegs +{grew['RetransSegs']}, fast {grew['TCPFastRetrans']}, "
                  f"timeouts {grew['TCPTimeouts']}, retransmit events {len(series.retransmits)}")


def compare(session: Session) -> None:
    kernel = session.metrics.get("kernel_sender")
    stack = session.metrics.get("stack_sender")
    senders = [series_of(side["series"]) for side in (stack, kernel) if side]
    paths = congestion_plot(senders, session.path("congestion"))
    publish(session, paths, "Both senders over a lossy link: cwnd, ssthresh, srtt, retransmissions",
            "10 ms each way and 1 % loss each way; both CUBIC. Linux's samples are per ACK (tcp_probe), "
            f"the stack's every {POLL_SECONDS * 1000:g} ms (ss). The stack's window cuts are named by its "
            "trace; Linux's are read from tcp_probe (ssthresh changes; cwnd at 1 means a timeout), its "
            "counts from /proc/net/netstat")
    lines = []
    for name, side in (("stack", stack), ("Linux", kernel)):
        if side:
            counters = side["counters"]
            timeouts = counters.get("TCPTimeouts", counters.get("TcpExtTCPTimeouts"))
            srtt = side.get("srtt_ms_median")
            if name == "stack":
                line = (f"stack: {counters['TCPFastRetrans']} fast recoveries ({counters['RetransSegs']} "
                        f"segments resent), timeouts {timeouts}")
            else:
                recoveries = counters["TcpExtTCPSackRecovery"] + counters["TcpExtTCPRenoRecovery"]
                line = (f"Linux: {recoveries} fast recoveries ({counters['TcpExtTCPFastRetrans']} segments "
                        f"fast-retransmitted), timeouts {timeouts}")
            lines.append(f"{line}, median srtt {srtt:.1f} ms" if srtt else line)
    session.say("; ".join(lines) + ". Most losses are repaired by fast retransmit, which costs far less than "
                "a timeout: the window is cut once, not reset to one segment. (Counters differ in name: "
                "Linux's TCPFastRetrans counts segments and TCPSackRecovery the recoveries; the stack's "
                "TCPFastRetrans counts recoveries.)")
    session.check("both senders retransmitted", bool(kernel and stack)
                  and kernel["total_retrans"] > 0 and stack["counters"]["RetransSegs"] > 0,
                  "; ".join(lines))
    rtts = [side.get("srtt_ms_median") for side in (stack, kernel) if side]
    session.check("both senders' srtt reflect the 20 ms round trip",
                  len(rtts) == 2 and all(r is not None and 15 <= r <= 80 for r in rtts),
                  f"median srtt stack {rtts[0] if rtts else None} ms, "
                  f"Linux {rtts[1] if len(rtts) > 1 else None} ms")
    session.check("congestion plots written", all(p.stat().st_size > 0 for p in paths),
                  ", ".join(f"{p.name} {p.stat().st_size} B" for p in paths))


STEPS = [
    Step("Linux sends over the lossy link (tcp_probe)", kernel_sends),
    Step("The stack sends over the same link (ss and its trace)", stack_sends),
    Step("Both senders side by side", compare),
]
