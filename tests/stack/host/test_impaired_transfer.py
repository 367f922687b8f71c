"""Property: two Hosts over an impaired memory wire (seeded loss, reorder, duplicate, corrupt, jitter)
deliver byte-exact data both ways, and both end CLOSED or TIME_WAIT, then with no timer left anywhere."""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig

from .transfer import exchange

profiles = st.builds(
    Impairment,
    delay=st.sampled_from([0.0005, 0.002, 0.01]),
    jitter=st.sampled_from([0.0, 0.001, 0.004]),
    loss=st.floats(0.0, 0.15),
    duplicate=st.floats(0.0, 0.05),
    reorder=st.floats(0.0, 0.15),
    corrupt=st.floats(0.0, 0.05),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a_to_b=profiles, b_to_a=profiles, seed=st.integers(0, 2**32 - 1),
       sizes=st.tuples(st.integers(0, 300_000), st.integers(0, 300_000)))
def test_impaired_wire_delivers_exact_bytes_both_ways(a_to_b: Impairment, b_to_a: Impairment, seed: int,
                                                      sizes: tuple[int, int]) -> None:
    # More SYN-ACK retries than Linux's 5: when every ACK of the handshake is lost (hypothesis finds such
    # seeds: seed=1017 with ~15% loss), the server rightly drops its SYN_RECV entry while the client, with
    # nothing to send before accept() returns, waits forever, as it would on Linux. The property is about
    # delivering data, so the handshake gets enough chances to complete.
    # ARP, too, gets more than Linux's 3 solicitations: at 15 % loss and 5 % corruption each way all three
    # exchanges fail in about one example in a hundred (seed=50236), and connect() then says EHOSTUNREACH,
    # as Linux would.
    config = TcpConfig(time_wait=1.0, synack_retries=12)
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=seed, tcp=config, arp_retries=12)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=seed + 1, tcp=config, arp_retries=12)
    runner = Runner([a, b], [MemoryWire(a, b, a_to_b, b_to_a, seed=seed)])
    rng = random.Random(seed)
    data_ab, data_ba = rng.randbytes(sizes[0]), rng.randbytes(sizes[1])

    listener = b.socket()
    listener.bind(("10.0.0.2", 5001))
    listener.listen()
    client = a.socket()
    client.connect(("10.0.0.2", 5001))
    server, _ = listener.accept()
    listener.close()
    got_b, got_a = exchange(runner, client, server, data_ab, data_ba, time_limit=600.0)
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(data_ab).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(data_ba).digest()

    client.close()
    server.close()
    runner.run_until(lambda: {client.state, server.state} <= {"CLOSE", "TIME_WAIT"}, timeout=600.0)
    assert {client.state, server.state} <= {"CLOSE", "TIME_WAIT"}
    assert runner.run_until_idle(timeout=3600.0)
    assert a.tcp.next_deadline() is None and b.tcp.next_deadline() is None
    assert a.tables().established == () and b.tables().established == ()
