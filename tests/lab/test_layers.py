"""The shape of `lab/`: layers that depend one way, no import cycles, small modules, no borrowed privates.

Every module under lab/ is parsed with `ast`; every import counts, including those inside functions
(a lazy import still runs), except those under `if TYPE_CHECKING:` (never run). The layers, from the
top: cli > {experiments, tools} > build > {kernel, topology}. A module may import its own layer or a
lower one; the entry points (`lab/__init__.py`, `lab/__main__.py`) stand above the cli.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "lab"
MAX_LINES = 600
LAYER_RANKS = {"cli": 4, "experiments": 3, "tools": 3, "build": 2, "kernel": 1, "topology": 1}
ENTRY_RANK = 5


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a module or a package)
    names: tuple[str, ...]  # names taken from it (`from x import a, b`); empty for `import x`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LAB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def lab_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(LAB.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except what sits under `if TYPE_CHECKING:` (its `else` still runs)."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def resolve_from(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[list[Import], dict[str, str]]:
    """The lab imports of one module, and the local names bound to lab modules (for attribute checks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []
    bound: dict[str, str] = {}
    for node in run_time_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "lab" or alias.name.startswith("lab."):
                    found.append(Import(name, alias.name, (), node.lineno))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(name, path.name == "__init__.py", node)
            if source != "lab" and not source.startswith("lab."):
                continue
            plain: list[str] = []
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # `from lab.build import builder`: the module itself
                    found.append(Import(name, submodule, (), node.lineno))
                    bound[alias.asname or alias.name] = submodule
                else:
                    plain.append(alias.name)
            if plain:
                found.append(Import(name, source, tuple(plain), node.lineno))
    found.sort(key=lambda e: e.line)
    return found, bound


def private_attribute_uses(path: Path, bound: dict[str, str]) -> list[tuple[int, str, str]]:
    """`builder._teardown` where `builder` names another lab module: (line, module, attribute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and is_private(node.attr)):
            uses.append((node.lineno, bound[node.value.id], node.attr))
    return uses


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return ENTRY_RANK
    return LAYER_RANKS.get(parts[1], ENTRY_RANK)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER_RANKS else "entry"


def graph() -> tuple[dict[str, Path], dict[str, list[Import]], dict[str, dict[str, str]]]:
    modules = lab_modules()
    edges: dict[str, list[Import]] = {}
    bound: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        edges[name], bound[name] = imports_of(name, path, modules)
    return modules, edges, bound


def cycles(modules: dict[str, Path], edges: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:  # iterative Tarjan: deep import chains need no recursion limit
        work = [(start, iter(sorted({e.imported for e in edges[start] if e.imported in modules})))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({e.imported for e in edges[child]
                                                     if e.imported in modules}))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                self_loop = any(e.imported == node for e in edges[node])
                if len(component) > 1 or self_loop:
                    found.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(LAB.parent))


def test_the_layer_finder_knows_every_layer() -> None:
    modules = lab_modules()
    assert {layer(name) for name in modules} == {"entry", *LAYER_RANKS}


def cycle_path(component: list[str], edges: dict[str, list[Import]]) -> list[Import]:
    """One shortest cycle through the component's first module, as the imports that make it."""
    start, members = component[0], set(component)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for edge in edges[module]:
            if edge.imported == start:
                return [*paths[module], edge]
            if edge.imported in members and edge.imported not in paths:
                paths[edge.imported] = [*paths[module], edge]
                queue.append(edge.imported)
    return []


def test_no_import_cycles_between_lab_modules() -> None:
    modules, edges, _ = graph()
    found = cycles(modules, edges)
    described = []
    for component in found:
        steps = " -> ".join(f"{relative(modules[e.importer])}:{e.line} imports {e.imported}"
                            for e in cycle_path(component, edges))
        described.append(f"{' <-> '.join(component)} (for one: {steps})")
    assert not found, "import cycles (run-time imports, lazy ones included):\n" + "\n".join(described)


def test_imports_point_down_the_layers() -> None:
    modules, edges, _ = graph()
    upward = [
        f"{relative(modules[e.importer])}:{e.line} ({layer(e.importer)}) imports {e.imported} "
        f"({layer(e.imported)})"
        for name in modules for e in edges[name] if rank(e.imported) > rank(e.importer)
    ]
    assert not upward, "imports that point up cli > {experiments, tools} > build > {kernel, topology}:\n" + \
        "\n".join(upward)


def test_kernel_and_topology_stay_independent() -> None:
    """The two bottom layers are peers: neither needs the other, so either can be read alone."""
    modules, edges, _ = graph()
    crossing = [f"{relative(modules[e.importer])}:{e.line} imports {e.imported}"
                for name in modules for e in edges[name]
                if {layer(e.importer), layer(e.imported)} == {"kernel", "topology"}]
    assert not crossing, "kernel/ and topology/ import each other:\n" + "\n".join(crossing)


def test_no_module_is_longer_than_the_limit() -> None:
    long = {relative(path): count for path in lab_modules().values()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_private_name_is_used_across_modules() -> None:
    modules, edges, bound = graph()
    borrowed = [f"{relative(modules[e.importer])}:{e.line} imports {e.imported}.{taken}"
                for name in modules for e in edges[name] if e.imported != name
                for taken in e.names if is_private(taken)]
    for name, path in modules.items():
        borrowed += [f"{relative(path)}:{line} uses {module}.{attribute}"
                     for line, module, attribute in private_attribute_uses(path, bound[name])
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
    assert rank(found[0].imported) > rank("lab.kernel.probe")
    assert private_attribute_uses(source, bound) == [(7, "lab.build.builder", "_sweep")]
    looped = {"lab.a.x": [Import("lab.a.x", "lab.a.y", (), 1)],
              "lab.a.y": [Import("lab.a.y", "lab.a.x", (), 1)]}
    assert cycles({"lab.a.x": source, "lab.a.y": source}, looped) == [["lab.a.x", "lab.a.y"]]
