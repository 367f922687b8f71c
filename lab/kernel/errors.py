"""What a failed kernel operation raises."""

from __future__ import annotations


class NetlinkOpError(Exception):
    """A kernel operation failed; the message names the object and the kernel's reason."""
