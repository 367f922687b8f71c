"""Reading TCP segments back from a pcap: SYNs found with their options, other frames skipped."""

from __future__ import annotations

from pathlib import Path

from lab.kernel.rawsyn import syn_frame
from lab.tutorials.packets import syn_options, tcp_segments
from stack.devices.pcap import PcapWriter


def test_syns_and_their_options_come_back_from_a_pcap(tmp_path: Path) -> None:
    path = tmp_path / "syn.pcap"
    with path.open("wb") as handle:
        writer = PcapWriter(handle)
        writer.write(syn_frame("02:00:00:00:00:02", "02:00:00:00:00:01", ("10.0.0.2", 40000),
                               ("10.0.0.1", 80), isn=7), 100.5)
        writer.write(b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28, 100.6)  # ARP: skipped
        writer.write(b"\x02" * 14, 100.7)  # too short for IPv4: skipped
    segments = tcp_segments(path)
    assert len(segments) == 1
    seen = segments[0]
    assert seen.is_syn and seen.src == ("10.0.0.2", 40000) and seen.dst == ("10.0.0.1", 80)
    assert abs(seen.time - 100.5) < 1e-6
    assert syn_options(seen.segment) == {"mss": 1460, "wscale": 7, "sack_permitted": True,
                                         "timestamps": True, "window": 64240}
