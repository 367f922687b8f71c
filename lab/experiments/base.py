"""What an experiment is: a name, a summary, options with defaults, and a `run` over a running lab.

An experiment is one module in `lab/experiments/` holding one `Experiment` subclass; its `name` is
the module's name. It gets a `RunningLab` (`lab.experiments.running`: the lab is already up) and the
`--option k=v` pairs, drives kernel sockets and the stack's control socket, and returns an
`ExperimentResult` (`lab.experiments.results`). `lab run` prints the result and exits 0 when every
check passed, 1 when one failed, 2 on bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from lab.build.state import LabError

if TYPE_CHECKING:  # for annotations only: running.py builds on this module
    from lab.experiments.results import ExperimentResult
    from lab.experiments.running import RunningLab


class ExperimentError(LabError):
    """Bad input to an experiment (unknown option, a value of the wrong type, a missing node): exit 2."""

    exit_code = 2


Options = dict[str, tuple[Any, str]]  # option -> (default, one-line help)


class Experiment:
    """One interop experiment. Subclasses set `summary` and `options` and implement `run`.

    `name` is the name of the subclass's module (what `lab run NAME` looks up), unless the subclass
    sets one. `options` maps each accepted option to (default, one-line help); `parse_options`
    converts the command line's strings to the default's type, so `--option bytes=1000000` arrives
    as an int.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_topology: ClassVar[str] = "pair"
    options: ClassVar[Options] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__module__.rpartition(".")[2]

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        raise NotImplementedError

    def parse_options(self, raw: dict[str, str]) -> dict[str, Any]:
        parsed = {key: default for key, (default, _) in self.options.items()}
        for key, text in raw.items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise ExperimentError(f"experiment {self.name}: unknown option {key!r} (options: {known})")
            parsed[key] = convert_option(self.name, key, text, self.options[key][0])
        return parsed


def convert_option(experiment: str, key: str, text: str, default: Any) -> Any:
    """`text` converted to the type of `default` (bool, int, float, str), or ExperimentError."""
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return parse_size(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer (suffixes k, M, G allowed)",
                float: "a number"}[type(default)]
        raise ExperimentError(
            f"experiment {experiment}: option {key}: expected {kind}, got {text!r}") from None
    return text


_SIZE_SUFFIXES = {"k": 1000, "K": 1024, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """An integer with an optional suffix: 1000, 64k (×1000), 64K (×1024), 10M, 1G (binary)."""
    text = text.strip()
    if text and text[-1] in _SIZE_SUFFIXES:
        return int(float(text[:-1]) * _SIZE_SUFFIXES[text[-1]])
    return int(text)


def parse_option_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`["bytes=10M", "seed=3"]` → `{"bytes": "10M", "seed": "3"}` (ExperimentError on `x`)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExperimentError(f"--option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options
