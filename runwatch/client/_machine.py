"""This machine's identity as datacat computes it: ``machine_id`` and the host name.

datacat's daemon sends ``machine_id`` when it registers a session; its server uses it to
mark a same-machine session that went silent as crashed (``session_crashed_detected``).
The id is the MD5 hex digest of the hardware address (lowercase, colon-separated) of the
first network interface, in kernel index order, that is not loopback and has a non-zero
hardware address. Go's interface list skips, as here, the IPv4- and IPv6-sized
addresses of IP tunnels.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import sys
import uuid
from pathlib import Path

__all__ = ["hostname", "machine_id", "machine_id_from_sysfs"]

_IFF_LOOPBACK = 0x8
#: ARPHRD types whose 4-byte (IPv4) or 16-byte (IPv6) address is a tunnel endpoint, not hardware.
_IPV4_TUNNELS = frozenset({768, 776, 778})  # IPIP, SIT, IPGRE
_IPV6_TUNNELS = frozenset({769, 823})  # TUNNEL6, IP6GRE


def machine_id_from_sysfs(net: Path) -> str:
    """The machine id from a Linux ``/sys/class/net`` tree (``""`` when no interface qualifies)."""
    interfaces: list[tuple[int, str]] = []
    for device in net.iterdir():
        try:
            index = int((device / "ifindex").read_text().strip())
            flags = int((device / "flags").read_text().strip(), 16)
            address = (device / "address").read_text().strip().lower()
            kind = int((device / "type").read_text().strip()) if (device / "type").exists() else 0
        except (OSError, ValueError):
            continue
        octets = [part for part in address.split(":") if part]
        if flags & _IFF_LOOPBACK or not octets or all(int(part, 16) == 0 for part in octets):
            continue
        if (len(octets) == 4 and kind in _IPV4_TUNNELS) or (len(octets) == 16 and kind in _IPV6_TUNNELS):
            continue
        interfaces.append((index, ":".join(octets)))
    if not interfaces:
        return ""
    return hashlib.md5(min(interfaces)[1].encode(), usedforsecurity=False).hexdigest()


@functools.cache
def machine_id() -> str:
    """This machine's id (cached): from ``/sys/class/net`` on Linux, else from the MAC Python finds."""
    net = Path("/sys/class/net")
    if sys.platform.startswith("linux") and net.is_dir():
        return machine_id_from_sysfs(net)
    node = uuid.getnode()
    if node >> 40 & 1:  # the multicast bit: a random number, not a hardware address
        return ""
    address = ":".join(f"{node >> shift & 0xFF:02x}" for shift in range(40, -8, -8))
    return hashlib.md5(address.encode(), usedforsecurity=False).hexdigest()


def hostname() -> str:
    """The host name, as datacat sends it."""
    return socket.gethostname()
