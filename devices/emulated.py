"""An aarch64 CPU under qemu user-mode emulation: ARM correctness, accuracy and instruction counts.

The bundle's own runner.py runs on the real aarch64 wheels (numpy, onnxruntime, ai-edge-litert) from a
Debian arm64 root folder (devices/aarch64_root.py), as

    PYTHONPATH=/opt/site qemu-aarch64 -L ROOT -cpu cortex-a72 -plugin insn_count.so,out=F \\
        ROOT/usr/bin/python3.11 BUNDLE/runner.py BUNDLE --insn-markers ...

User-mode emulation shares the host's filesystem: the guest opens the bundle at its host path. `-L ROOT`
redirects an absolute path only when that path exists under ROOT (the loader, libraries, /opt/site,
/proc/cpuinfo), so a bundle is reachable unless ROOT happens to hold the same path; run() refuses then.

What the figures are -- read this before using any of them:
- samples_ns are EMULATED wall time: how long the host took to emulate each inference (with counting
  on, including the two marker syscalls). QEMU's TCG is 12x to 1000x slower than the host CPU natively
  (about 300-1000x for a tiny CNN whose inference is mostly Python and dispatch code), by a factor that
  depends on the instruction mix and the host's load. They are NEVER a device latency; the
  Measurement's provenance is `emulated` and extra["wall_time_provenance"] says so again.
- extra["instructions_per_inference"] is counted on the emulated guest (extra["instructions_provenance"]
  is `emulated`): executed aarch64 instructions of one measured inference, by a TCG plugin
  (devices/insn_count.c). With one thread it is identical run to run for the same settings (within
  about 0.1% when e.g. eval is switched off, as heap layout shifts), a noise-free
  cost signal for comparing models and formats. With threads > 1 the runtime's workers spin-wait and
  the count is neither repeatable nor a cost: it is kept, flagged, and gets no latency estimate.
  How the measured loop is isolated: the runner (--insn-markers) brackets every measured inference
  with a marker syscall; the plugin records the instructions between each pair; one empty pair before
  the loop gives the markers' own cost (about 7,000 instructions), which is subtracted; the median over
  the measured inferences is reported, with min/max. Startup, imports, loading, warm-up and eval are
  outside the markers (extra["instructions_total_process"] has the whole process for reference).
- extra["estimated_latency_ms"] is ESTIMATED (extra["estimated_provenance"]): the latency a real board would
  show. With a calibration (devices/calibration.py: cycles per instruction per instruction class, fitted on
  published board latencies) it carries extra["estimate_band"], the p90 relative error under
  cross-validation, and extra["estimate_calibration"] says what it was fitted on. Without one (or for a
  runtime the calibration was not fitted for) it is instructions / (ipc * clock), estimate_calibrated =
  False and no band: refit with `edgebench devices calibrate`.
- accuracy is computed on the host from the argmax the ARM runtime produced on the bundled eval data.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.deploy.bundle import RUNNER_SOURCE, Bundle
from edgebench.devices import aarch64_root
from edgebench.devices.base import Device
from edgebench.devices.insn_plugin import COUNT_METHOD, build_plugin, instructions_from_counts, plugin_arg
from edgebench.devices.protocol import measurement_from_output, parse_result, runner_args
from edgebench.types import EdgebenchError, Measurement, Provenance, RunSpec

WALL_TIME_NOTE = ("qemu user-mode wall time on the host (TCG emulation, 12-1000x slower than native): "
                  "not a device latency")


@dataclass(frozen=True)
class EmulatedConfig:
    name: str = "emulated"
    cpu: str = field(default="cortex-a72", metadata={"help": "qemu -cpu model (cortex-a72: Raspberry Pi 4; "
                                                           "cortex-a53: Pi 3 / Zero 2; cortex-a76: Pi 5)"})
    root: str = field(default="", metadata={"help": "arm64 root folder; empty: ~/.cache/edgebench/"
                                                    "aarch64-root-bookworm, built by setup()"})
    clock_ghz: float = field(default=1.5, metadata={"gt": 0, "help": "clock of the board being estimated "
                                                            "(Raspberry Pi 4: 1.5, 1.8 on later boards)"})
    ipc: float = field(default=1.0, metadata={"gt": 0, "help": (
        "instructions per cycle for estimated_latency_ms. 1.0 is a round figure for a 3-wide out-of-order "
        "Cortex-A72 running a mix of NEON kernels (which reach about 1.5) and interpreter/dispatch code "
        "(below 1). Calibrate on a real board: calibrate_ipc(instructions_per_inference, measured p50 ms, "
        "clock_ghz)")})
    calibration: str = field(default="", metadata={"help": (
        "cost-model file (devices/calibration.py) turning instruction classes into board latency with a "
        "cross-validated error band. Empty: the user's refit for the run's runtime "
        "~/.config/edgebench/calibrations/NAME.RUNTIME.json, else NAME.json there, else the packaged "
        "devices/data/NAME.calibration.json (the first fitted on the run's runtime is used); 'none': no "
        "calibration (the ipc estimate, marked uncalibrated)")})
    count_instructions: bool = field(default=True, metadata={"help": "load the instruction-count plugin"})
    max_runs: int = field(default=20, metadata={"min": 1, "help": "cap on measured runs: emulated wall time is no "
                                                        "latency, and the counts are exact after a few"})
    max_warmup: int = field(default=2, metadata={"min": 0, "help": "cap on warm-up runs under emulation"})
    qemu: str = field(default="qemu-aarch64", metadata={"help": "the dynamic qemu-user binary (the static "
                                                                "build cannot load plugins)"})
    # Energy per inference of the board being estimated: power_active_w x the estimated latency (never the
    # emulated wall time), labelled estimated, with the profile named (devices/energy.py).
    power_active_w: float = field(default=0.0, metadata={"min": 0.0, "help": "board power while inferring (W); 0: none"})
    power_idle_w: float = field(default=0.0, metadata={"min": 0.0, "help": "board power at idle (W), recorded"})
    power_profile: str = field(default="", metadata={"help": "where the power figures come from"})


def estimate_latency_ms(instructions: float, ipc: float, clock_ghz: float) -> float:
    """Latency a CPU retiring `ipc` instructions per cycle at `clock_ghz` needs for `instructions`."""
    return instructions / (ipc * clock_ghz * 1e9) * 1e3


def calibrate_ipc(instructions_per_inference: float, measured_latency_ms: float, clock_ghz: float) -> float:
    """The ipc that makes the estimate match a latency measured on a real board (same model, one thread)."""
    return instructions_per_inference / (measured_latency_ms / 1e3 * clock_ghz * 1e9)


USER_CALIBRATIONS = Path("~/.config/edgebench/calibrations").expanduser()


def calibration_paths(config: EmulatedConfig, runtime: str = "") -> list[Path]:
    """The calibration files this device may use for a run of `runtime`, most specific first: the user's
    refit for that runtime (~/.config/edgebench/calibrations/NAME.RUNTIME.json), the user's refit
    (NAME.json), the packaged one (devices/data/NAME.calibration.json); only those that exist. An explicit
    `calibration` is the only candidate; 'none' gives none."""
    from edgebench.devices.calibration import default_calibration_path

    if config.calibration == "none":
        return []
    if config.calibration:
        return [Path(config.calibration).expanduser()]
    candidates = ([USER_CALIBRATIONS / f"{config.name}.{runtime}.json"] if runtime else []) + [
        USER_CALIBRATIONS / f"{config.name}.json", default_calibration_path(config.name)]
    return [c for c in candidates if c.exists()]


def calibration_path(config: EmulatedConfig, runtime: str = "") -> Path | None:
    """The calibration file this device uses for `runtime`: the first candidate fitted on that runtime, else
    the first candidate (whose estimate then says it does not fit), else None (uncalibrated)."""
    from edgebench.devices.calibration import load_calibration

    paths = calibration_paths(config, runtime)
    if runtime and len(paths) > 1:
        for p in paths:
            if load_calibration(p).runtime == runtime:
                return p
    return paths[0] if paths else None


class EmulatedDevice(Device):
    """A Cortex-A class CPU under qemu-aarch64. Its wall times are emulated, never device latency."""

    def __init__(self, config: EmulatedConfig = EmulatedConfig()):
        self.config = config
        self.name = config.name
        self._root_path = Path(config.root).expanduser() if config.root else aarch64_root.DEFAULT_ROOT
        self._root: aarch64_root.Root | None = None
        self._plugin: Path | None = None
        # code attribution: when set, the plugin also writes each translated block's instructions inside the
        # measured inferences to this file (insn_count.c, blocks=PATH; read by attribution.attribute_blocks)
        self.blocks_out: Path | None = None

    @property
    def kind(self) -> str:
        return "emulated"

    @property
    def provenance(self) -> Provenance:
        return Provenance.EMULATED

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build (or find cached) the arm64 root and the plugin. About 40 s the first time."""
        aarch64_root.require_tool(self.config.qemu, "qemu-user")
        self._root = aarch64_root.ensure_root(self._root_path)
        if self.config.count_instructions:
            self._plugin = build_plugin(self._root_path.parent)

    def _ready_root(self) -> aarch64_root.Root | None:
        marker = aarch64_root.read_marker(self._root_path)
        if marker is None:
            return None
        return aarch64_root.Root(self._root_path, self._root_path / marker["python"], marker["versions"])

    def _qemu_cmd(self, root: aarch64_root.Root, plugin_out: Path | None = None, threads: int = 1) -> list[str]:
        cmd = [self.config.qemu, "-L", str(root.path), "-cpu", self.config.cpu]
        if plugin_out is not None and self._plugin is not None:
            cmd += ["-plugin", plugin_arg(self._plugin, plugin_out, threads, root.python, self.blocks_out)]
        return cmd + [str(root.python)]

    # ------------------------------------------------------------ facts
    def _qemu_version(self) -> str:
        try:
            out = subprocess.run([self.config.qemu, "--version"], capture_output=True, text=True, timeout=30)
            return out.stdout.splitlines()[0].split("version", 1)[-1].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            return ""

    def facts(self) -> dict:
        """Gathered in the guest (runner --facts-only under qemu) plus the emulator's own."""
        root = self._ready_root()
        if root is None:
            raise EdgebenchError(f"device '{self.name}': the arm64 root is not built yet "
                                 f"(run `edgebench devices setup {self.name}`)")
        proc = subprocess.run([*self._qemu_cmd(root), str(RUNNER_SOURCE), ".", "--facts-only"],
                              capture_output=True, text=True, timeout=300,
                              env=aarch64_root.guest_env(root=root.path))
        doc = parse_result(proc.stdout) or {}
        facts = self._emulation_facts(doc.get("facts", {}))
        facts.update({k: v for k, v in root.versions.items() if k not in ("machine",)})
        return facts

    def _emulation_facts(self, guest_facts: dict) -> dict:
        facts = dict(guest_facts)
        facts["guest_cpuinfo"] = facts.get("cpu")
        facts.pop("last_level_cache_kb", None)  # qemu-user shows the guest the host's sysfs: not the emulated CPU's
        facts["cpu"] = f"{self.config.cpu} (emulated, qemu-aarch64 TCG)"
        facts.update({
            "emulated": True,
            "emulated_cpu": self.config.cpu,
            "qemu": self._qemu_version(),
            "estimate_clock_ghz": self.config.clock_ghz,
            "estimate_ipc": self.config.ipc,
            "root": str(self._root_path),
        })
        return facts

    def doctor(self) -> dict:
        checks = []
        qemu = shutil.which(self.config.qemu)
        checks.append((self.config.qemu, qemu is not None,
                       self._qemu_version() if qemu else "not installed: apt-get install qemu-user"))
        gcc = shutil.which("gcc") or shutil.which("cc")
        checks.append(("gcc (plugin)", gcc is not None or not self.config.count_instructions,
                       gcc or "not installed: apt-get install gcc"))
        root = self._ready_root()
        checks.append(("arm64 root", root is not None,
                       str(self._root_path) if root else f"not built: edgebench devices setup {self.name}"))
        facts = {}
        if root is not None and qemu is not None:
            try:
                facts = self.facts()
                checks.append(("guest machine", facts.get("machine") == "aarch64", facts.get("machine", "?")))
                for pkg in ("python", "numpy", "onnxruntime", "ai_edge_litert"):
                    checks.append((f"guest {pkg}", bool(facts.get(pkg)), facts.get(pkg) or "missing"))
            except (OSError, subprocess.SubprocessError, EdgebenchError) as exc:
                checks.append(("guest python", False, str(exc)))
        return {"ok": all(c[1] for c in checks), "checks": checks, "facts": facts}

    # ------------------------------------------------------------ run
    def effective_spec(self, spec: RunSpec) -> RunSpec:
        """The spec as run under emulation: runs and warm-up capped, no minimum time (emulated seconds
        buy nothing)."""
        return dataclasses.replace(spec, runs=max(1, min(spec.runs, self.config.max_runs)),
                                   warmup=min(spec.warmup, self.config.max_warmup), min_time_s=0.0)

    def run_counted(self, bundle: Bundle, spec: RunSpec, eval_labels=None) -> tuple[Measurement, dict | None]:
        """The runner under qemu-aarch64 exactly as `spec` says (no caps), and the instruction counter's raw
        document ({"total", "regions": [one count per marked region], "region_classes", ...}; None without
        counts). run() builds on it; a batch of many models in one runner (devices/batch.py) reads the
        regions itself."""
        self.setup()
        root = self._root
        bundle_dir = Path(bundle.path).resolve()
        shadow = root.path / bundle_dir.relative_to("/")
        if shadow.exists():  # -L would send the guest to ROOT's copy of this path instead of the bundle
            return Measurement.failed(self.name, self.provenance,
                                      f"bundle path {bundle_dir} also exists inside the arm64 root; "
                                      f"move the bundle elsewhere (e.g. under /tmp)"), None
        args = runner_args(spec)
        with tempfile.TemporaryDirectory(prefix="edgebench-emu-") as tmp:
            counts_file = Path(tmp) / "insn_counts.json" if self.config.count_instructions else None
            if counts_file is not None:
                args.append("--insn-markers")
            cmd = [*self._qemu_cmd(root, counts_file, spec.threads), str(bundle_dir / "runner.py"), str(bundle_dir), *args]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=spec.timeout_s,
                                      env=aarch64_root.guest_env(root=root.path))
            except subprocess.TimeoutExpired:
                return Measurement.failed(self.name, self.provenance,
                                          f"runner under qemu-aarch64 timed out after {spec.timeout_s:g} s"), None
            m = measurement_from_output(self.name, self.provenance, proc.stdout, proc.stderr, proc.returncode,
                                        eval_labels=eval_labels)
            counts = None
            if counts_file is not None and counts_file.exists():
                try:
                    counts = json.loads(counts_file.read_text())
                except ValueError:
                    counts = None
        return m, counts

    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        """Run the bundle under qemu-aarch64 (building the root first if needed, see setup())."""
        run_spec = self.effective_spec(spec)
        m, counts = self.run_counted(bundle, run_spec, eval_labels=bundle.eval_labels if spec.eval else None)
        m.device_facts = self._emulation_facts(m.device_facts)
        m.extra.update({
            "wall_time_provenance": Provenance.EMULATED.value,
            "wall_time_note": WALL_TIME_NOTE,
            "emulated_cpu": self.config.cpu,
            "runs_requested": spec.runs,
            "warmup_requested": spec.warmup,
            "runs_run": run_spec.runs,
        })
        if m.ok and counts is not None:
            self._add_estimates(m, counts)
        elif m.ok and self.config.count_instructions:
            m.extra["instructions_note"] = "the plugin left no counts (runner too old for --insn-markers?)"
        return m

    def _add_estimates(self, m: Measurement, counts: dict) -> None:
        figures = instructions_from_counts(counts)
        if not figures or figures["instructions_regions"] != len(m.samples_ns):
            m.extra["instructions_note"] = (f"expected {len(m.samples_ns)} marked inferences, the plugin saw "
                                            f"{max(len(counts.get('regions', [])) - 1, 0)}")
            return
        m.extra.update(figures)
        m.extra.update({
            "instructions_provenance": Provenance.EMULATED.value,  # counted on the emulated guest
            "instructions_method": COUNT_METHOD,
        })
        if (m.threads or 1) > 1:
            # worker threads spin-wait between kernels (onnxruntime's pool does): the count is total work
            # including spinning, run-dependent, and no basis for a latency estimate
            m.extra["instructions_note"] = ("threads > 1: counts include spin-waiting worker threads; "
                                            "not repeatable, no latency estimate")
            return
        m.extra.update(self.estimate(figures, m.runtime))

    def _calibration(self, runtime: str = ""):
        from edgebench.devices.calibration import load_calibration

        path = calibration_path(self.config, runtime)
        return load_calibration(path) if path is not None else None

    def estimate(self, figures: dict, runtime: str) -> dict:
        """The latency a real board would show for one inference with these counted instructions: by the
        calibrated cost model with its cross-validated band when one fits this runtime and CPU, else by the
        plain ipc x clock formula, marked uncalibrated and without a band."""
        cal = self._calibration(runtime)
        by_class = figures.get("instructions_by_class")
        out = {"estimated_provenance": Provenance.ESTIMATED.value}
        if cal is not None and by_class and cal.runtime == runtime and cal.cpu == self.config.cpu:
            out.update({
                "estimated_latency_ms": cal.estimate_ms(by_class),
                "estimate_band": cal.band,  # relative: the estimate is ± this, p90 under cross-validation
                "estimate_calibrated": True,
                "estimate_clock_ghz": cal.clock_ghz,
                "estimate_calibration": {"file": cal.path, "grouping": cal.grouping, "cpi": cal.cpi,
                                         "band_basis": cal.band_basis, "fitted_on": cal.fitted_on},
            })
            return out
        why = ("no calibration file for this device" if cal is None else
               "the instruction classes are missing" if not by_class else
               f"the calibration is for {cal.runtime} on {cal.cpu}, this run is {runtime} on {self.config.cpu}")
        out.update({
            "estimated_latency_ms": estimate_latency_ms(figures["instructions_per_inference"],
                                                        self.config.ipc, self.config.clock_ghz),
            "estimate_band": None,
            "estimate_calibrated": False,
            "estimate_ipc": self.config.ipc,
            "estimate_clock_ghz": self.config.clock_ghz,
            "estimate_note": f"uncalibrated ({why}): instructions / (ipc {self.config.ipc:g} x "
                             f"{self.config.clock_ghz:g} GHz), error unknown",
        })
        return out
