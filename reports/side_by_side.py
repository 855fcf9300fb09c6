"""`edgebench compare BASE.onnx CURRENT.onnx`: both files measured here, in alternating rounds, and judged
round by round.

Two runs measured minutes apart on a shared host can differ by the host's own speed: this project's CI
machine switches between 1.0x and 1.5x in stretches of 0.5 to 20 s (devices/stability.py), long enough to
hold a whole run, so no statistic on two such runs can tell the machine from the model. Measured side by
side, base and current alternate in short rounds (ABBA order: neither side always runs first); each pair of
adjacent rounds ran on the same machine state, so the ratio of their medians is the model's, and the verdict
is a bootstrap interval over the rounds' ratios (a round pair that straddles a change of speed is one outlier
among them, not a shifted median).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from edgebench.reports.compare import BOOTSTRAP_ROUNDS
from edgebench.types import EdgebenchError, RunSpec


def paired_ratio_ci(base_rounds: list, current_rounds: list, seed: int = 0) -> tuple[float, float, float]:
    """Median over rounds of (current round median / base round median), and its bootstrap 95% interval."""
    b = np.asarray([np.median(r) for r in base_rounds], dtype=np.float64)
    c = np.asarray([np.median(r) for r in current_rounds], dtype=np.float64)
    if len(b) != len(c) or len(b) < 2:
        raise EdgebenchError(f"side-by-side rounds do not pair up ({len(b)} base, {len(c)} current; needs >= 2)")
    ratios = c / b
    rng = np.random.default_rng(seed)
    boot = np.median(ratios[rng.integers(0, len(ratios), (BOOTSTRAP_ROUNDS, len(ratios)))], axis=1)
    return float(np.median(ratios)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


ROUND_S = 0.25  # measured time a round aims at when --runs is not given (at least MIN_RUNS inferences)
MIN_RUNS = 3


def side_by_side(base_model: Path, current_model: Path, device: str = "local", current_device: str | None = None,
                 rounds: int = 48, runs: int | None = None, warmup: int = 1, threads: int = 1,
                 shapes: dict | None = None, inputs: dict | None = None, store: str | Path | None = None,
                 devices_file: str | Path | None = None, timeout_s: float = 600.0, progress=None) -> tuple:
    """Measure both files in `rounds` alternating rounds of `runs` inferences (None: as many as take about
    ROUND_S, sized on a first, discarded round of each); (base Record, current Record), each with every sample
    and its rounds' boundaries (extra["side_by_side"]), stored as two runs. A local device or an SSH board keeps
    one runner process per file for all rounds (devices/rounds.py)."""
    from edgebench.api import describe, record_of
    from edgebench.deploy.bundle import make_bundle
    from edgebench.devices.registry import get_device
    from edgebench.devices.rounds import open_rounds
    from edgebench.reports.store import DEFAULT_STORE, Store

    if rounds < 2 or (runs is not None and runs < 1) or warmup < 0:
        raise EdgebenchError(f"side by side needs --rounds >= 2, --runs >= 1 and --warmup >= 0, got {rounds}, "
                             f"{runs} and {warmup}")
    devices = _same_core([get_device(device, devices_file), get_device(current_device or device, devices_file)],
                         threads)
    artifacts = [describe(Path(base_model)), describe(Path(current_model))]
    spec = RunSpec(runs=MIN_RUNS, warmup=warmup, threads=threads, eval=False, timeout_s=timeout_s)
    session = uuid.uuid4().hex[:8]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run_ids = [f"side-by-side-{stamp}-{session}-base", f"side-by-side-{stamp}-{session}-current"]
    per_side: list = [[], []]
    with tempfile.TemporaryDirectory(prefix="edgebench-side-by-side-") as tmp:
        bundles = [make_bundle(a, Path(tmp) / f"b{i}", None, None, shapes=shapes, inputs=inputs)
                   for i, a in enumerate(artifacts)]
        sessions, measured = [], []
        try:
            for side in (0, 1):
                at = "starting"
                sessions.append(open_rounds(devices[side], bundles[side], spec))
            first = []
            for side in (0, 1):  # not kept: warms both up and sizes the rounds
                at = "the first round"
                first.append(np.median(sessions[side].round(MIN_RUNS, warmup)))
            if runs is None:
                runs = int(min(1000, max(MIN_RUNS, ROUND_S * 1e9 // max(first))))
            for r in range(rounds):
                for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                    at = f"round {r + 1}"
                    per_side[side].append(sessions[side].round(runs, warmup))
                if progress:
                    progress(r + 1, rounds)
            for side in (0, 1):
                at = "finishing"
                measured.append(sessions[side].finish())
                if not measured[-1].ok:
                    raise EdgebenchError(measured[-1].error)
        except EdgebenchError as exc:
            which = "base" if side == 0 else "current"
            raise EdgebenchError(f"{which} ({artifacts[side].name} on {devices[side].name}) failed in {at}: "
                                 f"{exc}") from None
        finally:
            for s in sessions:
                s.close()
        records = []
        for side in (0, 1):
            merged = dataclasses.replace(measured[side], samples_ns=[s for rnd in per_side[side] for s in rnd])
            rec = record_of(run_ids[side], artifacts[side], bundles[side], merged, devices[side])
            rec.extra["side_by_side"] = {"session": session, "rounds": rounds, "runs_per_round": runs,
                                         "warmup_per_round": warmup,
                                         "runner": sessions[side].RUNNER,
                                         "round_samples": [len(rnd) for rnd in per_side[side]],
                                         "role": "base" if side == 0 else "current"}
            records.append(rec)
    with Store(Path(store) if store else DEFAULT_STORE) as s:
        for side, rec in enumerate(records):
            s.begin_run(rec.run_id, f"compare side by side ({rec.extra['side_by_side']['role']})",
                        {"model": str(artifacts[side].path), "device": devices[side].name, "session": session})
            s.append(rec)
            s.finish_run(rec.run_id, "finished")
    return records[0], records[1]


def _same_core(devices: list, threads: int) -> list:
    """Local devices that name no cores, at one thread, pinned to one and the same core for the comparison: on
    a shared host the cores run at their own speeds, and a round timed on the other core is not a pair. The
    same small CNN (0.14 ms) against itself, measured here: unpinned intervals of -5%..+13% and -2%..+4%,
    pinned to one core -1%..+1% (2026-11-28). The highest core this process may use; the records say which
    (device facts: pinned_cores)."""
    from edgebench.devices.local import LocalDevice

    if threads != 1 or not all(isinstance(d, LocalDevice) and not d.config.cores for d in devices):
        return devices
    core = max(os.sched_getaffinity(0))
    return [LocalDevice(dataclasses.replace(d.config, cores=(core,))) for d in devices]


def rounds_of(record) -> list | None:
    """A side-by-side record's samples split back into its rounds, else None."""
    sbs = (record.extra or {}).get("side_by_side")
    if not sbs or not record.samples_ns:
        return None
    out, at = [], 0
    for n in sbs["round_samples"]:
        out.append(record.samples_ns[at:at + n])
        at += n
    return out if at == len(record.samples_ns) else None
