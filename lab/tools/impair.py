"""`lab impair`: change and show the impairments of a running lab's links, per direction.

Like containerlab's `tools netem` and netlab's `tc`, but for every kind of link the lab builds. Each
direction of a link has one site (`lab.build.wiring.impairment_sites`), and a change goes where the
site says:
- "stack": a link touching a pystack node; the node's stack process swaps the impairment of its TAP
  path (control command `impair`);
- "forwarder": a link between kernel nodes on a kernel without sch_netem; the link's forwarder
  process swaps the direction's impairment (its control command `impair`);
- "netem" (or "tbf"): a kernel with sch_netem; the interface's root qdisc is replaced by a netem qdisc
  over netlink. (This machine's kernel has no sch_netem, so this path is not exercised by the tests
  here; it is the one `lab up` uses, replacing instead of adding.)

A change replaces the whole impairment of the direction (fields not given are clean), as `tc qdisc
replace` does; values are checked exactly as a topology file's (`lab.topology.schema.ImpairSpec`,
`lab.topology.impairments.to_impairment`). The settings file of the process is rewritten too, so a
restarted process comes back with the new impairment, and `<state dir>/impairments.json` keeps every
change (the record `--show` reports for qdiscs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.build.control import StackClient, StackControlError
from lab.build.state import LabError, LabState, lab_lock, write_json_atomic
from lab.build.wiring import ImpairmentSite, Qdisc, Wiring, impairment_sites, plan_wiring, qdisc_parameters
from lab.kernel.netlink import Netlink
from lab.topology.impairments import describe_impairment, to_impairment
from lab.topology.plan import Impairment, LabPlan, impairment_json, plan_from_json
from lab.topology.schema import ImpairSpec
from lab.topology.validation import schema_error
from lab.topology.yaml_lines import SourceMap

DIRECTIONS = ("out", "in", "both")
COMMAND_SOURCE = "lab impair"  # how errors about the command's own values name their source
ANSWER_SECONDS = 5.0


@dataclass(frozen=True)
class RunningLab:
    state: LabState
    plan: LabPlan
    wiring: Wiring
    sites: dict[tuple[str, str, str], ImpairmentSite]


def parse_impairment(values: dict[str, str | None]) -> Impairment:
    """The command's options (`{"delay": "20ms", "loss": None, ...}`) as a plan impairment, checked with
    the topology's own rules; TopologyError (exit 2, one line) names the option and its range."""
    given = {name: value for name, value in values.items() if value is not None}
    lines = SourceMap(COMMAND_SOURCE)
    try:
        spec = ImpairSpec.model_validate(given)
    except ValidationError as exc:
        raise schema_error(exc, lines) from None
    return to_impairment(spec, lines, ())


def running_lab(name: str, root: Path | None = None) -> RunningLab:
    state = LabState.for_lab(name, root)
    record = state.read_plan()
    if record is None or record.get("phase") != "up":
        raise LabError(f"lab {name} is not up")
    plan = plan_from_json(record["plan"])
    wiring = plan_wiring(plan, netem=bool(record.get("netem", True)))
    return RunningLab(state, plan, wiring, impairment_sites(plan, wiring))


def sites_of(lab: RunningLab, endpoint: str, direction: str) -> list[ImpairmentSite]:
    """The sites `NODE:IFACE` names: its outgoing direction, its incoming one, or both."""
    if direction not in DIRECTIONS:
        raise LabError(f"direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    node, _, interface = endpoint.partition(":")
    wanted = ("out", "in") if direction == "both" else (direction,)
    found = [lab.sites.get((node, interface, way)) for way in wanted]
    if any(site is None for site in found):
        known = sorted({f"{n}:{i}" for n, i, _ in lab.sites})
        raise LabError(f"lab {lab.plan.name} has no interface {endpoint!r} on a link "
                       f"(interfaces: {', '.join(known)})")
    return [site for site in found if site is not None]


def change(name: str, endpoint: str, impairment: Impairment, direction: str = "both", *,
           root: Path | None = None) -> list[dict[str, Any]]:
    """Give the chosen direction(s) of `endpoint`'s link `impairment`; what was applied, by site."""
    lab = running_lab(name, root)
    sites = sites_of(lab, endpoint, direction)
    for site in sites:
        _check_changeable(lab, site)
    applied = []
    with lab_lock(lab.state):
        for site in sites:
            _apply(lab, site, impairment)
            _record(lab.state, site, impairment)
            applied.append(_site_json(site, impairment))
    return applied


def show(name: str, *, root: Path | None = None) -> list[dict[str, Any]]:
    """Every direction of every link: who impairs it, how now, and the counters of its process."""
    lab = running_lab(name, root)
    recorded = _recorded(lab.state)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for site in lab.sites.values():
        if (site.link, site.label) in seen:
            continue
        seen.add((site.link, site.label))
        current, counters, error = _current(lab, site, recorded)
        row = _site_json(site, current)
        row["counters"] = counters
        row["error"] = error
        rows.append(row)
    return sorted(rows, key=lambda row: (row["link"], row["direction"]))


def _site_json(site: ImpairmentSite, impairment: Impairment) -> dict[str, Any]:
    return {"link": site.link, "direction": site.label, "by": site.by if not impairment.is_clean else None,
            "mechanism": site.by, "impairment": impairment_json(impairment),
            "description": describe_impairment(impairment) or "clean"}


def _check_changeable(lab: RunningLab, site: ImpairmentSite) -> None:
    if site.by is None or (site.by == "tbf" and not lab.wiring.netem):
        what = "a direct veth" if site.by is None else "a direct veth with a tbf rate limit"
        raise LabError(f"link {site.link} ({site.label}) is {what} and this kernel has no sch_netem: give "
                       "the link `impairable: true` in the topology, and `lab up` puts the lab's forwarder "
                       "on it")


def _apply(lab: RunningLab, site: ImpairmentSite, impairment: Impairment) -> None:
    raw = impairment_json(impairment)
    if site.by in ("stack", "forwarder"):
        assert site.process is not None and site.key is not None
        settings_path = lab.state.node_settings_path(site.process)
        settings = json.loads(settings_path.read_text())
        if site.by == "stack":
            _ask(lab.state, site.process, "impair", **{site.key: raw})
            settings["interface"][site.key] = raw
        else:
            _ask(lab.state, site.process, "impair", direction=site.key, impairment=raw)
            settings["impairments"][site.key] = raw
        write_json_atomic(settings_path, settings, indent=1)
        return
    assert site.namespace is not None and site.ifname is not None
    qdisc = Qdisc(site.namespace, site.ifname, "netem", impairment, site.mtu, site.label)
    with Netlink() as nl:
        nl.replace_qdisc(site.namespace, site.ifname, "netem", **qdisc_parameters(qdisc))


def _ask(state: LabState, process: str, command: str, **fields: Any) -> dict[str, Any]:
    with StackClient(state.control_socket_path(process), timeout=ANSWER_SECONDS) as client:
        return client.request(command, **fields)


def _impairments_path(state: LabState) -> Path:
    return state.directory / "impairments.json"


def _recorded(state: LabState) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_impairments_path(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(state: LabState, site: ImpairmentSite, impairment: Impairment) -> None:
    recorded = _recorded(state)
    recorded[f"{site.link}:{site.label}"] = impairment_json(impairment)
    write_json_atomic(_impairments_path(state), recorded, indent=1)


def _current(lab: RunningLab, site: ImpairmentSite,
             recorded: dict[str, dict[str, Any]]) -> tuple[Impairment, dict[str, int] | None, str | None]:
    """What the direction does now: the process's own answer, else the record of changes, else the plan."""
    raw = recorded.get(f"{site.link}:{site.label}")
    fallback = replace(Impairment(), **raw) if raw else site.impairment
    if site.by not in ("stack", "forwarder") or site.process is None or site.key is None:
        return fallback, None, None
    try:
        if site.by == "forwarder":
            answer = _ask(lab.state, site.process, "show")["directions"][site.key]
            return Impairment(**answer["impairment"]), answer["counters"], None
        answer = _ask(lab.state, site.process, "impair")
        counters = _ask(lab.state, site.process, "stats")["counters"]
        prefix = f"Impair{site.key.title()}"
        mine = {key[len(prefix):]: value for key, value in counters.items() if key.startswith(prefix)}
        return Impairment(**answer[site.key]), mine or None, None
    except (StackControlError, LabError, KeyError, TypeError) as error:
        return fallback, None, str(error)
