"""Socket options: one object per socket, read by the connection it drives.

A socket and its connection share one `SocketOptions` (as Linux's `struct sock` holds both the socket's
and TCP's options): `setsockopt` changes it and the connection sees the change at its next event, with no
copy to keep in step.  A passive connection starts with a copy of its listener's options (Linux's
sk_clone), which the socket `accept()` returns then shares.  `parse_setsockopt` turns the (level, option,
value) of a `setsockopt` call into a field and a checked value, with Linux's errno for what it refuses;
`read_getsockopt` answers `getsockopt` the way Linux does (buffer sizes read back doubled).
"""

from __future__ import annotations

import errno
import socket as _socket
import struct
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.tcp.config import CONGESTION_CHOICES, TcpConfig
from stack.tcp.errors import socket_error

TCP_USER_TIMEOUT = getattr(_socket, "TCP_USER_TIMEOUT", 18)
TCP_CONGESTION = getattr(_socket, "TCP_CONGESTION", 13)
MIN_BUFFER = 2304  # Linux's SOCK_MIN_RCVBUF / 2 ... the smallest buffer setsockopt accepts (doubled: 4608)
MSS_RANGE = (88, 65535)  # what TCP_MAXSEG accepts
LINGER_OFF = (0, 0)


@dataclass(**SLOTS)
class SocketOptions:
    """What `setsockopt` can change; the defaults come from the host's `TcpConfig`."""

    reuseaddr: bool
    keepalive: bool
    nodelay: bool
    rcvbuf: int
    sndbuf: int
    linger: tuple[int, int]  # (onoff, seconds)
    keepidle: float
    keepintvl: float
    keepcnt: int
    user_timeout: float | None  # seconds (TCP_USER_TIMEOUT is set in ms; None: retries2 decides)
    maxseg: int | None  # TCP_MAXSEG clamp on the MSS we send and announce
    congestion: str

    @classmethod
    def defaults(cls, config: TcpConfig) -> SocketOptions:
        return cls(reuseaddr=False, keepalive=False, nodelay=not config.nagle, rcvbuf=config.rcvbuf,
                   sndbuf=config.sndbuf, linger=LINGER_OFF, keepidle=config.keepalive_time,
                   keepintvl=config.keepalive_intvl, keepcnt=config.keepalive_probes,
                   user_timeout=config.user_timeout, maxseg=None, congestion=config.congestion)

    def copy(self) -> SocketOptions:
        """A listener's options for one new connection.  Every field, by position: dataclasses.replace
        costs ten times as much, and a field added to the class makes this call fail until it is added."""
        return SocketOptions(self.reuseaddr, self.keepalive, self.nodelay, self.rcvbuf, self.sndbuf,
                             self.linger, self.keepidle, self.keepintvl, self.keepcnt, self.user_timeout,
                             self.maxseg, self.congestion)

    @property
    def linger_abort(self) -> bool:
        """SO_LINGER on with a zero timeout: close() resets the connection instead of a FIN."""
        return self.linger[0] != 0 and self.linger[1] == 0


def parse_setsockopt(level: int, option: int, value: object) -> tuple[str, object]:
    """(field of `SocketOptions`, new value) for one setsockopt call; ENOPROTOOPT / EINVAL / ENOENT else."""
    if level == _socket.SOL_SOCKET:
        if option == _socket.SO_REUSEADDR:
            return "reuseaddr", bool(_as_int(value))
        if option == _socket.SO_KEEPALIVE:
            return "keepalive", bool(_as_int(value))
        if option == _socket.SO_RCVBUF:
            return "rcvbuf", max(MIN_BUFFER, _as_int(value))
        if option == _socket.SO_SNDBUF:
            return "sndbuf", max(MIN_BUFFER, _as_int(value))
        if option == _socket.SO_LINGER:
            return "linger", _as_linger(value)
        raise socket_error(errno.ENOPROTOOPT, f"SOL_SOCKET option {option} is not supported")
    if level == _socket.IPPROTO_TCP:
        if option == _socket.TCP_NODELAY:
            return "nodelay", bool(_as_int(value))
        if option == _socket.TCP_KEEPIDLE:
            return "keepidle", float(_positive(value, option))
        if option == _socket.TCP_KEEPINTVL:
            return "keepintvl", float(_positive(value, option))
        if option == _socket.TCP_KEEPCNT:
            return "keepcnt", _positive(value, option)
        if option == _socket.TCP_MAXSEG:
            mss = _as_int(value)
            if not MSS_RANGE[0] <= mss <= MSS_RANGE[1]:
                raise socket_error(errno.EINVAL, f"TCP_MAXSEG {mss} outside {MSS_RANGE[0]}-{MSS_RANGE[1]}")
            return "maxseg", mss
        if option == TCP_USER_TIMEOUT:
            ms = _as_int(value)
            if ms < 0:
                raise socket_error(errno.EINVAL, f"TCP_USER_TIMEOUT {ms} is negative")
            return "user_timeout", ms / 1000.0 if ms else None
        if option == TCP_CONGESTION:
            name = (value.decode() if isinstance(value, bytes) else str(value)).rstrip("\0")
            if name not in CONGESTION_CHOICES:
                choices = ", ".join(CONGESTION_CHOICES)
                raise socket_error(errno.ENOENT, f"congestion control {name!r}: choose one of {choices}")
            return "congestion", name
        raise socket_error(errno.ENOPROTOOPT, f"IPPROTO_TCP option {option} is not supported")
    raise socket_error(errno.ENOPROTOOPT, f"option level {level} is not supported")


def read_getsockopt(options: SocketOptions, level: int, option: int) -> object:
    """The value getsockopt reports for an option kept in `options` (KeyError: not one of them)."""
    if level == _socket.SOL_SOCKET:
        answers: dict[int, object] = {
            _socket.SO_REUSEADDR: int(options.reuseaddr), _socket.SO_KEEPALIVE: int(options.keepalive),
            # Linux reports twice the value set: it counts its bookkeeping overhead in the buffer.
            _socket.SO_RCVBUF: 2 * options.rcvbuf, _socket.SO_SNDBUF: 2 * options.sndbuf,
            _socket.SO_LINGER: options.linger, _socket.SO_TYPE: _socket.SOCK_STREAM,
        }
    elif level == _socket.IPPROTO_TCP:
        answers = {
            _socket.TCP_NODELAY: int(options.nodelay), _socket.TCP_KEEPIDLE: int(options.keepidle),
            _socket.TCP_KEEPINTVL: int(options.keepintvl), _socket.TCP_KEEPCNT: options.keepcnt,
            TCP_USER_TIMEOUT: int((options.user_timeout or 0) * 1000), TCP_CONGESTION: options.congestion,
        }
    else:
        answers = {}
    return answers[option]


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes) and len(value) == 4:
        return struct.unpack("i", value)[0]
    raise socket_error(errno.EINVAL, f"option value must be an int, got {value!r}")


def _positive(value: object, option: int) -> int:
    number = _as_int(value)
    if number < 1:
        raise socket_error(errno.EINVAL, f"option {option} needs a positive value, got {number}")
    return number


def _as_linger(value: object) -> tuple[int, int]:
    """SO_LINGER as (onoff, seconds) or the packed struct linger Python's socket module uses."""
    if isinstance(value, bytes) and len(value) == 8:
        onoff, seconds = struct.unpack("ii", value)
    elif isinstance(value, tuple) and len(value) == 2:
        onoff, seconds = int(value[0]), int(value[1])
    else:
        raise socket_error(errno.EINVAL, f"SO_LINGER needs (onoff, seconds), got {value!r}")
    return (1 if onoff else 0, max(0, seconds))
