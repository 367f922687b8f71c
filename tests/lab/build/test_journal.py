"""The journal (no root): append/fsync, torn lines, replay order."""

from __future__ import annotations

import json
from pathlib import Path

from lab.build.journal import Journal, JournalEntry, read_journal, removal_order


def test_record_then_read_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    entries = [
        JournalEntry("namespace", namespace="lab-h1"),
        JournalEntry("veth", namespace="lab-h1", name="eth0", peer_namespace="lab-h2", peer_name="eth0"),
        JournalEntry("process", namespace="lab-s1", pid=1234, start_ticks=99),
    ]
    journal.record(entries[:2])
    journal.record(entries[2:])
    contents = read_journal(journal.path)
    assert contents.entries == tuple(entries)
    assert contents.skipped_lines == ()


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).record([JournalEntry("namespace", namespace="lab-h1")])
    with open(path, "a") as handle:
        handle.write('{"kind": "namespace", "namesp')  # what SIGKILL mid-write leaves
    contents = read_journal(path)
    assert contents.entries == (JournalEntry("namespace", namespace="lab-h1"),)
    assert contents.skipped_lines == (2,)


def test_record_after_a_torn_tail_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"kind": "namespace", "namespace": "lab-h1"}\n{"kind": "ve')
    Journal(path).record([JournalEntry("namespace", namespace="lab-h2")])
    contents = read_journal(path)
    assert [e.namespace for e in contents.entries] == ["lab-h1", "lab-h2"]
    assert contents.skipped_lines == (2,)


def test_garbage_and_unknown_kinds_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text("\n".join([
        json.dumps({"kind": "namespace", "namespace": "a-h1"}),
        "not json",
        json.dumps({"kind": "spaceship", "name": "x"}),
        json.dumps({"kind": "tap", "namespace": "a-s1", "name": "tap0", "colour": "red"}),
        json.dumps(["a", "list"]),
        json.dumps({"kind": "tap", "namespace": "a-s1", "name": "tap0"}),
    ]) + "\n")
    contents = read_journal(path)
    assert [e.kind for e in contents.entries] == ["namespace", "tap"]
    assert contents.skipped_lines == (2, 3, 4, 5)


def test_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "absent.jsonl").entries == ()


def test_removal_order_is_reverse_creation_with_processes_first_and_no_duplicates() -> None:
    ns1 = JournalEntry("namespace", namespace="a-h1")
    ns2 = JournalEntry("namespace", namespace="a-h2")
    veth = JournalEntry("veth", namespace="a-h1", name="eth0", peer_namespace="a-h2", peer_name="eth0")
    qdisc = JournalEntry("qdisc", namespace="a-h1", name="eth0", qdisc="tbf")
    proc = JournalEntry("process", namespace="a-h1", pid=10, start_ticks=5)
    order = removal_order([ns1, ns2, veth, qdisc, proc, ns2])
    assert order == [proc, ns2, qdisc, veth, ns1]


def test_entry_json_omits_unset_fields_and_describes_itself() -> None:
    entry = JournalEntry("bridge", namespace="a-s1", name="br0")
    assert entry.to_json() == {"kind": "bridge", "namespace": "a-s1", "name": "br0"}
    assert JournalEntry.from_json(entry.to_json()) == entry
    assert entry.describe() == "bridge a-s1:br0"
