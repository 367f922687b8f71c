"""SYN cookies as Linux makes them (net/ipv4/syncookies.c), for when the SYN queue overflows.

Instead of keeping a SYN_RECV entry, the listener encodes what it must remember into the ISN of its SYN-ACK
(the cookie) and rebuilds the connection when the client's ACK comes back with ack = cookie + 1:

    cookie = H1(4-tuple) + client_isn + (count << 24) + check
    check  = (H2(4-tuple, count, mss_index) mod 2**22) << 2 | mss_index

`count` is a clock ticking every 64 s (its low 8 bits fill the top of the cookie), so a cookie expires after
two ticks; `mss_index` picks one of four MSS values (Linux's table); H1 and H2 are keyed hashes. Linux adds
the index to H2, so a cookie with its low bits changed still decodes, to a neighbouring MSS; here H2 covers
the index, so any altered bit, wrong client ISN or wrong 4-tuple fails except with probability 2 / 2**22.

What does not fit in 32 bits (the client's window scale, SACK-permitted, ECN) rides in the low 6 bits of
our timestamp value when the client sent timestamps, and comes back in its TSecr.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.compat import SLOTS
from stack.tcp.isn import keyed_hash
from stack.tcp.seq import SEQ_MASK, seq_gt

COOKIE_PERIOD = 64.0  # seconds per counter step
MAX_COOKIE_AGE = 2  # counter steps: a cookie is accepted in its own period and the next (Linux)
COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
MSS_INDEX_BITS = 2
MSS_TABLE = (536, 1300, 1440, 1460)  # Linux's msstab for IPv4

TS_OPTION_BITS = 6
TS_OPTION_MASK = (1 << TS_OPTION_BITS) - 1
TS_WSCALE_MASK = 0x0F  # the value 0xF means "no window scaling"
TS_SACK = 1 << 4
TS_ECN = 1 << 5
MAX_WSCALE = 14  # RFC 7323 2.3


def cookie_mss(mss: int) -> int:
    """The MSS a cookie can carry for a client that offered `mss`: the largest table value not above it."""
    return MSS_TABLE[_mss_index(mss)]


def _mss_index(mss: int) -> int:
    for index in range(len(MSS_TABLE) - 1, 0, -1):
        if mss >= MSS_TABLE[index]:
            return index
    return 0


def _counter(now: float) -> int:
    return int(now // COOKIE_PERIOD)


def _check_field(secret: bytes, four_tuple: tuple[str, int, str, int], count: int, mss_index: int) -> int:
    """The low 24 bits of a cookie: 22 hash bits covering the MSS index, then the index."""
    digest = keyed_hash(secret, b"cookie-2", *four_tuple, count, mss_index)
    return ((digest << MSS_INDEX_BITS) | mss_index) & COOKIE_MASK


def encode_cookie(
    secret: bytes,
    local_ip: str,
    local_port: int,
    remote_ip: str,
    remote_port: int,
    client_isn: int,
    mss: int,
    now: float,
) -> int:
    """The ISN for a SYN-ACK answering a SYN with sequence number `client_isn` offering `mss`.

    The connection must then use `cookie_mss(mss)` as its send MSS, the value the cookie carries.
    """
    count = _counter(now)
    four_tuple = (local_ip, local_port, remote_ip, remote_port)
    h1 = keyed_hash(secret, b"cookie-1", *four_tuple)
    check = _check_field(secret, four_tuple, count, _mss_index(mss))
    return (h1 + client_isn + (count << COOKIE_BITS) + check) & SEQ_MASK


def decode_cookie(
    secret: bytes,
    local_ip: str,
    local_port: int,
    remote_ip: str,
    remote_port: int,
    cookie: int,
    client_isn: int,
    now: float,
) -> int | None:
    """Check a returning cookie: the MSS it carries, or None if it is forged, altered or too old.

    From the client's ACK: cookie = SEG.ACK - 1 and client_isn = SEG.SEQ - 1.
    """
    count = _counter(now)
    four_tuple = (local_ip, local_port, remote_ip, remote_port)
    h1 = keyed_hash(secret, b"cookie-1", *four_tuple)
    value = (cookie - h1 - client_isn) & SEQ_MASK
    age = (count - (value >> COOKIE_BITS)) & (SEQ_MASK >> COOKIE_BITS)
    if age >= MAX_COOKIE_AGE:
        return None
    check = value & COOKIE_MASK
    index = check & ((1 << MSS_INDEX_BITS) - 1)
    if check != _check_field(secret, four_tuple, count - age, index):
        return None
    return MSS_TABLE[index]


@dataclass(frozen=True, **SLOTS)
class CookieOptions:
    """The client's SYN options a cookie connection must remember, recovered from TSecr."""

    wscale: int | None  # the client's window scale shift, None when it did not offer window scaling
    sack_permitted: bool
    ecn: bool


def encode_cookie_timestamp(ts_now: int, wscale: int | None, sack_permitted: bool, ecn: bool) -> int:
    """Our TSval for a cookie SYN-ACK: ts_now with its low 6 bits replaced by the client's options.

    Like Linux, the value is moved one 64-tick step back if that replacement would put it ahead of ts_now,
    so timestamps never run ahead of the clock.
    """
    if wscale is not None and not 0 <= wscale <= MAX_WSCALE:
        raise ValueError(f"window scale must be 0..{MAX_WSCALE}, got {wscale}")
    options = TS_WSCALE_MASK if wscale is None else wscale
    if sack_permitted:
        options |= TS_SACK
    if ecn:
        options |= TS_ECN
    ts_now &= SEQ_MASK
    tsval = (ts_now & ~TS_OPTION_MASK & SEQ_MASK) | options
    if seq_gt(tsval, ts_now):
        tsval = (tsval - (1 << TS_OPTION_BITS)) & SEQ_MASK
    return tsval


def decode_cookie_timestamp(tsecr: int) -> CookieOptions:
    """The options hidden in the TSecr of a cookie ACK (the low 6 bits of the TSval we sent).

    Whether the listener still allows SACK / window scaling / ECN is the caller's check, as in Linux.
    """
    options = tsecr & TS_OPTION_MASK
    wscale_bits = options & TS_WSCALE_MASK
    wscale = None if wscale_bits == TS_WSCALE_MASK else wscale_bits
    return CookieOptions(wscale=wscale, sack_permitted=bool(options & TS_SACK), ecn=bool(options & TS_ECN))
