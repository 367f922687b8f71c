"""The topology file's schema: what keys exist, their types and their units.

These pydantic models check *shape* only (every key known, every value of the right type and
unit). Whether the parts fit together (an endpoint names a node that exists, an address lies in
its subnet, a gateway is reachable) is checked by `lab.topology.resolve`, which has the whole
picture. Models are strict: ``mtu: "1500"`` is an error rather than a guess.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from lab.topology.units import parse_duration_ms, parse_percent, parse_rate_mbit
from stack.ranges import BYTE_COUNT, MTU, PORT, WORKERS

AppName = Literal["echo", "discard", "source", "http", "iperf3"]
Duration = Annotated[float, BeforeValidator(parse_duration_ms)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
Rate = Annotated[float, BeforeValidator(parse_rate_mbit)]
MAX_SYSCTL_CHARS = 256  # the longest per-namespace sysctl value is a few numbers ("4096 131072 6291456")
SYSCTL_VALUE_EXPECTED = (
    f"expected a number or a word of at most {MAX_SYSCTL_CHARS} characters like 1 or cubic"
)


def _sysctl_value(value: Any) -> str:
    """Sysctls are written as text to /proc/sys, so keep them as text (``1``, ``cubic``, ``4096 87380``).

    Which values a sysctl takes is the kernel's to say: one it refuses stops `lab up` with its errno.
    """
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise ValueError(SYSCTL_VALUE_EXPECTED)
    text = str(value)
    if len(text) > MAX_SYSCTL_CHARS or "\n" in text:
        raise ValueError(SYSCTL_VALUE_EXPECTED)
    return text


SysctlValue = Annotated[str, BeforeValidator(_sysctl_value)]

# Tags of the two spellings of `impair:`; they appear in pydantic's error paths and are dropped
# from the paths we report (they are not keys of the file).
BOTH_DIRECTIONS = "<both directions>"
PER_DIRECTION = "<per direction>"
DIRECTION_ARROW = "->"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AppSpec(_Strict):
    """``{app: echo, port: 7}``; ``source`` may say how many ``bytes`` to send before closing."""

    app: AppName
    port: Annotated[int, Field(ge=PORT.low, le=PORT.high)]
    bytes: Annotated[int, Field(ge=BYTE_COUNT.low, le=BYTE_COUNT.high)] | None = None


class RouteSpec(_Strict):
    """``{to: default | 10.0.2.0/24, via: 10.0.1.1}``; addresses are checked during resolution."""

    to: str
    via: str


class NodeSpec(_Strict):
    kind: Literal["kernel", "pystack"]
    gateway: str | None = None
    routes: list[RouteSpec] = []
    sysctls: dict[str, SysctlValue] = {}
    apps: list[AppSpec] = []
    offload: bool | None = None
    process: bool | None = None  # pystack: False = `lab up` starts no stack process (a script attaches)
    workers: Annotated[int, Field(ge=WORKERS.low, le=WORKERS.high)] | None = None  # pystack: stack processes
    python: Literal["cpython", "pypy"] | None = None  # pystack: the interpreter of its stack


class EndpointSpec(_Strict):
    """One end of a link: ``h1:eth0`` or ``{node: h1, interface: eth0, addr: 10.0.0.5/24}``."""

    node: str
    interface: str
    addr: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_short_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            node, sep, interface = value.partition(":")
            if not sep or not node or not interface or ":" in interface:
                raise ValueError(
                    "expected NODE:INTERFACE like h1:eth0, or a mapping with node, interface, addr"
                )
            return {"node": node, "interface": interface}
        return value


class ImpairSpec(_Strict):
    """What a link does to packets in one direction (or both). Units as in netem/tbf."""

    delay: Duration | None = None
    jitter: Duration | None = None
    loss: Percent | None = None
    duplicate: Percent | None = None
    reorder: Percent | None = None
    corrupt: Percent | None = None
    rate: Rate | None = None


def _impair_spelling(value: Any) -> str:
    if isinstance(value, dict) and any(DIRECTION_ARROW in str(key) for key in value):
        return PER_DIRECTION
    return BOTH_DIRECTIONS


Impairments = Annotated[
    Annotated[ImpairSpec, Tag(BOTH_DIRECTIONS)] | Annotated[dict[str, ImpairSpec], Tag(PER_DIRECTION)],
    Discriminator(_impair_spelling),
]


class LinkSpec(_Strict):
    endpoints: Annotated[list[EndpointSpec], Field(min_length=2)]
    subnet: str
    mtu: Annotated[int, Field(ge=MTU.low, le=MTU.high)] = 1500
    impair: Impairments | None = None
    impairable: bool = False  # keep the link ready for `lab impair` (see `lab.topology.plan.LinkPlan`)


class TopologySpec(_Strict):
    name: str
    nodes: Annotated[dict[str, NodeSpec], Field(min_length=1)]
    links: list[LinkSpec]

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, value: Any) -> Any:
        """Top-level ``x-...`` keys hold YAML anchors to reuse (as in compose files); they mean nothing."""
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return value
