"""The neighbour table alone: states, timers, queueing and failure, with an explicit clock."""

from __future__ import annotations

import random

import pytest

from stack.net.arp import ArpCache, ArpRequest, ArpTimings, NeighbourState

PEER = bytes([10, 0, 0, 3])
PEER_MAC = bytes.fromhex("020000000003")
NEW_MAC = bytes.fromhex("0200000000ff")


def cache(**timings: float) -> ArpCache:
    return ArpCache(ArpTimings(**timings), rng=random.Random(0))


def test_enqueue_sends_one_broadcast_request_and_holds_packets() -> None:
    arp = cache()
    assert arp.lookup(PEER, 0.0) is None
    arp.enqueue(PEER, b"p1", 0.0)
    arp.enqueue(PEER, b"p2", 0.1)
    requests, failures = arp.poll(0.1)
    assert requests == [ArpRequest(PEER, None)] and failures == []
    assert arp.entry(PEER).state is NeighbourState.INCOMPLETE
    assert arp.learn(PEER, PEER_MAC, 0.2, is_reply=True, to_us=True) == [b"p1", b"p2"]
    assert arp.entry(PEER).state is NeighbourState.REACHABLE
    assert arp.lookup(PEER, 0.3) == PEER_MAC


def test_three_requests_one_second_apart_then_failure_returns_the_queue() -> None:
    arp = cache()
    arp.enqueue(PEER, b"syn", 0.0)
    sent = []
    t = 0.0
    while (deadline := arp.next_deadline()) is not None:
        t = max(t, deadline)
        requests, failures = arp.poll(t)
        sent += [t] * len(requests)
        if failures:
            break
    assert sent == [0.0, 1.0, 2.0]
    assert t == 3.0
    assert failures[0].ip == PEER and failures[0].packets == [b"syn"]
    assert arp.entry(PEER) is None and arp.stats.resolution_failures == 1


def test_queue_is_bounded_and_drops_the_oldest() -> None:
    arp = cache(queue_limit=3)
    for i in range(5):
        arp.enqueue(PEER, bytes([i]), 0.0)
    assert arp.learn(PEER, PEER_MAC, 0.1, is_reply=True, to_us=True) == [b"\x02", b"\x03", b"\x04"]
    assert arp.stats.queue_drops == 2


def test_reachable_becomes_stale_then_is_collected_when_unused() -> None:
    arp = cache(reachable_time=30.0, gc_stale_time=60.0)
    arp.learn(PEER, PEER_MAC, 0.0, is_reply=True, to_us=True)
    reachable_until = arp.entry(PEER).deadline
    assert 15.0 <= reachable_until <= 45.0  # randomized 0.5x..1.5x like Linux
    arp.poll(reachable_until)
    assert arp.entry(PEER).state is NeighbourState.STALE
    arp.poll(reachable_until + 59.0)
    assert arp.entry(PEER) is not None
    arp.poll(reachable_until + 60.0)
    assert arp.entry(PEER) is None and arp.next_deadline() is None


def test_using_a_stale_entry_probes_by_unicast_and_confirms() -> None:
    arp = cache(reachable_time=30.0, delay_first_probe=5.0)
    arp.learn(PEER, PEER_MAC, 0.0, is_reply=False, to_us=True)  # a request to us: STALE
    assert arp.entry(PEER).state is NeighbourState.STALE
    assert arp.lookup(PEER, 10.0) == PEER_MAC  # still usable
    assert arp.entry(PEER).state is NeighbourState.DELAY
    assert arp.poll(15.0)[0] == [ArpRequest(PEER, PEER_MAC)]
    assert arp.entry(PEER).state is NeighbourState.PROBE
    arp.learn(PEER, PEER_MAC, 15.5, is_reply=True, to_us=True)
    assert arp.entry(PEER).state is NeighbourState.REACHABLE


def test_unanswered_probes_remove_the_entry() -> None:
    arp = cache(delay_first_probe=5.0)
    arp.learn(PEER, PEER_MAC, 0.0, is_reply=False, to_us=True)
    arp.lookup(PEER, 1.0)
    probes = []
    t = 1.0
    while arp.entry(PEER) is not None:
        t = arp.next_deadline()
        probes += arp.poll(t)[0]
    assert probes == [ArpRequest(PEER, PEER_MAC)] * 3 and t == 9.0


def test_only_traffic_to_us_creates_entries_but_any_updates_them() -> None:
    arp = cache()
    assert arp.learn(PEER, PEER_MAC, 0.0, is_reply=False, to_us=False) == []
    assert arp.entry(PEER) is None
    arp.learn(PEER, PEER_MAC, 0.0, is_reply=True, to_us=True)
    arp.learn(PEER, NEW_MAC, 1.0, is_reply=False, to_us=False)  # e.g. a gratuitous ARP: new MAC, STALE
    assert arp.entry(PEER).mac == NEW_MAC and arp.entry(PEER).state is NeighbourState.STALE


def test_bad_timings_are_rejected_with_the_field() -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        ArpTimings(retry_interval=0)


def test_a_poll_before_every_deadline_changes_nothing_and_later_ones_still_fire() -> None:
    """Polls between timers skip the table (a lower bound of the deadlines); a deadline that moved later
    (a fresh confirmation) fires at its new time, not at the old one."""
    arp = cache(reachable_time=30.0, gc_stale_time=60.0)
    other = bytes([10, 0, 0, 4])
    arp.learn(PEER, PEER_MAC, 0.0, is_reply=True, to_us=True)
    arp.learn(other, NEW_MAC, 0.0, is_reply=True, to_us=True)
    first = min(arp.entry(PEER).deadline, arp.entry(other).deadline)
    assert arp.poll(first - 0.001) == ([], []) and not arp.due(first - 0.001)
    assert arp.entry(PEER).state is arp.entry(other).state is NeighbourState.REACHABLE
    arp.learn(PEER, PEER_MAC, first - 1.0, is_reply=True, to_us=True)  # confirmed again: a later deadline
    renewed = arp.entry(PEER).deadline
    assert renewed > first - 1.0 + 14.0
    arp.poll(first)  # the old bound: the table is walked, PEER is not due yet
    assert arp.entry(PEER).state is NeighbourState.REACHABLE
    assert arp.entry(other).state is NeighbourState.STALE or arp.entry(other).deadline > first
    assert arp.due(renewed) and not arp.due(min(renewed, arp.next_deadline()) - 0.001)
    arp.poll(renewed)
    assert arp.entry(PEER).state is NeighbourState.STALE
