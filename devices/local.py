"""This computer: the runner in a subprocess, so a crashing runtime cannot take the host down."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from edgebench.deploy.bundle import Bundle
from edgebench.devices.base import Device
from edgebench.devices.protocol import measurement_from_output, parse_result, runner_args
from edgebench.types import EdgebenchError, Measurement, Provenance, RunSpec


@dataclass(frozen=True)
class LocalConfig:
    name: str = "local"
    python: str = field(default=sys.executable, metadata={"help": "Python that runs the runner"})
    cores: tuple = field(default=(), metadata={"help": "CPU cores to pin the runner to (taskset); empty: no pinning"})


class LocalDevice(Device):
    def __init__(self, config: LocalConfig = LocalConfig()):
        self.config = config
        self.name = config.name

    @property
    def kind(self) -> str:
        return "local"

    @property
    def provenance(self) -> Provenance:
        return Provenance.MEASURED

    def _command(self, bundle: Bundle, extra: list[str]) -> list[str]:
        cmd = [self.config.python, str(bundle.path / "runner.py"), str(bundle.path), *extra]
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
        return {"ok": all(c[1] for c in checks), "checks": checks, "facts": facts}

    def setup(self) -> None:
        return None  # nothing to prepare on this computer

    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        cmd = self._command(bundle, runner_args(spec))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=spec.timeout_s, env=self._env())
        except subprocess.TimeoutExpired as exc:
            return Measurement.failed(self.name, self.provenance, f"runner timed out after {spec.timeout_s:g} s",
                                      extra={"stdout": (exc.stdout or "")[-2000:] if isinstance(exc.stdout, str) else ""})
        m = measurement_from_output(self.name, self.provenance, proc.stdout, proc.stderr, proc.returncode,
                                    eval_labels=bundle.eval_labels if spec.eval else None)
        if self.config.cores:
            m.device_facts["pinned_cores"] = list(self.config.cores)
        return m


_VERSIONS_SCRIPT = r"""
import json, importlib
out = {}
for name in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "installed")
    except Exception:
        out[name] = None
print(json.dumps(out))
"""


def _runtime_versions(python: str) -> dict:
    import json

    out = subprocess.run([python, "-c", _VERSIONS_SCRIPT], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}
