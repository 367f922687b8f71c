"""A listening socket's two queues, as the seeds describe Linux's, and the passive open that fills them.

`listen(backlog)` stores min(backlog, somaxconn) (a negative backlog means somaxconn, as Linux reads it
unsigned).  The **SYN queue** holds SYN_RECV entries: connections that sent a SYN and got our SYN-ACK; each
retransmits its SYN-ACK on its own timer and disappears silently after synack_retries.  The **accept
queue** holds connections whose handshake completed and that accept() has not taken yet.

Segments for no connection that reach a listener (`Listener.segment_arrives`, RFC 9293 3.10.7.2): a SYN
becomes a SYN queue entry (or a SYN cookie), an ACK returning a valid cookie becomes a connection, a RST is
ignored, any other ACK is answered with a RST.

Overflow, as Linux 6.x does it (tcp_conn_request, tcp_check_req):
- accept queue full (`len > backlog`, so backlog 0 still admits one): a new SYN is dropped
  (ListenOverflows, ListenDrops); the client's SYN retransmission tries again later.  A handshake-completing
  ACK is dropped too and the entry stays in the SYN queue (tcp_abort_on_overflow=0): its SYN-ACK
  retransmission prompts the client to ACK again once there is room.
- SYN queue full (`len >= backlog`): with syncookies=1 the SYN is answered with a SYN cookie and no state
  is kept; with syncookies=0 it is dropped.  syncookies=2 always answers with cookies.  Without cookies, a
  SYN is also dropped once the SYN queue holds more than 3/4 of max_syn_backlog (Linux's early drop).

The TCP layer is passed in explicitly (`layer`), as FreeBSD's tcp_input passes its control blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from stack.tcp import syncookies
from stack.tcp.config import TcpConfig
from stack.tcp.isn import timestamp_offset
from stack.tcp.options import negotiate, syn_ack_options
from stack.tcp.seq import SEQ_MASK, seq_add
from stack.tcp.sockopts import SocketOptions
from stack.tcp.state import TcpState
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection
    from stack.tcp.layer import TcpLayer

FourTuple = tuple[str, int, str, int]  # (local ip, local port, remote ip, remote port)
# Plain ints: `&` on two IntFlag members runs Python code, and the LISTEN step tests several per SYN.
ACK = int(TcpFlags.ACK)
SYN = int(TcpFlags.SYN)
RST = int(TcpFlags.RST)
FIN = int(TcpFlags.FIN)


def effective_backlog(backlog: int, somaxconn: int) -> int:
    """Linux's listen(): the backlog is read as unsigned and capped at net.core.somaxconn."""
    return somaxconn if backlog < 0 or backlog > somaxconn else backlog


class Listener:
    """One listening (address, port): its backlog, SYN queue and accept queue, and the listening socket's
    options, which each new connection starts from."""

    def __init__(self, ip: str, port: int, backlog: int, config: TcpConfig, options: SocketOptions) -> None:
        self.ip = ip
        self.port = port
        self.config = config
        self.options = options
        self.backlog = effective_backlog(backlog, config.somaxconn)
        self.syn_queue: dict[FourTuple, Connection] = {}
        self.accept_queue: deque[Connection] = deque()

    def set_backlog(self, backlog: int) -> None:
        """listen() again on a listening socket only changes the backlog (as Linux)."""
        self.backlog = effective_backlog(backlog, self.config.somaxconn)

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) > self.backlog

    def syn_queue_full(self) -> bool:
        return len(self.syn_queue) >= self.backlog

    def syn_early_drop(self) -> bool:
        """Without cookies, Linux drops new SYNs once fewer than a quarter of max_syn_backlog is left."""
        limit = self.config.max_syn_backlog
        return limit - len(self.syn_queue) < (limit >> 2)

    def want_cookie(self) -> bool:
        cookies = self.config.syncookies
        return cookies == 2 or (cookies == 1 and self.syn_queue_full())

    def entry_changed(self, connection: Connection, new: TcpState) -> None:
        """Move a completed handshake from the SYN queue to the accept queue; forget dead entries.

        Linux keeps a connection that the peer reset in the accept queue: accept() returns it and the
        first recv() reports ECONNRESET.
        """
        key = connection.key
        if key in self.syn_queue and new is not TcpState.SYN_RECV:
            del self.syn_queue[key]
            if new is not TcpState.CLOSE:
                self.accept_queue.append(connection)

    def pop_accepted(self) -> Connection | None:
        return self.accept_queue.popleft() if self.accept_queue else None

    def close(self, now: float) -> list[Connection]:
        """close() on a listening socket: SYN queue entries vanish, unaccepted connections are reset
        (Linux's inet_csk_listen_stop).  Returns the connections that now have segments to send."""
        for connection in list(self.syn_queue.values()):
            connection.terminate(now, 0)
        reset = list(self.accept_queue)
        for connection in reset:
            connection.orphaned = True
            connection.abort(now)
        self.accept_queue.clear()
        return reset

    # -- the LISTEN state of SEGMENT ARRIVES ---------------------------------------------------------

    def segment_arrives(self, layer: TcpLayer, src_ip: str, dst_ip: str, seg: TcpSegment, now: float) -> None:
        flags = int(seg.flags)
        if flags & RST:
            return  # RFC 9293: an incoming RST in LISTEN is ignored
        if flags & ACK:
            may_be_cookie = not flags & SYN and self.config.syncookies
            if may_be_cookie and self.cookie_ack(layer, src_ip, dst_ip, seg, now):
                return
            # "Any acknowledgment is bad if it arrives on a connection still in the LISTEN state."
            layer.reset_unmatched(src_ip, dst_ip, seg, now)
            return
        if not flags & SYN or flags & FIN:
            return  # Linux discards SYN+FIN and segments with neither SYN nor ACK
        counter = layer.counter
        if self.accept_queue_full():
            counter["ListenOverflows"] += 1
            counter["ListenDrops"] += 1
            return
        want_cookie = self.want_cookie()
        early_drop = self.config.syncookies == 0 and self.syn_early_drop()
        if not want_cookie and (self.syn_queue_full() or early_drop):
            counter["TCPReqQFullDrop"] += 1
            counter["ListenDrops"] += 1
            return
        found = layer.route(src_ip, now)
        if found is None:
            counter["ListenDrops"] += 1
            return
        mtu = found[1]
        if want_cookie:
            self.send_cookie(layer, src_ip, dst_ip, seg, mtu, now)
            return
        connection = layer.new_connection(dst_ip, seg.dst_port, src_ip, seg.src_port, mtu, now,
                                          self.options.copy(), parent=self)
        self.syn_queue[connection.key] = connection
        connection.open_passive(seg, now)
        layer.touch(connection)

    # -- SYN cookies ---------------------------------------------------------------------------------

    def send_cookie(self, layer: TcpLayer, src_ip: str, dst_ip: str, syn: TcpSegment, mtu: int,
                    now: float) -> None:
        """Answer a SYN statelessly: the ISN encodes the MSS (Linux's table) and a keyed hash; when the SYN
        carried timestamps, the low bits of our TSval encode window scale and SACK (as Linux does)."""
        negotiated = negotiate(self.config, mtu, syn.options)
        cookie = syncookies.encode_cookie(
            layer.secret, dst_ip, syn.dst_port, src_ip, syn.src_port, syn.seq, negotiated.peer_mss, now
        )
        options: TcpOptions
        if negotiated.timestamps and syn.options.timestamp is not None:
            tsval = (int(now * 1000) + timestamp_offset(layer.secret, dst_ip, src_ip)) & SEQ_MASK
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
        maxseg = self.options.maxseg
        if maxseg and options.mss and maxseg < options.mss:
            options = replace(options, mss=maxseg)  # TCP_MAXSEG lowers what we announce (tcp_mss_clamp)
        window = min(self.config.rcvbuf, 0xFFFF)
        ack = seq_add(syn.seq, 1)
        reply = TcpSegment(syn.dst_port, syn.src_port, cookie, ack, TcpFlags.SYN | TcpFlags.ACK, window,
                           options)
        layer.counter["SyncookiesSent"] += 1
        layer.send_raw(dst_ip, src_ip, reply)

    def cookie_ack(self, layer: TcpLayer, src_ip: str, dst_ip: str, seg: TcpSegment, now: float) -> bool:
        """An ACK for no connection: if it returns a valid cookie, the handshake completes here.  Returns
        False when it is not a valid cookie (the caller then resets it)."""
        if int(seg.flags) & (SYN | RST):
            return False
        cookie = seq_add(seg.ack, -1)
        client_isn = seq_add(seg.seq, -1)
        mss = syncookies.decode_cookie(
            layer.secret, dst_ip, seg.dst_port, src_ip, seg.src_port, cookie, client_isn, now
        )
        counter = layer.counter
        if mss is None:
            counter["SyncookiesFailed"] += 1
            return False
        counter["SyncookiesRecv"] += 1
        if self.accept_queue_full():
            counter["ListenOverflows"] += 1
            counter["ListenDrops"] += 1
            return True
        found = layer.route(src_ip, now)
        if found is None:
            return True
        wscale: int | None = None
        sack = False
        ts = seg.options.timestamp
        if ts is not None and self.config.timestamps:
            decoded = syncookies.decode_cookie_timestamp(ts[1])
            wscale, sack = decoded.wscale, decoded.sack_permitted
        peer_options = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack, timestamp=ts)
        connection = layer.new_connection(dst_ip, seg.dst_port, src_ip, seg.src_port, found[1], now,
                                          self.options.copy(), iss=cookie)
        connection.open_from_cookie(seg, peer_options, now)
        self.accept_queue.append(connection)  # the handshake is done: no SYN queue entry
        connection.on_segment(seg, now)  # the ACK may carry data
        layer.touch(connection)
        return True
