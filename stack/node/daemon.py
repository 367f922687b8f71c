"""The node process: settings in, one Host on the node's TAP in one asyncio loop, apps, control socket.

`run(settings)` opens the TAP (offload as the settings ask, plain with the kernel's reason otherwise), puts
the settings' impairments on the TAP path, starts the apps and the control socket, and serves until
SIGTERM/SIGINT. Stopping resets the stack's connections, closes the TAP descriptor (the persistent device
stays: it is the lab's) and removes the control socket. The process writes nothing else.
"""

from __future__ import annotations

import asyncio
import os
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


def open_tap(settings: NodeSettings) -> TapDevice:
    """The node's TAP, in this namespace or (run from outside) the settings' namespace."""
    try:
        return TapDevice(settings.tap, offload=settings.offload)
    except TapError as exc:
        if exc.errno != 19 or not os.path.exists(f"/run/netns/{settings.namespace}"):  # 19: ENODEV
            raise
    return TapDevice.open_in_namespace(settings.namespace, settings.tap, offload=settings.offload)


def build_host(settings: NodeSettings, trace: TraceSink | None = None, *,
               trace_segments: bool = False) -> Host:
    """The Host the settings describe: partial checksums and TSO super-segments, in both TAP modes.

    A plain TAP cannot cut super-segments, so its medium does (software GSO, as Linux does for a device
    without TSO): the TCP core then handles one 64 KB segment where it would handle 44 wire segments.

    Per-segment trace events are off unless asked for: the node's trace ring keeps state changes,
    retransmissions and resets, and building an event per segment costs ~20% of the plain data path."""
    tcp = TcpConfig(sndbuf=NODE_SNDBUF, rcvbuf=NODE_RCVBUF, tso_max_bytes=TSO_MAX_PAYLOAD)
    return Host(settings.address, settings.mac, settings.gateway, mtu=settings.mtu, tcp=tcp,
                routes=settings.routes, tx_checksum="partial", trace=trace,
                trace_segments=trace_segments,
                name=settings.node)


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
            "started": parts.node.started, "namespace": s.namespace, "tap": s.tap}


def _offload_reason(parts: NodeParts) -> str | None:
    if parts.tap.offload:
        return None
    if not parts.settings.offload:
        return "offload switched off in the topology"
    return parts.tap.offload_refused_reason


def extra_counters(parts: NodeParts) -> dict[str, int]:
    c = parts.tap.counters
    counters = {"TapRxFrames": c.rx_frames, "TapRxBytes": c.rx_bytes, "TapRxBadHeader": c.rx_bad_header,
                "TapTxFrames": c.tx_frames, "TapTxBytes": c.tx_bytes, "TapTxRejected": c.tx_rejected,
                "TapRxChecksumsTrusted": parts.medium.checksums_trusted,
                "TapRxChecksumsCompleted": parts.medium.checksums_completed,
                "TapTxGsoFrames": parts.medium.gso_frames_sent,
                "TapTxSegmentedInSoftware": parts.medium.segmented_in_software,
                "TapRxGroMergedFrames": parts.medium.gro.merged_frames,
                "TapRxGroMergedInto": parts.medium.gro.merged_into}
    counters.update(parts.medium.impairment_counters())
    return counters


async def serve(settings: NodeSettings, stop: asyncio.Event) -> None:
    """Run the node until `stop` is set. TapError and OSError from opening things propagate."""
    tap = open_tap(settings)
    trace = TraceRing()
    host = build_host(settings, trace.sink, trace_segments=trace.segments)
    medium = build_medium(settings, host, tap)
    driver = AsyncioDriver([host], [medium])
    medium.clock = driver.clock  # what the stack sends is stamped when it is written (`TapMedium.step`)
    control: ControlServer | None = None
    programs: SocketService | None = None
    try:
        driver.start()
        node = StackNode(host, driver, trace)
        parts = NodeParts(settings, tap, medium, node)
        for app in settings.apps:
            await node.listen(app.port, app.app, size=app.bytes)
        control = ControlServer(node, settings.control_socket, lambda: hello_answer(parts),
                                lambda: extra_counters(parts), medium)
        await control.start()
        programs = SocketService(host, driver, settings.programs_socket)
        programs.start()
        print(f"stack node {settings.node}: {settings.address} on {settings.tap} "
              f"({'offload' if tap.offload else 'plain: ' + str(_offload_reason(parts))}), "
              f"control {settings.control_socket}", flush=True)
        await stop.wait()
        await node.stop()
    finally:
        if programs is not None:
            programs.close()
        if control is not None:
            await control.close()
        driver.close()
        tap.close()


def run(settings: NodeSettings) -> None:
    """The process's main: one loop, stopped by SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
