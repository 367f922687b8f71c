"""The node process: settings in, one Host on the node's TAP in one asyncio loop, apps, control socket.

`run(settings)` opens the TAP (offload as the settings ask, plain with the kernel's reason otherwise), puts
the settings' impairments on the TAP path, starts the apps and the control socket, and serves until
SIGTERM/SIGINT. Stopping resets the stack's connections, closes the TAP descriptor (the persistent device
stays: it is the lab's) and removes the control socket. The process writes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
from dataclasses import dataclass
from typing import Any

from stack.devices.impaired_tap import ImpairedTapMedium
from stack.devices.tap import TapDevice, TapError
from stack.host import Host
from stack.loops.asyncio_driver import AsyncioDriver
from stack.node.control import ControlServer
from stack.node.runtime import StackNode
from stack.node.settings import NodeSettings
from stack.node.sockets.service import SocketService
from stack.node.trace_ring import TraceRing
from stack.node.workers import Worker, WorkerGate, WorkerPeers, private_control_socket, run_node
from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig
from stack.tcp.trace import TraceSink

TAP_BATCH = 256
# Socket buffers of the node's connections: Linux autotunes a LAN bulk transfer to megabytes (tcp_wmem[2]
# and tcp_rmem[2] are 4 and 6 MB); with 256 KB the sender stalls after four 64 KB super-segments.
NODE_SNDBUF = 4 * 1024 * 1024
NODE_RCVBUF = 4 * 1024 * 1024


@dataclass
class NodeParts:
    """Everything a running node holds, for `hello` and `stats` and for a clean stop."""

    settings: NodeSettings
    tap: TapDevice
    medium: ImpairedTapMedium
    node: StackNode
    gate: WorkerGate | None = None  # one worker of several: what passes between it and the others


def open_tap(settings: NodeSettings) -> TapDevice:
    """The node's TAP (one more queue of it with several workers), in this namespace or (run from
    outside) the settings' namespace."""
    multi_queue = settings.workers > 1
    try:
        return TapDevice(settings.tap, offload=settings.offload, multi_queue=multi_queue)
    except TapError as exc:
        if exc.errno != 19 or not os.path.exists(f"/run/netns/{settings.namespace}"):  # 19: ENODEV
            raise
    return TapDevice.open_in_namespace(settings.namespace, settings.tap, offload=settings.offload,
                                       multi_queue=multi_queue)


def build_host(settings: NodeSettings, trace: TraceSink | None = None, *,
               trace_segments: bool = False, worker: Worker | None = None) -> Host:
    """The Host the settings describe: partial checksums and TSO super-segments, in both TAP modes.

    A plain TAP cannot cut super-segments, so its medium does (software GSO, as Linux does for a device
    without TSO): the TCP core then handles one 64 KB segment where it would handle 44 wire segments.
    A worker's Host allocates ephemeral ports only from its share (`stack.tcp.ownership`).

    Per-segment trace events are off unless asked for: the node's trace ring keeps state changes,
    retransmissions and resets, and building an event per segment costs ~20% of the plain data path."""
    tcp = TcpConfig(sndbuf=NODE_SNDBUF, rcvbuf=NODE_RCVBUF, tso_max_bytes=TSO_MAX_PAYLOAD)
    share = worker.flow_share(tcp.ephemeral_low, tcp.ephemeral_high) if worker is not None else None
    return Host(settings.address, settings.mac, settings.gateway, mtu=settings.mtu, tcp=tcp,
                routes=settings.routes, tx_checksum="partial", trace=trace,
                trace_segments=trace_segments, name=settings.node,
                secret=worker.secret if worker is not None else None, flow_share=share)


def build_medium(settings: NodeSettings, host: Host, tap: TapDevice) -> ImpairedTapMedium:
    """The TAP path, each direction impaired as the settings say (a clean one keeps the fast path);
    `lab impair` changes them later through the control socket's `impair`."""
    return ImpairedTapMedium(host, tap, settings.egress, settings.ingress, batch=TAP_BATCH)


def hello_answer(parts: NodeParts) -> dict[str, Any]:
    s = parts.settings
    return {"node": s.node, "lab": s.lab, "pid": os.getpid(), "address": s.address, "mac": s.mac,
            "mtu": s.mtu, "gateway": s.gateway, "offload": parts.tap.offload,
            "offload_reason": _offload_reason(parts), "apps": [
                {"app": app, "port": port} for port, app in sorted(parts.node.app_names().items())],
            "started": parts.node.started, "namespace": s.namespace, "tap": s.tap,
            "python": f"{platform.python_implementation()} {platform.python_version()}"}


def _offload_reason(parts: NodeParts) -> str | None:
    if parts.tap.offload:
        return None
    if not parts.settings.offload:
        return "offload switched off in the topology"
    return parts.tap.offload_refused_reason


def extra_counters(parts: NodeParts) -> dict[str, int]:
    c = parts.tap.counters
    counters = {"TapRxFrames": c.rx_frames, "TapRxBytes": c.rx_bytes, "TapRxBadHeader": c.rx_bad_header,
                "TapRxEmptyReads": c.rx_empty_reads,
                "TapTxFrames": c.tx_frames, "TapTxBytes": c.tx_bytes, "TapTxRejected": c.tx_rejected,
                "TapRxChecksumsTrusted": parts.medium.checksums_trusted,
                "TapRxChecksumsCompleted": parts.medium.checksums_completed,
                "TapTxGsoFrames": parts.medium.gso_frames_sent,
                "TapTxSegmentedInSoftware": parts.medium.segmented_in_software,
                "TapRxGroMergedFrames": parts.medium.gro.merged_frames,
                "TapRxGroMergedInto": parts.medium.gro.merged_into,
                "DriverPumps": parts.node.driver.pumps}
    counters.update(parts.medium.impairment_counters())
    if parts.gate is not None:
        counters.update(parts.gate.counters())
    return counters


async def serve(settings: NodeSettings, stop: asyncio.Event, worker: Worker | None = None) -> None:
    """Run the node (or, with `worker`, one worker of it) until `stop` is set. TapError and OSError from
    opening things propagate."""
    tap = open_tap(settings) if worker is None else worker.tap
    trace = TraceRing()
    host = build_host(settings, trace.sink, trace_segments=trace.segments, worker=worker)
    medium = build_medium(settings, host, tap)
    gate: WorkerGate | None = None
    if worker is not None:
        assert host.tcp.flow_share is not None
        gate = WorkerGate(host, host.tcp.flow_share, worker.inbox, worker.outboxes)
        medium.node = gate  # the queue's frames pass the gate; the network still drives the Host itself
    driver = AsyncioDriver([host], [medium])
    medium.clock = driver.clock  # what the stack sends is stamped when it is written (`TapMedium.step`)
    control: ControlServer | None = None
    programs: SocketService | None = None
    public = worker is None or worker.index == 0
    try:
        driver.start()
        if gate is not None:
            driver.loop.add_reader(gate.inbox.fileno(), _take_handed_frames, gate, driver)
        node = StackNode(host, driver, trace)
        parts = NodeParts(settings, tap, medium, node, gate)
        for app in settings.apps:
            await node.listen(app.port, app.app, size=app.bytes)
        path = settings.control_socket
        if worker is not None and not public:
            path = private_control_socket(path, worker.index)
        peers = WorkerPeers(worker) if worker is not None and public else None
        if peers is not None:
            await peers.wait_until_serving()  # the node's control socket opens with every worker serving
        control = ControlServer(node, path, lambda: hello_answer(parts), lambda: extra_counters(parts),
                                medium, peers=peers)
        await control.start()
        if public:
            programs = SocketService(host, driver, settings.programs_socket)
            programs.start()
            print(f"stack node {settings.node}: {settings.address} on {settings.tap} "
                  f"({'offload' if tap.offload else 'plain: ' + str(_offload_reason(parts))}), "
                  f"control {settings.control_socket}"
                  + (f", {worker.count} workers" if worker is not None else ""), flush=True)
        await stop.wait()
        await node.stop()
    finally:
        if gate is not None:
            with contextlib.suppress(Exception):
                driver.loop.remove_reader(gate.inbox.fileno())
        if programs is not None:
            programs.close()
        if control is not None:
            await control.close()
        driver.close()
        tap.close()


def _take_handed_frames(gate: WorkerGate, driver: AsyncioDriver) -> None:
    if gate.take_handed_frames(driver.clock()):
        driver.wakeup()


def run(settings: NodeSettings) -> None:
    """The process's main: one loop, stopped by SIGTERM or SIGINT; with workers, the node process that
    forks and watches them (`stack.node.workers`)."""
    if settings.workers > 1:
        run_node(settings, lambda: open_tap(settings), run_worker)
        return
    _run_loop(settings, None)


def run_worker(settings: NodeSettings, worker: Worker) -> None:
    """One forked worker's main (`stack.node.workers`)."""
    _run_loop(settings, worker)


def _run_loop(settings: NodeSettings, worker: Worker | None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop, worker)

    asyncio.run(main())
