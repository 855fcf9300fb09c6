"""This computer: the runner in a subprocess, so a crashing runtime cannot take the host down."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from edgebench.deploy.bundle import Bundle
from edgebench.devices.base import Device
from edgebench.devices.protocol import VERSIONS_PROBE, measurement_from_output, parse_result, runner_args
from edgebench.types import EdgebenchError, Measurement, Provenance, RunSpec


@dataclass(frozen=True)
class LocalConfig:
    name: str = "local"
    python: str = field(default=sys.executable, metadata={"help": "Python that runs the runner"})
    cores: tuple = field(default=(), metadata={"help": "CPU cores to pin the runner to (taskset); empty: no pinning"})
    cpu_quota: float = field(default=0.0, metadata={"gt": 0, 
        "help": "CPU time limit in cores through cgroups (0.5 = half a core), in 10 ms periods (an inference much "
                "shorter than that is slowed only when it meets a throttled stretch); 0: none. A throttled device's "
                "latency is labelled 'emulated'"})
    # Energy per inference where the device has no counters: power_active_w x latency, labelled estimated.
    power_active_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power while inferring (W); 0: none"})
    power_idle_w: float = field(default=0.0, metadata={"min": 0.0, "help": "power at idle (W), recorded"})
    power_profile: str = field(default="", metadata={"help": "where the power figures come from"})


class LocalDevice(Device):
    def __init__(self, config: LocalConfig = LocalConfig()):
        self.config = config
        self.name = config.name

    @property
    def kind(self) -> str:
        return "local"

    @property
    def provenance(self) -> Provenance:
        # Pinned cores are still this computer's real cores; a CPU quota only imitates a slower device.
        return Provenance.EMULATED if self.config.cpu_quota > 0 else Provenance.MEASURED

    def _command(self, bundle: Bundle, extra: list[str]) -> list[str]:
        return self.pinned([self.config.python, str(bundle.path / "runner.py"), str(bundle.path), *extra])

    def pinned(self, cmd: list[str]) -> list[str]:
        """`cmd` run on the device's cores (taskset), as its runner is."""
        if self.config.cores:
            if shutil.which("taskset") is None:
                raise EdgebenchError("core pinning needs 'taskset' (util-linux), which is not installed")
            cmd = ["taskset", "-c", ",".join(str(c) for c in self.config.cores), *cmd]
        return cmd

    def _env(self) -> dict:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")  # the runtime's own thread setting governs; no stray pools
        return env

    def facts(self) -> dict:
        from edgebench.deploy.bundle import RUNNER_SOURCE

        out = subprocess.run([self.config.python, str(RUNNER_SOURCE), ".", "--facts-only"],
                             capture_output=True, text=True, timeout=60)
        doc = parse_result(out.stdout) or {}
        facts = doc.get("facts", {})
        facts.update(_runtime_versions(self.config.python))
        if self.config.cores:
            facts["pinned_cores"] = list(self.config.cores)
        return facts

    def doctor(self) -> dict:
        checks = []
        try:
            facts = self.facts()
            checks.append(("python", True, facts.get("python", "?")))
            for pkg in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
                v = facts.get(pkg)
                checks.append((pkg, v is not None or pkg == "tflite_runtime", v or "not installed"))
        except Exception as exc:
            facts = {}
            checks.append(("python", False, str(exc)))
        if self.config.cores:
            checks.append(("taskset", shutil.which("taskset") is not None, shutil.which("taskset") or "missing"))
        if self.config.cpu_quota > 0:
            from edgebench.devices.throttle import CpuQuota

            try:
                with CpuQuota(self.config.cpu_quota) as q:
                    checks.append(("cpu quota", True, f"cgroup v{q.version}, {self.config.cpu_quota:g} cores"))
            except EdgebenchError as exc:
                checks.append(("cpu quota", False, str(exc)))
        return {"ok": all(c[1] for c in checks), "checks": checks, "facts": facts}

    def setup(self) -> None:
        return None  # nothing to prepare on this computer

    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        cmd, quota = self._throttled(self._command(bundle, runner_args(spec)))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=spec.timeout_s, env=self._env())
        except subprocess.TimeoutExpired:
            return Measurement.failed(self.name, self.provenance, f"runner timed out after {spec.timeout_s:g} s")
        finally:
            if quota is not None:
                quota.__exit__(None, None, None)
        m = measurement_from_output(self.name, self.provenance, proc.stdout, proc.stderr, proc.returncode,
                                    eval_labels=bundle.eval_labels if spec.eval else None)
        m.device_facts.update(self._run_facts(quota))
        return m

    def _throttled(self, cmd: list[str]) -> tuple:
        """(cmd, None), or with a CPU quota: (cmd made to join a new quota group, the entered CpuQuota)."""
        if self.config.cpu_quota <= 0:
            return cmd, None
        from edgebench.devices.throttle import CpuQuota

        quota = CpuQuota(self.config.cpu_quota).__enter__()
        return quota.wrap(cmd), quota

    def _run_facts(self, quota) -> dict:
        facts = {"pinned_cores": list(self.config.cores)} if self.config.cores else {}
        if quota is not None:
            facts.update(cpu_quota_cores=self.config.cpu_quota, cgroup=f"v{quota.version}")
        return facts

    def open_rounds(self, bundle: Bundle, spec: RunSpec):
        """One runner process that times rounds on request (devices/rounds.py), pinned and throttled as run()."""
        from edgebench.devices.rounds import ProcessRounds, rounds_args

        cmd, quota = self._throttled(self._command(bundle, rounds_args(spec)))
        release = quota and (lambda: quota.__exit__(None, None, None))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=self._env())
        except OSError as exc:
            if release:
                release()
            raise EdgebenchError(f"cannot start the runner on {self.name}: {exc}") from None
        return ProcessRounds(self.name, self.provenance, proc, spec.timeout_s, facts=self._run_facts(quota),
                             on_close=release)




def _runtime_versions(python: str) -> dict:
    import json

    out = subprocess.run([python, "-c", VERSIONS_PROBE], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}
