"""Option negotiation on the handshake (RFC 9293 3.7.1, RFC 7323, RFC 2018).

The rules: MSS is what each side may receive, clamped by the route MTU; window scaling, timestamps and
SACK are used only when both SYNs offered them (a SYN-ACK only echoes what the SYN offered).
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.compat import SLOTS
from stack.tcp.config import TcpConfig, window_scale_for
from stack.wire.tcp import TcpOptions

IPV4_TCP_HEADERS = 40  # 20 bytes of IPv4 header + 20 bytes of TCP header, no options
TIMESTAMP_OPTION_SPACE = 12  # kind, length, TSval, TSecr padded with two NOPs
MAX_WSCALE = 14  # RFC 7323 2.3


@dataclass(**SLOTS)
class Negotiated:
    """What the handshake settled.  `send_mss` counts payload bytes per segment, options excluded."""

    peer_mss: int
    our_mss: int
    snd_wscale: int = 0  # the peer's shift: applied to windows we receive
    rcv_wscale: int = 0  # our shift: applied to windows we send
    window_scaling: bool = False
    sack: bool = False
    timestamps: bool = False

    @property
    def send_mss(self) -> int:
        """Payload per segment: like Linux's mss_cache, the timestamp option's 12 bytes come off the MSS."""
        return max(1, self.peer_mss - (TIMESTAMP_OPTION_SPACE if self.timestamps else 0))


def mss_for_mtu(mtu: int) -> int:
    return max(88, mtu - IPV4_TCP_HEADERS)


def syn_options(config: TcpConfig, mtu: int, tsval: int | None) -> TcpOptions:
    """The options of our SYN: everything this host is configured to offer."""
    return TcpOptions(
        mss=mss_for_mtu(mtu),
        wscale=window_scale_for(max(config.max_rcvbuf, config.rcvbuf)) if config.window_scaling else None,
        sack_permitted=config.sack,
        timestamp=(tsval, 0) if config.timestamps and tsval is not None else None,
    )


def negotiate(config: TcpConfig, mtu: int, peer: TcpOptions) -> Negotiated:
    """Combine our configuration with the options of the peer's SYN (or SYN-ACK)."""
    our_mss = mss_for_mtu(mtu)
    peer_mss = peer.mss if peer.mss else config.default_mss
    both_scale = config.window_scaling and peer.wscale is not None
    return Negotiated(
        # RFC 9293 3.7.1 / RFC 6691: send no more than the peer can take nor the route can carry.
        peer_mss=max(1, min(peer_mss, our_mss)),
        our_mss=our_mss,
        # RFC 7323 2.3: a shift above 14 is treated as 14 (and Linux logs it).
        snd_wscale=min(peer.wscale, MAX_WSCALE) if both_scale and peer.wscale is not None else 0,
        rcv_wscale=window_scale_for(max(config.max_rcvbuf, config.rcvbuf)) if both_scale else 0,
        window_scaling=both_scale,
        sack=config.sack and peer.sack_permitted,
        timestamps=config.timestamps and peer.timestamp is not None,
    )


def syn_ack_options(negotiated: Negotiated, tsval: int, ts_recent: int) -> TcpOptions:
    """A SYN-ACK echoes only the options the SYN offered (RFC 7323 2.2/3.2, RFC 2018 2)."""
    return TcpOptions(
        mss=negotiated.our_mss,
        wscale=negotiated.rcv_wscale if negotiated.window_scaling else None,
        sack_permitted=negotiated.sack,
        timestamp=(tsval, ts_recent) if negotiated.timestamps else None,
    )
