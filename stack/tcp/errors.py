"""The stack's one errno mapping: socket calls fail with the OSError subclass Python gives that errno.

`OSError(code, message)` already returns BlockingIOError for EAGAIN/EINPROGRESS/EALREADY, BrokenPipeError
for EPIPE, ConnectionResetError, ConnectionRefusedError, TimeoutError for ETIMEDOUT, and so on, exactly as a
kernel socket's errors arrive in Python; the message is the C library's (`os.strerror`) unless a call has a
more useful one.  The non-blocking TCP socket raises these and the blocking API passes them on unchanged.
"""

from __future__ import annotations

import os


def socket_error(code: int, detail: str = "") -> OSError:
    """The OSError (of the subclass Python picks for `code`) a socket call raises."""
    return OSError(code, detail or os.strerror(code))
