"""The allowed range of every number that reaches the lab or a stack node from outside.

A value is read in three places: a topology file (`lab.topology`, in its human units: ``20ms``,
``1%``, ``100mbit``), a node's settings file (`stack.node.settings`, the same quantities as plain
numbers in ms, percent and Mbit/s) and a request on a node's control socket (`stack.node.control`).
All three check against this one table, so a value refused in one is refused in all, and nothing
in range can crash what uses it later: the rate range is what tc's tbf and netem can encode (whole
kbit/s in a 32-bit byte rate), the delay range what netem's 32-bit tick count holds with room to spare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stack.compat import SLOTS


@dataclass(frozen=True, **SLOTS)
class Range:
    """A closed interval ``low <= value <= high`` of plain numbers (a bool is not a number here)."""

    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high  # NaN compares false both ways: never in range

    def describe(self, unit: str = "") -> str:
        """``1 to 65535``; with a unit, ``0 ms to 60000 ms``."""
        suffix = f" {unit}" if unit else ""
        return f"{_number(self.low)}{suffix} to {_number(self.high)}{suffix}"


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return f"{value:g}"


# --- links: the topology's `mtu` and `impair`, the settings file's interface ---------------------------
MTU = Range(68, 65535)
DELAY_MS = Range(0, 60_000)  # one minute each way; netem holds about 274 s in its 32-bit tick count
JITTER_MS = Range(0, 60_000)  # and never more than the delay it varies (checked where both are known)
PERCENT = Range(0, 100)  # loss, duplicate, reorder, corrupt
RATE_MBIT = Range(0.001, 32_000)  # 1 kbit/s to 32 Gbit/s: tbf and netem take a 32-bit byte rate

# --- apps and connections: the topology's `apps`, the control socket's requests -----------------------
PORT = Range(1, 65535)

# --- a pystack node's worker processes (the topology's `workers`, the settings file's) ------------------
# One per TAP queue; more than the cores only adds contention, and the kernel's tun allows 256 queues.
WORKERS = Range(1, 16)
BYTE_COUNT = Range(0, 1 << 40)  # a source app's `bytes`, a connect's `send` and `recv`: up to 1 TiB
BACKLOG = Range(0, 65535)  # a listen backlog (Linux caps it at somaxconn anyway)
TIMEOUT_SECONDS = Range(0.001, 3600)  # connect, http_get and ping timeouts: 1 ms to an hour
HOLD_SECONDS = Range(0, 3600)  # how long connect keeps a connection open after its transfer
PING_COUNT = Range(1, 1000)
HTTP_GET_COUNT = Range(1, 10_000)
IPERF3_SECONDS = Range(1, 3600)  # an iperf3 test's duration (-t)
IPERF3_STREAMS = Range(1, 128)  # its parallel streams (-P), iperf3's own limit
TRACE_SEQUENCE = Range(0, (1 << 63) - 1)
SS_LIMIT = Range(1, 1_000_000)  # connections in one `ss` answer
PCAP_BYTES = Range(1024, 1 << 36)  # a capture's file: 1 KiB to 64 GiB
CAPTURE_SECONDS = Range(0.1, 86_400)  # how long `lab capture` records

# --- the control socket's `config`: each numeric `stack.tcp.config.TcpConfig` field -------------------
_SECONDS_SETTING = Range(0, 86_400)  # timers and timeouts: up to a day (keepalive_time is 2 h by default)
_RETRIES = Range(0, 255)  # Linux keeps retry counts in a byte
_BUFFER_BYTES = Range(0, (1 << 31) - 1)  # Linux's socket buffers are C ints
TCP_CONFIG: dict[str, Range] = {
    "initial_rto": _SECONDS_SETTING,
    "min_rto": _SECONDS_SETTING,
    "max_rto": _SECONDS_SETTING,
    "delayed_ack": _SECONDS_SETTING,
    "time_wait": _SECONDS_SETTING,
    "fin_timeout": _SECONDS_SETTING,
    "keepalive_time": _SECONDS_SETTING,
    "keepalive_intvl": _SECONDS_SETTING,
    "user_timeout": _SECONDS_SETTING,
    "syn_retries": _RETRIES,
    "synack_retries": _RETRIES,
    "retries1": _RETRIES,
    "retries2": _RETRIES,
    "keepalive_probes": _RETRIES,
    "rcvbuf": _BUFFER_BYTES,
    "sndbuf": _BUFFER_BYTES,
    "max_rcvbuf": _BUFFER_BYTES,
    "initial_window": Range(1, 1000),  # segments
    "syncookies": Range(0, 2),
    "somaxconn": BACKLOG,
    "max_syn_backlog": BACKLOG,
    "ephemeral_low": PORT,
    "ephemeral_high": PORT,
    "default_mss": Range(88, 65495),  # Linux's TCP_MIN_MSS up to the largest IPv4 segment
    "tso_max_bytes": Range(0, 65455),
}
