"""`lab capture LAB NODE [IFACE]`: a pcap of a node's interface, or the stack's own (`--stack`).

A thin layer over `lab.tools.capture`: it checks the bounds, picks the file name, records, and says
what was written. The file is complete whatever ends the capture (the duration, the size bound,
Ctrl-C), so `tcpdump -r FILE` and Wireshark read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab.build.state import LabError
from lab.cli.output import JsonFlag, errors_to_exit_codes, out, print_json
from lab.experiments.base import ExperimentError
from lab.experiments.running import RunningLab
from lab.tools.capture import capture_interface, record, record_stack
from stack.ranges import CAPTURE_SECONDS, PCAP_BYTES


def capture_command(
    name: Annotated[str, typer.Argument(help="Lab name (a lab that is up).")],
    node: Annotated[str, typer.Argument(help="A node of the lab.")],
    interface: Annotated[str | None, typer.Argument(
        help="Interface (default: a kernel node's first, a pystack node's TAP, tap0).")] = None,
    write: Annotated[Path | None, typer.Option("-w", "--write", help="The pcap file (default: "
                                                                     "LAB-NODE-IFACE.pcap here).")] = None,
    duration: Annotated[float, typer.Option("--duration", help="Seconds to record (Ctrl-C ends it "
                                                               "sooner, the file complete).")] = 10.0,
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="Largest file, in bytes.")] = 100 << 20,
    bpf_filter: Annotated[str | None, typer.Option("--filter", help="A tcpdump filter, e.g. 'tcp port 80'.")]
    = None,
    stack: Annotated[bool, typer.Option("--stack", help="A pystack node's stack writes the pcap itself: "
                                                        "the frames it sends and receives.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Record a pcap of a running lab's node: tcpdump in its namespace, or (--stack) the stack's own."""
    with errors_to_exit_codes():
        if duration not in CAPTURE_SECONDS:
            raise LabError(f"capture --duration: expected {CAPTURE_SECONDS.describe('s')}, got {duration:g}")
        if max_bytes not in PCAP_BYTES:
            raise LabError(f"capture --max-bytes: expected {PCAP_BYTES.describe()}, got {max_bytes}")
        try:
            lab = RunningLab.attach(name)
            plan = lab.node(node)
            if stack:
                if interface is not None or bpf_filter is not None:
                    raise LabError("capture --stack records the stack's own frames: give no interface or "
                                   "--filter with it")
                if plan.kind != "pystack" or not plan.process:
                    raise LabError(f"capture --stack: node {node} of lab {name} runs no stack process "
                                   "(capture its interfaces without --stack)")
                chosen = "stack"
            else:
                chosen = capture_interface(lab, node, interface)
        except ExperimentError as error:
            raise LabError(str(error)) from None
        path = (write or Path(f"{name}-{node}-{chosen}.pcap")).resolve()
        if path.is_dir() or not path.parent.is_dir():
            raise LabError(f"capture -w {path}: expected a file in a folder that exists")
        if stack:
            answer = record_stack(lab, node, path, duration=duration, max_bytes=max_bytes)
            summary = {"path": str(path), "node": node, "interface": "stack",
                       "packets": answer.get("frames_in", 0) + answer.get("frames_out", 0),
                       "bytes": answer.get("bytes", 0), "stopped_by": answer["stopped_by"],
                       "frames_in": answer.get("frames_in", 0), "frames_out": answer.get("frames_out", 0),
                       "dropped": answer.get("dropped", 0)}
        else:
            try:
                summary = record(lab, node, path, chosen, duration=duration, max_bytes=max_bytes,
                                 bpf_filter=bpf_filter).to_json()
            except OSError as error:
                raise LabError(f"capture {name}/{node}:{chosen}: {error}") from None
    if as_json:
        print_json(summary)
    else:
        out.print(f"{summary['path']}: {summary['packets']} packets, {summary['bytes']} bytes from "
                  f"{name}/{node} {summary['interface']} (stopped by {summary['stopped_by']}); "
                  f"read it with `tcpdump -r {summary['path']}`", markup=False, soft_wrap=True)
