"""The `loss` experiment: byte-exact transfers under impairment, both ways, retransmissions counted.

Unit tests (no root) pin the profiles (each must be a valid topology) and the verdicts; the root test
runs every profile, each in a lab of its own, plus the shipped lossy topology as given.
"""

from __future__ import annotations

import pytest

from lab.experiments.base import ExperimentError
from lab.experiments.loss import PROFILES, ProfileRun, drops_packets, profile_topology
from lab.kernel.sockets import kernel_snmp
from lab.topology import TOPOLOGY_DIR, load_topology, plan_from_data


def _run(**changes: object) -> ProfileRun:
    figures = dict(profile="loss", impair={"loss": "2%"}, kernel_to_stack_drops=True,
                   stack_to_kernel_drops=True, corrupts=False, stack_in_errs=0, seconds=1.0,
                   echo_bytes=100, echo_exact=True,
                   upload_exact=True, download_exact=True,
                   kernel_retrans=3, kernel_retrans_segs=3, kernel_csum_errors=0, stack_retrans_segs=4,
                   stack_error=None)
    figures.update(changes)
    return ProfileRun(**figures)  # type: ignore[arg-type]


def test_every_profile_is_a_valid_impaired_pair_topology() -> None:
    for name, impair in PROFILES.items():
        plan = plan_from_data(profile_topology(f"t{name}", impair))
        stack = plan.node("s1").interfaces[0]
        assert not stack.ingress.is_clean and not stack.egress.is_clean, name  # both directions impaired
        assert plan.node("h1").interfaces[0].egress.is_clean  # the stack does it all, in userspace


def test_which_profiles_must_cause_retransmissions() -> None:
    assert [name for name, impair in PROFILES.items() if drops_packets(impair)] == ["loss", "corrupt"]


def test_profile_verdicts() -> None:
    assert all(check.passed for check in _run().checks())
    assert len(_run().checks()) == 4
    assert not _run(echo_exact=False).checks()[0].passed
    assert not _run(download_exact=False).checks()[1].passed
    assert not _run(stack_error="ETIMEDOUT").checks()[1].passed
    no_stack_retrans = _run(stack_retrans_segs=0).checks()
    assert [c.passed for c in no_stack_retrans] == [True, True, True, False]
    corrupted = _run(corrupts=True, kernel_csum_errors=5, stack_in_errs=0).checks()
    assert [c.passed for c in corrupted] == [True, True, True, True, False]  # the stack caught nothing
    # Delay alone need not cause retransmissions, so it is not checked for them.
    assert len(_run(kernel_to_stack_drops=False, stack_to_kernel_drops=False).checks()) == 2


def test_unknown_profile_is_bad_input_before_any_lab() -> None:
    from lab.experiments import get

    experiment = get("loss")
    with pytest.raises(ExperimentError, match="unknown flood"):
        experiment.parse_options({"profiles": "loss,flood"})
    assert experiment.parse_options({"profiles": "none"})["profiles"] == "none"


def test_lossy_topology_drops_only_toward_the_stack() -> None:
    plan = load_topology(TOPOLOGY_DIR / "lossy.yaml", name="tlossy")
    iface = plan.node("s1").interfaces[0]
    assert iface.ingress.loss_pct > 0 and iface.egress.loss_pct == 0


@pytest.mark.root
def test_kernel_snmp_reads_the_namespace_counters(make_lab) -> None:
    lab = make_lab("""
name: k
nodes:
  a: {kind: kernel}
  b: {kind: kernel}
links:
  - endpoints: [a:eth0, b:eth0]
    subnet: 10.9.2.0/24
""")
    before = kernel_snmp(lab.node("a").namespace)
    listener = lab.kernel_socket("b")
    listener.bind((lab.address("b"), 6002))
    listener.listen(1)
    client = lab.kernel_socket("a")
    client.settimeout(5)
    client.connect((lab.address("b"), 6002))
    client.close()
    listener.close()
    after = kernel_snmp(lab.node("a").namespace)
    assert after["TcpActiveOpens"] - before["TcpActiveOpens"] == 1  # this namespace's, not the host's


@pytest.mark.root
def test_loss_experiment_passes_under_every_profile(make_lab, run_in, assert_passed) -> None:
    lab = make_lab((TOPOLOGY_DIR / "lossy.yaml").read_text())
    result = run_in(lab, "loss", bytes=1 << 20)
    assert_passed(result)
    assert set(result.metrics) == {"as-given", *PROFILES}
    assert result.metrics["loss"]["kernel_retrans"] > 0 and result.metrics["loss"]["stack_retrans_segs"] > 0
    corrupt = result.metrics["corrupt"]
    assert corrupt["kernel_csum_errors"] > 0 and corrupt["stack_in_errs"] > 0  # caught on both sides
