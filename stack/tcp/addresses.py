"""Which IPv4 addresses a TCP connection may have at its far end (RFC 9293 3.9.1.1 and 3.9.2.3).

TCP is unicast: an OPEN to a broadcast or multicast address must fail (MUST-46) and a SYN from an address
that cannot name one host must be ignored (MUST-63), or the stack would answer a whole subnet.  The rules of
RFC 1122 3.2.1.3: 0.0.0.0, the limited broadcast 255.255.255.255, multicast 224/4 and the reserved 240/4
never name a host.  A subnet's directed broadcast depends on the interface's prefix, which only the host
knows: it passes that test in (`TcpLayer(is_broadcast_address=...)`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

FIRST_MULTICAST_OCTET = 224  # 224/4 multicast, then 240/4 reserved (255.255.255.255 among them)


def can_be_a_peer(ip: str, is_broadcast_address: Callable[[str], bool] | None = None) -> bool:
    """True when `ip` may be the remote end of a TCP connection (a unicast address)."""
    try:
        packed = socket.inet_aton(ip)
    except OSError:
        return False
    if packed == b"\x00\x00\x00\x00" or packed[0] >= FIRST_MULTICAST_OCTET:
        return False
    return not (is_broadcast_address is not None and is_broadcast_address(ip))
