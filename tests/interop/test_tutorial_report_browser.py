"""A tutorial's report renders in a real browser (headless Chromium) with its ladder diagrams drawn."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.interop.tutorial_runs import run_shipped

pytestmark = pytest.mark.root
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium; the Makefile lists it)")
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=90, check=False)


def test_the_report_renders_with_the_ladder(tmp_path: Path) -> None:
    result = run_shipped(4, tmp_path / "run", prefix="tc")
    report = result.artifacts["report"][0]
    dom = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-1000:]
    assert "Tutorial 4: accept returns a new socket" in dom.stdout
    svgs = [p for p in result.artifacts["ladder"] if p.suffix == ".svg"]
    assert dom.stdout.count('class="ladder"') == len(svgs) > 0
    assert "SYN,ACK seq=0 ack=1" in dom.stdout and "RST" in dom.stdout
    page_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not page_errors, page_errors
    shot = tmp_path / "report.png"
    drawn = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    assert drawn.returncode == 0 and shot.stat().st_size > 20_000, drawn.stderr[-1000:]
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
