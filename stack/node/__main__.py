"""`python -m stack.node --settings <state dir>/nodes/<node>.json`: run a pystack node.

Exit codes: 0 after SIGTERM/SIGINT, 1 when one of the node's workers died, 2 for a bad settings file or
a missing capability (no TAP, no permission), with one line on stderr saying what and where.
"""

from __future__ import annotations

import argparse
import sys

from stack.devices.tap import TapError
from stack.node.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.node", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True, help="the node's settings JSON (written by `lab up`)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        print(f"stack.node: {exc}", file=sys.stderr)
        return 2
    from stack.node.daemon import run
    from stack.node.workers import WorkerDied

    try:
        run(settings)
    except WorkerDied as exc:
        print(f"stack.node: {settings.node}: {exc}", file=sys.stderr)
        return 1
    except TapError as exc:
        print(f"stack.node: {settings.node}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stack.node: {settings.node}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
