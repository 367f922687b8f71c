"""What every congestion control algorithm shares: the interface a connection calls, the initial window and
slow start (RFC 5681 3.1 with byte counting, grown by every byte ACKed as Linux's tcp_slow_start does).

Windows are in bytes at the interface.  Loss *detection* and recovery bookkeeping (duplicate ACKs, SACK pipe,
Karn) are the connection's (`stack.tcp.recovery`); an algorithm only answers "what is cwnd now".
"""

from __future__ import annotations

from typing import Protocol

INFINITE_SSTHRESH = 0x7FFFFFFF  # "arbitrarily high" initial ssthresh (RFC 5681 3.1), Linux's value
RFC6928_WINDOW_BYTES_PER_SEGMENT = 1460  # RFC 6928: IW = min(10*MSS, max(2*MSS, 14600))


class CongestionControl(Protocol):
    """What a connection calls; window sizes in bytes."""

    name: str
    cwnd: int
    ssthresh: int
    mss: int
    initial_window: int  # segments (RFC 6928)
    acked_any: bool  # some new data was ACKed (until then a new MSS recomputes the initial window)

    def on_ack(self, acked: int, now: float, rtt: float | None, cwnd_limited: bool = True) -> None:
        """`acked` bytes of new data were cumulatively ACKed outside loss recovery; rtt is a valid sample.
        cwnd grows only when `cwnd_limited` (`stack.tcp.cwnd_use`): the sender was using the window."""

    def on_loss(self, now: float, flight_size: int) -> None:
        """Fast retransmit: a loss was detected and recovery begins."""

    def on_recovery_exit(self, now: float, flight_size: int | None = None) -> None:
        """Recovery ended (a full ACK): deflate the window to ssthresh."""

    def on_rto(self, now: float, flight_size: int) -> None:
        """The retransmission timer expired."""

    def on_idle_restart(self, now: float) -> None:
        """Sending resumes after an idle period longer than the RTO (RFC 5681 4.1)."""

    def set_mss(self, mss: int) -> None:
        """The sender's MSS changed (option negotiation, PMTU)."""


def initial_window_bytes(mss: int, segments: int = 10) -> int:
    """RFC 6928's initial window: min(10*MSS, max(2*MSS, 14600)).

    For other segment counts the same shape is used: min(n*MSS, max(2*MSS, n*1460)), which is RFC 6928 for
    n = 10 and keeps a large MSS from making the first flight huge.
    """
    if mss <= 0:
        raise ValueError(f"mss must be positive, got {mss}")
    if segments < 1:
        raise ValueError(f"initial window must be at least 1 segment, got {segments}")
    return min(segments * mss, max(2 * mss, segments * RFC6928_WINDOW_BYTES_PER_SEGMENT))


def slow_start(cc: CongestionControl, acked: int) -> int:
    """Grow cwnd in slow start by the bytes ACKed, up to ssthresh; return the ACKed bytes left over for
    congestion avoidance (those beyond ssthresh, as Linux does).

    No per-ACK limit (RFC 3465's L = 2*SMSS, RFC 5681's SMSS): a receiver behind GRO, as every Linux host
    on a TAP or veth is, acknowledges a 64 KB super-segment (45 segments) with one ACK, and a 2*SMSS limit
    then grows the window by 4 % per round trip instead of doubling it (at 10 ms RTT the window was still
    265 KB after 0.9 s).  Linux's tcp_slow_start counts every ACKed segment for the same reason.
    """
    cwnd = cc.cwnd
    if cwnd >= cc.ssthresh:
        return acked
    if cwnd + acked < cc.ssthresh:
        cc.cwnd = cwnd + acked
        return 0
    cc.cwnd = cc.ssthresh
    return acked - (cc.ssthresh - cwnd)


def rescaled_windows(cc: CongestionControl, mss: int) -> tuple[int, int]:
    """(cwnd, ssthresh) for a new MSS: the initial window recomputed if nothing was ACKed yet, otherwise the
    same number of segments."""
    if mss <= 0:
        raise ValueError(f"mss must be positive, got {mss}")
    if not cc.acked_any and cc.ssthresh == INFINITE_SSTHRESH:
        return initial_window_bytes(mss, cc.initial_window), INFINITE_SSTHRESH
    cwnd = max(mss, cc.cwnd * mss // cc.mss)
    ssthresh = cc.ssthresh if cc.ssthresh == INFINITE_SSTHRESH else max(2 * mss, cc.ssthresh * mss // cc.mss)
    return cwnd, ssthresh
