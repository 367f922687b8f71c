"""Silent addresses: destinations whose SYNs vanish, for the SYN-backoff (`timeout`) experiment.

ARP must not be the reason a connect fails (that is EHOSTUNREACH, not a SYN timeout), so each
silent address resolves and only its IPv4 frames are lost:

- `silent_neighbour`: a kernel node gets a static (PERMANENT) neighbour entry mapping an unused
  address to an unused MAC; its frames go out and nobody takes them.
- `silent_address`: a kernel node answers ARP for an extra address but drops IPv4 to it at the
  ingress of its interface, with a nine-instruction eBPF classifier (this kernel has no
  act_gact and no netem, but cls_bpf in direct-action mode can return TC_ACT_SHOT). Used for
  a stack client: the stack has no static ARP entries, so the address must answer ARP.

Everything is netlink (pyroute2) plus one bpf(2) call; all of it lives in the lab's own
namespace and is removed on exit (and would go with the namespace anyway).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from lab.kernel.namespaces import inside_namespace

NUD_PERMANENT = 0x80
SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
TC_ACT_OK = 0
TC_ACT_SHOT = 2
ETH_P_IP = 0x0800
_INSN = struct.Struct("<BBhi")
_LIBC = ctypes.CDLL(None, use_errno=True)


class SilentSetupFailed(Exception):
    pass


def drop_program(address: IPv4Address) -> bytes:
    """eBPF: drop IPv4 frames whose destination is `address`, pass everything else (ARP included).

    LD_ABS reads big-endian packet bytes into host order, relative to the Ethernet header (cls_bpf
    pushes the MAC header back at ingress). JMP32 compares the low 32 bits, so addresses above
    127.255.255.255 compare correctly despite the signed immediate.
    """
    target = struct.unpack("<i", struct.pack("<I", int(address)))[0]
    insns = [
        (0xBF, 0x16, 0, 0),  # r6 = r1 (LD_ABS needs the skb in r6)
        (0x28, 0x00, 0, 12),  # r0 = ethertype (16 bits at offset 12)
        (0x56, 0x00, 4, ETH_P_IP),  # if w0 != 0x0800 goto pass
        (0x20, 0x00, 0, 30),  # r0 = IPv4 destination (32 bits at offset 14 + 16)
        (0x56, 0x00, 2, target),  # if w0 != address goto pass
        (0xB7, 0x00, 0, TC_ACT_SHOT),  # r0 = TC_ACT_SHOT
        (0x95, 0x00, 0, 0),  # exit
        (0xB7, 0x00, 0, TC_ACT_OK),  # pass: r0 = TC_ACT_OK
        (0x95, 0x00, 0, 0),  # exit
    ]
    return b"".join(_INSN.pack(*insn) for insn in insns)


def load_drop_program(address: IPv4Address) -> int:
    """Load the program with bpf(BPF_PROG_LOAD); returns its file descriptor (the caller closes it)."""
    program = ctypes.create_string_buffer(drop_program(address))
    license_text = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_SCHED_CLS, len(program.raw) // 8,
                     ctypes.addressof(program), ctypes.addressof(license_text), 1, len(log),
                     ctypes.addressof(log), 0, 0, b"nslab_silent")
    _LIBC.syscall.restype = ctypes.c_long
    fd = _LIBC.syscall(SYS_BPF, BPF_PROG_LOAD, attr, ctypes.c_uint(len(attr)))
    if fd < 0:
        error = ctypes.get_errno()
        verifier = log.value.decode(errors="replace").strip().splitlines()
        raise SilentSetupFailed(f"bpf(BPF_PROG_LOAD): {os.strerror(error)}"
                                + (f"; verifier: {verifier[-1]}" if verifier else ""))
    return fd


def _ipr(namespace: str) -> IPRoute:
    with inside_namespace(namespace):  # the netlink socket answers for the namespace it was made in
        return IPRoute()


@contextmanager
def silent_neighbour(namespace: str, ifname: str, address: str, mac: str = "02:00:5e:00:53:01"
                     ) -> Iterator[str]:
    """A PERMANENT neighbour entry `address` -> `mac` (a MAC nobody has) on `ifname`."""
    ipr = _ipr(namespace)
    try:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.neigh("replace", dst=address, lladdr=mac, ifindex=index, state=NUD_PERMANENT)
        try:
            yield address
        finally:
            with suppress(Exception):
                ipr.neigh("del", dst=address, lladdr=mac, ifindex=index)
    finally:
        ipr.close()


@contextmanager
def silent_address(namespace: str, ifname: str, address: str, prefixlen: int = 32) -> Iterator[str]:
    """`address` answers ARP on `ifname` of `namespace`, and every IPv4 frame sent to it is dropped."""
    ipr = _ipr(namespace)
    fd = -1
    added: list[str] = []
    try:
        index = ipr.link_lookup(ifname=ifname)[0]
        fd = load_drop_program(IPv4Address(address))
        ipr.tc("add", "ingress", index, "ffff:")
        added.append("qdisc")
        ipr.tc("add-filter", "bpf", index, ":1", fd=fd, name="nslab_silent", parent="ffff:",
               direct_action=True, protocol=0x0003)  # ETH_P_ALL: the program itself checks the type
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        added.append("address")
        yield address
    finally:
        with suppress(Exception):
            if "address" in added:
                ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        with suppress(Exception):
            if "qdisc" in added:
                ipr.tc("del", "ingress", index, "ffff:")
        if fd >= 0:
            os.close(fd)
        ipr.close()
