"""Topology files: the YAML a person writes, checked and resolved into a `lab.topology.plan.LabPlan`.

The smallest useful file::

    name: pair
    nodes:
      h1: {kind: kernel}
      s1: {kind: pystack, apps: [{app: echo, port: 7}]}
    links:
      - endpoints: [h1:eth0, s1:eth0]
        subnet: 10.0.0.0/24

Nodes are ``kernel`` (the namespace's own Linux stack; run programs in it with ``lab exec``) or
``pystack`` (one interface, owned by the Python stack, which serves ``apps``). A link joins two
endpoints (point-to-point) or more (a LAN, built as a bridge). An endpoint is ``NODE:INTERFACE``,
or a mapping ``{node: h1, interface: eth0, addr: 10.0.0.5/24}`` to fix its address; the others are
assigned from the link's ``subnet`` in endpoint order from ``.1``. Links take ``mtu`` and
``impair`` (see `lab.topology.impairments`); nodes take ``gateway``/``routes`` and, on kernel
nodes, ``sysctls``. Top-level ``x-...`` keys are ignored, to hold YAML anchors. The full format is
in ``topologies/README.md``.

Every problem raises `TopologyError` with a one-line message
``<file>:<line>: <field.path>: <what was expected>, got <value>``; a file that is no topology at
all (not YAML, not a mapping, a device, too large: `lab.topology.limits`) says
``not a YAML topology`` and never quotes what it holds.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from lab.topology.errors import TopologyError
from lab.topology.limits import check_counts, check_shape, read_topology_file
from lab.topology.names import lab_name_problem
from lab.topology.plan import LabPlan
from lab.topology.resolve import resolve
from lab.topology.schema import TopologySpec
from lab.topology.validation import schema_error
from lab.topology.yaml_lines import SourceMap, load_yaml_with_lines

# Shipped topologies live next to the packages in the project checkout.
TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topologies"
DEFAULT_TOPOLOGY = TOPOLOGY_DIR / "pair.yaml"

__all__ = [
    "DEFAULT_TOPOLOGY",
    "TOPOLOGY_DIR",
    "TopologyError",
    "find_topology",
    "lab_name_problem",
    "load_topology",
    "plan_from_data",
    "plan_from_text",
    "shipped_topologies",
]


def load_topology(path: str | Path, name: str | None = None) -> LabPlan:
    """Read and resolve a topology file; ``name`` overrides its lab name (``lab up --name``).

    The file is read within `lab.topology.limits`' bounds: a device, a FIFO or a file too large is
    refused before it is read.
    """
    path = Path(path)
    text = read_topology_file(path)
    return plan_from_text(text, source=str(path), name=name, plan_source=str(path.resolve()))


def plan_from_text(
    text: str, source: str = "<string>", name: str | None = None, *, plan_source: str | None = None
) -> LabPlan:
    """Resolve topology YAML; ``source`` names it in errors, ``plan_source`` (default: source) in the plan."""
    data, lines = load_yaml_with_lines(text, source)
    return _plan(data, lines, plan_source if plan_source is not None else source, name)


def plan_from_data(data: object, source: str = "", name: str | None = None) -> LabPlan:
    """Resolve a topology already in memory (dicts and lists, as YAML would give); errors carry no line."""
    return _plan(data, SourceMap(source or "<data>"), source, name)


def _plan(data: object, lines: SourceMap, plan_source: str, name: str | None) -> LabPlan:
    mapping = check_shape(data, lines)
    check_counts(mapping, lines)
    try:
        spec = TopologySpec.model_validate(mapping)
    except ValidationError as exc:
        raise schema_error(exc, lines) from None
    return resolve(spec, lines, plan_source, name)


def shipped_topologies() -> dict[str, Path]:
    """The topologies that come with nslab, by name (``pair`` -> topologies/pair.yaml)."""
    return {path.stem: path for path in sorted(TOPOLOGY_DIR.glob("*.yaml"))}


def find_topology(name_or_path: str | Path) -> Path:
    """A path as given when it exists, else a shipped topology of that name (``router``)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    return shipped_topologies().get(str(name_or_path), path)
