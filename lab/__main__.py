"""The `lab` command (console script and `python -m lab`): stop signals first, then the CLI.

The handlers of `lab.build.signals` are installed before the command-line modules are imported
(that import alone takes a good part of a second), so a Ctrl-C at any moment ends the same way: what
the command brought up is taken down, one line says what was cleaned, and the exit code is 130
(SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import sys

from lab.build.signals import Interrupted, cleanup_notes, run_undo_actions, stopping_on_signals


def main() -> None:
    with stopping_on_signals(ignore_once_stopped=True):
        try:
            from lab.cli import app

            app()
        except Interrupted as stop:
            errors = run_undo_actions()  # what the unwinding did not reach (a lab up, not yet in a `try`)
            notes = cleanup_notes() + [f"cleanup failed: {error}" for error in errors]
            sys.stderr.write(f"lab: stopped by {stop.signal_name}; "
                             f"{'; '.join(notes) if notes else 'nothing was left to clean up'}\n")
            sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
