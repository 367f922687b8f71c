"""The stack's API for programs: blocking BSD-style sockets (`socket`) and asyncio streams (`streams`)."""
