"""Shared test policy.

`@pytest.mark.root` tests build real namespaces. Without root, /dev/net/tun or network namespace
support they skip with the reason, except under `CI=true`, where a missing capability is a
failure: CI must run them. The `lab_name` fixture gives each test a lab of its own and takes it
down afterwards, whether the test passed or not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from stack.devices.namespace import THREAD_NAMESPACE

# The namespace pytest started in: tests must leave their thread there (kept open to return to it).
STARTING_NAMESPACE_FD = os.open(THREAD_NAMESPACE, os.O_RDONLY)
STARTING_NAMESPACE = os.fstat(STARTING_NAMESPACE_FD).st_ino


def root_capability_missing() -> str | None:
    """Why root tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for the TAP of pystack nodes"
    if not os.path.exists("/proc/self/ns/net"):
        return "needs a kernel with network namespaces"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as error:
        return f"cannot open /dev/net/tun: {error.strerror}"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None:
        return
    reason = root_capability_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and this root test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def lab_name() -> Iterator[str]:
    """A fresh lab name; whatever the test built under it is taken down afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    from lab.build import builder
    from lab.build.state import LabError

    # Teardown acts on "the root namespace": the test must have left this thread there.
    left_inside = os.stat(THREAD_NAMESPACE).st_ino != STARTING_NAMESPACE
    if left_inside:
        from stack.devices.namespace import move_to

        move_to(f"/proc/self/fd/{STARTING_NAMESPACE_FD}")
    try:
        builder.down(name)
    except LabError:
        pass  # nothing was left: the usual case for tests that clean up themselves
    assert not left_inside, "the test left its thread inside another network namespace"
