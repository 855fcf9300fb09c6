"""Host keys of an SSH board (devices/ssh.py): checked against known_hosts, never silently accepted; an unknown
key is refused with the commands that check and trust it, or (trust_unknown_host) added and said so."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from edgebench.types import EdgebenchError

if TYPE_CHECKING:
    from edgebench.devices.ssh import SSHConfig


class HostKeyError(EdgebenchError):
    """The board's host key is unknown or changed: never retried, never silently accepted."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it (ssh-keygen -lf)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key with instructions, or (trust_unknown_host) add it and say so."""

    def __init__(self, config: SSHConfig, known_hosts: Path):
        self.config = config
        self.known_hosts = known_hosts
        self.added: str = ""  # set when a key was trusted on first use

    def missing_host_key(self, client, hostname, key):
        c = self.config
        fp = fingerprint(key)
        if not c.trust_unknown_host:
            raise HostKeyError(
                f"device '{c.name}': host key of {c.host}:{c.port} is not in {self.known_hosts} "
                f"({key.get_name()} {fp}); compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the "
                f"board, then trust it with `ssh-keyscan -p {c.port} {c.host} >> {self.known_hosts}` "
                f"or set trust_unknown_host = true for this device")
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{_known_hosts_name(hostname, c.port) if hostname == c.host else hostname} "
                    f"{key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.added = (f"trusted unknown host key of {c.host}:{c.port} ({key.get_name()} {fp}) "
                      f"and added it to {self.known_hosts}")
