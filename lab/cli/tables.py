"""Tables the commands print: a plan's interfaces, an experiment's checks and metrics."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lab.cli.output import out
from lab.experiments.results import ExperimentResult
from lab.topology.plan import LabPlan


def plan_rows(plan: LabPlan) -> list[dict]:
    return [{"node": n.name, "kind": n.kind, "namespace": n.namespace, "interface": i.name,
             "address": str(i.address), "mac": i.mac}
            for n in plan.nodes for i in n.interfaces]


def plan_table(plan: LabPlan) -> Table:
    table = Table("node", "kind", "namespace", "interface", "address", "mac", title=f"lab {plan.name}")
    for row in plan_rows(plan):
        table.add_row(*(str(v) for v in row.values()))
    return table


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def milliseconds(seconds: Any) -> str:
    return f"{seconds * 1000:.2f}" if isinstance(seconds, int | float) else ""


def result_table(result: ExperimentResult) -> Table:
    table = Table("check", "result", "detail", title=f"{result.experiment}: "
                  + ("passed" if result.passed else "FAILED"), title_justify="left")
    for check in result.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail)
    return table


METRICS_TABLE_DEPTH = 2  # deeper values (snapshots, TCP_INFO dumps) are for --json


def metrics_table(result: ExperimentResult) -> Table:
    table = Table("metric", "value", title=f"{result.experiment} metrics", title_justify="left")
    hidden = 0
    for key, value in flatten(result.metrics):
        if key.count(".") >= METRICS_TABLE_DEPTH:
            hidden += 1
            continue
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    if hidden:
        table.caption = f"{hidden} more values (connection snapshots, TCP_INFO) with --json"
    return table


def print_result(result: ExperimentResult) -> None:
    out.print(result_table(result))
    if result.metrics:
        out.print(metrics_table(result))
