"""The stack's structure, checked: imports point one way, no cycles, no mixins over the connection.

The layers, bottom up (a module may import its own layer and those below it):
    wire, deadlines,     pure codecs; what a deadline means; the allowed range of every number from
    ranges               outside (topology files, settings files, control requests)
    tcp                  sans-IO TCP
    devices              the device contract, TAP, memory wire, impairment, pcap, namespaces
    net                  Ethernet + ARP, IPv4 + ICMP, reassembly, routing, the router
    loops                what makes time pass: the runner, the threaded and the asyncio drivers
    api                  the blocking socket API and asyncio streams
    host                 Host: link + IPv4 + TCP composed
    node                 the node process, its control socket, its apps
    aio, attach          the public entry points for scripts
"""

from __future__ import annotations

import ast

from tests.import_graph import cycles, describe_cycles, graph, package_modules

LAYERS = ("compat", "wire", "deadlines", "ranges", "tcp", "devices", "net", "loops", "api", "host", "node",
          "aio", "attach")
RANK = {"compat": 0, "wire": 0, "deadlines": 0, "ranges": 0, "tcp": 1, "devices": 2, "net": 3, "loops": 4,
        "api": 5, "host": 6, "node": 7, "aio": 8, "attach": 8}
#: The only run-time importers of the connection module: the TCP layer makes connections.
CONNECTION_MAKERS = frozenset({"stack.tcp.layer"})


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "stack" else None


def test_no_import_cycles_in_the_stack() -> None:
    stack = graph("stack")
    found = cycles(stack.modules, stack.edges)
    assert not found, "import cycles (lazy imports count):\n" + describe_cycles(found, stack)


def test_imports_point_down_the_layers() -> None:
    offenders = []
    for edge in graph("stack").all_edges():
        source, target = layer_of(edge.importer), layer_of(edge.imported)
        if source is None or target is None or source == target:
            continue
        assert source in RANK and target in RANK, f"{edge.importer} or {edge.imported}: no layer in RANK"
        if RANK[target] > RANK[source]:
            offenders.append(f"{edge.importer}:{edge.line} ({source}) imports {edge.imported} ({target})")
    assert not offenders, "imports that point up the layers:\n" + "\n".join(offenders)


def test_no_module_imports_its_own_package_namespace() -> None:
    """A module that takes names from its own package's __init__ depends on the order that __init__
    imports things in; it imports the submodule instead."""
    offenders = [f"{e.importer}:{e.line} imports {e.imported}" for e in graph("stack").all_edges()
                 if e.importer != e.imported and e.importer.startswith(e.imported + ".")]
    assert not offenders, offenders


def test_only_the_layer_imports_the_connection() -> None:
    importers = {e.importer for e in graph("stack").all_edges() if e.imported == "stack.tcp.connection"}
    assert importers <= CONNECTION_MAKERS, sorted(importers - CONNECTION_MAKERS)


def test_no_mixins_over_the_connection() -> None:
    offenders = []
    for name, path in package_modules("stack").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Mixin"):
                offenders.append(f"{name}: class {node.name}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.args.args:
                first = node.args.args[0]
                if first.arg == "self" and first.annotation is not None:
                    annotation = ast.unparse(first.annotation)
                    offenders.append(f"{name}:{node.lineno}: {node.name}(self: {annotation})")
    assert not offenders, "methods written for another class (mixins): " + ", ".join(offenders)


def test_every_stack_folder_has_a_layer() -> None:
    folders = {layer_of(name) for name in package_modules("stack")} - {None}
    assert folders <= set(LAYERS), folders - set(LAYERS)
