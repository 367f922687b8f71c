"""What holds for every module of the project: no import cycles (also between the packages: the lab uses
the stack, the stack never the lab), small modules, no private names of another module.  The layer order
of each package is tested beside it (tests/stack/test_layers.py, tests/lab/test_layers.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import Import, cycles, describe_cycles, graph, imports_of, private_attribute_uses

MAX_LINES = 600


def test_no_import_cycles_in_the_project() -> None:
    project = graph()
    found = cycles(project.modules, project.edges)
    assert not found, "import cycles (lazy imports included):\n" + describe_cycles(found, project)


def test_the_stack_never_imports_the_lab() -> None:
    project = graph("stack")
    offenders = [f"{project.relative(e.importer)}:{e.line} imports {e.imported}" for e in project.all_edges()
                 if e.imported.split(".")[0] == "lab"]
    assert not offenders, offenders


def test_no_module_over_600_lines() -> None:
    project = graph()
    too_long = {project.relative(name): count for name, path in project.modules.items()
                if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_no_private_name_is_used_across_modules() -> None:
    project = graph()
    borrowed = [f"{project.relative(e.importer)}:{e.line} imports {e.imported}.{taken}"
                for e in project.all_edges() if e.imported != e.importer
                for taken in e.names if taken.startswith("_")]
    for name, path in project.modules.items():
        borrowed += [f"{project.relative(name)}:{line} uses {module}.{attribute}"
                     for line, module, attribute in private_attribute_uses(path, project.bound[name])
                     if module != name]
    assert not borrowed, "private names used outside their module:\n" + "\n".join(borrowed)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The finder itself: a lazy import counts, a TYPE_CHECKING import does not, a private name is seen."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from lab.cli import app\n"
        "def f():\n"
        "    from lab.build.builder import _teardown\n"
        "    from lab.build import builder\n"
        "    return builder._sweep\n"
    )
    modules = {"lab.kernel.probe": source, "lab.build.builder": source}
    found, bound = imports_of("lab.kernel.probe", source, modules)
    assert [(e.imported, e.names) for e in found] == [("lab.build.builder", ("_teardown",)),
                                                      ("lab.build.builder", ())]
    assert private_attribute_uses(source, bound) == [(7, "lab.build.builder", "_sweep")]
    looped = {"lab.a.x": [Import("lab.a.x", "lab.a.y", (), 1)],
              "lab.a.y": [Import("lab.a.y", "lab.a.x", (), 1)]}
    assert cycles({"lab.a.x": source, "lab.a.y": source}, looped) == [["lab.a.x", "lab.a.y"]]
