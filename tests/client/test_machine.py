"""Tests of runwatch.client._machine: datacat's machine_id from a /sys/class/net tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runwatch.client import machine_id
from runwatch.client._machine import machine_id_from_sysfs


def interface(net: Path, name: str, index: int, flags: str, address: str, kind: int = 1) -> None:
    """One interface directory as Linux shows it."""
    device = net / name
    device.mkdir(parents=True)
    (device / "ifindex").write_text(f"{index}\n")
    (device / "flags").write_text(f"{flags}\n")
    (device / "address").write_text(f"{address}\n")
    (device / "type").write_text(f"{kind}\n")


def test_the_first_non_loopback_interface_with_a_hardware_address_is_hashed(tmp_path: Path) -> None:
    """By kernel index: loopback, all-zero and tunnel addresses are skipped; the id is MD5 of the address."""
    interface(tmp_path, "lo", 1, "0x9", "00:00:00:00:00:00", 772)
    interface(tmp_path, "tun4", 2, "0x91", "0a:00:00:01", 768)  # an IPIP tunnel's IPv4 endpoint
    interface(tmp_path, "dummy", 3, "0x82", "00:00:00:00:00:00")
    interface(tmp_path, "eth0", 5, "0x1003", "02:FC:00:00:00:01")
    interface(tmp_path, "ifb0", 4, "0x82", "ae:0e:af:51:f2:a2")  # down, but datacat does not care
    assert machine_id_from_sysfs(tmp_path) == hashlib.md5(b"ae:0e:af:51:f2:a2").hexdigest()
    assert machine_id_from_sysfs(tmp_path) == "456c47a07b039f60a478f6d5844470c9"  # as observed against datacat


def test_no_qualifying_interface_gives_an_empty_id(tmp_path: Path) -> None:
    """Only loopback: the id is empty (datacat then skips crash detection)."""
    interface(tmp_path, "lo", 1, "0x9", "00:00:00:00:00:00", 772)
    assert machine_id_from_sysfs(tmp_path) == ""


def test_this_machines_id_is_stable_and_hex() -> None:
    """machine_id() is cached, and is an MD5 hex digest or empty."""
    assert machine_id() == machine_id()
    assert machine_id() == "" or (len(machine_id()) == 32 and int(machine_id(), 16) >= 0)
