"""The project's import graph, read from the source with `ast`, for the tests that keep the layering honest.

Every import counts, also one inside a function (a lazy import still ties two modules together at run
time), except those under `if TYPE_CHECKING:` (never run; its `else` still runs).  `from package import
name` points at the submodule `package.name` when there is one, else at the package with `name` taken.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stack", "lab")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a module or a package)
    names: tuple[str, ...]  # names taken from it (`from x import a, b`); empty for `import x`
    line: int


@dataclass
class Graph:
    modules: dict[str, Path]  # dotted name -> file
    edges: dict[str, list[Import]]  # importer -> its imports of project modules
    bound: dict[str, dict[str, str]]  # importer -> local name -> project module it names

    def all_edges(self) -> list[Import]:
        return [edge for name in self.modules for edge in self.edges[name]]

    def relative(self, module: str) -> str:
        return str(self.modules[module].relative_to(ROOT))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package: str) -> dict[str, Path]:
    """Every module of `package` (a top-level folder of the project): dotted name -> path."""
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except what sits under `if TYPE_CHECKING:`."""
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


def in_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[list[Import], dict[str, str]]:
    """The project imports of one module, and the local names bound to project modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []
    bound: dict[str, str] = {}
    for node in run_time_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if in_project(alias.name):
                    found.append(Import(name, alias.name, (), node.lineno))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(name, path.name == "__init__.py", node)
            if not in_project(source):
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
    found.sort(key=lambda edge: edge.line)
    return found, bound


def graph(*packages: str) -> Graph:
    """The import graph of the given packages (default: all of the project's)."""
    modules: dict[str, Path] = {}
    for package in packages or PACKAGES:
        modules.update(package_modules(package))
    known = {**modules, **{n: p for package in PACKAGES for n, p in package_modules(package).items()}}
    edges: dict[str, list[Import]] = {}
    bound: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        edges[name], bound[name] = imports_of(name, path, known)
    return Graph(modules, edges, bound)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_attribute_uses(path: Path, bound: dict[str, str]) -> list[tuple[int, str, str]]:
    """`builder._teardown` where `builder` names another project module: (line, module, attribute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(node.lineno, bound[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in bound and is_private(node.attr)]


def cycles(modules: dict[str, Path], edges: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def successors(module: str) -> list[str]:
        return sorted({edge.imported for edge in edges.get(module, ()) if edge.imported in modules})

    def visit(start: str) -> None:  # iterative Tarjan: deep import chains need no recursion limit
        work = [(start, iter(successors(start)))]
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
                    work.append((child, iter(successors(child))))
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
                self_loop = any(edge.imported == node for edge in edges.get(node, ()))
                if len(component) > 1 or self_loop:
                    found.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


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


def describe_cycles(found: list[list[str]], project: Graph) -> str:
    described = []
    for component in found:
        steps = " -> ".join(f"{project.relative(e.importer)}:{e.line} imports {e.imported}"
                            for e in cycle_path(component, project.edges))
        described.append(f"{' <-> '.join(component)} (for one: {steps})")
    return "\n".join(described)
