"""An Android phone over adb (adbutils): the bundle runner where the phone has a Python, else benchmark_model.

With `python` set (e.g. Termux's), a run is the same as everywhere else: push the bundle to a fresh
folder under `workdir`, run runner.py, parse its JSON, remove the folder. Without it, the TFLite
`benchmark_model` binary the user pushed to the phone runs the .tflite file on random inputs, and
its text output is parsed by `parse_benchmark_model_output`. That binary prints aggregates only, so
a Measurement from it has no raw samples, no percentiles of ours and no accuracy: those stay empty
(listed in extra["absent"]) and the tool's own figures go to extra["benchmark_model"].

The adb server: when none is listening, this device starts one on `server_port` and, with
`stop_server` (the default), stops it again when the call returns, so nothing is left running.
"""
from __future__ import annotations

import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from edgebench.deploy.bundle import RUNNER_FILES, Bundle
from edgebench.devices.base import Device
from edgebench.devices.benchmark_model import (
    measurement_from_benchmark_model, parse_benchmark_model_output)
from edgebench.devices.protocol import measurement_from_output, parse_result, runner_args
from edgebench.types import EdgebenchError, Measurement, Provenance, RunSpec


@dataclass(frozen=True)
class ADBConfig:
    name: str
    serial: str = field(default="", metadata={"help": "adb serial; empty: the one connected device"})
    python: str = field(default="", metadata={
        "help": "path to a Python on the phone (e.g. /data/data/com.termux/files/usr/bin/python); "
                "empty: use benchmark_binary"})
    benchmark_binary: str = field(default="", metadata={
        "help": "path on the phone to TFLite's benchmark_model (for .tflite bundles when there is no Python)"})
    workdir: str = field(default="/data/local/tmp", metadata={"help": "phone folder for temp folders"})
    taskset: str = field(default="", metadata={"help": "CPU affinity mask for the run, e.g. 'f0' (big cores)"})
    server_host: str = field(default="127.0.0.1", metadata={"help": "adb server host"})
    server_port: int = field(default=5037, metadata={"min": 1, "max": 65535, "help": "adb server port"})
    stop_server: bool = field(default=True, metadata={"help": "stop an adb server this device had to start"})
    run_timeout_s: float = field(default=600.0, metadata={"gt": 0, "help": "longest a run may take"})
    # Energy per inference where the device has no counters: power_active_w x latency, labelled estimated.
    power_active_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power while inferring (W); 0: none"})
    power_idle_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power at idle (W), recorded"})
    power_profile: str = field(default="", metadata={"help": "where the power figures come from"})


# ---------------------------------------------------------------- transport
class Transport(Protocol):
    """What the device needs from adb. adbutils in real use; a fake one in tests (no phone can exist there)."""

    def shell(self, command: str, timeout_s: float) -> tuple[int, str, str]: ...  # (code, stdout, stderr)

    def push(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...


class AdbutilsTransport:
    """adbutils against an adb server; starts the server if none listens, and stops what it started."""

    def __init__(self, config: ADBConfig):
        import adbutils  # only here: adbutils is needed only when an adb device is used

        self._adbutils = adbutils
        self.config = config
        self.started_server = False
        if not _listening(config.server_host, config.server_port):
            if config.server_host not in ("127.0.0.1", "localhost"):
                raise EdgebenchError(f"device '{config.name}': no adb server at "
                                     f"{config.server_host}:{config.server_port}")
            subprocess.run([adbutils.adb_path(), "-P", str(config.server_port), "start-server"],
                           capture_output=True, timeout=60)
            self.started_server = True
        self.client = adbutils.AdbClient(host=config.server_host, port=config.server_port)
        try:
            self.device = self._pick_device()
        except Exception:
            self.close()
            raise

    def _pick_device(self):
        c = self.config
        devices = [d for d in self.client.list() if d.state == "device"]
        serials = [d.serial for d in devices]
        if c.serial:
            if c.serial not in serials:
                raise EdgebenchError(f"device '{c.name}': phone {c.serial} is not connected "
                                     f"(connected: {', '.join(serials) or 'none'})")
            return self.client.device(serial=c.serial)
        if not serials:
            raise EdgebenchError(f"device '{c.name}': no Android device connected (check `adb devices`, "
                                 f"USB debugging, the authorization prompt on the phone)")
        if len(serials) > 1:
            raise EdgebenchError(f"device '{c.name}': {len(serials)} phones connected ({', '.join(serials)}); "
                                 f"set serial")
        return self.client.device(serial=serials[0])

    def shell(self, command: str, timeout_s: float) -> tuple[int, str, str]:
        res = self.device.shell2(command, timeout=timeout_s, v2=True)
        return res.returncode, res.stdout or res.output, res.stderr

    def push(self, local: Path, remote: str) -> None:
        self.device.sync.push(str(local), remote)

    def close(self) -> None:
        if self.started_server and self.config.stop_server:
            try:
                self.client.server_kill()
            except Exception:
                subprocess.run([self._adbutils.adb_path(), "-P", str(self.config.server_port), "kill-server"],
                               capture_output=True, timeout=30)
            self.started_server = False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- device
class ADBDevice(Device):
    def __init__(self, config: ADBConfig, transport: Transport | None = None):
        self.config = config
        self.name = config.name
        self._transport = transport  # None: an adbutils transport per call

    @property
    def kind(self) -> str:
        return "adb"

    @property
    def provenance(self) -> Provenance:
        return Provenance.MEASURED

    def _open(self) -> Transport:
        return self._transport if self._transport is not None else AdbutilsTransport(self.config)

    def _done(self, t: Transport) -> None:
        if t is not self._transport:
            t.close()

    def _sh(self, t: Transport, command: str, timeout_s: float = 60.0) -> str:
        code, out, err = t.shell(command, timeout_s)
        if code != 0:
            raise EdgebenchError(f"device '{self.name}': `{command[:80]}` failed with code {code}: "
                                 f"{' '.join((err or out).split())[-300:]}")
        return out

    def _mktemp(self, t: Transport) -> str:
        template = str(PurePosixPath(self.config.workdir) / "edgebench.XXXXXXXX")
        lines = self._sh(t, f"mktemp -d {shlex.quote(template)}").strip().splitlines()
        if not lines or not lines[-1].startswith("/"):
            raise EdgebenchError(f"device '{self.name}': mktemp under {self.config.workdir} gave no folder")
        return lines[-1].strip()

    def _push_dir(self, t: Transport, local: Path, remote: str) -> None:
        self._sh(t, f"mkdir -p -- {shlex.quote(remote)}")
        for f in sorted(local.rglob("*")):
            target = str(PurePosixPath(remote, *f.relative_to(local).parts))
            if f.is_dir():
                self._sh(t, f"mkdir -p -- {shlex.quote(target)}")
            else:
                t.push(f, target)

    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        c = self.config
        if not c.python and not c.benchmark_binary:
            raise EdgebenchError(f"device '{self.name}': set python (a Python on the phone) or benchmark_binary "
                                 f"(TFLite's benchmark_model on the phone)")
        if not c.python and bundle.manifest.get("format") != "tflite":
            return Measurement.failed(self.name, self.provenance,
                                      f"no Python on the phone and benchmark_model runs only .tflite files "
                                      f"(this bundle is {bundle.manifest.get('format')})")
        timeout_s = min(spec.timeout_s, c.run_timeout_s)
        try:
            t = self._open()
        except EdgebenchError as exc:
            return Measurement.failed(self.name, self.provenance, str(exc))
        except Exception as exc:  # adb server trouble
            return Measurement.failed(self.name, self.provenance, f"adb: {type(exc).__name__}: {exc}")
        tmp = None
        try:
            tmp = self._mktemp(t)
            remote_bundle = str(PurePosixPath(tmp) / "bundle")
            self._push_dir(t, bundle.path, remote_bundle)
            if c.python:
                return self._run_runner(t, bundle, remote_bundle, spec, timeout_s)
            return self._run_benchmark_model(t, bundle, remote_bundle, spec, timeout_s)
        except EdgebenchError as exc:
            return Measurement.failed(self.name, self.provenance, str(exc))
        except Exception as exc:  # a dropped USB link, an adb timeout
            return Measurement.failed(self.name, self.provenance, f"adb: {type(exc).__name__}: {exc}")
        finally:
            try:
                if tmp is not None:
                    t.shell(f"rm -rf -- {shlex.quote(tmp)}", 60.0)
            except Exception:
                pass
            self._done(t)

    def _prefix(self) -> list[str]:
        return ["taskset", self.config.taskset] if self.config.taskset else []

    def _run_runner(self, t, bundle, remote_bundle, spec, timeout_s) -> Measurement:
        runner = str(PurePosixPath(remote_bundle) / "runner.py")
        argv = [*self._prefix(), self.config.python, runner, remote_bundle, *runner_args(spec)]
        code, out, err = t.shell(" ".join(shlex.quote(a) for a in argv), timeout_s)
        return measurement_from_output(self.name, self.provenance, out, err, code,
                                       eval_labels=bundle.eval_labels if spec.eval else None)

    def _run_benchmark_model(self, t, bundle, remote_bundle, spec, timeout_s) -> Measurement:
        graph = str(PurePosixPath(remote_bundle) / bundle.manifest["model_file"])
        argv = [*self._prefix(), self.config.benchmark_binary, f"--graph={graph}",
                f"--num_threads={spec.threads}", f"--warmup_runs={spec.warmup}", f"--num_runs={spec.runs}",
                f"--min_secs={float(spec.min_time_s):g}", "--warmup_min_secs=0"]
        code, out, err = t.shell(" ".join(shlex.quote(a) for a in argv), timeout_s)
        parsed = parse_benchmark_model_output(out + "\n" + err)
        if code != 0 or "inference" not in parsed:
            tail = " ".join((err + " " + out).split())[-300:]
            return Measurement.failed(self.name, self.provenance,
                                      f"benchmark_model exited with code {code}" + (f": {tail}" if tail else ""),
                                      extra={"benchmark_model": parsed})
        return measurement_from_benchmark_model(self.name, parsed, spec)

    def facts(self) -> dict:
        t = self._open()
        try:
            facts = {}
            for key, prop in (("model", "ro.product.model"), ("android", "ro.build.version.release"),
                              ("abi", "ro.product.cpu.abi"), ("soc", "ro.soc.model")):
                code, out, _ = t.shell(f"getprop {prop}", 30.0)
                if code == 0 and out.strip():
                    facts[key] = out.strip()
            code, out, _ = t.shell("nproc; grep -m1 MemTotal /proc/meminfo", 30.0)
            lines = out.split("\n") if code == 0 else []
            if lines and lines[0].strip().isdigit():
                facts["cores"] = int(lines[0])
            if len(lines) > 1 and lines[1].split()[1:2]:
                facts["mem_total_mb"] = int(lines[1].split()[1]) / 1024.0
            if self.config.python:
                facts.update(self._python_facts(t))
            if self.config.benchmark_binary:
                code, _, _ = t.shell(f"test -x {shlex.quote(self.config.benchmark_binary)}", 30.0)
                facts["benchmark_model"] = self.config.benchmark_binary if code == 0 else None
            return facts
        finally:
            self._done(t)

    def _python_facts(self, t) -> dict:
        import json

        from edgebench.devices.protocol import VERSIONS_PROBE

        tmp = self._mktemp(t)
        try:
            runner = str(PurePosixPath(tmp) / "runner.py")
            for part in RUNNER_FILES:
                t.push(part, str(PurePosixPath(tmp) / part.name))
            py = shlex.quote(self.config.python)
            facts = {}
            _, out, _ = t.shell(f"{py} {shlex.quote(runner)} {shlex.quote(tmp)} --facts-only", 120.0)
            doc = parse_result(out)
            if doc:
                facts.update(doc.get("facts", {}))
            code, out, err = t.shell(f"{py} -c {shlex.quote(VERSIONS_PROBE)}", 120.0)
            if code != 0:
                raise EdgebenchError(f"device '{self.name}': {self.config.python} does not run on the phone: "
                                     f"{' '.join((err or out).split())[-200:]}")
            try:
                facts.update(json.loads(out.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                pass
            return facts
        finally:
            t.shell(f"rm -rf -- {shlex.quote(tmp)}", 60.0)

    def doctor(self) -> dict:
        checks = []
        try:
            facts = self.facts()
        except EdgebenchError as exc:
            return {"ok": False, "checks": [("phone", False, str(exc))], "facts": {}}
        except Exception as exc:
            return {"ok": False, "checks": [("adb", False, f"{type(exc).__name__}: {exc}")], "facts": {}}
        checks.append(("phone", True, f"{facts.get('model', '?')}, Android {facts.get('android', '?')}, "
                                      f"{facts.get('abi', '?')}, {facts.get('cores', '?')} cores"))
        usable = False
        if self.config.python:
            has_numpy = facts.get("numpy") is not None
            checks.append(("python", True, f"{self.config.python}: {facts.get('python', '?')}"))
            checks.append(("numpy", has_numpy, facts.get("numpy") or "not installed"))
            rt = [f"{k} {facts[k]}" for k in ("onnxruntime", "ai_edge_litert", "tflite_runtime") if facts.get(k)]
            checks.append(("runtime", bool(rt), ", ".join(rt) or "no onnxruntime / ai_edge_litert / tflite_runtime"))
            usable = has_numpy and bool(rt)
        if self.config.benchmark_binary:
            ok = facts.get("benchmark_model") is not None
            checks.append(("benchmark_model", ok, self.config.benchmark_binary + ("" if ok else ": not executable")))
            usable = usable or ok
        if not (self.config.python or self.config.benchmark_binary):
            checks.append(("runner", False, "set python or benchmark_binary"))
        return {"ok": usable, "checks": checks, "facts": facts}

    def setup(self) -> None:
        t = self._open()
        try:
            self._sh(t, f"mkdir -p -- {shlex.quote(self.config.workdir)}")
        finally:
            self._done(t)
