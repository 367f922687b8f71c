"""Scripts played against the stack in-process: the starter scripts pass, the must-fail ones fail where
they should, shell lines are skipped with a note, relaxations show in the result, the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.script.run import load, play
from lab.script.syntax import parse_text

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PASSING = sorted(SCRIPTS.glob("*.pkt"))
MUST_FAIL = {"wrong_flag.pkt": 6, "wrong_ack.pkt": 6, "wrong_seq.pkt": 10, "missing_segment.pkt": 9,
             "wrong_errno.pkt": 3}


@pytest.mark.parametrize("path", PASSING, ids=lambda path: path.name)
def test_starter_scripts_pass_on_the_stack(path: Path) -> None:
    [result] = play(load(path), ("stack",))
    assert result.passed, result.difference


@pytest.mark.parametrize(("name", "line"), sorted(MUST_FAIL.items()))
def test_must_fail_scripts_fail_on_the_stack_at_their_line(name: str, line: int) -> None:
    [result] = play(load(SCRIPTS / "must-fail" / name), ("stack",))
    assert not result.passed and result.line == line, result.difference


def test_the_stack_runs_on_a_virtual_clock() -> None:
    # A SYN-ACK retransmission after the 1 s initial RTO, in no real time at all.
    script = parse_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n"
                        "+0 listen(3, 1) = 0\n+0 < S 0:0(0) win 65535 <mss 1460>\n"
                        "+0 > S. 0:0(0) ack 1 <mss 1460>\n+1 > S. 0:0(0) ack 1 <mss 1460>\n", "rto.pkt")
    [result] = play(script, ("stack",))
    assert result.passed, result.difference
    assert result.seconds == pytest.approx(1.0)


def test_shell_lines_are_skipped_with_a_note() -> None:
    script = parse_text("0 `sysctl -q net.ipv4.tcp_timestamps=0`\n"
                        "+0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n", "shell.pkt")
    [result] = play(script, ("stack",))
    assert result.passed and result.notes == ["line 1: shell line skipped on stack"]


def test_segmentation_joins_pieces_of_one_scripted_segment() -> None:
    base = (SCRIPTS / "handshake_passive.pkt").read_text().replace("<mss 1460,nop,nop,sackOK>\n+0    > S.",
                                                                    "<mss 500,nop,nop,sackOK>\n+0    > S.")
    base = base.replace("> S. 0:0(0) ack 1 <mss 1460,nop,nop,sackOK>", "> S. 0:0(0) ack 1 <...>")
    script = parse_text(base + "+0 write(4, ..., 1000) = 1000\n+0 > P. 1:1001(1000) ack 1\n", "pieces.pkt")
    [strict] = play(script, ("stack",))
    assert not strict.passed and "length)" in (strict.difference or "")
    [relaxed] = play(script, ("stack",), relax=frozenset({"segmentation"}))
    assert relaxed.passed, relaxed.difference
    assert "segmentation" in relaxed.relaxed


def test_cli_exit_codes_and_json_lines(tmp_path: Path) -> None:
    runner = CliRunner()
    passing = runner.invoke(app, ["script", str(SCRIPTS / "handshake_passive.pkt"), "--against", "stack",
                                  "--json"])
    assert passing.exit_code == 0, passing.output
    [line] = passing.output.strip().splitlines()
    assert json.loads(line)["passed"] is True
    failing = runner.invoke(app, ["script", str(SCRIPTS / "must-fail" / "wrong_flag.pkt"), "--against",
                                  "stack"])
    assert failing.exit_code == 1 and "wrong_flag.pkt:6:" in failing.output
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 frob(3) = 0\n")
    unparsable = runner.invoke(app, ["script", str(bad), "--against", "stack"])
    assert unparsable.exit_code == 2 and f"{bad}:2:" in unparsable.output
    for args in (["--against", "bsd"], ["--relax", "nope"], ["--tolerance", "-1"]):
        assert runner.invoke(app, ["script", str(bad), *args]).exit_code == 2


def test_help_ends_with_an_example() -> None:
    result = CliRunner().invoke(app, ["script", "--help"])
    assert result.output.strip().splitlines()[-1].strip().startswith("Example: lab script ")
