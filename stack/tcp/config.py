"""Tunables of one host's TCP, with Linux's defaults.

Every value mirrors a Linux sysctl or socket option so a reader can compare the two stacks knob by knob.
Where Linux has no single number (delayed ACK, buffer autotuning) the choice is written next to the field.

The defaults form the "linux" profile.  Where Linux's defaults fall short of an RFC 9293 MUST, the
"rfc9293" profile (`TcpConfig.profile("rfc9293")`) holds the values that meet it; `PROFILES` lists both.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from stack.compat import SLOTS

CONGESTION_CHOICES = ("cubic", "newreno")
# An IPv4 packet is at most 65535 bytes: less a 20-byte IP header and a 60-byte TCP header (options).
TSO_MAX_PAYLOAD = 65535 - 20 - 60
# RFC 9293 3.8.6.3 (MUST-40): an ACK must not be delayed by 0.5 s or more.
MAX_DELAYED_ACK = 0.5


@dataclass(**SLOTS)
class TcpConfig:
    # Retransmission timeout (RFC 6298; Linux TCP_TIMEOUT_INIT, TCP_RTO_MIN, TCP_RTO_MAX).
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 120.0
    # Linux's tcp_set_rto floors the variance term (RTO = SRTT + max(min_rto, 4*RTTVAR)); False floors the
    # whole RTO as RFC 6298 2.4 words it (RTO = max(min_rto, SRTT + 4*RTTVAR)).
    min_rto_on_variance: bool = True
    # net.ipv4.tcp_syn_retries / tcp_synack_retries / tcp_retries2.  Linux turns retries2 into a time budget
    # computed as if the RTO started at 200 ms; this stack counts retransmissions of the same segment instead.
    # Linux's 6 SYN retransmissions give up a connect after 127 s, short of the 3 minutes of RFC 9293
    # MUST-23; the "rfc9293" profile's 7 give up after 247 s.
    syn_retries: int = 6
    synack_retries: int = 5
    retries2: int = 15
    # RFC 9293 3.8.3's R1 (net.ipv4.tcp_retries1): after this many timeouts of one segment (or SYN) the path
    # may be broken, so IP is asked to re-check it ("negative advice": forget the neighbour, the path MTU).
    retries1: int = 3
    # Delayed ACK: Linux starts at TCP_ATO_MIN (40 ms) and adapts up to TCP_DELACK_MAX (200 ms).  This stack
    # uses the fixed 40 ms start value, which is what a bulk receiver on Linux shows; 200 ms is the RFC bound.
    # Linux's "quickack" mode (immediate ACKs for the first segments of a connection) is not modelled.
    # RFC 9293 MUST-40: the delay must stay below 0.5 s.
    delayed_ack: float = 0.04
    # TIME_WAIT lasts 2*MSL; Linux's TCP_TIMEWAIT_LEN is 60 s, the "rfc9293" profile's 240 s is twice
    # RFC 9293's 2-minute MSL (MUST-13).  Tests set it short.
    time_wait: float = 60.0
    # net.ipv4.tcp_rfc1337: RFC 1337's protection against TIME_WAIT assassination, which ignores every RST
    # in TIME_WAIT.  Linux's default (off) lets a RST at RCV.NXT end TIME_WAIT, as RFC 9293 3.10.7.4 says.
    rfc1337: bool = False
    # net.ipv4.tcp_fin_timeout: how long an orphaned (closed by the application) socket stays in FIN_WAIT2.
    fin_timeout: float = 60.0
    # net.ipv4.tcp_keepalive_time / _intvl / _probes (used when SO_KEEPALIVE is set).
    keepalive_time: float = 7200.0
    keepalive_intvl: float = 75.0
    keepalive_probes: int = 9
    # Buffers.  Linux's tcp_rmem[1] is 131072; tcp_wmem[1] is 16384 but autotuning grows it to megabytes at
    # once for a bulk sender, so the default send buffer here is the size autotuning reaches on a LAN.
    rcvbuf: int = 131072
    sndbuf: int = 262144
    # RFC 7323 window scaling and timestamps, RFC 2018 SACK (net.ipv4.tcp_window_scaling/_timestamps/_sack).
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    # Largest receive buffer the window scale must be able to express (Linux: tcp_rmem[2] = 6 MB -> wscale 7).
    max_rcvbuf: int = 6291456
    # RACK-TLP (RFC 8985) with SACK: time-based loss detection (net.ipv4.tcp_recovery=1, Linux's default)
    # and tail loss probes (net.ipv4.tcp_early_retrans=3).  Off: DupThresh recovery (RFC 6675) only.
    rack: bool = True
    tlp: bool = True
    # net.ipv4.tcp_congestion_control and RFC 6928's initial window (segments).
    congestion: str = "cubic"
    initial_window: int = 10
    # net.ipv4.tcp_syncookies: 0 never, 1 when the SYN queue overflows, 2 always.
    syncookies: int = 1
    # net.core.somaxconn caps listen()'s backlog; net.ipv4.tcp_max_syn_backlog limits the SYN queue when
    # SYN cookies are off.
    somaxconn: int = 4096
    max_syn_backlog: int = 1024
    # net.ipv4.ip_local_port_range.
    ephemeral_low: int = 32768
    ephemeral_high: int = 60999
    # RFC 9293 3.7.1: the MSS assumed when the peer sends no MSS option.
    default_mss: int = 536
    # TCP_USER_TIMEOUT in seconds (None: retries2 decides).
    user_timeout: float | None = None
    # Nagle's algorithm is on unless TCP_NODELAY.
    nagle: bool = True
    # TSO: the largest payload one segment of new data may carry when the device segments for us (a TAP in
    # offload mode cuts it into MSS-sized packets, like Linux's gso_max_size).  0: off, every segment is at
    # most one MSS (what the wire sees is the same either way).
    tso_max_bytes: int = 0

    @classmethod
    def profile(cls, name: str, **overrides: object) -> TcpConfig:
        """The configuration of the profile `name` (a key of PROFILES), with `overrides` on top."""
        if name not in PROFILES:
            raise ValueError(f"profile={name!r}: choose one of {', '.join(PROFILES)}")
        fields = dict(PROFILES[name])
        fields.update(overrides)
        return cls(**fields)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.congestion not in CONGESTION_CHOICES:
            raise ValueError(f"congestion={self.congestion!r}: choose one of {', '.join(CONGESTION_CHOICES)}")
        if self.syncookies not in (0, 1, 2):
            raise ValueError(f"syncookies={self.syncookies!r}: must be 0, 1 or 2")
        if not 0 < self.ephemeral_low <= self.ephemeral_high <= 65535:
            raise ValueError(f"ephemeral port range {self.ephemeral_low}-{self.ephemeral_high} is not valid")
        for name in ("initial_rto", "min_rto", "max_rto", "delayed_ack", "time_wait"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must not be negative")
        if self.delayed_ack >= MAX_DELAYED_ACK:
            raise ValueError(f"delayed_ack={self.delayed_ack!r}: must be below {MAX_DELAYED_ACK} s "
                             "(RFC 9293 MUST-40)")
        if self.retries1 < 1:
            raise ValueError(f"retries1={self.retries1!r}: must be at least 1")
        if not 0 <= self.tso_max_bytes <= TSO_MAX_PAYLOAD:
            raise ValueError(f"tso_max_bytes={self.tso_max_bytes!r}: must be 0 (off) up to {TSO_MAX_PAYLOAD}")
        if self.rcvbuf < 256 or self.sndbuf < 256:
            raise ValueError(f"rcvbuf={self.rcvbuf}, sndbuf={self.sndbuf}: buffers need at least 256 bytes")


#: Named sets of TcpConfig values, each applied over the defaults.  "linux" is the defaults themselves:
#: Linux's sysctls, so the stack behaves like the kernel it is compared with.  "rfc9293" changes only
#: what RFC 9293 requires and Linux's defaults miss: a connect keeps trying for at least 3 minutes
#: (MUST-23) and TIME_WAIT lasts 2*MSL with the RFC's 2-minute MSL (MUST-13).
PROFILES: MappingProxyType[str, MappingProxyType[str, object]] = MappingProxyType({
    "linux": MappingProxyType({}),
    "rfc9293": MappingProxyType({"syn_retries": 7, "time_wait": 240.0}),
})


def window_scale_for(max_rcvbuf: int) -> int:
    """The smallest shift that lets a 16-bit window field express `max_rcvbuf` (RFC 7323: at most 14)."""
    shift = 0
    while shift < 14 and (max_rcvbuf >> shift) > 0xFFFF:
        shift += 1
    return shift
