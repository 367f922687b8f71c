"""Segments that reach a listener: SYNs become SYN queue entries (or SYN cookies), cookie ACKs become
connections, anything else gets the LISTEN-state treatment of RFC 9293 3.10.7.2.

The queue limits and overflow rules are documented in `listener.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp import syncookies
from stack.tcp.isn import timestamp_offset
from stack.tcp.options import negotiate, syn_ack_options
from stack.tcp.seq import seq_add
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer
    from stack.tcp.listener import Listener

ACK = TcpFlags.ACK
SYN = TcpFlags.SYN
RST = TcpFlags.RST
FIN = TcpFlags.FIN


class ListenHandler:
    def __init__(self, layer: TcpLayer) -> None:
        self.layer = layer

    def segment_arrives(
        self, listener: Listener, src_ip: str, dst_ip: str, seg: TcpSegment, now: float
    ) -> None:
        layer = self.layer
        flags = seg.flags
        if flags & RST:
            return  # RFC 9293: an incoming RST in LISTEN is ignored
        if flags & ACK:
            cookies = layer.config.syncookies
            if not flags & SYN and cookies and self.cookie_ack(listener, src_ip, dst_ip, seg, now):
                return
            # "Any acknowledgment is bad if it arrives on a connection still in the LISTEN state."
            layer.reset_unmatched(src_ip, dst_ip, seg, now)
            return
        if not flags & SYN or flags & FIN:
            return  # Linux discards SYN+FIN and segments with neither SYN nor ACK
        counter = layer.counter
        if listener.accept_queue_full():
            counter["ListenOverflows"] += 1
            counter["ListenDrops"] += 1
            return
        want_cookie = listener.want_cookie()
        if not want_cookie and (
            listener.syn_queue_full() or (layer.config.syncookies == 0 and listener.syn_early_drop())
        ):
            counter["TCPReqQFullDrop"] += 1
            counter["ListenDrops"] += 1
            return
        found = layer.route(src_ip)
        if found is None:
            counter["ListenDrops"] += 1
            return
        mtu = found[1]
        if want_cookie:
            self.send_cookie(listener, src_ip, dst_ip, seg, mtu, now)
            return
        connection = layer.new_connection(dst_ip, seg.dst_port, src_ip, seg.src_port, mtu, now)
        if listener.socket is not None:
            listener.socket.apply_options(connection)
        key = (dst_ip, seg.dst_port, src_ip, seg.src_port)
        layer.parent_of[connection] = listener
        listener.add_embryonic(key, connection)
        connection.open_passive(seg, now)
        layer.touch(connection)

    # ------------------------------------------------------------------ SYN cookies

    def send_cookie(
        self, listener: Listener, src_ip: str, dst_ip: str, syn: TcpSegment, mtu: int, now: float
    ) -> None:
        """Answer a SYN statelessly: the ISN encodes the MSS (Linux's table) and a keyed hash; when the SYN
        carried timestamps, the low bits of our TSval encode window scale and SACK (as Linux does)."""
        layer = self.layer
        negotiated = negotiate(layer.config, mtu, syn.options)
        cookie = syncookies.encode_cookie(
            layer.secret, dst_ip, syn.dst_port, src_ip, syn.src_port, syn.seq, negotiated.peer_mss, now
        )
        options: TcpOptions
        if negotiated.timestamps and syn.options.timestamp is not None:
            tsval = (int(now * 1000) + timestamp_offset(layer.secret, dst_ip, src_ip)) & 0xFFFFFFFF
            tsval = syncookies.encode_cookie_timestamp(
                tsval, negotiated.snd_wscale if negotiated.window_scaling else None, negotiated.sack, False
            )
            options = syn_ack_options(negotiated, tsval, syn.options.timestamp[0])
        else:
            # Without timestamps there is nowhere to keep window scale and SACK: Linux drops both.
            negotiated.window_scaling = False
            negotiated.snd_wscale = negotiated.rcv_wscale = 0
            negotiated.sack = False
            options = syn_ack_options(negotiated, 0, 0)
        window = min(layer.config.rcvbuf, 0xFFFF)
        ack = seq_add(syn.seq, 1)
        reply = TcpSegment(syn.dst_port, syn.src_port, cookie, ack, SYN | ACK, window, options)
        layer.counter["SyncookiesSent"] += 1
        layer.send_raw(dst_ip, src_ip, reply)

    def cookie_ack(
        self, listener: Listener, src_ip: str, dst_ip: str, seg: TcpSegment, now: float
    ) -> bool:
        """An ACK for no connection: if it returns a valid cookie, the handshake completes here.  Returns
        False when it is not a valid cookie (the caller then resets it)."""
        layer = self.layer
        if seg.flags & (SYN | RST):
            return False
        cookie = seq_add(seg.ack, -1)
        client_isn = seq_add(seg.seq, -1)
        mss = syncookies.decode_cookie(
            layer.secret, dst_ip, seg.dst_port, src_ip, seg.src_port, cookie, client_isn, now
        )
        if mss is None:
            layer.counter["SyncookiesFailed"] += 1
            return False
        layer.counter["SyncookiesRecv"] += 1
        if listener.accept_queue_full():
            layer.counter["ListenOverflows"] += 1
            layer.counter["ListenDrops"] += 1
            return True
        found = layer.route(src_ip)
        if found is None:
            return True
        wscale: int | None = None
        sack = False
        ts = seg.options.timestamp
        if ts is not None and layer.config.timestamps:
            decoded = syncookies.decode_cookie_timestamp(ts[1])
            wscale, sack = decoded.wscale, decoded.sack_permitted
        peer_options = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack, timestamp=ts)
        connection = layer.new_connection(
            dst_ip, seg.dst_port, src_ip, seg.src_port, found[1], now, iss=cookie
        )
        if listener.socket is not None:
            listener.socket.apply_options(connection)
        connection.open_from_cookie(seg, peer_options, now)
        listener.add_established(connection)
        connection.on_segment(seg, now)  # the ACK may carry data
        layer.touch(connection)
        return True
