"""The one error every codec in `stack.wire` raises for bytes it cannot accept.

Callers catch exactly this type: a parser never leaks IndexError or struct.error, so a bad
packet can be counted and dropped without hiding real bugs behind a broad `except`.
"""

from __future__ import annotations


class MalformedPacket(ValueError):
    """A packet that does not parse; the message names the layer and the problem.

    Example messages: ``"tcp: data offset 3 < 5"``,
    ``"ipv4: total length 20000 > 9000 bytes received"``.
    """
