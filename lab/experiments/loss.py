"""`loss`: bulk transfers over an impaired link, both ways, byte-exact, with both sides' retransmissions.

The kernel here has no sch_netem, so a link that touches a pystack node is impaired by the stack itself
on its TAP path (`stack.devices.impairment`), in both directions, from the topology's `impair`. Each profile
gets a lab of its own (a pair topology made for that profile, up and down inside the
experiment); the running lab's own link (by default `lossy.yaml`) is measured too, as profile `as-given`.

In every lab two transfers run, so each side is once client and once server:
- kernel client → stack echo: N bytes out, the same N bytes back (SHA-256 of both ends equal);
- stack client → kernel server: N bytes up (SHA-256 checked by the kernel), then N bytes of the stack's
  pattern down after the stack's FIN (SHA-256 checked by the stack).
Retransmissions are counted on both sides: the kernel's from TCP_INFO (per connection) and from the
namespace's SNMP counters, the stack's from its `RetransSegs` counter. Where the link corrupts both ways,
each side's checksum must have caught the other's damaged segments (kernel InCsumErrors, stack TcpInErrs):
SHA-256 equality alone could hide a receiver that trusts a checksum it never verified.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from lab.experiments.base import Experiment, ExperimentError, Options
from lab.experiments.kernel_peers import KernelServer, send_shutdown_and_read
from lab.experiments.results import STEP_ERRORS, Check, ExperimentResult, step_failed
from lab.experiments.running import RunningLab, lab_for_experiment
from lab.experiments.stack_answers import counter_value
from lab.kernel.sockets import kernel_snmp, tcp_info
from lab.kernel.transfers import receive_all
from lab.topology import plan_from_data
from lab.topology.names import derived_lab_name
from stack.node.apps.content import chunks as pattern_chunks
from stack.node.apps.content import pattern_sha256

# name -> the `impair` mapping put on the link, both directions alike (topology syntax).
PROFILES: dict[str, dict[str, str]] = {
    "loss": {"loss": "2%"},
    "reorder": {"delay": "5ms", "reorder": "10%"},
    "duplicate": {"duplicate": "5%"},
    "corrupt": {"corrupt": "2%"},
    "delay": {"delay": "25ms"},  # reordering by jitter is the reorder profile's job
}
TRANSFER_TIMEOUT = 60.0


def profile_topology(lab_name: str, impair: dict[str, str]) -> dict[str, Any]:
    """The pair topology (kernel h1, stack s1) with `impair` on its one link."""
    return {
        "name": lab_name,
        "nodes": {"h1": {"kind": "kernel"}, "s1": {"kind": "pystack"}},
        "links": [{"endpoints": ["h1:eth0", "s1:eth0"], "subnet": "10.0.0.0/24", "impair": impair}],
    }


def drops_packets(impair: dict[str, Any]) -> bool:
    """Lost and corrupted packets must be retransmitted; delay, reordering and duplicates need not be."""
    return any(float(str(impair.get(key, "0")).rstrip("%")) > 0 for key in ("loss", "corrupt"))


@dataclass
class ProfileRun:
    """The figures of one profile's two transfers."""

    profile: str
    impair: dict[str, Any]
    kernel_to_stack_drops: bool  # the link loses or corrupts packets the kernel sends: it must retransmit
    stack_to_kernel_drops: bool  # ... packets the stack sends: the stack must retransmit
    corrupts: bool  # the link flips bits both ways: each side's checksum must catch the other's damage
    seconds: float
    echo_bytes: int
    echo_exact: bool
    upload_exact: bool
    download_exact: bool
    kernel_retrans: int  # TCP_INFO total_retrans of the kernel's two sockets
    kernel_retrans_segs: int  # the kernel namespace's Tcp RetransSegs delta
    kernel_csum_errors: int  # the kernel namespace's Tcp InCsumErrors delta (corrupted segments caught)
    stack_in_errs: int  # the stack's TcpInErrs delta (segments it dropped as malformed: bad checksums)
    stack_retrans_segs: int  # the stack's RetransSegs delta
    stack_error: str | None

    def checks(self) -> list[Check]:
        name = self.profile
        checks = [
            Check(f"{name}: kernel → stack echo → kernel exact", self.echo_exact,
                  f"{self.echo_bytes} B each way, sha256 {'equal' if self.echo_exact else 'DIFFERENT'}"),
            Check(f"{name}: stack client ↔ kernel server exact both ways",
                  self.upload_exact and self.download_exact and self.stack_error is None,
                  f"up {'equal' if self.upload_exact else 'DIFFERENT'}, down "
                  f"{'equal' if self.download_exact else 'DIFFERENT'}, stack error {self.stack_error}"),
        ]
        figures = (f"kernel total_retrans {self.kernel_retrans} (namespace RetransSegs "
                   f"+{self.kernel_retrans_segs}, InCsumErrors +{self.kernel_csum_errors}), "
                   f"stack RetransSegs +{self.stack_retrans_segs}")
        if self.kernel_to_stack_drops:
            checks.append(Check(f"{name}: the kernel retransmitted what the link dropped",
                                self.kernel_retrans > 0, figures))
        if self.stack_to_kernel_drops:
            checks.append(Check(f"{name}: the stack retransmitted what the link dropped",
                                self.stack_retrans_segs > 0, figures))
        if self.corrupts:
            checks.append(Check(f"{name}: corrupted segments caught by checksums on both sides",
                                self.kernel_csum_errors > 0 and self.stack_in_errs > 0,
                                f"kernel InCsumErrors +{self.kernel_csum_errors}, "
                                f"stack TcpInErrs +{self.stack_in_errs}"))
        return checks


class LossExperiment(Experiment):
    summary = "bulk transfers under loss/reorder/duplicate/corrupt/delay, both ways, SHA-256 exact"
    default_topology = "lossy"
    options: ClassVar[Options] = {
        "bytes": (2 * 1024 * 1024, "bytes per transfer (each of the two transfers moves this both ways)"),
        "profiles": (",".join(PROFILES), f"comma-separated profiles ({', '.join(PROFILES)}) or 'none'"),
        "port": (5200, "port of the stack's echo listener; the kernel server uses port+1"),
    }

    def parse_options(self, raw: dict[str, str]) -> dict[str, Any]:
        """As the base class, and the profile names checked here, before any lab is built."""
        options = super().parse_options(raw)
        profile_names(options["profiles"])
        return options

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        names = profile_names(options["profiles"])
        given, to_stack, to_kernel, corrupts = lab_impairment(lab)
        runs: list[ProfileRun] = []
        checks: list[Check] = []
        try:
            runs.append(measure_profile(lab, "as-given", given, (to_stack, to_kernel), corrupts, options))
        except STEP_ERRORS as error:  # a stuck transfer fails its profile, the others still run
            checks.append(step_failed("as-given", error))
        for index, name in enumerate(names):
            plan = plan_from_data(profile_topology(derived_lab_name(lab.name, f"l{index}"), PROFILES[name]))
            drops = drops_packets(PROFILES[name])
            corrupt = "corrupt" in PROFILES[name]
            with lab_for_experiment(plan, None, root=lab.root) as profile_lab:
                try:
                    runs.append(measure_profile(profile_lab, name, PROFILES[name], (drops, drops), corrupt,
                                                options))
                except STEP_ERRORS as error:
                    checks.append(step_failed(name, error))
        checks += [check for run in runs for check in run.checks()]
        metrics = {run.profile: {key: value for key, value in vars(run).items() if key != "profile"}
                   for run in runs}
        return ExperimentResult.from_checks(self.name, checks, metrics)


def profile_names(text: str) -> list[str]:
    """"loss,corrupt" -> ["loss", "corrupt"]; "none" -> [] (the lab's own link only); else ExperimentError."""
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in PROFILES]
    if unknown:
        raise ExperimentError(f"experiment loss: option profiles: unknown {', '.join(unknown)} "
                              f"(expected some of {', '.join(PROFILES)}, or none)")
    return names


def lab_impairment(lab: RunningLab) -> tuple[dict[str, Any], bool, bool, bool]:
    """The running lab's own impairment on the stack's link (from its plan): what it is, whether it drops
    packets kernel → stack (the stack's ingress) and stack → kernel (its egress), and whether it
    corrupts both ways."""
    iface = lab.node(lab.first("pystack")).interfaces[0]
    shown = {direction: {key: value for key, value in vars(impairment).items() if value}
             for direction, impairment in (("kernel->stack", iface.ingress), ("stack->kernel", iface.egress))}

    def drops(impairment: Any) -> bool:
        return impairment.loss_pct > 0 or impairment.corrupt_pct > 0

    corrupts = iface.ingress.corrupt_pct > 0 and iface.egress.corrupt_pct > 0
    return shown, drops(iface.ingress), drops(iface.egress), corrupts


def measure_profile(lab: RunningLab, profile: str, impair: dict[str, Any], drops: tuple[bool, bool],
                    corrupts: bool, options: dict[str, Any]) -> ProfileRun:
    """Both transfers in `lab`; `drops` says which directions lose packets (kernel→stack, stack→kernel)."""
    kernel_node, stack_node = lab.kernel_and_stack()
    namespace = lab.node(kernel_node).namespace
    size, port = options["bytes"], options["port"]
    started = time.perf_counter()
    with lab.stack(stack_node, timeout=TRANSFER_TIMEOUT) as stack:
        counters = stack.stats()["counters"]
        stack_before = counter_value(counters, "TcpRetransSegs")
        errs_before = counter_value(counters, "TcpInErrs")
        kernel_before = kernel_snmp(namespace)
        # 1. kernel client -> stack echo
        stack.listen(port, app="echo")
        try:
            client = lab.kernel_socket(kernel_node)
            client.settimeout(TRANSFER_TIMEOUT)
            client.connect((lab.address(stack_node), port))
            echo = send_shutdown_and_read(client, size)
            echo_retrans = tcp_info(client)["total_retrans"]
            client.close()
        finally:
            stack.close_listener(port)
        # 2. stack client -> kernel server, then the kernel's answer after the stack's FIN
        server_retrans: dict[str, int] = {}

        def serve(conn: socket.socket) -> dict[str, Any]:
            conn.settimeout(TRANSFER_TIMEOUT)
            got = receive_all(conn)
            for chunk in pattern_chunks(size):
                conn.sendall(chunk)
            server_retrans["total"] = tcp_info(conn)["total_retrans"]
            conn.close()
            return {"received_sha256": got.received_sha256, "received": got.received}

        with KernelServer(lab, kernel_node, port + 1, serve) as server:
            answer = stack.connect(lab.address(kernel_node), port + 1, send=size, shutdown=True, recv="eof",
                                   close="close", timeout=TRANSFER_TIMEOUT)
            served = server.result()
        counters = stack.stats()["counters"]
        stack_after = counter_value(counters, "TcpRetransSegs")
        errs_after = counter_value(counters, "TcpInErrs")
    kernel_after = kernel_snmp(namespace)
    expected = pattern_sha256(size)
    return ProfileRun(
        profile=profile, impair=impair, kernel_to_stack_drops=drops[0], stack_to_kernel_drops=drops[1],
        corrupts=corrupts,
        seconds=round(time.perf_counter() - started, 3), echo_bytes=size,
        echo_exact=echo["received"] == size and echo["received_sha256"] == echo["sent_sha256"],
        upload_exact=served["received"] == size and served["received_sha256"] == expected
        and answer.get("sent_sha256") == expected,
        download_exact=answer.get("received") == size and answer.get("received_sha256") == expected,
        kernel_retrans=echo_retrans + server_retrans.get("total", 0),
        kernel_retrans_segs=kernel_after.get("TcpRetransSegs", 0) - kernel_before.get("TcpRetransSegs", 0),
        kernel_csum_errors=kernel_after.get("TcpInCsumErrors", 0) - kernel_before.get("TcpInCsumErrors", 0),
        stack_retrans_segs=stack_after - stack_before, stack_in_errs=errs_after - errs_before,
        stack_error=answer.get("error"),
    )
