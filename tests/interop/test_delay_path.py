"""A delay-only pystack link carries TSO super-segments whole: offload stays on through the delay, every
byte arrives (SHA-256 checked), and nothing is cut into wire packets in Python."""

from __future__ import annotations

import pytest

from lab.experiments.bulk import kernel_to_stack, stack_to_kernel
from lab.experiments.running import lab_for_experiment
from lab.kernel.transfers import pattern_sha256
from lab.topology import plan_from_text
from tests.interop.conftest import unique_lab_name

pytestmark = pytest.mark.root

TOPOLOGY = """
name: delayed
nodes:
  h1: {kind: kernel}
  s1: {kind: pystack, apps: [{app: discard, port: 9}]}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
    impair:
      h1->s1: {delay: 5ms}
      s1->h1: {delay: 5ms}
"""
TOTAL = 32 << 20


def test_a_delay_only_link_keeps_super_segments_whole_both_ways() -> None:
    plan = plan_from_text(TOPOLOGY, source="<delay path test>", name=unique_lab_name("td"))
    with lab_for_experiment(plan, None) as lab:
        for move, port in ((kernel_to_stack, 7601), (stack_to_kernel, 7602)):
            figures = move(lab, "h1", "s1", port, TOTAL)
            assert figures["error"] is None and figures["received"] == TOTAL
            assert figures["sha256"] == pattern_sha256(TOTAL)
        with lab.stack("s1") as control:
            counters = control.stats()["counters"]
    assert counters["TapTxGsoFrames"] > 0, counters
    assert counters["TapTxSegmentedInSoftware"] == 0, counters
    assert counters["ImpairEgressQueueDrops"] == 0 and counters["ImpairIngressQueueDrops"] == 0, counters
    # the kernel's super-segments crossed the ingress delay whole: far fewer frames than wire packets
    assert counters["ImpairIngressOffered"] < TOTAL // 1448 // 4, counters
