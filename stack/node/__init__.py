"""The stack node process (`python -m stack.node --settings FILE`) and its parts.

`settings` parses the file `lab up` writes; `daemon` runs the Host on the node's TAP in one asyncio loop;
`runtime.StackNode` holds listeners, apps and the control requests' work; `control` serves the control
socket (protocol v1, client: `lab/build/control.py`).
"""
