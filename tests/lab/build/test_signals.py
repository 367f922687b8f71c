"""How a command stops on SIGINT/SIGTERM (`lab.build.signals`), signalling this very process (no root)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lab.build.signals import (
    Interrupted,
    cleanup_notes,
    held_signals,
    note_cleanup,
    raise_if_stopping,
    run_undo_actions,
    stopping_on_signals,
    undo_on_stop,
)


def deliver(signum: int) -> None:
    """Signal this process and give the interpreter the moment it needs to run the handler."""
    os.kill(os.getpid(), signum)
    time.sleep(0.01)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_with_the_shells_exit_code(signum: int, code: int) -> None:
    with stopping_on_signals(), pytest.raises(Interrupted) as raised:
        deliver(signum)
        time.sleep(5)  # a blocking wait is cut short
    assert raised.value.exit_code == code


def test_a_held_signal_waits_for_the_end_of_the_hold() -> None:
    finished = False
    with stopping_on_signals(), pytest.raises(Interrupted), held_signals():
        deliver(signal.SIGINT)
        with held_signals():  # nested holds: only the outermost delivers
            pass
        finished = True
    assert finished


def test_outside_a_command_cleanups_are_not_noted() -> None:
    with stopping_on_signals():
        pass  # starts the notes empty
    note_cleanup("took down lab x2 (1 objects removed)")  # library use: no stop line will ever print it
    assert cleanup_notes() == []


def test_a_held_signal_is_raised_at_a_safe_point() -> None:
    reached = []
    with stopping_on_signals(), pytest.raises(Interrupted), held_signals():
        reached.append("before")
        raise_if_stopping()  # nothing held yet: goes on
        deliver(signal.SIGTERM)
        reached.append("held")
        raise_if_stopping()
        reached.append("after")
    assert reached == ["before", "held"]


def test_once_stopping_further_signals_are_only_noted() -> None:
    with stopping_on_signals():
        note_cleanup("took down lab x0 (2 objects removed)")  # kept: a signal may follow at once
        try:
            deliver(signal.SIGINT)
        except Interrupted:
            deliver(signal.SIGINT)  # the second Ctrl-C does not cut the cleanup short
            deliver(signal.SIGTERM)
            note_cleanup("took down lab x1 (3 objects removed)")
        assert cleanup_notes() == ["took down lab x0 (2 objects removed)",
                                   "took down lab x1 (3 objects removed)"]


def test_without_the_commands_handler_a_hold_hands_the_signal_on() -> None:
    """Used as a library (tests, scripts), a hold still keeps the teardown whole, then Python's own
    KeyboardInterrupt follows."""
    before = signal.getsignal(signal.SIGINT)
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with held_signals():
            deliver(signal.SIGINT)
            finished = True
        time.sleep(1)
    assert finished
    assert signal.getsignal(signal.SIGINT) is before


def test_the_handlers_are_put_back_after_the_command() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stopping_on_signals():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {s: signal.getsignal(s) for s in before} == before


def test_undo_actions_all_run_newest_first() -> None:
    done: list[str] = []

    def failing() -> None:
        done.append("b")
        raise OSError("gone")

    with stopping_on_signals():
        undo_on_stop("a", lambda: done.append("a"))
        undo_on_stop("b", failing)
        undo_on_stop("c", lambda: done.append("c"))
        errors = run_undo_actions()
        assert run_undo_actions() == []  # each runs once
    assert done == ["c", "b", "a"]
    assert [str(e) for e in errors] == ["gone"]


def test_a_forked_child_dies_by_the_signal_instead_of_unwinding() -> None:
    """A child forked before exec (a stack node, pyroute2's helpers) inherits the handler: it must
    die as a SIGTERM'd process does, never run its parent's cleanup."""
    with stopping_on_signals():
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(5)
            finally:
                os._exit(3)  # reached only if the signal unwound instead of killing
        time.sleep(0.05)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
