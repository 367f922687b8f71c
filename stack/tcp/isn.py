"""Initial sequence numbers (RFC 6528) and the keyed hash shared by ISNs, ephemeral ports and SYN cookies.

ISN = M + F(local ip, local port, remote ip, remote port, secret), where M is a clock ticking every 4 µs
(RFC 9293 3.4.1) and F a keyed hash, so an off-path attacker cannot predict another connection's ISN while
successive incarnations of one 4-tuple still move forward with time. The clock and the secret are passed in.
"""

from __future__ import annotations

import hashlib
import socket

from stack.tcp.seq import SEQ_MASK

ISN_CLOCK_HZ = 250_000  # one tick every 4 microseconds (RFC 9293 3.4.1, RFC 6528 3)
_BLAKE2S_MAX_KEY = 32


def keyed_hash(secret: bytes, purpose: bytes, *fields: str | int, size: int = 4) -> int:
    """A `size`-byte keyed BLAKE2s hash of addresses (dotted strings) and integers, as an unsigned int.

    `purpose` (up to 8 bytes) separates the uses of one secret: ISN, port offset, cookie... so a value
    learned from one never helps guess another.
    """
    if not secret:
        raise ValueError("a keyed hash needs a non-empty secret")
    key = secret if len(secret) <= _BLAKE2S_MAX_KEY else hashlib.blake2s(secret).digest()
    h = hashlib.blake2s(key=key, person=purpose, digest_size=size)
    for value in fields:
        if isinstance(value, str):
            h.update(_packed(value))
        else:
            h.update(value.to_bytes(8, "big", signed=True))
    return int.from_bytes(h.digest(), "big")


def _packed(address: str) -> bytes:
    """The address's bytes; inet_pton, not `ipaddress`, as this runs several times per connection."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    except OSError:
        raise ValueError(f"{address!r} is not an IP address") from None


def initial_sequence_number(
    secret: bytes, local_ip: str, local_port: int, remote_ip: str, remote_port: int, now: float
) -> int:
    """RFC 6528 ISN for this 4-tuple at time `now` (seconds)."""
    clock = int(now * ISN_CLOCK_HZ)
    offset = keyed_hash(secret, b"tcp-isn", local_ip, local_port, remote_ip, remote_port)
    return (clock + offset) & SEQ_MASK


def timestamp_offset(secret: bytes, local_ip: str, remote_ip: str) -> int:
    """A per-host-pair offset for TCP timestamp values (RFC 7323 7.1; Linux's tsoffset), so TSval does not
    reveal the host's uptime and differs between peers."""
    return keyed_hash(secret, b"tcp-tsof", local_ip, remote_ip)
