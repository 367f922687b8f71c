"""iperf3's figures as text: the stack's iperf3 client answer (`lab stack ... connect --app iperf3`) printed
the way `iperf3 -c` prints its own, and a kernel `iperf3 -J` report read into the same few numbers."""

from __future__ import annotations

from typing import Any

RULE = "- " * 25


def transfer(size: float) -> str:
    """Bytes as iperf3 shows a transfer: KBytes, MBytes, GBytes (powers of 1024)."""
    for unit, scale in (("GBytes", 1 << 30), ("MBytes", 1 << 20), ("KBytes", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{size:.0f} Bytes"


def bitrate(bits_per_second: float) -> str:
    """Bits per second as iperf3 shows a bitrate: Kbits/sec, Mbits/sec, Gbits/sec (powers of 1000)."""
    for unit, scale in (("Gbits/sec", 1e9), ("Mbits/sec", 1e6), ("Kbits/sec", 1e3)):
        if bits_per_second >= scale:
            value = bits_per_second / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{bits_per_second:.0f} bits/sec"


def _line(label: str, start: float, end: float, size: float, seconds: float, role: str = "") -> str:
    rate = size * 8 / seconds if seconds > 0 else 0.0
    return (f"[{label:>3}] {start:6.2f}-{end:<6.2f} sec  {transfer(size):>12}  {bitrate(rate):>14}"
            f"{'  ' + role if role else ''}").rstrip()


def iperf3_text(answer: dict[str, Any]) -> str:
    """The stack client's answer as iperf3 prints a test: one line per stream and second, then each
    stream's sender and receiver totals, and their sums with several streams."""
    remote = answer.get("remote", "")
    host, _, port = remote.rpartition(":")
    lines = [f"Connecting to host {host}, port {port}"]
    if answer.get("reverse"):
        lines.append(f"Reverse mode, remote host {host} is sending")
    streams = answer.get("streams", [])
    for stream in streams:
        local_host, _, local_port = str(stream.get("local", "")).rpartition(":")
        lines.append(f"[{stream['id']:>3}] local {local_host} port {local_port} connected to {host} "
                     f"port {port}")
    lines.append("[ ID] Interval           Transfer         Bitrate")
    for interval in answer.get("intervals", []):
        seconds = interval["end"] - interval["start"]
        for stream, size in zip(streams, interval["bytes"], strict=False):
            lines.append(_line(str(stream["id"]), interval["start"], interval["end"], size, seconds))
        if len(streams) > 1:
            lines.append(_line("SUM", interval["start"], interval["end"], sum(interval["bytes"]), seconds))
    lines += [RULE, "[ ID] Interval           Transfer         Bitrate"]
    for stream in streams:
        lines.append(_line(str(stream["id"]), 0.0, stream["sender_seconds"], stream["sent_bytes"],
                           stream["sender_seconds"], "sender"))
        lines.append(_line(str(stream["id"]), 0.0, stream["receiver_seconds"], stream["received_bytes"],
                           stream["receiver_seconds"], "receiver"))
    if len(streams) > 1:
        lines.append(_line("SUM", 0.0, answer["sender_seconds"], answer["sent_bytes"],
                           answer["sender_seconds"], "sender"))
        lines.append(_line("SUM", 0.0, answer["receiver_seconds"], answer["received_bytes"],
                           answer["receiver_seconds"], "receiver"))
    local, remote = ("receiver", "sender") if answer.get("reverse") else ("sender", "receiver")
    lines.append(f"CPU Utilization: local/{local} {answer.get('cpu_util_local', 0.0):.1f}%, "
                 f"remote/{remote} {answer.get('cpu_util_remote', 0.0):.1f}%")
    lines.append("")
    lines.append("iperf Done.")
    return "\n".join(lines)


def kernel_report_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of an `iperf3 -c -J` report: bytes and bit/s each side counted, and each side's CPU
    use (`end.sum_sent`, `end.sum_received`, `end.cpu_utilization_percent`)."""
    end = report.get("end", {})
    sent, received = end.get("sum_sent", {}), end.get("sum_received", {})
    cpu = end.get("cpu_utilization_percent", {})
    return {"sent_bytes": int(sent.get("bytes", 0)), "received_bytes": int(received.get("bytes", 0)),
            "sent_bps": float(sent.get("bits_per_second", 0.0)),
            "received_bps": float(received.get("bits_per_second", 0.0)),
            "cpu_util_local": float(cpu.get("host_total", 0.0)),
            "cpu_util_remote": float(cpu.get("remote_total", 0.0)),
            "streams": len(end.get("streams", []))}
