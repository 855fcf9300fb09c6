"""A Linux board over SSH (a Raspberry Pi, a Jetson, any machine with Python): paramiko, nothing else.

One run: connect (host key checked against known_hosts), make a fresh remote folder with mktemp,
upload the bundle over SFTP, run `python runner.py BUNDLE ...` with the board's Python, parse the JSON
it prints, and remove the folder in a `finally`. Accuracy is computed here on the host from the
runner's predictions. Every remote path and argument goes through shlex.quote: a model or bundle
name never reaches the remote shell unquoted.

A dropped link (refused connection, reset, sshd gone mid-run) is retried with exponential backoff
and then returned as a failed Measurement. What retrying cannot fix (an unknown or changed host key,
a rejected login) is a configuration error and raises EdgebenchError with one clear line.
"""
from __future__ import annotations

import getpass
import json
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import paramiko

from edgebench.deploy.bundle import RUNNER_FILES, Bundle
from edgebench.devices.base import Device
from edgebench.devices.protocol import VERSIONS_PROBE, measurement_from_output, parse_result, runner_args
from edgebench.devices.ssh_keys import HostKeyError, _HostKeyPolicy, _known_hosts_name, fingerprint
from edgebench.types import EdgebenchError, Measurement, Provenance, RunSpec


@dataclass(frozen=True)
class SSHConfig:
    name: str
    host: str = field(metadata={"help": "host name or address of the board"})
    port: int = field(default=22, metadata={"min": 1, "max": 65535, "help": "sshd port"})
    user: str = field(default="", metadata={"help": "login user; empty: the local user name"})
    key_file: str = field(default="", metadata={"help": "private key; empty: ssh-agent and ~/.ssh/id_*"})
    python: str = field(default="python3", metadata={"help": "the board's Python (a path or a name on PATH)"})
    known_hosts: str = field(default="", metadata={"help": "known_hosts file; empty: ~/.ssh/known_hosts"})
    trust_unknown_host: bool = field(default=False, metadata={
        "help": "accept a host key that is not in known_hosts yet, and add it there (trust on first use)"})
    connect_timeout_s: float = field(default=10.0, metadata={"gt": 0, "help": "TCP connect + SSH handshake timeout"})
    run_timeout_s: float = field(default=600.0, metadata={"gt": 0, 
        "help": "longest a runner may take (the run spec's own timeout applies too; the shorter wins)"})
    retries: int = field(default=3, metadata={"min": 0, "help": "reconnects after a dropped link before giving up"})
    backoff_s: float = field(default=1.0, metadata={"min": 0, "help": "first wait before a retry; doubles each time"})
    workdir: str = field(default="/tmp", metadata={"help": "remote folder under which temp folders are made"})
    emulated: bool = field(default=False, metadata={
        "help": "the board's Python runs under an emulator (e.g. qemu-aarch64): its latency is labelled "
                "'emulated', never 'measured'"})
    # Energy per inference where the device has no counters: power_active_w x latency, labelled estimated.
    power_active_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power while inferring (W); 0: none"})
    power_idle_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power at idle (W), recorded"})
    power_profile: str = field(default="", metadata={"help": "where the power figures come from"})


# what paramiko raises when the link is down or drops mid-call (EOFError: the socket died before the transport
# noticed); devices/ssh_rounds.py uses the same
LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


class LinkError(Exception):
    """The SSH link failed or dropped: worth a retry."""


class RemoteCommandError(Exception):
    """A remote helper command (mktemp, rm, mkdir) ran and failed: a failed Measurement, not a retry."""


@dataclass
class _Exec:
    stdout: str
    stderr: str
    status: int | None  # None: no exit status (killed by a signal, or by us on timeout)
    dropped: bool = False  # the link died before the command finished
    timed_out: bool = False


class SSHDevice(Device):
    def __init__(self, config: SSHConfig):
        self.config = config
        self.name = config.name
        self.notes: list[str] = []  # what this device did on the user's behalf (e.g. trusted a host key)

    @property
    def kind(self) -> str:
        return "ssh"

    @property
    def provenance(self) -> Provenance:
        return Provenance.EMULATED if self.config.emulated else Provenance.MEASURED

    # ------------------------------------------------------------ connection
    @property
    def known_hosts(self) -> Path:
        return Path(self.config.known_hosts or "~/.ssh/known_hosts").expanduser()

    def _connect(self) -> paramiko.SSHClient:
        """A connected client, or LinkError (retryable) / EdgebenchError (configuration)."""
        c = self.config
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        policy = _HostKeyPolicy(c, self.known_hosts)
        client.set_missing_host_key_policy(policy)
        try:
            client.connect(
                c.host, port=c.port, username=c.user or getpass.getuser(),
                key_filename=os.path.expanduser(c.key_file) if c.key_file else None,
                look_for_keys=not c.key_file, allow_agent=not c.key_file,
                timeout=c.connect_timeout_s, banner_timeout=c.connect_timeout_s,
                auth_timeout=c.connect_timeout_s, channel_timeout=c.connect_timeout_s,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"device '{c.name}': host key of {c.host}:{c.port} CHANGED (got {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, {self.known_hosts} has {fingerprint(exc.expected_key)}); refusing to "
                f"connect. If the board was reinstalled, remove the old line with "
                f"`ssh-keygen -R '{_known_hosts_name(c.host, c.port)}' -f {self.known_hosts}`") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise EdgebenchError(f"device '{c.name}': login to {c.user or getpass.getuser()}@{c.host}:{c.port} "
                                 f"rejected ({exc}); check user and key_file") from None
        except FileNotFoundError as exc:
            client.close()
            raise EdgebenchError(f"device '{c.name}': key file not found: {exc.filename}") from None
        except LINK_ERRORS as exc:
            client.close()
            raise LinkError(f"cannot connect to {c.host}:{c.port}: {_describe(exc)}") from None
        if policy.added:
            self.notes.append(policy.added)
        client.get_transport().set_keepalive(15)
        return client

    def _exec(self, client: paramiko.SSHClient, command: str, timeout_s: float) -> _Exec:
        """Run one remote command, collecting stdout/stderr until it exits, the link drops or time is up."""
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise LinkError("link dropped")
        try:
            chan = transport.open_session(timeout=self.config.connect_timeout_s)
            chan.exec_command(command)
        except LINK_ERRORS as exc:
            raise LinkError(f"cannot start a remote command: {_describe(exc)}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        timed_out = False
        try:
            while not chan.closed:
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                elif chan.exit_status_ready() and chan.eof_received:
                    break
                elif time.monotonic() > deadline:
                    timed_out = True
                    break
                else:
                    select.select([chan], [], [], 0.2)
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
        except LINK_ERRORS:
            pass  # judged below from the link state
        status = chan.exit_status if chan.exit_status_ready() and chan.exit_status != -1 else None
        dropped = False
        if status is None and not timed_out:
            # The channel closed without an exit status: the process died of a signal (link fine) or the
            # link died. paramiko closes the channels a moment before it marks the transport inactive.
            settle = time.monotonic() + 1.0
            while transport.is_active() and time.monotonic() < settle:
                time.sleep(0.05)
            dropped = not transport.is_active()
        chan.close()
        return _Exec(out.decode(errors="replace"), err.decode(errors="replace"), status, dropped, timed_out)

    def _check(self, client, command: str, timeout_s: float = 60.0) -> str:
        res = self._exec(client, command, timeout_s)
        if res.dropped or res.timed_out:
            raise LinkError(f"link dropped or timed out during `{command[:60]}`")
        if res.status != 0:
            raise RemoteCommandError(f"`{command[:80]}` failed on {self.config.host} with code {res.status}: "
                                     f"{' '.join(res.stderr.split())[-300:]}")
        return res.stdout

    def _mktemp(self, client) -> str:
        template = str(PurePosixPath(self.config.workdir) / "edgebench.XXXXXXXX")
        path = self._check(client, f"mktemp -d {shlex.quote(template)}").strip().splitlines()
        if not path or not path[-1].startswith("/"):
            raise RemoteCommandError(f"mktemp under {self.config.workdir} on {self.config.host} gave no folder")
        return path[-1]

    def _remove(self, client, path: str) -> None:
        self._check(client, f"rm -rf -- {shlex.quote(path)}")

    def _upload(self, client, local_dir: Path, remote_dir: str) -> None:
        try:
            with client.open_sftp() as sftp:
                sftp.get_channel().settimeout(self.config.run_timeout_s)
                sftp.mkdir(remote_dir)
                for root, dirs, files in os.walk(local_dir):
                    rel = Path(root).relative_to(local_dir)
                    target = PurePosixPath(remote_dir, *rel.parts)
                    for d in dirs:
                        sftp.mkdir(str(target / d))
                    for f in files:
                        sftp.put(str(Path(root) / f), str(target / f))
        except LINK_ERRORS as exc:
            raise LinkError(f"upload failed: {_describe(exc)}") from None

    def _with_retries(self, what: str, attempt_fn):
        """Call attempt_fn(client) on a fresh connection; retry LinkError with backoff."""
        c = self.config
        errors = []
        for attempt in range(c.retries + 1):
            if attempt:
                time.sleep(c.backoff_s * 2 ** (attempt - 1))
            try:
                client = self._connect()
            except LinkError as exc:
                errors.append(str(exc))
                continue
            try:
                return attempt_fn(client)
            except LinkError as exc:
                errors.append(str(exc))
            finally:
                client.close()
        raise LinkError(f"{what} on {c.host}:{c.port} failed after {c.retries + 1} attempt(s): {errors[-1]}"
                        + (f" (first: {errors[0]})" if errors[0] != errors[-1] else ""))

    # ------------------------------------------------------------ contract
    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        timeout_s = min(spec.timeout_s, self.config.run_timeout_s)
        leftovers: list[str] = []  # remote folders a dropped link kept us from removing

        def attempt(client):
            for old in list(leftovers):  # a reconnect: clean up what the dropped attempt left
                try:
                    self._remove(client, old)
                    leftovers.remove(old)
                except RemoteCommandError:
                    pass
            tmp = self._mktemp(client)
            leftovers.append(tmp)
            remote_bundle = str(PurePosixPath(tmp) / bundle.path.name)
            self._upload(client, bundle.path, remote_bundle)
            runner = str(PurePosixPath(remote_bundle) / "runner.py")
            argv = [self.config.python, runner, remote_bundle, *runner_args(spec)]
            # `echo $$; exec ...`: the first line is the runner's pid, so a timed-out run can be killed
            command = "echo $$; exec " + " ".join(shlex.quote(a) for a in argv)
            t0 = time.perf_counter_ns()
            res = self._exec(client, command, timeout_s)
            wall_ms = (time.perf_counter_ns() - t0) / 1e6
            if res.timed_out:
                self._kill(client, res.stdout)
            if res.dropped:
                raise LinkError("link dropped during the run")
            self._remove(client, tmp)  # the `finally` of a healthy link; a dropped one is retried above
            leftovers.remove(tmp)
            return res, wall_ms

        try:
            res, wall_ms = self._with_retries("run", attempt)
        except LinkError as exc:
            extra = {"remote_leftovers": leftovers} if leftovers else {}
            return Measurement.failed(self.name, self.provenance, str(exc), extra=extra)
        except RemoteCommandError as exc:
            return Measurement.failed(self.name, self.provenance, str(exc))
        if res.timed_out:
            return Measurement.failed(self.name, self.provenance, f"runner timed out after {timeout_s:g} s",
                                      extra={"stdout": res.stdout[-2000:]})
        m = measurement_from_output(self.name, self.provenance, res.stdout, res.stderr, res.status,
                                    eval_labels=bundle.eval_labels if spec.eval else None)
        m.extra["remote_wall_ms"] = wall_ms  # upload excluded; includes process start and the eval pass
        if self.notes:
            m.extra["notes"] = list(self.notes)
        return m

    def open_rounds(self, bundle: Bundle, spec: RunSpec):
        """One runner process on the board for all rounds of a side-by-side comparison (devices/ssh_rounds.py)."""
        from edgebench.devices.ssh_rounds import open_ssh_rounds

        return open_ssh_rounds(self, bundle, spec)

    def _kill(self, client, stdout: str) -> None:
        first = stdout.strip().splitlines()[:1]
        if first and first[0].isdigit():
            try:
                self._exec(client, f"kill -9 {int(first[0])}", 10.0)
            except LinkError:
                pass

    def facts(self) -> dict:
        """The runner's --facts-only (CPU, cores, memory, OS) and a version probe, both run on the board."""

        def attempt(client):
            tmp = self._mktemp(client)
            try:
                runner = str(PurePosixPath(tmp) / "runner.py")
                try:
                    with client.open_sftp() as sftp:
                        for part in RUNNER_FILES:
                            sftp.put(str(part), str(PurePosixPath(tmp) / part.name))
                except LINK_ERRORS as exc:
                    raise LinkError(f"upload failed: {_describe(exc)}") from None
                py = shlex.quote(self.config.python)
                probe = self._exec(client, f"{py} -c {shlex.quote(VERSIONS_PROBE)}", 120.0)
                facts_run = self._exec(client, f"{py} {shlex.quote(runner)} {shlex.quote(tmp)} --facts-only", 120.0)
                if probe.dropped or facts_run.dropped:
                    raise LinkError("link dropped while probing the board")
            finally:
                self._remove(client, tmp)
            return probe, facts_run

        try:
            probe, facts_run = self._with_retries("facts", attempt)
        except (LinkError, RemoteCommandError) as exc:
            raise EdgebenchError(f"device '{self.name}': {exc}") from None
        if probe.status != 0:
            raise EdgebenchError(f"device '{self.name}': `{self.config.python}` does not run on {self.config.host}: "
                                 f"{' '.join((probe.stderr or probe.stdout).split())[-200:] or 'no output'}")
        facts = {}
        doc = parse_result(facts_run.stdout)
        if doc:
            facts.update(doc.get("facts", {}))
        try:
            facts.update(json.loads(probe.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            pass
        facts["host"] = f"{self.config.host}:{self.config.port}"
        return facts

    def doctor(self) -> dict:
        c = self.config
        checks = []
        facts: dict = {}
        try:
            t0 = time.perf_counter()
            client = self._connect()
            client.close()
            checks.append(("reachable", True, f"{c.host}:{c.port}, connected in {time.perf_counter() - t0:.2f} s"))
        except (LinkError, EdgebenchError) as exc:
            checks.append(("reachable", False, str(exc)))
            return {"ok": False, "checks": checks, "facts": facts}
        try:
            facts = self.facts()
        except EdgebenchError as exc:
            checks.append(("python", False, str(exc)))
            return {"ok": False, "checks": checks, "facts": facts}
        has_numpy = facts.get("numpy") is not None
        has_ort = facts.get("onnxruntime") is not None
        litert, tflite = facts.get("ai_edge_litert"), facts.get("tflite_runtime")
        checks.append(("python", True, f"{c.python}: {facts.get('python', '?')}"))
        checks.append(("numpy", has_numpy, facts.get("numpy") or "not installed (the runner needs it)"))
        checks.append(("onnxruntime", has_ort, facts.get("onnxruntime") or "not installed (needed for .onnx bundles)"))
        checks.append(("tflite runtime", bool(litert or tflite),
                       f"ai_edge_litert {litert}" if litert else f"tflite_runtime {tflite}" if tflite
                       else "neither ai_edge_litert nor tflite_runtime (needed for .tflite bundles)"))
        checks.append(("cpu", True, f"{facts.get('cpu', '?')}, {facts.get('cores', '?')} cores, "
                                    f"{facts.get('mem_total_mb') or 0:.0f} MB"))
        for note in self.notes:
            checks.append(("host key", True, note))
        ok = has_numpy and (has_ort or bool(litert or tflite))  # usable for at least one format
        return {"ok": bool(ok), "checks": checks, "facts": facts}

    def setup(self) -> None:
        """Make sure the remote workdir exists (idempotent)."""
        try:
            self._with_retries("setup", lambda client: self._check(
                client, f"mkdir -p -- {shlex.quote(self.config.workdir)}"))
        except (LinkError, RemoteCommandError) as exc:
            raise EdgebenchError(f"device '{self.name}': {exc}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
