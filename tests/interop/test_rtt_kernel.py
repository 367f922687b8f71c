"""The stack's srtt, rttvar and rto next to the kernel's TCP_INFO for one connection on the same path.

A kernel client in h1 plays ping-pong with the stack's echo app on s1: each side's data is answered at
once by the other's (the echo, the next ping), so each side times the other's answer; a pause between
pings would be timed too, as the kernel holds its ACK for the next ping (delayed ACK). On a link the
stack delays by 5 ms each way both read about 10.6 ms; on the clean pair both read 0.05-0.15 ms: each
times the other's answer, the test's client in Python and the stack's loop turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.experiments.running import RunningLab, lab_for_experiment
from lab.kernel.sockets import tcp_info
from lab.topology import plan_from_text
from tests.interop.conftest import unique_lab_name

pytestmark = pytest.mark.root

TOPOLOGY = """
name: rtt
nodes:
  h1: {{kind: kernel}}
  s1:
    kind: pystack
    apps:
      - {{app: echo, port: 7}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
{impair}
"""
DELAYED = """    impair:
      h1->s1: {delay: 5ms}
      s1->h1: {delay: 5ms}
"""
ROUNDS = 60


@pytest.fixture(params=["clean", "delayed"])
def rtt_lab(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningLab]]:
    text = TOPOLOGY.format(impair=DELAYED if request.param == "delayed" else "")
    plan = plan_from_text(text, source="<rtt test topology>", name=unique_lab_name("tv"))
    with lab_for_experiment(plan, None) as lab:
        yield request.param, lab


def ping_pong(lab: RunningLab) -> tuple[dict, dict]:
    """(the kernel's TCP_INFO, the stack's ss entry) after ROUNDS echoes of 100 bytes."""
    sock = lab.kernel_socket("h1")
    try:
        sock.settimeout(5.0)
        sock.connect((lab.address("s1"), 7))
        for _ in range(ROUNDS):
            sock.sendall(b"x" * 100)
            got = 0
            while got < 100:  # the next ping goes at once: it carries the ACK of this echo
                got += len(sock.recv(100 - got))
        info = tcp_info(sock)
        host, port = sock.getsockname()
        local = f"{host}:{port}"
        with lab.stack("s1") as client:
            answer = client.request("ss")
        entries = [c for c in answer["connections"] if c["remote"] == local]
        assert len(entries) == 1, answer
        return info, entries[0]
    finally:
        sock.close()


def test_stack_rtt_agrees_with_the_kernels(rtt_lab: tuple[str, RunningLab]) -> None:
    kind, lab = rtt_lab
    info, stack = ping_pong(lab)
    kernel_srtt, kernel_rttvar, kernel_rto = info["rtt"] / 1e6, info["rttvar"] / 1e6, info["rto"] / 1e6
    figures = (f"{kind}: stack srtt {stack['srtt'] * 1e3:.3f} ms rttvar {stack['rttvar'] * 1e3:.3f} ms "
               f"rto {stack['rto'] * 1e3:.1f} ms; kernel srtt {kernel_srtt * 1e3:.3f} ms rttvar "
               f"{kernel_rttvar * 1e3:.3f} ms rto {kernel_rto * 1e3:.1f} ms")
    print(figures)
    # never the 0 of millisecond timestamp echoes: a Python peer's answer takes tens of microseconds
    assert stack["srtt"] > 0.00001, figures
    if kind == "delayed":
        # both see the 10 ms the link adds, plus each other's answer time
        assert 0.009 < stack["srtt"] < 0.030, figures
        assert 0.009 < kernel_srtt < 0.030, figures
        assert abs(stack["srtt"] - kernel_srtt) < 0.005 + 0.25 * kernel_srtt, figures
    else:
        assert abs(stack["srtt"] - kernel_srtt) < 0.001 + kernel_srtt, figures
    # Linux's RTO: srtt + max(200 ms, 4 rttvar), in jiffies (4 ms at HZ=250); the stack's the same formula
    assert abs(stack["rto"] - kernel_rto) < 0.010 + 4 * max(stack["rttvar"], kernel_rttvar), figures
