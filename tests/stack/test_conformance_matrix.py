"""Keeps docs/conformance.md honest: the RFC 9293 conformance matrix must list every row of the requirement
table (with its level and feature), cite only tests that exist, name a test for every `met` row, say why for
every other row, cite every conformance test, and keep its summary counts right.

The requirement table is vendored in docs/ so this check never depends on anything outside the repository;
when the shared reference (../shared/reference/ next to the repository) exists, the copy must match it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MATRIX = REPO / "docs" / "conformance.md"
VENDORED = REPO / "docs" / "rfc9293-requirements.md"
SHARED = REPO.parent / "shared" / "reference" / "rfc9293-requirements.md"
CONFORMANCE_TESTS = "tests/stack/tcp/test_conformance_*.py"

STATUSES = ("met", "partly", "not met", "not applicable")
MANDATORY = frozenset({"MUST", "MUST NOT"})
LEVELS = frozenset({"MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY"})
REQ_ID = re.compile(r"^(MUST|SHLD|MAY|REC)-\d+$")
TEST_ID = re.compile(r"^tests/[\w/]+\.py::[\w:]+(\[[^\]]+\])?$")
#: The unlabelled rules the reference file calls out (RFC 5961 sections 3, 4, 5 and 7) and the SEGMENT
#: ARRIVES steps every implementation must get right; the matrix must keep a row for each.
REQUIRED_STEPS = frozenset({
    "CLOSED", "LISTEN-rst", "LISTEN-ack", "LISTEN-syn", "SYN-SENT-ack", "SYN-SENT-rst", "SYN-SENT-syn",
    "SEQ-acceptable", "RST-exact", "RST-challenge", "RST-outside", "SYN-challenge", "CHALLENGE-ratelimit",
    "ACK-range", "ACK-future", "ACK-window", "TEXT", "FIN", "FIN-time-wait", "TIMEOUT-user", "TIMEOUT-rto",
    "TIMEOUT-time-wait",
})

LABELLED_SECTION = "## Labelled requirements"
STEPS_SECTION = "## SEGMENT ARRIVES"
SUMMARY_SECTION = "## Summary"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One row of RFC 9293 Table 8 (an ID can have two rows: MUST-15 for IPv4 and IPv6, ...)."""

    req_id: str
    level: str
    feature: str


@dataclass(frozen=True, slots=True)
class MatrixRow:
    key: str  # ReqID, or the step name of an unlabelled rule
    level: str  # "" for unlabelled rules
    feature: str
    status: str
    tests: tuple[str, ...]
    notes: str
    line: int  # 1-based line in docs/conformance.md, for error messages


# ---------------------------------------------------------------------------- parsing


def table_rows(text: str, section: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every table body row between `section`'s heading and the next `## `."""
    rows: list[tuple[int, list[str]]] = []
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            inside = line.startswith(section)
            continue
        if not inside or not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in ("ReqID", "Step", "Status"):
            continue  # a header row
        rows.append((number, cells))
    return rows


def parse_reference(text: str) -> list[Requirement]:
    """The rows of the reference's "Full table (in RFC order)"."""
    start = text.index("## Full table")
    end = text.index("\n## ", start)
    requirements = []
    for line in text[start:end].splitlines():
        if not line.startswith("| ") or line.startswith("| ReqID"):
            continue
        req_id, level, feature, _defined_in = (cell.strip() for cell in line.strip().strip("|").split("|"))
        requirements.append(Requirement(req_id, level, feature))
    return requirements


def backticked(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


def parse_matrix_rows(text: str, section: str) -> list[MatrixRow]:
    rows = []
    for line, cells in table_rows(text, section):
        if len(cells) != 6:
            raise ValueError(f"docs/conformance.md:{line}: expected 6 cells, found {len(cells)}")
        if section == LABELLED_SECTION:
            key, level, feature, status, tests, notes = cells
        else:
            key, _section_number, feature, status, tests, notes = cells
            level = ""
        rows.append(MatrixRow(key, level, feature, status, backticked(tests), notes, line))
    return rows


def parse_summary(text: str) -> dict[str, int]:
    return {cells[0]: int(cells[1]) for _, cells in table_rows(text, SUMMARY_SECTION)}


# ---------------------------------------------------------------------------- checks (pure functions)


def row_problems(reference: list[Requirement], rows: list[MatrixRow]) -> list[str]:
    """Differences between the requirement table and the matrix's labelled rows, one message each."""
    problems = []
    wanted = Counter((r.req_id, r.feature) for r in reference)
    level_of = {(r.req_id, r.feature): r.level for r in reference}
    seen: Counter[tuple[str, str]] = Counter()
    for row in rows:
        key = (row.key, row.feature)
        where = f"docs/conformance.md:{row.line}: {row.key} {row.feature!r}"
        if not REQ_ID.match(row.key):
            problems.append(f"{where}: {row.key!r} is not a requirement ID")
        if key not in wanted:
            problems.append(f"{where}: no such row in the requirement table")
            continue
        seen[key] += 1
        if row.level != level_of[key]:
            problems.append(f"{where}: level {row.level!r}, the table says {level_of[key]!r}")
    for key, count in wanted.items():
        if seen[key] < count:
            level = level_of[key]
            problems.append(f"docs/conformance.md: {level} row {key[0]} {key[1]!r} is missing")
        elif seen[key] > count:
            problems.append(f"docs/conformance.md: {key[0]} {key[1]!r} is listed {seen[key]} times")
    return problems


def status_problems(rows: list[MatrixRow]) -> list[str]:
    problems = []
    for row in rows:
        where = f"docs/conformance.md:{row.line}: {row.key}"
        if row.status not in STATUSES:
            problems.append(f"{where}: status {row.status!r}, want one of {', '.join(STATUSES)}")
        negative = row.level in ("SHOULD NOT", "MUST NOT")  # "met" may mean: nothing here does it
        if row.status == "met" and not row.tests and not negative:
            problems.append(f"{where}: marked met but names no test")
        if row.status == "met" and not row.tests and negative and not row.notes:
            problems.append(f"{where}: met without a test must say why in Notes")
        if row.status != "met" and len(row.notes) < 20:
            problems.append(f"{where}: status {row.status!r} needs a reason in Notes")
        if row.status == "partly" and not row.tests:
            problems.append(f"{where}: partly met but no test shows the part that is met")
        for test_id in row.tests:
            if not TEST_ID.match(test_id):
                problems.append(f"{where}: {test_id!r} is not a test id (tests/...py::name)")
    return problems


def cited_test_ids(rows: list[MatrixRow]) -> set[str]:
    """Test ids in the Tests column, and any test id quoted in the Notes."""
    cited = set()
    for row in rows:
        cited.update(row.tests)
        cited.update(n for n in backticked(row.notes) if TEST_ID.match(n))
    return cited


def functions_in(path: Path) -> set[str]:
    """Test function names of a test file, as pytest ids without parameters ("test_x", "TestY::test_z")."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                    names.add(f"{node.name}::{item.name}")
    return names


def collected_ids(paths: list[str]) -> set[str]:
    """Full node ids (parametrized ones included) pytest collects from `paths`."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode not in (0, 5):  # 5: nothing collected
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise AssertionError(f"pytest --collect-only {' '.join(paths)} failed:\n" + "\n".join(tail))
    return {line.strip() for line in result.stdout.splitlines() if "::" in line}


def missing_tests(test_ids: set[str]) -> list[str]:
    """The cited test ids that do not exist, each with the reason."""
    problems = []
    by_file: dict[str, list[str]] = {}
    for test_id in sorted(test_ids):
        by_file.setdefault(test_id.split("::", 1)[0], []).append(test_id)
    parametrized: list[str] = []
    for file, ids in by_file.items():
        path = REPO / file
        if not path.is_file():
            problems.extend(f"{test_id}: no file {file}" for test_id in ids)
            continue
        names = functions_in(path)
        for test_id in ids:
            name = test_id.split("::", 1)[1].split("[", 1)[0]
            if name not in names:
                problems.append(f"{test_id}: {file} has no test {name!r}")
            elif "[" in test_id:
                parametrized.append(test_id)
    if parametrized:
        known = collected_ids(sorted({test_id.split("::", 1)[0] for test_id in parametrized}))
        problems.extend(f"{test_id}: pytest collects no such parametrized case"
                        for test_id in parametrized if test_id not in known)
    return problems


# ---------------------------------------------------------------------------- the checks on the real files


@pytest.fixture(scope="module")
def matrix_text() -> str:
    return MATRIX.read_text()


@pytest.fixture(scope="module")
def reference() -> list[Requirement]:
    return parse_reference(VENDORED.read_text())


@pytest.fixture(scope="module")
def labelled(matrix_text: str) -> list[MatrixRow]:
    return parse_matrix_rows(matrix_text, LABELLED_SECTION)


@pytest.fixture(scope="module")
def steps(matrix_text: str) -> list[MatrixRow]:
    return parse_matrix_rows(matrix_text, STEPS_SECTION)


def test_vendored_reference_matches_the_shared_copy() -> None:
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is absent (a checkout without shared/): the vendored copy stands alone")
    assert VENDORED.read_text() == SHARED.read_text(), (
        f"{VENDORED.relative_to(REPO)} differs from {SHARED}: copy the shared file and update the matrix")


def test_reference_table_parses_completely(reference: list[Requirement]) -> None:
    """The counts the reference states: 126 rows, 119 distinct IDs, 68 MUST and 8 MUST NOT rows."""
    assert len(reference) == 126
    assert len({r.req_id for r in reference}) == 119
    levels = Counter(r.level for r in reference)
    assert levels == {"MUST": 68, "MUST NOT": 8, "SHOULD": 30, "SHOULD NOT": 5, "MAY": 15}
    assert all(REQ_ID.match(r.req_id) and r.level in LEVELS for r in reference)


def test_every_requirement_row_appears_once(reference: list[Requirement], labelled: list[MatrixRow]) -> None:
    problems = row_problems(reference, labelled)
    assert not problems, "\n".join(problems)


def test_rows_have_a_known_status_tests_for_met_and_reasons_otherwise(
    labelled: list[MatrixRow], steps: list[MatrixRow]
) -> None:
    problems = status_problems(labelled + steps)
    assert not problems, "\n".join(problems)


def test_every_mandatory_row_that_is_met_names_a_test(labelled: list[MatrixRow]) -> None:
    untested = [f"docs/conformance.md:{r.line}: {r.key}" for r in labelled
                if r.level in MANDATORY and r.status == "met" and not r.tests]
    assert not untested, "\n".join(untested)


def test_every_cited_test_exists(labelled: list[MatrixRow], steps: list[MatrixRow]) -> None:
    problems = missing_tests(cited_test_ids(labelled + steps))
    assert not problems, "\n".join(problems)


def test_unlabelled_rules_keep_their_rows(steps: list[MatrixRow]) -> None:
    keys = [row.key for row in steps]
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert not duplicates, f"docs/conformance.md: steps listed twice: {duplicates}"
    missing = sorted(REQUIRED_STEPS - set(keys))
    assert not missing, f"docs/conformance.md: SEGMENT ARRIVES rows missing: {missing}"


def test_every_conformance_test_is_cited(labelled: list[MatrixRow], steps: list[MatrixRow]) -> None:
    """A conformance test no row cites shows nothing anyone reads: map it or drop it."""
    cited = {test_id.split("[", 1)[0] for test_id in cited_test_ids(labelled + steps)}
    uncited = []
    for path in sorted(REPO.glob(CONFORMANCE_TESTS)):
        relative = path.relative_to(REPO).as_posix()
        uncited += [f"{relative}::{name}" for name in sorted(functions_in(path))
                    if f"{relative}::{name}" not in cited]
    assert not uncited, "not cited in docs/conformance.md:\n" + "\n".join(uncited)


def test_summary_counts_match_the_rows(matrix_text: str, labelled: list[MatrixRow]) -> None:
    counts = Counter(row.status for row in labelled if row.level in MANDATORY)
    expected = {status: counts.get(status, 0) for status in STATUSES}
    expected["total"] = sum(counts.values())
    assert parse_summary(matrix_text) == expected


# ---------------------------------------------------------------------------- the checker itself can fail


def test_checker_reports_missing_wrong_and_unknown_rows(reference: list[Requirement],
                                                        labelled: list[MatrixRow]) -> None:
    must_1 = next(row for row in labelled if row.key == "MUST-1")
    damaged = [row for row in labelled if row is not must_1]
    damaged.append(MatrixRow("MUST-1", "SHOULD", must_1.feature, "met", must_1.tests, "", must_1.line))
    damaged.append(MatrixRow("MUST-99", "MUST", "Invented", "met", must_1.tests, "", 999))
    damaged = [row for row in damaged if not (row.key == "MUST-15" and "IPv6" in row.feature)]
    problems = "\n".join(row_problems(reference, damaged))
    assert "MUST-1 'Treat as unsigned number': level 'SHOULD', the table says 'MUST'" in problems
    assert "docs/conformance.md:999: MUST-99 'Invented': no such row in the requirement table" in problems
    assert "MUST row MUST-15 'IPv6 Send-MSS default is 1220' is missing" in problems


def test_checker_reports_bad_statuses_and_missing_tests() -> None:
    rows = [
        MatrixRow("MUST-2", "MUST", "Sender compute checksum", "met", (), "", 10),
        MatrixRow("MUST-3", "MUST", "Receiver check checksum", "mostly", ("tests/x.py::test_y",), "", 11),
        MatrixRow("MUST-4", "MUST", "Support the mandatory option set", "not met", (), "", 12),
    ]
    problems = "\n".join(status_problems(rows))
    assert "docs/conformance.md:10: MUST-2: marked met but names no test" in problems
    assert "docs/conformance.md:11: MUST-3: status 'mostly'" in problems
    assert "docs/conformance.md:12: MUST-4: status 'not met' needs a reason in Notes" in problems
    missing = "\n".join(missing_tests({
        "tests/stack/tcp/test_seq.py::test_no_such_test",
        "tests/stack/tcp/no_such_file.py::test_x",
        "tests/stack/tcp/test_seq.py::test_seq_add[no-such-case]",
        "tests/stack/tcp/test_seq.py::test_max_min_across_wrap",
    }))
    assert "test_seq.py has no test 'test_no_such_test'" in missing
    assert "no file tests/stack/tcp/no_such_file.py" in missing
    assert "test_seq_add[no-such-case]: pytest collects no such parametrized case" in missing
    assert "test_max_min_across_wrap" not in missing
