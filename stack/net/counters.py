"""Counter tables of the network layers: nstat-style names, a missing name reading as 0."""

from __future__ import annotations


class Counters(dict[str, int]):
    """A dict of counters where a missing name reads as 0, so hot paths just do ``c[name] += 1``."""

    def __missing__(self, key: str) -> int:
        return 0
