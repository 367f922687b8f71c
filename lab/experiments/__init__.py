"""Interop experiments between the Python stack and Linux kernel TCP, run by `lab run NAME`.

Each experiment is a module here holding one `lab.experiments.base.Experiment` subclass, named
after the module. Beside them: `base` (what an experiment is), `running` (the lab it runs in),
`results` (what it returns), `stack_answers` (reading the stack node's answers) and `kernel_peers`
(kernel servers and clients). The registry imports modules on demand, so a broken or slow
experiment never costs the others anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

from lab.experiments.base import Experiment, ExperimentError

# The order `lab run --help` and the docs list them in: the basics first.
EXPERIMENT_MODULES = ("handshake", "bulk", "refused", "timeout", "close", "backlog", "loss", "http")


def available() -> list[str]:
    """Names of the experiments whose module is present."""
    return [name for name in EXPERIMENT_MODULES if importlib.util.find_spec(f"{__name__}.{name}") is not None]


def get(name: str) -> Experiment:
    """The experiment `name` (ExperimentError naming the known ones when there is none)."""
    if name not in EXPERIMENT_MODULES or name not in available():
        raise ExperimentError(f"experiment {name!r}: expected one of {', '.join(available())}")
    module = importlib.import_module(f"{__name__}.{name}")
    for _, value in inspect.getmembers(module, inspect.isclass):
        if issubclass(value, Experiment) and value is not Experiment and value.name == name:
            return value()
    raise ExperimentError(f"experiment module {name} defines no Experiment subclass named {name!r}")
