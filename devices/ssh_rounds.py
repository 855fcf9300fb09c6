"""Rounds on demand on an SSH board (devices/rounds.py): one runner process on the board for all rounds of a
side-by-side comparison, on one connection. A fresh runner per round would pay the SSH exec and the board's
Python and runtime start-up in every round (seconds on a Raspberry Pi), and lengthen the gap between the two
halves of a round pair."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import PurePosixPath

import paramiko

from edgebench.devices.ssh import LINK_ERRORS
from edgebench.types import EdgebenchError, RunSpec


class _ChannelStdin:
    """The channel's stdin, raising BrokenPipeError as a pipe would when the link is gone (paramiko raises
    EOFError or SSHException from a write on a dropped transport)."""

    def __init__(self, f):
        self.f = f

    def _guard(self, op, *args):
        try:
            return op(*args)
        except LINK_ERRORS as exc:
            raise BrokenPipeError(f"the SSH link dropped: {exc!r}") from None

    def write(self, data: str) -> None:
        self._guard(self.f.write, data)

    def flush(self) -> None:
        self._guard(self.f.flush)

    def close(self) -> None:
        self._guard(self.f.close)


class ChannelProcess:
    """A remote command on a paramiko channel, shaped like subprocess.Popen in text mode. The command prints
    its shell's pid first (`echo $$; exec ...`), so kill() can end it."""

    def __init__(self, client: paramiko.SSHClient, command: str, connect_timeout_s: float):
        self.client = client
        self.chan = client.get_transport().open_session(timeout=connect_timeout_s)
        self.chan.exec_command(command)
        self.stdin = _ChannelStdin(self.chan.makefile_stdin("w"))
        self.stdout = self.chan.makefile("r")
        self.stderr = self.chan.makefile_stderr("r")
        first = self.stdout.readline().strip()
        self.pid = int(first) if first.isdigit() else None

    def poll(self) -> int | None:
        return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while not self.chan.exit_status_ready():
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("remote runner", timeout)
            time.sleep(0.05)
        status = self.chan.recv_exit_status()
        return status if status != -1 else None

    def kill(self) -> None:
        if self.pid is not None and self.poll() is None:
            try:
                chan = self.client.get_transport().open_session(timeout=10)
                chan.exec_command(f"kill -9 {self.pid}")
                chan.recv_exit_status()
            except (*LINK_ERRORS, AttributeError):
                pass
        self.chan.close()


def open_ssh_rounds(device, bundle, spec: RunSpec):
    """device: an SSHDevice. Uploads the bundle once and starts its runner with --rounds-from-stdin."""
    from edgebench.devices.rounds import ProcessRounds, rounds_args
    from edgebench.devices.ssh import LinkError, RemoteCommandError

    c = device.config
    try:
        client = device._connect()
    except LinkError as exc:
        raise EdgebenchError(str(exc)) from None
    tmp = None

    def release():
        try:
            if tmp and client.get_transport() and client.get_transport().is_active():
                device._remove(client, tmp)
        except (LinkError, RemoteCommandError):
            pass
        client.close()

    try:
        tmp = device._mktemp(client)
        remote_bundle = str(PurePosixPath(tmp) / bundle.path.name)
        device._upload(client, bundle.path, remote_bundle)
        argv = [c.python, str(PurePosixPath(remote_bundle) / "runner.py"), remote_bundle, *rounds_args(spec)]
        proc = ChannelProcess(client, "echo $$; exec " + " ".join(shlex.quote(a) for a in argv),
                              c.connect_timeout_s)
    except (LinkError, RemoteCommandError, *LINK_ERRORS) as exc:
        release()
        raise EdgebenchError(f"cannot start the runner on {device.name}: {exc}") from None
    return ProcessRounds(device.name, device.provenance, proc, min(spec.timeout_s, c.run_timeout_s),
                         on_close=release)
