"""The instruction-count plugin for qemu user-mode (devices/insn_count.c): compile it, write its -plugin argument,
and read the per-inference figures from the document it leaves (used by devices/emulated.py and, through
EmulatedDevice.run_counted, devices/batch.py)."""
from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from edgebench.types import EdgebenchError

PLUGIN_SOURCE = Path(__file__).with_name("insn_count.c")
COUNT_METHOD = ("qemu TCG plugin insn_count: guest instructions between markers the runner places around "
                "each measured inference (warm-up excluded), minus the markers' own cost; median over runs")


def build_plugin(cache_dir: Path) -> Path:
    """Compile devices/insn_count.c into `cache_dir` (named by the source's hash, so edits rebuild it)."""
    source = PLUGIN_SOURCE.read_bytes()
    out = Path(cache_dir) / f"insn_count-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if out.exists():
        return out
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise EdgebenchError("compiling the instruction-count plugin needs a C compiler: apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{id(out)}.so")
    proc = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(PLUGIN_SOURCE)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise EdgebenchError(f"compiling {PLUGIN_SOURCE.name} failed: {' '.join(proc.stderr.split())[-300:]}")
    tmp.rename(out)
    for stale in out.parent.glob("insn_count-*.so"):  # builds of older sources
        if stale != out:
            stale.unlink(missing_ok=True)
    return out


def instructions_from_counts(counts: dict) -> dict:
    """Per-inference figures from the plugin's document ({"total", "regions": [markers-only, inf1, ...]})."""
    regions = counts.get("regions", [])
    if len(regions) < 2:
        return {}
    overhead = regions[0]  # the empty region the runner opens first: the markers' own cost
    per = [max(r - overhead, 0) for r in regions[1:]]
    med = statistics.median(per)
    out = {
        "instructions_per_inference": int(med),
        "instructions_min": int(min(per)),
        "instructions_max": int(max(per)),
        "instructions_spread": (max(per) - min(per)) / med if med else None,
        "instructions_marker_overhead": int(overhead),
        "instructions_total_process": int(counts.get("total", 0)),
        "instructions_regions": len(per),
    }
    harness = counts.get("region_harness") or []
    if len(harness) == len(regions):
        # the median of what each inference ran outside the Python interpreter (the runtime, libc, numpy)
        out["instructions_outside_interpreter"] = int(statistics.median(
            max((r - h) - (regions[0] - harness[0]), 0) for r, h in zip(regions[1:], harness[1:])))
    by_region = counts.get("region_classes") or []
    names = counts.get("classes") or []
    if len(by_region) == len(regions) and names:
        # the class split of the inference whose total is the median (so the classes add up to it), minus
        # the markers' own split
        i = 1 + sorted(range(len(per)), key=per.__getitem__)[(len(per) - 1) // 2]
        out["instructions_by_class"] = {name: max(int(by_region[i][k]) - int(by_region[0][k]), 0)
                                        for k, name in enumerate(names)}
    return out


def plugin_arg(plugin: Path, out: Path, threads: int, interpreter: Path, blocks: Path | None = None) -> str:
    """qemu's -plugin argument: counts to `out`; the guest `interpreter`'s own instructions counted apart
    (region_harness); with `blocks`, every translated block's instructions located in its library."""
    # inline counting is exact for one guest thread and about 2x cheaper; more threads need atomics
    mode = "inline" if threads <= 1 else "atomic"
    arg = f"{plugin},out={str(out).replace(',', ',,')},mode={mode}"
    arg += f",harness={os.path.realpath(interpreter).replace(',', ',,')}"
    if blocks is not None:
        arg += f",blocks={str(blocks).replace(',', ',,')}"
    return arg
