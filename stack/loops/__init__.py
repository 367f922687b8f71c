"""What makes time pass for sans-IO hosts: the virtual-clock `Runner`, the real-time `ThreadedDriver` and the
`AsyncioDriver`, all stepping one `FrameNetwork` of hosts and media (`network`)."""
