"""How fast Python moves TCP through the TAP, next to kernel-to-kernel goodput measured in the same run.

Root only. It builds the scratch wiring of the driver tests (namespace A: TAP + bridge + veth end; namespace
B: the veth peer with a kernel TCP socket) and measures, for plain and offload mode:

* read:  a kernel socket in B sends as fast as it can to a scripted TCP receiver on the TAP (the driver reads,
         the receiver ACKs once per batch);
* write: the scripted sender on the TAP streams to a kernel socket in B within the kernel's window;

and, as the yardstick, kernel TCP from B to an address on A's bridge over the same veth and bridge. Each
figure is goodput (TCP payload) with its ratio to kernel-to-kernel. The scripted peer is the least TCP can be,
so these are upper bounds for what a full Python stack on this driver can do; the gap between plain and
offload is the point. The scratch wiring and the scripted peer live with the driver's root tests.

With --host it adds the same two directions for a full Host (stack.host) on the TAP via TapMedium, with
kernel sockets on the far side: what the Python stack itself reaches through this driver.

    .venv/bin/python benchmarks/bench_tap.py [--seconds 2] [--json] [--host]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests" / "stack" / "drivers"))

from tap_scratch import ScratchPair, ScriptedTcpPeer, scratch_pair

from stack.devices.tap import TapDevice, TapMedium

CHUNK = 1 << 20  # what a kernel sender hands to sendall at a time
KERNEL_SIDE_ADDRESS_SUFFIX = 3  # 10.77.x.3 on A's bridge, for the kernel-to-kernel yardstick only


@dataclass
class Figure:
    name: str
    seconds: float
    payload_bytes: int
    frames: int

    @property
    def gbps(self) -> float:
        return self.payload_bytes * 8 / self.seconds / 1e9

    @property
    def mbytes_per_s(self) -> float:
        return self.payload_bytes / self.seconds / 1e6

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds


def _sender(sock: socket.socket, stop: threading.Event) -> None:
    """Send until told to stop; the timeout only lets it notice `stop` while the window is shut."""
    data = memoryview(os.urandom(CHUNK))
    sock.settimeout(0.2)
    offset = 0
    while not stop.is_set():
        try:
            offset = (offset + sock.send(data[offset:])) % CHUNK
        except TimeoutError:
            continue
        except OSError:
            return  # reset once the measurement ended


def _receiver(sock: socket.socket, counted: list[int], stop: threading.Event) -> None:
    buffer = bytearray(CHUNK)
    sock.settimeout(0.5)
    try:
        while not stop.is_set():
            n = sock.recv_into(buffer)
            if not n:
                break
            counted[0] += n
    except OSError:
        pass


def kernel_to_kernel(pair: ScratchPair, seconds: float) -> Figure:
    """Kernel TCP from B to an address on A's bridge: same veth, same bridge, no TAP."""
    address = pair.stack_ip.rsplit(".", 1)[0] + f".{KERNEL_SIDE_ADDRESS_SUFFIX}"
    with IPRoute(netns=pair.netns_a, flags=0) as ipr:
        bridge = ipr.link_lookup(ifname="br0")[0]
        ipr.addr("add", index=bridge, address=address, prefixlen=24)
    try:
        listener = _socket_in(pair.netns_a)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, 6000))
        listener.listen(1)
        client = pair.kernel_socket()
        client.connect((address, 6000))
        server, _ = listener.accept()
        counted, stop = [0], threading.Event()
        threads = [
            threading.Thread(target=_sender, args=(client, stop)),
            threading.Thread(target=_receiver, args=(server, counted, stop)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # past slow start
        start_bytes, start = counted[0], time.monotonic()
        time.sleep(seconds)
        moved, elapsed = counted[0] - start_bytes, time.monotonic() - start
        stop.set()
        for thread in threads:
            thread.join(5)
        for sock in (client, server, listener):
            sock.close()
    finally:
        with IPRoute(netns=pair.netns_a, flags=0) as ipr:
            ipr.addr("del", index=bridge, address=address, prefixlen=24)
    return Figure("kernel → kernel", elapsed, moved, 0)


def _socket_in(netns_name: str) -> socket.socket:
    from pyroute2 import netns

    return netns.create_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM, flags=0)


def _connect(pair: ScratchPair, tap: TapDevice, port: int) -> tuple[ScriptedTcpPeer, socket.socket]:
    peer = ScriptedTcpPeer(tap, pair, port, store_data=False)
    client = pair.kernel_socket()
    client.setblocking(False)
    client.connect_ex((pair.stack_ip, port))
    peer.accept()
    peer.pump(0.2)  # the kernel's ACK of the SYN-ACK: established
    client.setblocking(True)
    return peer, client


def tap_read(pair: ScratchPair, tap: TapDevice, port: int, seconds: float) -> Figure:
    peer, client = _connect(pair, tap, port)
    stop = threading.Event()
    sender = threading.Thread(target=_sender, args=(client, stop))
    sender.start()
    warm_until = time.monotonic() + 0.2
    while time.monotonic() < warm_until:
        peer.pump(0.05)
    start, start_bytes, start_frames = time.monotonic(), peer.received_bytes, peer.data_frames
    deadline = start + seconds
    while time.monotonic() < deadline:
        peer.pump(0.05)
    elapsed = time.monotonic() - start
    stop.set()
    sender.join(5)
    client.close()
    mode = "offload" if tap.offload else "plain"
    return Figure(
        f"{mode}: kernel → TAP", elapsed, peer.received_bytes - start_bytes, peer.data_frames - start_frames
    )


def tap_write(pair: ScratchPair, tap: TapDevice, port: int, seconds: float) -> Figure:
    peer, client = _connect(pair, tap, port)
    counted, stop = [0], threading.Event()
    receiver = threading.Thread(target=_receiver, args=(client, counted, stop))
    receiver.start()
    block = os.urandom(65535 - 20 - 20 if tap.offload else ScriptedTcpPeer.MSS)
    peer.stream(block, time.monotonic() + 0.2)  # warm-up: the kernel's receive window opens
    frames_before = tap.counters.tx_frames
    start = time.monotonic()
    acked = peer.stream(block, start + seconds)
    elapsed = time.monotonic() - start
    frames = tap.counters.tx_frames - frames_before
    stop.set()
    receiver.join(5)
    client.close()
    mode = "offload" if tap.offload else "plain"
    return Figure(f"{mode}: TAP → kernel", elapsed, acked, frames)


class _HostLoop:
    """A Host on the TAP through TapMedium, stepped in real time by this thread (the event loop in small)."""

    def __init__(self, pair: ScratchPair, tap: TapDevice) -> None:
        # Imported here: the driver-only figures do not need the full stack.
        from stack.host import Host
        from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig

        if tap.offload:
            # As the node process does in offload mode: the device finishes TCP checksums and cuts TSO
            # super-segments, so Host → kernel shows what the offload path is for.
            self.host = Host(f"{pair.stack_ip}/24", pair.stack_mac.hex(":"), seed=1, tx_checksum="partial",
                             tcp=TcpConfig(tso_max_bytes=TSO_MAX_PAYLOAD))
        else:
            self.host = Host(f"{pair.stack_ip}/24", pair.stack_mac.hex(":"), seed=1)
        self.medium = TapMedium(self.host, tap, batch=256)

    def turn(self) -> None:
        self.medium.step(time.monotonic())
        wake = self.host.next_deadline()
        wait = 0.01 if wake is None else min(0.01, max(0.0, wake - time.monotonic()))
        select.select([self.medium], [], [], wait)

    def accept(self, port: int, client: socket.socket, address: str) -> object:
        listener = self.host.socket()
        listener.setblocking(False)
        listener.bind((address, port))
        listener.listen(4)
        connector = threading.Thread(target=client.connect, args=((address, port),))
        connector.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.turn()
            try:
                conn = listener.accept()[0]
            except BlockingIOError:
                continue
            connector.join(5)
            conn.setblocking(False)
            return conn
        raise RuntimeError(f"the Host accepted no connection on port {port} within 5 s")


def host_read(pair: ScratchPair, tap: TapDevice, port: int, seconds: float) -> Figure:
    """Kernel socket → Host socket: what a full Python stack gets through the driver."""
    loop = _HostLoop(pair, tap)
    client = pair.kernel_socket()
    conn = loop.accept(port, client, pair.stack_ip)
    stop = threading.Event()
    sender = threading.Thread(target=_sender, args=(client, stop))
    sender.start()
    received, start, frames_before = 0, time.monotonic(), tap.counters.rx_frames
    deadline = start + seconds
    while time.monotonic() < deadline:
        loop.turn()
        try:
            while chunk := conn.recv(1 << 20):
                received += len(chunk)
        except BlockingIOError:
            pass
    elapsed = time.monotonic() - start
    stop.set()
    sender.join(5)
    client.close()
    mode = "offload" if tap.offload else "plain"
    return Figure(f"{mode}: kernel → Host", elapsed, received, tap.counters.rx_frames - frames_before)


def host_write(pair: ScratchPair, tap: TapDevice, port: int, seconds: float) -> Figure:
    """Host socket → kernel socket."""
    loop = _HostLoop(pair, tap)
    client = pair.kernel_socket()
    conn = loop.accept(port, client, pair.stack_ip)
    counted, stop = [0], threading.Event()
    receiver = threading.Thread(target=_receiver, args=(client, counted, stop))
    receiver.start()
    block = memoryview(os.urandom(1 << 20))
    start, frames_before = time.monotonic(), tap.counters.tx_frames
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            while conn.send(block):
                pass
        except BlockingIOError:
            pass
        loop.turn()
    moved, elapsed = counted[0], time.monotonic() - start
    stop.set()
    receiver.join(5)
    client.close()
    mode = "offload" if tap.offload else "plain"
    return Figure(f"{mode}: Host → kernel", elapsed, moved, tap.counters.tx_frames - frames_before)


def run(seconds: float, with_host: bool) -> dict[str, object]:
    results: dict[str, object] = {}
    with scratch_pair() as pair:
        baseline = kernel_to_kernel(pair, seconds)
        figures = [baseline]
        port = 7000
        for offload in (False, True):
            with TapDevice.open_in_namespace(pair.netns_a, pair.tap_name, offload=offload) as tap:
                if offload and not tap.offload:
                    raise SystemExit(f"offload unavailable: {tap.offload_refused_reason}")
                figures.append(tap_read(pair, tap, port, seconds))
                figures.append(tap_write(pair, tap, port + 1, seconds))
                if with_host:
                    figures.append(host_read(pair, tap, port + 2, seconds))
                    figures.append(host_write(pair, tap, port + 3, seconds))
                port += 4
    results["kernel_to_kernel_gbps"] = round(baseline.gbps, 3)
    results["figures"] = [
        {**asdict(f), "gbps": round(f.gbps, 3), "mbytes_per_s": round(f.mbytes_per_s, 1),
         "frames_per_s": round(f.frames_per_s), "ratio_to_kernel": round(f.gbps / baseline.gbps, 4)}
        for f in figures
    ]  # fmt: skip
    return results


def print_table(results: dict[str, object]) -> None:
    print(f"{'path':<24} {'Gbit/s':>8} {'MB/s':>9} {'frames/s':>10} {'× kernel':>9}")
    for figure in results["figures"]:
        frames = f"{figure['frames_per_s']:,}" if figure["frames"] else "-"
        print(
            f"{figure['name']:<24} {figure['gbps']:>8.2f} {figure['mbytes_per_s']:>9.1f} {frames:>10}"
            f" {figure['ratio_to_kernel']:>9.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--host", action="store_true", help="also a full Host (stack.host) on the TAP")
    args = parser.parse_args(argv)
    if not 0.2 <= args.seconds <= 60:
        print(f"bench_tap: --seconds must be between 0.2 and 60, got {args.seconds}", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print(
            "bench_tap: needs root and /dev/net/tun (it builds network namespaces and a TAP)", file=sys.stderr
        )
        return 2
    results = run(args.seconds, args.host)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
