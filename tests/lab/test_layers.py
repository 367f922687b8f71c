"""The shape of `lab/`: layers that depend one way and no import cycles (module size and private names are
checked for the whole project in tests/test_structure.py).

Every module under lab/ is parsed with `ast`; every import counts, including those inside functions
(a lazy import still runs), except those under `if TYPE_CHECKING:` (never run). The layers, from the
top: cli > {experiments, tools, tutorials, script, testing} > build > {kernel, topology}. A module
may import its own layer or a lower one; the entry points (`lab/__init__.py`, `lab/__main__.py`) stand
above the cli.
"""

from __future__ import annotations

from tests.import_graph import (
    cycles,
    describe_cycles,
    graph,
    package_modules,
)

LAYER_RANKS = {"cli": 4, "experiments": 3, "tools": 3, "tutorials": 3, "script": 3, "testing": 3,
               "build": 2, "kernel": 1, "topology": 1}
ENTRY_RANK = 5


def rank(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "lab":
        return 0  # the stack sits below the whole lab
    if len(parts) < 2 or parts[1] == "__main__":
        return ENTRY_RANK
    return LAYER_RANKS.get(parts[1], ENTRY_RANK)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "lab":
        return parts[0]
    return parts[1] if len(parts) > 1 and parts[1] in LAYER_RANKS else "entry"


def test_the_layer_finder_knows_every_layer() -> None:
    assert {layer(name) for name in package_modules("lab")} == {"entry", *LAYER_RANKS}


def test_no_import_cycles_between_lab_modules() -> None:
    lab = graph("lab")
    found = cycles(lab.modules, lab.edges)
    assert not found, "import cycles (run-time imports, lazy ones included):\n" + describe_cycles(found, lab)


def test_imports_point_down_the_layers() -> None:
    lab = graph("lab")
    upward = [
        f"{lab.relative(e.importer)}:{e.line} ({layer(e.importer)}) imports {e.imported} "
        f"({layer(e.imported)})"
        for e in lab.all_edges() if rank(e.imported) > rank(e.importer)
    ]
    assert not upward, "imports that point up the layers (cli > ... > {kernel, topology}):\n" + \
        "\n".join(upward)


def test_kernel_and_topology_stay_independent() -> None:
    """The two bottom layers are peers: neither needs the other, so either can be read alone."""
    lab = graph("lab")
    crossing = [f"{lab.relative(e.importer)}:{e.line} imports {e.imported}" for e in lab.all_edges()
                if {layer(e.importer), layer(e.imported)} == {"kernel", "topology"}]
    assert not crossing, "kernel/ and topology/ import each other:\n" + "\n".join(crossing)
