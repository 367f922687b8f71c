"""Turning pydantic's validation errors into our one-line, line-numbered errors.

pydantic reports ``loc`` paths such as ``('nodes', 'h1', 'apps', 0, 'port')`` and English like
"Input should be greater than or equal to 1". We map the path back to the YAML line through the
`SourceMap`, and rephrase the message as "expected ..., got ..." with the field's own words.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from lab.topology.errors import FieldPath, TopologyError, format_path, format_value
from lab.topology.schema import (
    BOTH_DIRECTIONS,
    DIRECTION_ARROW,
    PER_DIRECTION,
    AppSpec,
    EndpointSpec,
    ImpairSpec,
    LinkSpec,
    NodeSpec,
    RouteSpec,
    TopologySpec,
)
from lab.topology.yaml_lines import SourceMap
from stack.ranges import BYTE_COUNT, MTU, PORT, WORKERS

_TAGS = frozenset({BOTH_DIRECTIONS, PER_DIRECTION})
_ANY = object()  # wildcard in the shapes below

# Which model sits at which path (used to list the keys allowed where an unknown key was found).
_MODEL_AT: tuple[tuple[tuple[object, ...], type[BaseModel]], ...] = (
    ((), TopologySpec),
    (("nodes", _ANY), NodeSpec),
    (("nodes", _ANY, "apps", _ANY), AppSpec),
    (("nodes", _ANY, "routes", _ANY), RouteSpec),
    (("links", _ANY), LinkSpec),
    (("links", _ANY, "endpoints", _ANY), EndpointSpec),
    (("links", _ANY, "impair"), ImpairSpec),
    (("links", _ANY, "impair", _ANY), ImpairSpec),
)

# What each field holds, in the words an error should use.
_FIELD_HINTS: dict[str, str] = {
    "name": "a lab name like pair",
    "nodes": "a mapping of node names to nodes, like h1: {kind: kernel}",
    "links": "a list of links, each with endpoints and a subnet",
    "kind": "kernel or pystack",
    "gateway": "a gateway address like 10.0.1.1",
    "routes": "a list of routes like {to: default, via: 10.0.1.1}",
    "sysctls": "a mapping of sysctl names to values, like net.ipv4.ip_forward: 1",
    "apps": "a list of apps like {app: echo, port: 7}",
    "offload": "true or false",
    "process": "true or false",
    "workers": f"a worker count from {WORKERS.describe()}",
    "python": "cpython or pypy",
    "app": "echo, discard, source or http",
    "port": f"a port number from {PORT.describe()}",
    "bytes": f"a byte count from {BYTE_COUNT.describe()} (1 TiB)",
    "to": "default or a subnet like 10.0.2.0/24",
    "via": "a gateway address like 10.0.1.1",
    "endpoints": "a list of at least 2 endpoints like [h1:eth0, s1:eth0]",
    "node": "a node name like h1",
    "interface": "an interface name like eth0",
    "addr": "an address like 10.0.0.5/24",
    "subnet": "a subnet like 10.0.0.0/24",
    "mtu": f"an MTU from {MTU.describe()}",
    "impair": "impairments like {delay: 10ms, loss: 1%}, or per direction {h1->s1: {delay: 10ms}}",
}

_TYPE_WORDS: dict[str, str] = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "float_type": "a number",
}


def schema_error(exc: ValidationError, lines: SourceMap) -> TopologyError:
    """The earliest (by line) of pydantic's errors, as a `TopologyError`; the rest ride along."""
    errors = [_one_error(detail, lines) for detail in exc.errors()]
    # By line; on one line an unknown key first: "nmae: x" is better told as a typo than as "name missing".
    errors.sort(key=lambda error: (error.line or 0, "unknown key" not in error.message))
    first = errors[0]
    first.more = tuple(str(error) for error in errors[1:])
    return first


def _one_error(detail: Any, lines: SourceMap) -> TopologyError:
    loc = tuple(detail["loc"])
    path: FieldPath = tuple(part for part in loc if part not in _TAGS)
    kind = detail["type"]
    # The schema field the error is about; "" when the last part is a user's name (a node called
    # "port") or a list index, so that no field's hint is borrowed by accident.
    field = path[-1] if path and isinstance(path[-1], str) and _model_at(path[:-1]) else ""
    value = detail.get("input")
    if kind == "missing":
        hint = _FIELD_HINTS.get(field, "a value")
        return _at_parent(lines, path, f"expected {hint}, got nothing")
    if kind == "extra_forbidden":
        return lines.error(path, _unknown_key(path, field), key=True)
    if PER_DIRECTION in loc and kind == "model_type" and DIRECTION_ARROW not in field:
        message = (
            f"expected a direction like h1->s1 (impairments for both directions and per direction "
            f"cannot be mixed), got {format_value(field)}"
        )
        return lines.error(path, message, key=True)
    return lines.error(path, f"{_expected(kind, field, detail)}, got {format_value(value)}")


def _at_parent(lines: SourceMap, path: FieldPath, message: str) -> TopologyError:
    """A missing key is reported at its would-be place, on the line of the mapping that lacks it."""
    return TopologyError(lines.source, lines.line(path[:-1], key=True), format_path(path), message)


def _expected(kind: str, field: str, detail: Any) -> str:
    ctx = detail.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", detail["msg"]))
    if kind == "literal_error":
        return "expected " + str(ctx.get("expected", "")).replace("'", "")
    if kind == "too_short" and field in _FIELD_HINTS:
        return f"expected {_FIELD_HINTS[field]}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} items"
    if field in _FIELD_HINTS and (kind in _TYPE_WORDS or kind.startswith(("greater_than", "less_than"))):
        return f"expected {_FIELD_HINTS[field]}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}"
    return "expected " + detail["msg"][:1].lower() + detail["msg"][1:]


def _unknown_key(path: FieldPath, key: str) -> str:
    allowed = sorted(_model_at(path[:-1]).model_fields) if _model_at(path[:-1]) else []
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"expected one of {', '.join(allowed)}, got unknown key {key!r}{hint}"


def _model_at(path: FieldPath) -> type[BaseModel] | None:
    for shape, model in _MODEL_AT:
        if len(shape) == len(path) and all(s is _ANY or s == p for s, p in zip(shape, path, strict=True)):
            return model
    return None
