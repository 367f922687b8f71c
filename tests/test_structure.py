"""What holds for every module of the project: small modules, and no private names taken from another
module (the layering of each package is tested beside it: tests/stack/test_layers.py, tests/lab/)."""

from __future__ import annotations

from tests.import_graph import cycles, imports, modules

MAX_LINES = 600


def test_no_module_over_600_lines() -> None:
    for package in ("stack", "lab"):
        too_long = {name: n for name, path in modules(package).items()
                    if (n := len(path.read_text().splitlines())) > MAX_LINES}
        assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_no_private_names_from_other_modules() -> None:
    offenders = [f"{e.importer}:{e.line} takes {name} from {e.imported}"
                 for package in ("stack", "lab") for e in imports(package)
                 for name in e.names if name.startswith("_") and e.importer != e.imported]
    assert not offenders, offenders


def test_no_import_cycles_between_the_packages() -> None:
    """The lab uses the stack; the stack never uses the lab; neither has a cycle (lazy imports count)."""
    found = cycles([*imports("stack"), *imports("lab")])
    assert not found, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in found)
