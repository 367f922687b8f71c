"""The error every lab operation raises when it cannot go on."""

from __future__ import annotations


class LabError(Exception):
    """A lab operation cannot go on. `exit_code` follows the CLI contract (1 failed, 2 bad input)."""

    exit_code = 2
