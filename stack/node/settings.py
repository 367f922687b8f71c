"""The node settings file `lab up` writes (`<state dir>/nodes/<node>.json`, schema version 1), parsed here.

The stack never imports `lab`: this module reads the JSON itself and checks every field it uses, so a bad
file ends the process with one line naming the file, the field and the value (exit 2) before anything
is opened. Impairments arrive in the topology's units (ms, percent, Mbit/s) and leave as
`stack.devices.impairment.Impairment` (seconds, fractions, bit/s). Every number must lie in the range
`stack.ranges` gives it, the same the topology loader and the control socket hold it to.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.compat import SLOTS
from stack.devices.impairment import Impairment
from stack.node.apps import APP_NAMES
from stack.node.paths import control_socket_path, programs_socket_path
from stack.ranges import BYTE_COUNT, DELAY_MS, JITTER_MS, MTU, PERCENT, PORT, RATE_MBIT, WORKERS, Range

SCHEMA_VERSION = 1
IMPAIRMENT_RANGES: dict[str, Range] = {
    "delay_ms": DELAY_MS, "jitter_ms": JITTER_MS, "loss_pct": PERCENT, "duplicate_pct": PERCENT,
    "reorder_pct": PERCENT, "corrupt_pct": PERCENT, "rate_mbit": RATE_MBIT,
}


class SettingsError(ValueError):
    """The settings file is unreadable or a field is wrong; the message is one line."""


@dataclass(frozen=True, **SLOTS)
class AppSettings:
    app: str
    port: int
    bytes: int | None = None


@dataclass(frozen=True, **SLOTS)
class NodeSettings:
    lab: str
    node: str
    namespace: str
    tap: str
    address: str  # "a.b.c.d/len"
    mac: str
    mtu: int
    state_dir: Path
    offload: bool = True
    process: bool = True
    workers: int = 1  # worker processes, each with its own Host on its own queue of the TAP
    gateway: str | None = None
    routes: tuple[tuple[str, str], ...] = ()
    apps: tuple[AppSettings, ...] = ()
    egress: Impairment = field(default_factory=Impairment)
    ingress: Impairment = field(default_factory=Impairment)
    source: Path | None = None

    @property
    def control_socket(self) -> Path:
        return control_socket_path(self.state_dir, self.node)

    @property
    def programs_socket(self) -> Path:
        return programs_socket_path(self.state_dir, self.node)

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


def load_settings(path: str | Path) -> NodeSettings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    return parse_settings(data, path)


def parse_settings(data: Any, source: Path | str = "<settings>") -> NodeSettings:
    """Check and convert the parsed JSON; SettingsError names the first wrong field."""
    reader = _Fields(data, str(source))
    version = reader.get("version", int, default=SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        reader.fail("version", version, f"this stack reads schema version {SCHEMA_VERSION}")
    interface = _Fields(reader.get("interface", dict), str(source), "interface.")
    address = interface.get("address", str)
    try:
        ipaddress.IPv4Interface(address)
    except ValueError:
        interface.fail("address", address, "not an IPv4 address/prefix")
    mtu = interface.get("mtu", int, default=1500)
    if mtu not in MTU:
        interface.fail("mtu", mtu, f"outside {MTU.describe()}")
    gateway = reader.get("gateway", str, default=None)
    if gateway is not None:
        _check_ip(reader, "gateway", gateway)
    routes = []
    for index, entry in enumerate(reader.get("routes", list, default=[])):
        route = _Fields(entry, str(source), f"routes[{index}].")
        destination = route.get("destination", str)
        try:
            ipaddress.IPv4Network(destination)
        except ValueError:
            route.fail("destination", destination, "not an IPv4 network")
        via = route.get("gateway", str)
        _check_ip(route, "gateway", via)
        routes.append((destination, via))
    apps = []
    ports: set[int] = set()
    for index, entry in enumerate(reader.get("apps", list, default=[])):
        app = _Fields(entry, str(source), f"apps[{index}].")
        name = app.get("app", str)
        if name not in APP_NAMES:
            app.fail("app", name, f"choose one of {', '.join(APP_NAMES)}")
        port = app.get("port", int)
        if port not in PORT:
            app.fail("port", port, f"outside {PORT.describe()}")
        if port in ports:
            app.fail("port", port, "two apps on one port")
        ports.add(port)
        size = app.get("bytes", int, default=None)
        if size is not None and size not in BYTE_COUNT:
            app.fail("bytes", size, f"outside {BYTE_COUNT.describe()}")
        apps.append(AppSettings(name, port, size))
    workers = reader.get("workers", int, default=1)
    if workers not in WORKERS:
        reader.fail("workers", workers, f"outside {WORKERS.describe()}")
    return NodeSettings(
        lab=reader.get("lab", str), node=reader.get("node", str), namespace=reader.get("namespace", str),
        tap=reader.get("tap", str), address=address, mac=interface.get("mac", str), mtu=mtu,
        state_dir=Path(reader.get("state_dir", str)), offload=reader.get("offload", bool, default=True),
        process=reader.get("process", bool, default=True), workers=workers,
        gateway=gateway, routes=tuple(routes),
        apps=tuple(apps), egress=_impairment(interface, "egress"), ingress=_impairment(interface, "ingress"),
        source=Path(source) if not isinstance(source, Path) else source,
    )


def _check_ip(reader: _Fields, name: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        reader.fail(name, value, "not an IPv4 address")


def _impairment(interface: _Fields, direction: str) -> Impairment:
    raw = interface.get(direction, dict, default=None)
    if raw is None:
        return Impairment()
    return impairment_from_json(raw, interface.source, f"{interface.prefix}{direction}.")


def impairment_from_json(raw: Any, source: str, prefix: str = "") -> Impairment:
    """One direction's impairment in the topology's units (`IMPAIRMENT_RANGES`: ms, percent, Mbit/s),
    as the settings files and the `impair` control command carry it; SettingsError names a bad field."""
    fields = _Fields(raw, source, prefix)
    unknown = sorted(set(fields.data) - set(IMPAIRMENT_RANGES))
    if unknown:
        fields.fail(unknown[0], fields.data[unknown[0]],
                    f"unknown field (known: {', '.join(IMPAIRMENT_RANGES)})")
    values = {}
    for name, limits in IMPAIRMENT_RANGES.items():
        value = fields.get(name, (int, float), default=None)
        if value is not None and value not in limits:
            fields.fail(name, value, f"outside {limits.describe()}")
        values[name] = value
    if (values["jitter_ms"] or 0) > (values["delay_ms"] or 0):
        fields.fail("jitter_ms", values["jitter_ms"], "larger than delay_ms, the delay it varies")
    rate = values["rate_mbit"]
    return Impairment(
        delay=(values["delay_ms"] or 0) / 1000, jitter=(values["jitter_ms"] or 0) / 1000,
        loss=(values["loss_pct"] or 0) / 100, duplicate=(values["duplicate_pct"] or 0) / 100,
        reorder=(values["reorder_pct"] or 0) / 100, corrupt=(values["corrupt_pct"] or 0) / 100,
        rate_bps=None if rate is None else rate * 1e6,
    )


def impairment_to_json(impairment: Impairment) -> dict[str, float | None]:
    """The inverse of `impairment_from_json` (what `show` answers)."""
    def scaled(value: float, factor: float) -> float:
        return round(value * factor, 9)  # 0.07 s is 70 ms, not 70.00000000000001

    return {"delay_ms": scaled(impairment.delay, 1000), "jitter_ms": scaled(impairment.jitter, 1000),
            "loss_pct": scaled(impairment.loss, 100), "duplicate_pct": scaled(impairment.duplicate, 100),
            "reorder_pct": scaled(impairment.reorder, 100), "corrupt_pct": scaled(impairment.corrupt, 100),
            "rate_mbit": None if impairment.rate_bps is None else scaled(impairment.rate_bps, 1e-6)}


_MISSING = object()


class _Fields:
    """Typed access to one JSON object with errors naming file and dotted field."""

    def __init__(self, data: Any, source: str, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(data, dict):
            raise SettingsError(f"{source}: {prefix.rstrip('.') or 'settings'}: expected an object, "
                                f"got {type(data).__name__}")
        self.data = data

    def fail(self, name: str, value: object, why: str) -> None:
        raise SettingsError(f"{self.source}: field {self.prefix}{name}: {value!r}: {why}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                raise SettingsError(f"{self.source}: field {self.prefix}{name}: missing")
            return default
        bad_bool = isinstance(value, bool) and kind is not bool
        if bad_bool or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(name, value, f"expected {names}")
        return value
