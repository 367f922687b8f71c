"""pcap files: our reader and tcpdump both read what PcapWriter writes."""

from __future__ import annotations

import io
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from stack.devices.pcap import LINKTYPE_RAW, PcapRecorder, PcapWriter, read_pcap
from stack.wire import MalformedPacket, TcpFlags, TcpOptions, TcpSegment, build_tcp_frame

IP_A, IP_B = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
SYN = build_tcp_frame(b"\x02" * 6, b"\x04" * 6, IP_A, IP_B, TcpSegment(
    40000, 80, 1000, 0, TcpFlags.SYN, 64240, TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                                        timestamp=(1, 0))))
DATA = build_tcp_frame(b"\x02" * 6, b"\x04" * 6, IP_A, IP_B, TcpSegment(
    40000, 80, 1001, 5, TcpFlags.ACK | TcpFlags.PSH, 502, TcpOptions(timestamp=(2, 1)), b"x" * 100))


def test_round_trip_and_microsecond_rounding() -> None:
    buffer = io.BytesIO()
    writer = PcapWriter(buffer)
    writer.write(SYN, 1700000000.25)
    writer.write(memoryview(DATA), 1700000000.9999999)  # rounds up into the next second
    assert writer.frames == 2
    records = list(read_pcap(io.BytesIO(buffer.getvalue())))
    assert [frame for _, frame in records] == [SYN, DATA]
    assert records[0][0] == pytest.approx(1700000000.25) and records[1][0] == pytest.approx(1700000001.0)
    header = struct.unpack_from("=IHHiIII", buffer.getvalue())
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = header
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 262144, 1)


def test_snaplen_cuts_frames_and_keeps_the_original_length() -> None:
    buffer = io.BytesIO()
    PcapWriter(buffer, linktype=LINKTYPE_RAW, snaplen=40).write(DATA[14:], 0.0)
    raw = buffer.getvalue()
    assert struct.unpack_from("=IIII", raw, 24)[2:] == (40, len(DATA) - 14)
    assert list(read_pcap(io.BytesIO(raw))) == [(0.0, DATA[14:54])]


def test_reader_rejects_broken_files() -> None:
    with pytest.raises(MalformedPacket, match="bad magic"):
        list(read_pcap(io.BytesIO(bytes(24))))
    buffer = io.BytesIO()
    PcapWriter(buffer).write(SYN, 0.0)
    with pytest.raises(MalformedPacket, match="truncated"):
        list(read_pcap(io.BytesIO(buffer.getvalue()[:-1])))


def test_tcpdump_reads_our_file(tmp_path: Path) -> None:
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    if not Path(tcpdump).exists():
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    path = tmp_path / "two.pcap"
    with path.open("wb") as file:
        writer = PcapWriter(file)
        writer.write(SYN, 1.5)
        writer.write(DATA, 2.0)
    result = subprocess.run([tcpdump, "-nn", "-tt", "-r", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1.500000 IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 64240, "
                               "options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0")
    expected = "Flags [P.], seq 1001:1101, ack 5, win 502, options [nop,nop,TS val 2 ecr 1], length 100"
    assert expected in lines[1]


def test_the_recorder_stops_at_its_bound_and_the_file_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / "own.pcap"
    recorder = PcapRecorder.create(str(path), max_bytes=24 + 3 * (16 + 100), wall_offset=1000.0)
    for i in range(5):
        recorder.record(bytes(100), float(i), received=i % 2 == 0)
    recorder.close()
    status = recorder.status()
    assert status["frames_in"] + status["frames_out"] == 3 and status["dropped"] == 2 and status["full"]
    assert path.stat().st_size == status["bytes"] == 24 + 3 * 116
    with path.open("rb") as file:
        records = list(read_pcap(file))
    assert [round(t) for t, _ in records] == [1000, 1001, 1002]


def test_the_recorder_never_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link.pcap").symlink_to(target)
    with pytest.raises(OSError):
        PcapRecorder.create(str(tmp_path / "link.pcap"), 4096, 0.0)
    assert target.read_text() == "keep"
