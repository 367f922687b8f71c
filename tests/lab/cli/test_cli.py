"""The CLI's contract without building anything: exit codes, one-line errors, --json output."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from tests.lab.cli.messages import one_line


def test_missing_topology_file_is_exit_2_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    expected = f"lab: {tmp_path / 'nope.yaml'}: expected a readable topology file"
    assert one_line(result.stderr).startswith(expected)


def test_bad_topology_names_file_line_and_field(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  h1: {kind: kernel, colour: red}\nlinks: []\n")
    result = runner.invoke(app, ["up", str(bad)])
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert line.startswith(f"lab: {bad}:3:") and "colour" in line
    assert result.stdout == ""


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["up", "--bogus"]).exit_code == 2
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2
    assert runner.invoke(app, ["graph", "pair", "--format", "jpeg"]).exit_code == 2
    assert runner.invoke(app, ["bench", "up", "--sizes", "ten"]).exit_code == 2


def test_unknown_lab_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["exec", "nolab", "h1", "--", "true"])
    assert result.exit_code == 2
    assert one_line(result.stderr) == "lab: lab nolab is not up"
    result = runner.invoke(app, ["status", "nolab"])
    assert result.exit_code == 2 and "is not up" in one_line(result.stderr)
    result = runner.invoke(app, ["up", "pair", "--name", "Bad Name"])
    assert result.exit_code == 2


def test_status_of_no_labs_is_empty_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_list_json_shows_shipped_topologies(runner: CliRunner) -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    names = {t["name"]: t for t in data["topologies"]}
    assert {"pair", "router"} <= set(names)
    assert names["pair"]["nodes"] == 2 and names["pair"]["error"] is None
    assert data["labs"] == []


@pytest.mark.parametrize("fmt, first", [("mermaid", "graph LR"), ("dot", "graph")])
def test_graph_renders_the_default_topology(runner: CliRunner, fmt: str, first: str) -> None:
    result = runner.invoke(app, ["graph", "--format", fmt])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(first)
    assert "h1" in result.stdout and "s1" in result.stdout


def test_doctor_json_lists_each_check_with_a_status(runner: CliRunner) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    names = {c["name"]: c for c in report["checks"]}
    assert {"privileges", "/dev/net/tun", "pyroute2", "tracefs"} <= set(names)
    assert all(c["status"] in ("ok", "missing", "warning") for c in report["checks"])
    required_missing = [c for c in report["checks"] if c["required"] and not c["ok"]]
    assert result.exit_code == (2 if required_missing else 0)
    assert report["ok"] is (not required_missing)


def test_up_leaves_no_signal_handler_behind(runner: CliRunner, tmp_path: Path) -> None:
    """`up` turns SIGTERM into a rollback only while it runs (tests and forked helpers share it)."""
    before = signal.getsignal(signal.SIGTERM)
    runner.invoke(app, ["up", str(tmp_path / "nope.yaml")])
    assert signal.getsignal(signal.SIGTERM) is before


def test_lab_run_lists_an_experiments_options_without_a_lab() -> None:
    result = CliRunner().invoke(app, ["run", "timeout", "--options", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["syn_retries"] == {
        "default": 3, "help": "SYN retransmissions before giving up (both sides); 3 takes ~15 s"}
    unknown = CliRunner().invoke(app, ["run", "timeout", "--option", "retries=2"])
    assert unknown.exit_code == 2


def test_down_without_a_name_takes_down_the_default_topologys_lab_never_another(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a shared machine "the only lab that is up" may be someone else's: `lab down` alone means the
    lab `lab up` alone brings up (the default topology's, pair)."""
    from lab.build import builder
    from lab.build.state import LabState

    LabState.for_lab("someones", tmp_path / "state").create()  # the only lab with state
    asked: list[str] = []

    def down(name: str, **_: object) -> builder.DownResult:
        asked.append(name)
        return builder.DownResult(name, (), (), (), 0.0, False)

    monkeypatch.setattr(builder, "down", down)
    result = runner.invoke(app, ["down"])
    assert asked == ["pair"]
    assert result.exit_code == 0 and one_line(result.stdout) == "lab pair is not up; nothing to do"


def test_down_of_an_empty_name_is_bad_input_not_the_default_lab(runner: CliRunner) -> None:
    """`lab down "$LAB"` with LAB unset must not take down pair, which may be someone else's."""
    result = runner.invoke(app, ["down", ""])
    assert result.exit_code == 2 and "lab name ''" in result.output


def test_down_of_a_lab_that_is_not_up_is_exit_0_like_a_repeated_up(runner: CliRunner) -> None:
    import uuid

    name = f"ra{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["down", name])
    assert result.exit_code == 0, result.stderr
    assert one_line(result.stdout) == f"lab {name} is not up; nothing to do"
    result = runner.invoke(app, ["down", name, "--json"])
    assert result.exit_code == 0
    [answer] = json.loads(result.stdout)
    assert answer["lab"] == name and answer["was_up"] is False and answer["removed"] == []


def test_tables_print_a_mac_address_as_itself() -> None:
    """rich would draw ":cd:" in 7e:cd:44:... as an emoji; the lab's consoles print values as they are."""
    from rich.table import Table

    from lab.cli.output import err, out

    for console in (out, err):
        table = Table("mac")
        table.add_row("7e:cd:44:5e:f2:77")
        with console.capture() as captured:
            console.print(table)
        assert "7e:cd:44:5e:f2:77" in captured.get()
