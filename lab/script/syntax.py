"""Reading packetdrill's syntax into `lab.script.model` events.

One event per line: a timing, then a system call (``accept(3, ..., ...) = 4``), an inbound ``<`` or
expected outbound ``>`` segment (``> S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>``), an ICMP error
(``< icmp unreachable frag_needed mtu 1200``) or a backtick shell line. ``//`` and ``/* */`` are
comments. Whatever this reader does not know is an error naming the file:line and the text, never
skipped: a script that silently loses a line would pass without testing it.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.script.model import Arg, Event, Icmp, Option, Packet, Script, Segment, Shell, Syscall, Timing, Where

MAX_SCRIPT_BYTES = 1 << 20
MAX_EVENTS = 10_000
MAX_TIME = 3600.0
SYSCALLS = frozenset({"socket", "setsockopt", "getsockopt", "fcntl", "bind", "listen", "accept", "connect",
                      "write", "send", "read", "recv", "shutdown", "close", "poll"})
FLAG_LETTERS = frozenset("SFRPEWU.")
ICMP_TYPES = {"unreachable": {"net_unreachable", "host_unreachable", "protocol_unreachable",
                              "port_unreachable", "frag_needed"},
              "time_exceeded": {"ttl_exceeded"}}


class ScriptError(ValueError):
    """A script this reader cannot play: the message starts with file:line."""

    def __init__(self, where: Where, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


_TIME = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_TIMING = re.compile(rf"^\s*(?:(?P<any>\*)|(?P<start>{_TIME})(?:(?P<sep>~|\.\.\.)(?P<end>{_TIME}))?)\s+")
_SEQ = re.compile(r"^(\d+):(\d+)\((\d+)\)$")
_OPTION_TOKEN = re.compile(r"\s+")
_ERRNO = re.compile(r"^-1\s+(E[A-Z0-9]+)(?:\s*\(.*\))?\s*$")
_RESULT = re.compile(r"^(-?\d+|\.\.\.)(?:\s*\(.*\))?\s*$")
_TOLERANCE = re.compile(r"^--tolerance_usecs=(\d+)$")


def parse_file(path: str | Path) -> Script:
    """The script at `path` (ScriptError on anything unreadable or unsupported)."""
    path = Path(path)
    where = Where(str(path), 0)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCRIPT_BYTES + 1)
    except OSError as exc:
        raise ScriptError(where, f"cannot read the script: {exc.strerror}") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptError(where, f"script is over {MAX_SCRIPT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(where, f"not UTF-8 text (byte {exc.start})") from None
    return parse_text(text, str(path))


def parse_text(text: str, file: str = "<script>") -> Script:
    script = Script(file)
    for number, line in enumerate(_strip_comments(text, file), start=1):
        line = line.strip()
        if not line:
            continue
        where = Where(file, number)
        tolerance = _TOLERANCE.match(line)
        if tolerance:
            script.tolerance = int(tolerance.group(1)) / 1e6
            continue
        if line.startswith("--"):
            raise ScriptError(where, f"unsupported option line {line!r} (only --tolerance_usecs=N)")
        if len(script.events) >= MAX_EVENTS:
            raise ScriptError(where, f"more than {MAX_EVENTS} events")
        script.events.append(parse_line(line, where))
    if not script.events:
        raise ScriptError(Where(file, 1), "the script has no events")
    return script


def _strip_comments(text: str, file: str) -> list[str]:
    """The lines with comments blanked, keeping line numbers (a ``/* */`` may span lines)."""
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        kept = []
        i = 0
        in_backticks = False
        while i < len(line):
            if in_block:
                close = line.find("*/", i)
                if close < 0:
                    i = len(line)
                    break
                in_block = False
                i = close + 2
                continue
            char = line[i]
            if char == "`":
                in_backticks = not in_backticks
            if not in_backticks and line.startswith("//", i):
                break
            if not in_backticks and line.startswith("/*", i):
                in_block = True
                i += 2
                continue
            kept.append(char)
            i += 1
        out.append("".join(kept))
    if in_block:
        raise ScriptError(Where(file, len(out)), "a /* comment is never closed")
    return out


def parse_line(line: str, where: Where) -> Event:
    match = _TIMING.match(line + " ")
    if not match:
        raise ScriptError(where, f"expected a time (0, +.1, 0.100, +0~+.1, *) at the start of {line!r}")
    timing = _timing(match, where)
    rest = line[match.end():].strip() if match.end() <= len(line) else ""
    if not rest:
        raise ScriptError(where, "a time with nothing after it")
    if rest.startswith("`"):
        if not rest.endswith("`") or len(rest) < 2:
            raise ScriptError(where, "a shell line must end with a backtick")
        return Shell(where, timing, rest[1:-1].strip())
    if rest[0] in "<>":
        return _packet(rest[0] == "<", rest[1:].strip(), where, timing)
    return _syscall(rest, where, timing)


def _time(text: str, where: Where) -> tuple[float, bool]:
    relative = text.startswith("+")
    value = float(text.lstrip("+"))
    if text.startswith("-") or not 0 <= value <= MAX_TIME:
        raise ScriptError(where, f"time {text} is outside 0..{MAX_TIME:g} s")
    return value, relative


def _timing(match: re.Match[str], where: Where) -> Timing:
    if match.group("any"):
        return Timing(anytime=True)
    start, relative = _time(match.group("start"), where)
    if match.group("end") is None:
        return Timing(start, relative=relative)
    end, end_relative = _time(match.group("end"), where)
    if match.group("sep") == "...":
        return Timing(start, relative=relative, blocking_end=end, end_relative=end_relative)
    return Timing(start, end, relative=relative, end_relative=end_relative)


# -- segments ---------------------------------------------------------------------------------------

def _packet(inbound: bool, text: str, where: Where, timing: Timing) -> Packet:
    if text.startswith("icmp"):
        if not inbound:
            raise ScriptError(where, "expected outbound ICMP (> icmp) is not supported; only inbound < icmp")
        return Packet(where, timing, inbound, icmp=_icmp(text[4:].strip(), where))
    segment = _segment(text, where)
    if inbound and segment.options is None:
        raise ScriptError(where, "<...> (any options) is for expected segments; "
                                 "an inbound one needs its options")
    return Packet(where, timing, inbound, segment=segment)


def _segment(text: str, where: Where, quoted: bool = False) -> Segment:
    options: tuple[Option, ...] | None = ()
    open_at = text.find("<")
    if open_at >= 0:
        if not text.endswith(">"):
            raise ScriptError(where, f"options must end the line with '>': {text!r}")
        options = _options(text[open_at + 1:-1].strip(), where)
        text = text[:open_at].strip()
    words = text.split()
    if len(words) < 2:
        raise ScriptError(where, f"a segment needs flags and seq start:end(length), got {text!r}")
    flags = words[0]
    bad = set(flags) - FLAG_LETTERS
    if bad:
        raise ScriptError(where, f"flags {flags!r}: unknown letter(s) {''.join(sorted(bad))} "
                                 "(allowed S F R P E W U and . for ACK)")
    seq = _SEQ.match(words[1])
    if not seq:
        raise ScriptError(where, f"seq {words[1]!r}: expected start:end(length), e.g. 1:1001(1000)")
    start, end, length = (int(part) for part in seq.groups())
    for value in (start, end):
        if value >= 1 << 32:
            raise ScriptError(where, f"seq {value} is outside 0..4294967295")
    if (end - start) % (1 << 32) != length:
        raise ScriptError(where, f"seq {words[1]}: end - start is {end - start}, not the length {length}")
    if length > 65535:
        raise ScriptError(where, f"length {length} is outside 0..65535")
    fields: dict[str, int] = {}
    rest = words[2:]
    while rest:
        name = rest.pop(0)
        if name not in ("ack", "win", "urg"):
            raise ScriptError(where, f"unsupported segment field {name!r} (ack N, win N, urg N, <options>)")
        if not rest or not rest[0].isdigit():
            raise ScriptError(where, f"{name} needs a number")
        value = int(rest.pop(0))
        limit = (1 << 32) - 1 if name == "ack" else 65535
        if value > limit:
            raise ScriptError(where, f"{name} {value} is outside 0..{limit}")
        fields[name] = value
    if "ack" in fields and "." not in flags:
        raise ScriptError(where, f"ack {fields['ack']} given but the flags {flags!r} have no '.' (ACK)")
    if "." in flags and "ack" not in fields and "R" not in flags and not quoted:
        raise ScriptError(where, f"flags {flags!r} include ACK but no 'ack N' is given")
    return Segment(flags, start, end, length, fields.get("ack"), fields.get("win"), options,
                   fields.get("urg"))


def _options(text: str, where: Where) -> tuple[Option, ...] | None:
    if text == "...":
        return None
    options = []
    for part in (piece.strip() for piece in text.split(",")):
        words = part.split()
        if not words:
            raise ScriptError(where, "an empty TCP option between commas")
        options.append(_option(words, where))
    return tuple(options)


def _option(words: list[str], where: Where) -> Option:
    kind = words[0]
    args = words[1:]

    def number(text: str, limit: int) -> int:
        if not text.isdigit() or int(text) > limit:
            raise ScriptError(where, f"option {kind}: value {text!r} is outside 0..{limit}")
        return int(text)

    if kind in ("nop", "eol", "sackOK") and not args:
        return Option(kind)
    if kind == "mss" and len(args) == 1:
        return Option(kind, (number(args[0], 65535),))
    if kind == "wscale" and len(args) == 1:
        return Option(kind, (number(args[0], 255),))
    if kind == "TS" and len(args) == 4 and args[0] == "val" and args[2] == "ecr":
        return Option(kind, (number(args[1], (1 << 32) - 1), number(args[3], (1 << 32) - 1)))
    if kind == "sack" and 1 <= len(args) <= 4:
        values: list[int] = []
        for block in args:
            left, colon, right = block.partition(":")
            if not colon:
                raise ScriptError(where, f"sack block {block!r}: expected left:right")
            values += [number(left, (1 << 32) - 1), number(right, (1 << 32) - 1)]
        return Option(kind, tuple(values))
    raise ScriptError(where, f"unsupported TCP option {' '.join(words)!r} (mss N, sackOK, TS val N ecr N, "
                             "nop, eol, wscale N, sack a:b ...)")


def _icmp(text: str, where: Where) -> Icmp:
    words = text.split()
    if len(words) < 2 or words[0] not in ICMP_TYPES or words[1] not in ICMP_TYPES[words[0]]:
        allowed = "; ".join(f"{kind} {'|'.join(sorted(codes))}" for kind, codes in ICMP_TYPES.items())
        raise ScriptError(where, f"unsupported ICMP {text!r} (allowed: {allowed})")
    rest = words[2:]
    mtu = None
    if rest[:1] == ["mtu"]:
        if len(rest) < 2 or not rest[1].isdigit() or not 68 <= int(rest[1]) <= 65535:
            raise ScriptError(where, "icmp mtu needs a number in 68..65535")
        mtu = int(rest[1])
        rest = rest[2:]
    if words[1] == "frag_needed" and mtu is None:
        raise ScriptError(where, "icmp unreachable frag_needed needs 'mtu N'")
    quoted = None
    if rest:
        inner = " ".join(rest)
        if not (inner.startswith("[") and inner.endswith("]")):
            raise ScriptError(where, f"the quoted segment must be in [ ]: {inner!r}")
        quoted = _segment(". " + inner[1:-1].strip(), where, quoted=True)
    return Icmp(words[0], words[1], mtu, quoted)


# -- system calls -------------------------------------------------------------------------------------

def _syscall(text: str, where: Where, timing: Timing) -> Syscall:
    name_match = re.match(r"^([a-z_][a-z0-9_]*)\s*\(", text)
    if not name_match:
        raise ScriptError(where, f"expected a system call, '<', '>' or a `shell line`, got {text!r}")
    name = name_match.group(1)
    if name not in SYSCALLS:
        supported = ", ".join(sorted(SYSCALLS))
        raise ScriptError(where, f"unsupported system call {name!r} (supported: {supported})")
    reader = _ArgReader(text, name_match.end(), where)
    args = reader.arguments()
    tail = text[reader.position:].strip()
    if not tail.startswith("="):
        raise ScriptError(where, f"{name}(...) needs '= RESULT', got {tail!r}")
    tail = tail[1:].strip()
    errno_match = _ERRNO.match(tail)
    if errno_match:
        return Syscall(where, timing, name, args, -1, errno_match.group(1))
    result = _RESULT.match(tail)
    if not result:
        raise ScriptError(where, f"result {tail!r}: expected a number, '...' or '-1 ERRNO (text)'")
    value = result.group(1)
    if value == "-1":
        raise ScriptError(where, "a result of -1 needs its errno, e.g. '-1 ECONNREFUSED'")
    return Syscall(where, timing, name, args, None if value == "..." else int(value))


class _ArgReader:
    """A small recursive-descent reader for call arguments: ints, NAMES|OR'ed, ..., "strings", [lists],
    {structs}."""

    def __init__(self, text: str, position: int, where: Where) -> None:
        self.text = text
        self.position = position
        self.where = where

    def error(self, message: str) -> ScriptError:
        return ScriptError(self.where, f"{message} at column {self.position + 1} of {self.text!r}")

    def skip(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.position] if self.position < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.position += 1

    def arguments(self) -> tuple[Arg, ...]:
        return tuple(self.sequence(")"))

    def sequence(self, closing: str) -> list[Arg]:
        items: list[Arg] = []
        if self.peek() == closing:
            self.position += 1
            return items
        while True:
            items.append(self.value())
            char = self.peek()
            self.position += 1
            if char == closing:
                return items
            if char != ",":
                self.position -= 1
                raise self.error(f"expected ',' or {closing!r}")

    def value(self) -> Arg:
        char = self.peek()
        text = self.text
        if text.startswith("...", self.position):
            self.position += 3
            return Arg("ellipsis")
        if char == "[":
            self.position += 1
            return Arg("list", tuple(self.sequence("]")))
        if char == "{":
            self.position += 1
            return Arg("struct", self.struct())
        if char == '"':
            end = text.find('"', self.position + 1)
            if end < 0:
                raise self.error("a string is never closed")
            value = text[self.position + 1:end]
            self.position = end + 1
            return Arg("string", value)
        match = re.compile(r"-?\d+|[A-Za-z_][A-Za-z0-9_]*(?:\s*\|\s*[A-Za-z_][A-Za-z0-9_]*)*").match(
            text, self.position)
        if not match:
            raise self.error("expected an argument")
        self.position = match.end()
        word = match.group(0)
        if word.lstrip("-").isdigit():
            return Arg("int", int(word))
        return Arg("names", tuple(part.strip() for part in word.split("|")))

    def struct(self) -> dict[str, Arg]:
        fields: dict[str, Arg] = {}
        if self.peek() == "}":
            self.position += 1
            return fields
        while True:
            match = re.compile(r"\s*([a-z_]+)\s*=").match(self.text, self.position)
            if not match:
                raise self.error("expected field=value in { }")
            self.position = match.end()
            fields[match.group(1)] = self.value()
            char = self.peek()
            self.position += 1
            if char == "}":
                return fields
            if char != ",":
                self.position -= 1
                raise self.error("expected ',' or '}'")
