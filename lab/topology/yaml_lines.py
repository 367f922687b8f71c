"""YAML that remembers where each key and value came from, read within bounds.

PyYAML's ``safe_load`` throws line numbers away. We build the plain data ourselves from the
parser's events (each carries a ``start_mark``), recording for each path in the document the line
of its key and of its value. Later stages (schema, resolution) report an error by path and
`SourceMap` turns the path back into a line. Duplicate keys, which ``safe_load`` would silently
resolve by keeping the last one, are an error here: a file must mean what it says.

Bounds. The file may be anything, so nothing here grows with what an attacker writes. A first pass
over the events counts them (keys, scalars, collections, aliases) and refuses more than
`MAX_YAML_VALUES` before anything is built; a second builds the data, and as it is built:
- the values are counted again, an alias now counting as all that its
  anchor holds, and more than `MAX_YAML_VALUES` are refused; so a "billion laughs" (a kilobyte of
  aliases of aliases that would expand to 10^9 values) is refused at the alias that crosses the
  bound, in milliseconds, and an alias costs no more than what it adds (its value is shared);
- collections nest at most `MAX_YAML_DEPTH` deep, aliases included (libyaml gives up at 1000);
- scalars become values through PyYAML's safe constructors only, a number of at most
  `MAX_NUMBER_CHARS` characters (YAML 1.1's sexagesimal ``1:2:3:...`` costs quadratic time).
Errors about YAML itself start with ``not a YAML topology`` and give line and column and a reason in
libyaml's words, never a quote of the file (``lab up /etc/shadow`` must not print it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from lab.topology.errors import NOT_A_TOPOLOGY, FieldPath, TopologyError, format_path

# libyaml's parser when PyYAML was built with it (PyPI's wheels are): about 5x faster on large chains,
# and it stops nesting at 1000 levels, where PyYAML's own scanner looks ahead over every open bracket
# (quadratic: "[" * 100000 takes minutes). Marks are the same.
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_YAML_DEPTH = 32  # nested collections; a topology needs 6 (links[0].impair["h1->s1"].delay)
MAX_YAML_VALUES = 200_000  # keys, values and collections, aliases counted as what they repeat
MAX_NUMBER_CHARS = 100

_STR_TAG = "tag:yaml.org,2002:str"
_VALUE_TAG = "tag:yaml.org,2002:value"  # a plain `=`, which YAML 1.1 reserves and PyYAML cannot construct
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")
)
_NUMBER_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "float", "timestamp"))
# A quoted fragment of a PyYAML message: kept only when it names a token ('<block end>') or is one
# punctuation character (',', ':'); anything else (an alias, a tag, a character of the file) goes.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_SAFE_QUOTED = re.compile(r"""['"](?:<[a-z ]+>|[^\w\s])['"]""")


@dataclass
class SourceMap:
    """Lines (1-based) of every key and value in one YAML document, by path.

    A value that came from an alias (or a merge key) has no lines of its own: ``aliases`` sends its
    path to the anchor's (the merged entry's), so an error inside it points where it was written,
    and an alias costs one entry here however much it repeats.
    """

    source: str
    key_lines: dict[FieldPath, int] = field(default_factory=dict)
    value_lines: dict[FieldPath, int] = field(default_factory=dict)
    aliases: dict[FieldPath, FieldPath] = field(default_factory=dict)

    def line(self, path: FieldPath, *, key: bool = False) -> int | None:
        """The line of ``path`` (its key when ``key``), else of its nearest recorded ancestor."""
        probe = tuple(path)
        while probe:
            if key and probe in self.key_lines:
                return self.key_lines[probe]
            if probe in self.aliases:  # anchors come before their aliases: this ends
                return self.line((*self.aliases[probe], *path[len(probe):]), key=key)
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
    reader = _Reader(SourceMap(source))
    try:
        _count_events(text, source)
        for event in yaml.parse(text, Loader=_PARSER):
            reader.feed(event)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    except yaml.YAMLError as exc:  # the reader's: a control character, or text that is not Unicode
        raise _reader_error(exc, text, source) from None
    return reader.result()


def _count_events(text: str, source: str) -> None:
    """Refuse more than `MAX_YAML_VALUES` values before building any: parsing costs a tenth of building."""
    values = 0
    for event in yaml.parse(text, Loader=_PARSER):
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_YAML_VALUES:
                expected = f"expected at most {MAX_YAML_VALUES} YAML values"
                raise _bound_error(source, event.start_mark, expected)


@dataclass
class _Anchor:
    """A finished anchored value: what an alias of it repeats, and what that costs."""

    value: object
    path: FieldPath
    values: int  # how many values it holds (itself included)
    levels: int  # how many levels of collections (0 for a scalar)


@dataclass
class _Collection:
    """A mapping or a sequence being read."""

    path: FieldPath
    mark: yaml.Mark
    anchor: str | None
    is_mapping: bool
    first_value: int  # `_Reader.values` when it started
    items: list[object] = field(default_factory=list)
    entries: dict[str, object] = field(default_factory=dict)
    key: str | None = None  # the key whose value comes next
    merging: bool = False  # that key is `<<`
    key_lines: dict[str, int] = field(default_factory=dict)
    merges: list[tuple[object, FieldPath, yaml.Mark]] = field(default_factory=list)
    levels: int = 1


class _Reader:
    """Builds the data from parser events, with the bounds of the module docstring."""

    def __init__(self, lines: SourceMap) -> None:
        self.lines = lines
        self.source = lines.source
        self.constructor = yaml.SafeLoader("")  # its scalar constructors (int, bool, null, ...)
        self.resolver = yaml.resolver.Resolver()  # plain scalars' implicit tags (YAML 1.1, as safe_load)
        self.open: list[_Collection] = []
        self.anchors: dict[str, _Anchor | None] = {}  # None: its collection is still being read
        self.values = 0
        self.documents = 0
        self.root: object = None

    def result(self) -> tuple[object, SourceMap]:
        if self.documents == 0:
            self.lines.value_lines[()] = 1  # an empty file: its errors point at its first line
        return self.root, self.lines

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise _bound_error(
                    self.source, event.start_mark, "expected a single document in the stream",
                    "got another document",
                )
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event)
        elif isinstance(event, yaml.CollectionStartEvent):
            self._start(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            self._end()
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)

    # --- the events --------------------------------------------------------------------------------

    def _scalar(self, event: yaml.ScalarEvent) -> None:
        self._count(1, event.start_mark)
        parent = self.open[-1] if self.open else None
        if parent is not None and parent.is_mapping and parent.key is None:
            self._key(parent, event)
            return
        path = self._next_path()
        self._record(path, False, event.start_mark.line + 1)
        value = self._construct(event, path)
        if event.anchor is not None:
            self._define(event.anchor, event.start_mark, _Anchor(value, path, 1, 0))
        self._place(value, 0, path, event.start_mark)

    def _key(self, mapping: _Collection, event: yaml.ScalarEvent) -> None:
        key = event.value  # keys are names: keep their text (`on:` stays "on", not True)
        line = event.start_mark.line + 1
        if event.anchor is not None:
            self._define(event.anchor, event.start_mark, _Anchor(key, (*mapping.path, key), 1, 0))
        if event.tag is None and event.implicit[0] and key == "<<":
            mapping.key, mapping.merging = key, True
            return
        if key in mapping.key_lines:
            raise TopologyError(
                self.source, line, format_path((*mapping.path, key)),
                f"expected each key once, got a duplicate (first at line {mapping.key_lines[key]})",
            )
        mapping.key_lines[key] = line
        mapping.key, mapping.merging = key, False
        self._record((*mapping.path, key), True, line)

    def _start(self, event: yaml.CollectionStartEvent) -> None:
        self._count(1, event.start_mark)
        parent = self.open[-1] if self.open else None
        if parent is not None and parent.is_mapping and parent.key is None:
            raise TopologyError(
                self.source, event.start_mark.line + 1, format_path(parent.path),
                "expected a plain key, got a nested mapping or list as a key",
            )
        if len(self.open) >= MAX_YAML_DEPTH:
            raise _bound_error(
                self.source, event.start_mark, f"expected collections nested at most {MAX_YAML_DEPTH} deep"
            )
        path = self._next_path()
        self._record(path, False, event.start_mark.line + 1)
        if event.anchor is not None:
            self._define(event.anchor, event.start_mark, None)
        self.open.append(_Collection(path, event.start_mark, event.anchor,
                                     isinstance(event, yaml.MappingStartEvent), self.values - 1))

    def _end(self) -> None:
        done = self.open.pop()
        value = self._merged(done) if done.is_mapping else done.items
        if done.anchor is not None:
            self.anchors[done.anchor] = _Anchor(value, done.path, self.values - done.first_value, done.levels)
        self._place(value, done.levels, done.path, done.mark)

    def _alias(self, event: yaml.AliasEvent) -> None:
        parent = self.open[-1] if self.open else None
        if parent is not None and parent.is_mapping and parent.key is None:
            raise TopologyError(
                self.source, event.start_mark.line + 1, format_path(parent.path),
                "expected a plain key, got an alias as a key",
            )
        if event.anchor not in self.anchors:
            raise _bound_error(self.source, event.start_mark,
                               "expected an alias of an anchor defined before it", "got an undefined alias")
        anchor = self.anchors[event.anchor]
        if anchor is None:
            raise _bound_error(self.source, event.start_mark, "expected data",
                               "got an alias that contains itself")
        if len(self.open) + anchor.levels > MAX_YAML_DEPTH:
            raise _bound_error(
                self.source, event.start_mark, f"expected collections nested at most {MAX_YAML_DEPTH} deep",
                "got deeper once its aliases are expanded",
            )
        self._count(anchor.values, event.start_mark, expanded=True)
        path = self._next_path()
        self.lines.aliases[path] = anchor.path
        self._place(anchor.value, anchor.levels, path, event.start_mark)

    # --- helpers -----------------------------------------------------------------------------------

    def _count(self, values: int, mark: yaml.Mark, *, expanded: bool = False) -> None:
        self.values += values
        if self.values > MAX_YAML_VALUES:
            got = ("got more once its aliases are expanded (an alias repeats all that its anchor holds)"
                   if expanded else "got more")
            raise _bound_error(self.source, mark, f"expected at most {MAX_YAML_VALUES} YAML values", got)

    def _define(self, name: str, mark: yaml.Mark, anchor: _Anchor | None) -> None:
        if name in self.anchors:
            raise _bound_error(self.source, mark, "expected each anchor once", "got a duplicate anchor")
        self.anchors[name] = anchor

    def _next_path(self) -> FieldPath:
        if not self.open:
            return ()
        parent = self.open[-1]
        if parent.is_mapping:
            assert parent.key is not None
            return (*parent.path, parent.key)
        return (*parent.path, len(parent.items))

    def _record(self, path: FieldPath, is_key: bool, line: int) -> None:
        (self.lines.key_lines if is_key else self.lines.value_lines)[path] = line

    def _place(self, value: object, levels: int, path: FieldPath, mark: yaml.Mark) -> None:
        if not self.open:
            self.root = value
            return
        parent = self.open[-1]
        parent.levels = max(parent.levels, levels + 1)
        if not parent.is_mapping:
            parent.items.append(value)
            return
        assert parent.key is not None
        if parent.merging:
            parent.merges.append((value, path, mark))
        else:
            parent.entries[parent.key] = value
        parent.key = None

    def _construct(self, event: yaml.ScalarEvent, path: FieldPath) -> object:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            return event.value
        if tag == _VALUE_TAG:
            return event.value
        if tag not in _SCALAR_TAGS:
            raise self._error(event, path, "expected plain YAML values, got a value with a tag (!...)")
        if tag in _NUMBER_TAGS and len(event.value) > MAX_NUMBER_CHARS:
            raise self._error(
                event, path, f"expected a number of at most {MAX_NUMBER_CHARS} characters, "
                f"got {len(event.value)}",
            )
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.constructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            word = {"timestamp": "a date", "binary": "base64 data"}.get(tag.rsplit(":", 1)[-1], "a number")
            raise self._error(event, path, f"expected {word} YAML can read, got one it cannot") from None

    def _error(self, event: yaml.Event, path: FieldPath, message: str) -> TopologyError:
        return TopologyError(self.source, event.start_mark.line + 1, format_path(path), message)

    def _merged(self, mapping: _Collection) -> dict[str, object]:
        """The mapping with its ``<<`` merges applied as PyYAML does: explicit keys win over merged
        ones, and of a list of merged mappings the first wins."""
        if not mapping.merges:
            return mapping.entries
        merged: dict[str, object] = {}
        winner: dict[str, FieldPath] = {}
        for value, path, mark in mapping.merges:
            if isinstance(value, dict):
                sources = [(value, path)]
            elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
                sources = [(item, (*path, index)) for index, item in enumerate(value)]
            else:
                raise _bound_error(self.source, mark, "expected a mapping or a list of mappings after <<",
                                   "got other data")
            for source, source_path in reversed(sources):
                merged.update(source)
                winner.update(dict.fromkeys(source, source_path))
        for key in mapping.entries:
            winner.pop(key, None)
        for key, source_path in winner.items():  # a merged key's lines are those of the entry it came from
            self.lines.aliases[(*mapping.path, key)] = (*source_path, key)
        merged.update(mapping.entries)
        return merged


def _bound_error(source: str, mark: yaml.Mark, expected: str, got: str = "got more") -> TopologyError:
    return TopologyError(
        source, mark.line + 1, "", f"{NOT_A_TOPOLOGY}: {expected}, {got}", column=mark.column + 1
    )


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, source: str) -> TopologyError:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return TopologyError(source, 1, "", f"{NOT_A_TOPOLOGY}: {_unquoted(exc.problem or 'YAML error')}")
    if _character_at(text, mark) == "\t":
        reason = "found a tab where YAML allows only spaces (indent with spaces)"
    else:
        context = exc.context or ""
        if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
            context += f" (from line {exc.context_mark.line + 1})"
        reason = _unquoted(" ".join(part for part in (context, exc.problem or "") if part))
    return TopologyError(source, mark.line + 1, "", f"{NOT_A_TOPOLOGY}: {reason}", column=mark.column + 1)


def _unquoted(message: str) -> str:
    """PyYAML's pure-Python messages quote the file ("found undefined alias 'x'"); libyaml's never do."""
    kept = _QUOTED.sub(lambda match: match[0] if _SAFE_QUOTED.fullmatch(match[0]) else "", message)
    return " ".join(kept.split())


def _character_at(text: str, mark: yaml.Mark) -> str:
    lines = text.split("\n", mark.line + 1)
    if mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return ""
    return lines[mark.line][mark.column]


def _reader_error(exc: yaml.YAMLError, text: str, source: str) -> TopologyError:
    position = getattr(exc, "position", None)
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
    return TopologyError(source, line, "", f"{NOT_A_TOPOLOGY}: found a control character YAML does not allow")
