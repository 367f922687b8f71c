"""Ctrl-C and SIGTERM: a `lab` command stops at once and leaves nothing half-built.

While a command runs (`stopping_on_signals`, entered by the `lab` entry point before anything else),
the first SIGINT or SIGTERM raises `Interrupted` in the main thread wherever it waits (a socket read,
a thread join, a sleep), so the command unwinds at once through its `finally` and `except` blocks,
which take down what it brought up. Python's own reaction (KeyboardInterrupt, or death by SIGTERM
without unwinding) would not do: KeyboardInterrupt is caught by click and is easy to swallow, and a
SIGTERM kill skips every cleanup.

Work that must not be cut in half runs under `held_signals()`: building a lab (rolled back as a
whole instead) and tearing one down. A signal arriving then is held; a build turns it into
`Interrupted` at its next safe point (`raise_if_stopping()`, between kernel requests, in every wait
loop), so a build is never interrupted inside a netlink exchange or a namespace switch; anything
else held is raised when the outermost hold ends. Once a command is stopping, further signals are
only noted: its cleanup, bounded in time, always finishes.

What the cleanup did is noted (`note_cleanup`) for the one line the command exits with, and whoever
brings up something that must not outlive an interrupted command registers how to undo it
(`undo_on_stop`): the entry point runs what is left registered after the command has unwound, which
closes the gaps where a signal lands between two statements (a lab up, its `try` not yet entered).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM asked the command to stop (a BaseException: `except Exception` lets it pass).

    `exit_code` is 128 + the signal number: 130 for SIGINT, 143 for SIGTERM, as a shell reports them.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass
class _StopState:
    """The process's one view of stop signals (signals are process-wide, so this is too)."""

    installed: bool = False  # our handler is on SIGINT and SIGTERM
    owner: int = 0  # the pid that installed it: a forked child dies by the signal instead
    holds: int = 0  # nesting depth of held_signals() on the main thread
    pending: int | None = None  # a signal that arrived while held and not yet raised
    stopping: bool = False  # Interrupted was raised: the command is unwinding
    notes: list[str] = field(default_factory=list)
    undo: dict[str, Callable[[], None]] = field(default_factory=dict)


_state = _StopState()


def _on_signal(signum: int, frame: object) -> None:
    if os.getpid() != _state.owner:  # a forked child between fork and exec: die as usual
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state.stopping:
        return  # the cleanup under way finishes first
    if _state.holds:
        if _state.pending is None:
            _state.pending = signum
        return
    _state.stopping = True
    raise Interrupted(signum)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> dict[int, object]:
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    _state.installed = True
    _state.owner = os.getpid()
    return previous


def _restore(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]
    _state.installed = False


@contextmanager
def stopping_on_signals(*, ignore_once_stopped: bool = False) -> Iterator[None]:
    """For the life of a command: SIGINT/SIGTERM raise `Interrupted` (see the module docstring).

    The handlers are put back afterwards; with `ignore_once_stopped` (the entry point, about to exit)
    a command that stopped leaves SIGINT and SIGTERM ignored instead, so a second Ctrl-C after the
    cleanup cannot turn the exit code 130 into a death by the signal. Notes and undo actions start
    empty.
    """
    if not _on_main_thread() or _state.installed:
        yield
        return
    _state.pending, _state.stopping = None, False
    _state.notes.clear()
    _state.undo.clear()
    previous = _install()
    try:
        yield
    finally:
        if _state.stopping and ignore_once_stopped:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            _state.installed = False
        else:
            _restore(previous)
        _state.pending, _state.stopping = None, False


@contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the block: work in it is never cut between two statements.

    The block stops early only where it calls `raise_if_stopping()`. A signal still held when the
    outermost hold ends is delivered then: as `Interrupted` under `stopping_on_signals`, otherwise
    to the handler that was there before (KeyboardInterrupt, or the default death by SIGTERM).
    Off the main thread it does nothing (signals are only ever handled on the main thread).
    """
    if not _on_main_thread():
        yield
        return
    previous = None if _state.installed else _install()
    _state.holds += 1
    try:
        yield
    finally:
        _state.holds -= 1
        if previous is not None:
            _restore(previous)
        if _state.holds == 0 and _state.pending is not None:
            signum, _state.pending = _state.pending, None
            if previous is not None:
                signal.raise_signal(signum)  # the caller's own handler takes it from here
            elif not _state.stopping:
                _state.stopping = True
                raise Interrupted(signum)


def raise_if_stopping() -> None:
    """A safe point inside a held block: raise `Interrupted` now if a signal is being held."""
    if _state.pending is not None and not _state.stopping and _on_main_thread():
        signum, _state.pending = _state.pending, None
        _state.stopping = True
        raise Interrupted(signum)


def stop_requested() -> bool:
    """A stop signal arrived: the command is unwinding, or holds one it will raise."""
    return _state.stopping or _state.pending is not None


def note_cleanup(what: str) -> None:
    """Say what a cleanup did, for the stop line ("took down lab x1 (12 objects)"). Noted while a stop is
    under way, and all through a command (`stopping_on_signals`): a signal that arrives just after a
    teardown finished still finds it in the line. Library use outside a command keeps no notes."""
    if stop_requested() or _state.installed:
        _state.notes.append(what)


def cleanup_notes() -> list[str]:
    return list(_state.notes)


def undo_on_stop(key: str, undo: Callable[[], None]) -> None:
    """Register how to undo something this command brought up, should it stop before undoing it."""
    _state.undo[key] = undo


def forget_undo(key: str) -> None:
    """It was undone (or is to be kept): nothing to do for it on a stop."""
    _state.undo.pop(key, None)


def run_undo_actions() -> list[BaseException]:
    """Run, held, every undo still registered (newest first); the errors they raised, if any."""
    errors: list[BaseException] = []
    with held_signals():
        while _state.undo:
            key = next(reversed(_state.undo))
            undo = _state.undo.pop(key)
            try:
                undo()
            except Exception as error:  # one failed undo must not keep the others from running
                errors.append(error)
    return errors
