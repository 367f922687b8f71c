"""`lab bench` (the stack against the kernel), `lab bench up` (lab up/down times of node chains) and
`lab bench tools` (iperf3, wrk, ab and curl against the stack, next to the kernel with iperf3 and nginx)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lab.build.interpreters import PYTHONS
from lab.build.state import check_lab_name
from lab.cli.output import JsonFlag, errors_to_exit_codes, fail, out, print_json
from lab.cli.progress import progress_line
from lab.tools.bench import BENCH_TARGETS, bench_chains, run_bench
from lab.tools.bench_tools import run_bench_tools
from lab.tools.bench_workers import run_bench_workers

PythonOption = Annotated[str, typer.Option(
    "--python", help="The interpreter of the stack nodes it brings up: cpython or pypy (`make pypy`).")]

bench_app = typer.Typer(add_completion=False,
                        help="The stack against the kernel; `lab bench up`: lab up/down times.")


def bench_stack(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each measurement.")] = 3.0,
    name: Annotated[str | None, typer.Option("--name", help="Prefix of the labs it brings up.")] = None,
    python: PythonOption = "cpython",
) -> None:
    """Goodput and accept rate of the stack next to the kernel (`lab bench up`: lab up/down times)."""
    if ctx.invoked_subcommand is not None:
        return
    if not 0.2 <= seconds <= 60:
        fail(f"--seconds: expected 0.2 to 60, got {seconds:g}")
    if python not in PYTHONS:
        fail(f"--python: expected {' or '.join(PYTHONS)}, got {python!r}")
    with errors_to_exit_codes():
        if name is not None:
            check_lab_name(name)
            check_lab_name(f"{name}ok")  # the longest name it derives
        with progress_line("bench: starting", as_json=as_json) as report:
            figures = run_bench(seconds=seconds, name=name, python=python,
                                progress=lambda step: report(f"bench: {step}"))
    if as_json:
        print_json(figures)
        return
    table = Table("measurement", "value", "target", title="stack vs kernel (pair topology)")
    for key, value in figures.items():
        if isinstance(value, dict):
            continue
        target = BENCH_TARGETS.get(key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value),
                      "" if target is None else f"{target[0]} {target[1]:g}")
    out.print(table)
    congestion = figures["congestion_control"]
    out.print(f"congestion control: the stack's {congestion['stack']}, kernel senders set to "
              f"{congestion['kernel_senders']} (machine default {congestion['machine_default']})")


def bench_up(
    sizes: Annotated[str, typer.Option("--sizes", help="Comma-separated chain lengths.")] = "10,50,100",
    as_json: JsonFlag = False,
) -> None:
    """Time `up` and `down` of chains of kernel nodes."""
    try:
        counts = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        fail(f"--sizes: expected comma-separated integers like 10,50,100, got {sizes!r}")
    with errors_to_exit_codes(), progress_line("bench up: starting", as_json=as_json) as report:
        rows = bench_chains(counts, progress=lambda step: report(f"bench up: {step}"))
    if as_json:
        print_json(rows)
        return
    table = Table("nodes", "links", "up s", "down s", title="chain up/down")
    for row in rows:
        table.add_row(str(row["nodes"]), str(row["links"]), f"{row['up_seconds']:.3f}",
                      f"{row['down_seconds']:.3f}")
    out.print(table)


def bench_tools(
    as_json: JsonFlag = False,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each measurement (whole seconds "
                                                             "for iperf3, wrk and ab).")] = 3.0,
    name: Annotated[str | None, typer.Option("--name", help="Prefix of the labs it brings up.")] = None,
    python: PythonOption = "cpython",
) -> None:
    """iperf3 (each way), wrk keep-alive, ab with 50 clients and a curl of 100 MB against the stack, each
    next to the kernel's figure from the same run (iperf3 -s, nginx) as a ratio, with the CPU-bound side.

    Example: lab bench tools --seconds 2 --json
    """
    if not 1 <= seconds <= 60:
        fail(f"--seconds: expected 1 to 60, got {seconds:g}")
    if python not in PYTHONS:
        fail(f"--python: expected {' or '.join(PYTHONS)}, got {python!r}")
    with errors_to_exit_codes():
        if name is not None:
            check_lab_name(name)
            check_lab_name(f"{name}tk")  # the longest name it derives
        with progress_line("bench tools: starting", as_json=as_json) as report:
            figures = run_bench_tools(seconds=seconds, name=name, python=python,
                                      progress=lambda step: report(f"bench tools: {step}"))
    if as_json:
        print_json(figures)
        return
    table = Table("measurement", "unit", "stack", "kernel", "ratio", "bound by (stack run)",
                  "bound by (kernel run)", "CPU shares (stack run; kernel run)",
                  title="the stack vs the kernel, with the tools everyone knows")
    for key, row in figures["measurements"].items():
        shares = "; ".join(" ".join(f"{side} {share:.2f}" for side, share in run.items())
                           for run in (row["stack_cpu_share"], row["kernel_cpu_share"]))
        table.add_row(key, row["unit"], f"{row['stack']:.3f}", f"{row['kernel']:.3f}", f"{row['ratio']:.3f}",
                      row["stack_bound_by"], row["kernel_bound_by"], shares)
    out.print(table)
    for key, row in figures["measurements"].items():
        out.print(f"{key}: {row['what']}", markup=False)
    out.print(f"CPU shares are CPU seconds per second of wall time (1.0: one core busy), on "
              f"{figures['cores']} cores shared by both ends of each run; the stack ran under "
              f"{figures['stack_python']}", markup=False)


def bench_workers(
    as_json: JsonFlag = False,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each measurement.")] = 3.0,
    name: Annotated[str | None, typer.Option("--name", help="Prefix of the labs it brings up.")] = None,
    python: PythonOption = "cpython",
) -> None:
    """A pystack node with 1 worker and with 2: accept rate (C clients) and 4 parallel transfers into it,
    each next to the kernel's from the same run.

    Example: lab bench workers --seconds 2 --json
    """
    if not 0.5 <= seconds <= 60:
        fail(f"--seconds: expected 0.5 to 60, got {seconds:g}")
    if python not in PYTHONS:
        fail(f"--python: expected {' or '.join(PYTHONS)}, got {python!r}")
    with errors_to_exit_codes():
        if name is not None:
            check_lab_name(name)
            check_lab_name(f"{name}w2k")  # the longest name it derives
        with progress_line("bench workers: starting", as_json=as_json) as report:
            figures = run_bench_workers(seconds=seconds, name=name, python=python,
                                        progress=lambda step: report(f"bench workers: {step}"))
    if as_json:
        print_json(figures)
        return
    table = Table("measurement", "value", title="1 worker vs 2 workers (pair topology), kernel alongside")
    for key, value in figures.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)


bench_app.callback(invoke_without_command=True, epilog="Example: lab bench --seconds 2 --json")(bench_stack)
bench_app.command("up", epilog="Example: lab bench up --sizes 10,20")(bench_up)
bench_app.command("tools", epilog="Example: lab bench tools --seconds 2 --json")(bench_tools)
bench_app.command("workers", epilog="Example: lab bench workers --seconds 2 --json")(bench_workers)
