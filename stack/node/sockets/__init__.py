"""Unmodified programs on a pystack node: the node's socket service and the program's socket shim.

A program started by `lab exec LAB NODE -- python3 prog.py` finds `sitecustomize` (in `site/`, on the
PYTHONPATH `lab exec` sets) which replaces `socket.socket` for AF_INET stream sockets. Each such socket
forwards its calls (bind, listen, connect, options, names) to the node's socket service over one Unix
connection per process (`wire`), and moves its bytes over a Unix socket pair whose other end the service
pumps into the stack's TCP socket: the program's file descriptor is a real one, so select, selectors,
asyncio and makefile() work on it unchanged.

This package imports nothing from `stack` at its top: `shim` and `wire` run inside the program, with the
standard library only, and are loaded by path (`site/sitecustomize.py`).
"""

import os

# What `lab exec` puts first on PYTHONPATH.
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")
