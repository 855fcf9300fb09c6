"""Real components for device tests: an sshd on loopback, a small trained bundle.

The sshd runs the way it would on a board: Debian's openssh-server with its own config, host key and
authorized key in a temp folder, on 127.0.0.1 and a free port. Tests that kill it get a private one
(`private_sshd`); the rest share one per session (`sshd`). `ssh_config(**overrides)` builds an
SSHConfig pointing at it; pass python=... to run another interpreter on the "board" (for example a
wrapper script that starts the emulated aarch64 Python under qemu-aarch64).
"""
from __future__ import annotations

import getpass
import shlex
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SSH_KEYGEN = shutil.which("ssh-keygen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc (no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    """One sshd process with its own config, keys and known_hosts file, all under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.log = self.root / "sshd.log"

    def start(self) -> "Sshd":
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copyfile(f"{self.client_key}.pub", self.root / "authorized_keys")
        self.port = free_port()
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp",
            "",
        ]))
        host_pub = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-1000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log.read_text()[-1000:]}")

    def session_pids(self) -> list[int]:
        """The processes sshd started for sessions (and what they run)."""
        return _children(self.proc.pid) if self.proc is not None else []

    def kill_all(self) -> None:
        """SIGKILL the listener and every session process under it (the link drops mid-run)."""
        if self.proc is None:
            return
        victims = [self.proc.pid, *_children(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in _children(self.proc.pid):  # sessions left over by a test
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def config(self, **overrides):
        """An SSHConfig for this server: the host's Python by default, a fresh remote workdir."""
        from edgebench.devices.ssh import SSHConfig

        values = dict(name="loopback-board", host="127.0.0.1", port=self.port, user=getpass.getuser(),
                      key_file=str(self.client_key), known_hosts=str(self.known_hosts), python=sys.executable,
                      connect_timeout_s=10.0, retries=2, backoff_s=0.2)
        values.update(overrides)
        return SSHConfig(**values)


def _need_sshd():
    if SSHD is None or SSH_KEYGEN is None:
        pytest.skip("sshd/ssh-keygen not installed (Debian: apt-get install openssh-server openssh-client)")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    _need_sshd()
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def private_sshd(tmp_path):
    """An sshd of its own, for a test that kills it."""
    _need_sshd()
    server = Sshd(tmp_path / "private-sshd").start()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture
def remote_workdir(tmp_path) -> Path:
    """The 'board' folder runs make their temp folders in (the board is this computer)."""
    d = tmp_path / "remote"
    d.mkdir()
    return d


@pytest.fixture
def ssh_config(sshd, remote_workdir):
    """ssh_config(**overrides) -> SSHConfig for the session sshd, e.g. ssh_config(python='/path/wrapper')."""

    def make(**overrides):
        overrides.setdefault("workdir", str(remote_workdir))
        return sshd.config(**overrides)

    return make


@pytest.fixture
def cpu_cgroup():
    """(cgroup version, the folder where a CPU quota's child groups appear), or skip where none can be made."""
    from edgebench.devices.throttle import find_cpu_cgroup
    from edgebench.types import EdgebenchError

    try:
        version, root = find_cpu_cgroup()
    except EdgebenchError as exc:
        pytest.skip(str(exc))
    return version, Path(root)


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory):
    """A real bundle: the digits CNN trained for 3 epochs, exported to ONNX, with its eval split."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.export.onnx import export_and_validate
    from edgebench.train.registry import train_model

    out = tmp_path_factory.mktemp("digits")
    trained = train_model("digits_cnn", "cnn", "digits", train_cfg={"epochs": 3}, progress=False)
    artifact = export_and_validate(trained, out)
    return make_bundle(artifact, out / "bundle", trained.dataset.x_test, trained.dataset.y_test)


@pytest.fixture(scope="session")
def aarch64_python(tmp_path_factory) -> Path:
    """A wrapper script that runs the emulated aarch64 Python (qemu-aarch64 + the cached Debian arm64 root).

    Point an SSHConfig's `python` at it and the "board" behind the loopback sshd is an ARM CPU.
    Skips when qemu-user/debootstrap are missing; builds the root on first use (about 40 s, cached).
    """
    from edgebench.devices import aarch64_root
    from edgebench.types import EdgebenchError

    try:
        qemu = aarch64_root.require_tool("qemu-aarch64")
        root = aarch64_root.ensure_root()
    except EdgebenchError as exc:
        pytest.skip(f"no emulated aarch64 root: {exc}")
    env = aarch64_root.guest_env(root=root.path)
    keep = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "LC_ALL", "PYTHONPYCACHEPREFIX")
    wrapper = tmp_path_factory.mktemp("arm") / "python3-aarch64"
    wrapper.write_text("#!/bin/sh\n" + "exec env " + " ".join(shlex.quote(f"{k}={env[k]}") for k in keep if k in env)
                       + f" {shlex.quote(qemu)} -L {shlex.quote(str(root.path))} -cpu cortex-a72 "
                       + f"{shlex.quote(str(root.python))} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper
