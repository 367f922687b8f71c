"""A tcpdump file that grew past `--max-bytes` is cut back to its last whole record, still a pcap."""

from __future__ import annotations

from pathlib import Path

from lab.tools.capture import CaptureResult, cut_to, wait_for_bounds
from stack.devices.pcap import PcapWriter, read_pcap


def write_pcap(path: Path, frames: int, size: int) -> None:
    with path.open("wb") as file:
        writer = PcapWriter(file)
        for i in range(frames):
            writer.write(bytes([i % 256]) * size, 1000.0 + i)


def test_a_file_over_the_bound_is_cut_at_a_record_boundary(tmp_path: Path) -> None:
    path = tmp_path / "big.pcap"
    write_pcap(path, frames=10, size=100)  # 24 + 10 * 116 = 1184 bytes
    result = CaptureResult(path, "h1", "eth0", 10)
    cut_to(path, 600, result)
    assert path.stat().st_size == 24 + 4 * 116 and result.packets == 4
    with path.open("rb") as file:
        assert [frame[0] for _, frame in read_pcap(file)] == [0, 1, 2, 3]


def test_a_file_within_the_bound_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "small.pcap"
    write_pcap(path, frames=3, size=50)
    result = CaptureResult(path, "h1", "eth0", 3)
    cut_to(path, 10_000, result)
    assert path.stat().st_size == 24 + 3 * 66 and result.packets == 3


def test_the_wait_ends_at_the_duration_or_when_full() -> None:
    assert wait_for_bounds(0.05, lambda: False) == "duration"
    assert wait_for_bounds(30.0, lambda: True) == "max-bytes"
