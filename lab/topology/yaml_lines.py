"""YAML that remembers where each key and value came from.

PyYAML's ``safe_load`` throws line numbers away. We compose the node tree instead (every node
carries a ``start_mark``) and build the plain data ourselves, recording for each path in the
document the line of its key and of its value. Later stages (schema, resolution) report an error
by path and `SourceMap` turns the path back into a line. Duplicate keys, which ``safe_load`` would
silently resolve by keeping the last one, are an error here: a file must mean what it says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from lab.topology.errors import FieldPath, TopologyError, format_path

# libyaml's parser when PyYAML was built with it (about 5x faster on large chains); marks are the same.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class SourceMap:
    """Lines (1-based) of every key and value in one YAML document, by path."""

    source: str
    key_lines: dict[FieldPath, int] = field(default_factory=dict)
    value_lines: dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath, *, key: bool = False) -> int | None:
        """The line of ``path`` (its key when ``key``), else of its nearest recorded ancestor."""
        probe = tuple(path)
        while probe:
            if key and probe in self.key_lines:
                return self.key_lines[probe]
            if probe in self.value_lines:  # also list items, which have no key
                return self.value_lines[probe]
            if probe in self.key_lines:
                return self.key_lines[probe]
            probe = probe[:-1]
        return self.value_lines.get((), None)  # data that never was YAML has no lines

    def error(self, path: FieldPath, message: str, *, key: bool = False) -> TopologyError:
        return TopologyError(self.source, self.line(path, key=key), format_path(path), message)


def load_yaml_with_lines(text: str, source: str) -> tuple[object, SourceMap]:
    """Parse one YAML document into plain data (dict/list/scalars) plus its `SourceMap`."""
    lines = SourceMap(source)
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    except yaml.YAMLError as exc:  # errors without a position (rare: e.g. bad encoding)
        raise TopologyError(source, 1, "", f"YAML: {exc}") from None
    if node is None:
        return None, lines
    builder = _Builder(lines)
    try:
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    return data, lines


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, source: str) -> TopologyError:
    if _COMPOSER is not yaml.SafeLoader:  # libyaml's messages omit the culprit ("found character '\t'")
        try:
            yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as pure:
            exc = pure
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    context = exc.context or ""
    if exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        context += f" (from line {exc.context_mark.line + 1})"
    what = " ".join(part for part in (context, exc.problem or "") if part)
    return TopologyError(source, line, "", f"YAML: {what}")


class _Builder:
    """Turns composed nodes into Python data, filling the `SourceMap` on the way."""

    def __init__(self, lines: SourceMap) -> None:
        self.lines = lines
        self.constructor = yaml.SafeLoader("")  # its scalar constructors (int, bool, null, ...)
        self.open_nodes: set[int] = set()  # ids of collections being built, to refuse `&a [*a]`

    def build(self, node: yaml.Node, path: FieldPath) -> object:
        self.lines.value_lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return self.constructor.construct_object(node, deep=True)
        if id(node) in self.open_nodes:
            raise TopologyError(
                self.lines.source,
                node.start_mark.line + 1,
                format_path(path),
                "expected data, got an alias that contains itself",
            )
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        finally:
            self.open_nodes.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, object]:
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        self.constructor.flatten_mapping(node)  # resolve `<<: *anchor` merge keys in place
        merged = len(node.value) - explicit  # merged entries come first; explicit keys may override them
        out: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for position, (key_node, value_node) in enumerate(node.value):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise TopologyError(
                    self.lines.source,
                    line,
                    format_path(path),
                    "expected a plain key, got a nested mapping or list as a key",
                )
            key = key_node.value  # keys are names: keep their text (`on:` stays "on", not True)
            if key in first_line and position >= merged and first_line[key] >= 0:
                raise TopologyError(
                    self.lines.source,
                    line,
                    format_path((*path, key)),
                    f"expected each key once, got a duplicate (first at line {first_line[key]})",
                )
            first_line[key] = line if position >= merged else -1
            self.lines.key_lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        return out
