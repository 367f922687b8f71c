"""Topology input that tries to hurt: bombs, devices, huge counts, values out of range, secrets in errors.

Each refusal is one line naming the file (and line, and field), within a second, and never quotes
what the file holds beyond the value of a topology field.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from lab.topology import TopologyError, load_topology, plan_from_data, plan_from_text
from lab.topology.chain import MAX_CHAIN, chain_document, chain_plan, chain_yaml
from lab.topology.limits import MAX_FILE_BYTES, MAX_INTERFACES, MAX_LINKS, MAX_NODES
from lab.topology.yaml_lines import MAX_YAML_DEPTH, MAX_YAML_VALUES, load_yaml_with_lines

NOT_A_TOPOLOGY = "not a YAML topology"


def billion_laughs(levels: int = 9) -> str:
    """The classic: nine aliases of nine aliases of ... of "lol", 10^9 strings from a kilobyte."""
    rows = ['x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefghijklm", "bcdefghijklmn", strict=False):
        if len(rows) == levels:
            break
        rows.append(f"x-{name}: &{name} [{','.join(['*' + previous] * 9)}]")
    last = rows[-1].split("&", 1)[1].split(" ", 1)[0]
    return "name: bomb\n" + "\n".join(rows) + f"\nnodes: {{h1: {{kind: kernel}}}}\nlinks: [*{last}]\n"


def merge_bomb() -> str:
    """The same with merge keys: each mapping merges nine copies of the one before."""
    rows = ["x-a: &a {k1: 1, k2: 2, k3: 3}"]
    for previous, name in zip("abcdefghi", "bcdefghij", strict=True):
        rows.append(f"x-{name}: &{name} {{<<: [{', '.join(['*' + previous] * 9)}], {name}: 1}}")
    return "name: bomb\n" + "\n".join(rows) + "\nnodes: {h1: *j}\nlinks: []\n"


def refused(text: str, source: str = "t.yaml") -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        plan_from_text(text, source)
    return str(caught.value), time.monotonic() - started


# --- YAML bounds -----------------------------------------------------------------------------------


def test_a_billion_laughs_is_refused_at_once() -> None:
    text = billion_laughs()
    assert len(text) < 1024
    message, seconds = refused(text)
    assert seconds < 1.0
    assert message.startswith("t.yaml:7:")
    assert f"{NOT_A_TOPOLOGY}: expected at most {MAX_YAML_VALUES}" in message
    assert "once its aliases are expanded" in message and "lol" not in message


def test_a_merge_key_bomb_is_refused_at_once() -> None:
    message, seconds = refused(merge_bomb())
    assert seconds < 1.0 and f"expected at most {MAX_YAML_VALUES} YAML values" in message


def test_aliases_that_stay_small_are_fine_and_shared() -> None:
    text = billion_laughs(levels=3)  # 729 strings: far below the bound
    data, _lines = load_yaml_with_lines(text, "t.yaml")
    assert isinstance(data, dict) and len(data["links"][0]) == 9
    assert data["links"][0][0] is data["links"][0][1] is data["x-b"]


@pytest.mark.parametrize("text", ["[" * 100_000, "- " * 100_000 + "x", "a:\n" + "".join(
    " " * (2 * level) + f"k{level}:\n" for level in range(1, 60))])
def test_deep_nesting_is_refused_without_recursion(text: str) -> None:
    message, seconds = refused(text)
    assert seconds < 1.0 and message.startswith("t.yaml:") and NOT_A_TOPOLOGY in message


def test_nesting_through_aliases_counts_too() -> None:
    deep = "[" * 20 + "1" + "]" * 20
    text = f"x-a: &a {deep}\nx-b: &b {'[' * 15}*a{']' * 15}\n"
    message, _ = refused(text)
    expected = f"expected collections nested at most {MAX_YAML_DEPTH} deep, got deeper once its aliases"
    assert expected in message


def test_too_many_values_without_aliases_are_refused_while_parsing() -> None:
    text = "x-many: [" + ",".join(["1"] * (MAX_YAML_VALUES + 10)) + "]\n"
    message, seconds = refused(text)
    assert seconds < 1.0 and f"expected at most {MAX_YAML_VALUES} YAML values, got more" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: " + "9" * 5000 + "\n", "t.yaml:1: name: expected a number of at most 100 characters, got 50"),
        ("name: " + ":".join(["1"] * 3000) + "\n", "t.yaml:1: name: expected a number of at most 100"),
        ("name: 2001-13-45\n", "t.yaml:1: name: expected a date YAML can read, got one it cannot"),
        ("name: !secret hunter2\n", "t.yaml:1: name: expected plain YAML values, got a value with a tag"),
        ("name: &a x\nnodes: &a y\n", "t.yaml:2:8: not a YAML topology: expected each anchor once"),
        ("name: *nowhere\n", "t.yaml:1:7: not a YAML topology: expected an alias of an anchor defined"),
        ("x: &a {<<: *a}\n", "t.yaml:1:12: not a YAML topology: expected data, got an alias that contains"),
        ("x: {<<: hunter2}\n", "t.yaml:1:9: not a YAML topology: expected a mapping or a list of mappings"),
    ],
)
def test_odd_yaml_is_one_line_without_the_secret(text: str, expected: str) -> None:
    message, _ = refused(text)
    assert message.startswith(expected)
    assert "hunter2" not in message and "nowhere" not in message and "secret" not in message


def test_merge_keys_mean_what_pyyaml_says_and_keep_their_lines() -> None:
    text = (
        "x-d: &d {kind: kernel, sysctls: {net.ipv4.ip_forward: 1}}\n"
        "x-e: &e {kind: pystack, gateway: g}\n"
        "a: {<<: [*d, *e], offload: true}\n"
        "b: &b {<<: *d, kind: pystack}\n"
        "c: {<<: *b}\n"
    )
    data, lines = load_yaml_with_lines(text, "t.yaml")
    assert isinstance(data, dict)
    forwarding = {"net.ipv4.ip_forward": 1}
    assert data["a"] == {"kind": "kernel", "sysctls": forwarding, "gateway": "g", "offload": True}
    assert data["b"] == {"kind": "pystack", "sysctls": {"net.ipv4.ip_forward": 1}}
    assert data["c"] == data["b"]  # merging a mapping that merged: explicit keys still win, no duplicate
    assert lines.line(("a", "kind")) == 1 and lines.line(("a", "gateway")) == 2
    assert lines.line(("a", "sysctls", "net.ipv4.ip_forward")) == 1 and lines.line(("b", "kind")) == 4


# --- the file itself -------------------------------------------------------------------------------


def _load_refused(path: Path | str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return str(caught.value), time.monotonic() - started


def test_dev_zero_is_refused_without_reading_it() -> None:
    message, seconds = _load_refused("/dev/zero")
    assert seconds < 1.0
    assert message == f"/dev/zero: {NOT_A_TOPOLOGY}: expected a regular file, got a character device"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "topology.yaml"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(_load_refused(fifo)[0]), daemon=True)
    reader.start()
    reader.join(2.0)
    assert outcome == [f"{fifo}: {NOT_A_TOPOLOGY}: expected a regular file, got a FIFO"]


def test_a_directory_and_a_huge_file_are_refused(tmp_path: Path) -> None:
    message, _ = _load_refused(tmp_path)
    assert message == f"{tmp_path}: {NOT_A_TOPOLOGY}: expected a regular file, got a directory"
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(10 * MAX_FILE_BYTES)  # sparse: 10 MiB of zeros that cost no disk
    message, seconds = _load_refused(big)
    assert seconds < 1.0
    expected = f"{NOT_A_TOPOLOGY}: expected a file of at most {MAX_FILE_BYTES} bytes, got a larger one"
    assert message == f"{big}: {expected}"


def test_a_file_that_is_not_utf8_names_the_line_not_the_bytes(tmp_path: Path) -> None:
    odd = tmp_path / "odd.yaml"
    odd.write_bytes(b"name: pair\n\xff\xfesecret\n")
    assert _load_refused(odd)[0] == f"{odd}:2: {NOT_A_TOPOLOGY}: expected UTF-8 text, got bytes that are not"


SHADOW_LIKE = (
    "root:$y$j9T$Zm9vYmFy$c2VjcmV0aGFzaA:19745:0:99999:7:::\n"
    "daemon:*:19745:0:99999:7:::\n"
    "alice:$6$salt$hunter2hash:19745:0:99999:7::\n"
)
PASSWD_LIKE = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice Secret,,,:/home/alice:/bin/bash\n"


@pytest.mark.parametrize(
    "content",
    [SHADOW_LIKE, PASSWD_LIKE, "password: hunter2\ntoken: s3cr3t\n", "- hunter2\n- s3cr3t\n",
     "hunter2: [unclosed\n", "\thunter2: s3cr3t\n", 'key: "hunter2\\q"\n', "hunter2\x07s3cr3t\n"],
)
def test_a_file_that_is_no_topology_is_refused_as_such_without_its_content(
    tmp_path: Path, content: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)
    message, _ = _load_refused(secret)
    assert message.startswith(f"{secret}:") and NOT_A_TOPOLOGY in message
    message = message.removeprefix(str(secret))
    for word in ("root", "alice", "hunter2", "s3cr3t", "Secret", "$y$", "bash", "19745"):
        assert word not in message, message


def test_pure_python_yaml_messages_lose_their_quotes() -> None:
    from lab.topology.yaml_lines import _unquoted

    assert _unquoted("found undefined alias 'hunter2'") == "found undefined alias"
    assert _unquoted("expected <block end>, but found '<block mapping start>'") == (
        "expected <block end>, but found '<block mapping start>'"
    )
    assert _unquoted("expected ',' or ']', but got ':'") == "expected ',' or ']', but got ':'"
    assert _unquoted('found unknown escape character "x"') == "found unknown escape character"


# --- counts ------------------------------------------------------------------------------------------


def test_the_benchmark_chain_and_the_largest_chain_pass() -> None:
    assert MAX_CHAIN == MAX_NODES
    assert len(plan_from_text(chain_yaml(100, name="bench"), "chain.yaml").nodes) == 100
    assert len(chain_plan(MAX_NODES).nodes) == MAX_NODES


def test_one_node_too_many_is_refused_before_the_schema_looks() -> None:
    document = chain_document(MAX_NODES)
    document["nodes"]["extra"] = {"kind": "docker"}  # never reported: the count comes first
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110)
    message, seconds = refused(text)
    assert message == f"t.yaml:2: nodes: expected at most {MAX_NODES} nodes, got {MAX_NODES + 1}"
    assert seconds < 1.5  # a 660 KB file: most of it is the YAML parser's


def test_too_many_links_and_interfaces_are_refused() -> None:
    links = [{"endpoints": ["a:e0", "b:e0"], "subnet": "10.0.0.0/30"}] * (MAX_LINKS + 1)
    with pytest.raises(TopologyError, match=rf"^<data>: links: expected at most {MAX_LINKS} links, got "):
        plan_from_data({"name": "x", "nodes": {"a": {"kind": "kernel"}}, "links": links})
    endpoints = [f"n{k}:eth0" for k in range(MAX_INTERFACES + 1)]
    lan = {"name": "x", "nodes": {}, "links": [{"endpoints": endpoints, "subnet": "10.0.0.0/16"}]}
    with pytest.raises(TopologyError, match=rf"expected at most {MAX_INTERFACES} interfaces .*, got 4001$"):
        plan_from_data(lan)


# --- values in range -------------------------------------------------------------------------------

KERNEL_LINK = (
    "name: k\nnodes:\n  a: {kind: kernel}\n  b: {kind: kernel}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n"
    "    subnet: 10.0.0.0/24\n    impair: {impair}\n"
)


@pytest.mark.parametrize(
    ("impair", "expected"),
    [
        ("{rate: 1bit}", "t.yaml:8: links[0].impair.rate: expected a rate from 1kbit to 32gbit like 100mbit, "
                         "1gbit or 500kbit, got '1bit'"),
        ("{rate: 100000gbit}", "t.yaml:8: links[0].impair.rate: expected a rate from 1kbit to 32gbit"),
        ("{delay: 99999999999s}", "t.yaml:8: links[0].impair.delay: expected a duration from 0 to 60s like "
                                  "20ms, 1s or 500us, got '99999999999s'"),
        ("{delay: 10ms, jitter: 99999s}", "t.yaml:8: links[0].impair.jitter: expected a duration from 0 to"),
        ("{delay: 10ms, jitter: 20ms}", "t.yaml:8: links[0].impair.jitter: expected a jitter no larger than "
                                        "the delay it varies (10ms; a packet cannot leave before it was "
                                        "sent), got jitter 20ms"),
        ("{loss: 100%, duplicate: 100%}", "t.yaml:8: links[0].impair.loss: expected loss below 100% with "
                                          "duplicate"),
        ("{loss: 100%, delay: 5ms}", "t.yaml:8: links[0].impair.loss: expected loss below 100% with delay"),
        ("{delay: 5ms, reorder: 100%}", "t.yaml:8: links[0].impair.reorder: expected reorder below 100%"),
        ("{loss: 100.5%}", "t.yaml:8: links[0].impair.loss: expected a percentage from 0% to 100%"),
    ],
)
def test_impairments_out_of_range_name_line_field_value_and_range(impair: str, expected: str) -> None:
    message, _ = refused(KERNEL_LINK.replace("{impair}", impair))
    assert message.startswith(expected)


@pytest.mark.parametrize("impair", ["{rate: 1kbit}", "{rate: 32gbit}", "{delay: 60s, jitter: 60s}",
                                    "{loss: 100%}", "{delay: 1ms, reorder: 99.9%, duplicate: 100%}"])
def test_the_ends_of_each_range_are_accepted(impair: str) -> None:
    assert plan_from_text(KERNEL_LINK.replace("{impair}", impair), "t.yaml").links


def test_app_bytes_and_sysctl_values_have_ranges() -> None:
    text = (
        "name: p\nnodes:\n  a: {kind: kernel, sysctls: {net.ipv4.ip_forward: VALUE}}\n"
        "  s: {kind: pystack, apps: [{app: source, port: 19, bytes: BYTES}]}\n"
        "links:\n  - endpoints: [a:eth0, s:eth0]\n    subnet: 10.0.0.0/24\n"
    )
    message, _ = refused(text.replace("VALUE", "1").replace("BYTES", str(1 << 41)))
    assert message == (f"t.yaml:4: nodes.s.apps[0].bytes: expected a byte count from 0 to {1 << 40} (1 TiB), "
                       f"got {1 << 41}")
    message, _ = refused(text.replace("VALUE", "x" * 300).replace("BYTES", "10"))
    assert message.startswith('t.yaml:3: nodes.a.sysctls["net.ipv4.ip_forward"]: expected a number or a word '
                              "of at most 256 characters")
    assert plan_from_text(text.replace("VALUE", "1").replace("BYTES", str(1 << 40)), "t.yaml").nodes
