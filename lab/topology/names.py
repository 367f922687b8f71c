"""The rule for names a lab is built from: lab names and node names.

A lab name prefixes every namespace it owns (`<lab>-<node>`, `<lab>-lan<index>`) and its ifalias
tag, and a node name completes the namespace name, so both stay short (a namespace name is also
handy in `ip netns` output and shell commands) and plain: lowercase letters and digits, starting
with a letter. The topology files, `lab up --name`, the state directory and every name the lab
derives (bench and scratch labs) are checked against this one rule.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 12
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*")

LAB_NAME_EXPECTED = (
    f"expected a lab name of 1 to {MAX_NAME_LENGTH} lowercase letters and digits starting "
    f"with a letter (it prefixes namespace names <lab>-<node>)"
)
NODE_NAME_EXPECTED = (
    f"expected a node name of 1 to {MAX_NAME_LENGTH} lowercase letters and digits starting with a letter"
)


def is_plain_name(name: object) -> bool:
    """True for 1 to MAX_NAME_LENGTH lowercase letters and digits starting with a letter."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.fullmatch(name) is not None


def lab_name_problem(name: object) -> str | None:
    """None when ``name`` can name a lab; else the "expected ..." text."""
    return None if is_plain_name(name) else LAB_NAME_EXPECTED


def derived_lab_name(base: str, suffix: str) -> str:
    """A lab name made from another (`<lab>k`, `<name>ok`): `base` cut so that `base + suffix` fits."""
    return f"{base[:MAX_NAME_LENGTH - len(suffix)]}{suffix}"
