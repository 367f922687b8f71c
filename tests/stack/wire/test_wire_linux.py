"""The codecs against the real Linux kernel: a TCP handshake, data, SACK, ICMP and fragments.

`linux_peer.py` runs under ``unshare --net`` so its namespace, TAPs and sockets disappear with
the process, even when a check fails. Each of its checks is one test here, and a check that
never reported fails too (a crashed step cannot pass silently).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stack.devices.pcap import read_pcap
from stack.wire import describe_frame

PEER = Path(__file__).with_name("linux_peer.py")
REPO = Path(__file__).resolve().parents[3]

EXPECTED_CHECKS = [
    "we_reassemble_kernel_fragments",
    "kernel_reassembles_our_fragments",
    "kernel_receives_our_echo_reply",
    "kernel_accepts_our_port_unreachable",
    "syn_parsed_and_rebuilt_identically",
    "syn_has_linux_options",
    "kernel_accepts_our_synack",
    "kernel_data_intact_and_mss_respected",
    "kernel_sacks_out_of_order_data",
    "kernel_reassembles_our_segments_across_seq_wrap",
    "kernel_honours_our_frag_needed",
    "partial_checksum_matches_linux_offload",
]


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for a network namespace)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (tun module)"
    if shutil.which("unshare") is None:
        return "needs unshare(1) from util-linux"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"root test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def linux_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict], Path, str]:
    reason = _missing_capability()
    if reason:
        _skip_or_fail(reason)
    pcap = tmp_path_factory.mktemp("linux") / "wire.pcap"
    result = subprocess.run(
        ["unshare", "--net", sys.executable, str(PEER), str(pcap)],
        capture_output=True, text=True, timeout=90, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    checks = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            checks[record["check"]] = record
    return checks, pcap, result.stderr + "".join(
        f"\n{name}: {record['detail']}" for name, record in checks.items() if not record["ok"])


@pytest.mark.root
@pytest.mark.parametrize("check", EXPECTED_CHECKS)
def test_against_linux(linux_run: tuple[dict[str, dict], Path, str], check: str) -> None:
    checks, _pcap, diagnostics = linux_run
    crashed = [name for name in checks if name.startswith("step_")]
    assert check in checks, f"check {check} never reported; crashed steps: {crashed}\n{diagnostics}"
    assert checks[check]["ok"], f"{check}: {checks[check]['detail']}"


@pytest.mark.root
def test_no_step_crashed(linux_run: tuple[dict[str, dict], Path, str]) -> None:
    checks, _pcap, diagnostics = linux_run
    assert not [name for name in checks if name.startswith("step_")], diagnostics


@pytest.mark.root
def test_tcpdump_reads_the_capture(linux_run: tuple[dict[str, dict], Path, str]) -> None:
    """The PcapWriter's file of the whole run, real kernel frames and ours, decodes in tcpdump."""
    tcpdump = shutil.which("tcpdump") or ("/usr/bin/tcpdump" if os.path.exists("/usr/bin/tcpdump") else None)
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    _checks, pcap, _ = linux_run
    result = subprocess.run([tcpdump, "-nn", "-r", str(pcap)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout
    assert "Flags [S]," in lines and "Flags [S.]," in lines
    assert "mss 1400,sackOK,TS val 1001" in lines  # our SYN-ACK, laid out like Linux's
    assert "ICMP echo reply, id 4660, seq 7" in lines
    assert "ARP, Reply 10.77.0.2 is-at 02:00:00:00:a0:02" in lines
    assert "udp port 7777 unreachable" in lines


@pytest.mark.root
def test_describe_frame_matches_tcpdump_on_the_capture(linux_run: tuple[dict[str, dict], Path, str]) -> None:
    """Every frame of the run, Linux's and ours, summarised exactly as tcpdump -nn -t -S prints it."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    _checks, pcap, _ = linux_run
    result = subprocess.run([tcpdump, "-nn", "-t", "-S", "-r", str(pcap)], capture_output=True, text=True,
                            timeout=30)
    theirs = [line.removesuffix(": HTTP") for line in result.stdout.splitlines()]
    with pcap.open("rb") as file:
        ours = [describe_frame(frame) for _, frame in read_pcap(file)]
    assert len(ours) == len(theirs) > 30
    # A kernel interface's own IPv6 housekeeping (MLD reports, router solicitations) falls in the capture
    # when its timing says so; the stack speaks IPv4, and describe_frame names such a frame only by its
    # family and length, where tcpdump decodes it.
    pairs = [(o, t) for o, t in zip(ours, theirs, strict=True)
             if not (o.startswith("IP6, length ") and t.startswith("IP6 "))]
    assert len(pairs) > 30
    assert [(o, t) for o, t in pairs if o != t] == []
