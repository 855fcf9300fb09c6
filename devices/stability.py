"""Does this computer keep its speed? A fixed CPU workload timed for a few seconds on the device's cores.

A shared host (another tenant on the same physical core, an SMT sibling, frequency changes) can run the same
code at two speeds and switch between them every fraction of a second to tens of seconds. Measured on this
project's 2-core CI machine on 2026-11-28: a 200 x 200 float32 matmul loop pinned to core 0 ran at 1.0x and
1.5x its fastest speed, in stretches of 0.5 to 20 s, at a load average below 1. Every latency figure taken
there inherits that: the same model's p50 moved by up to 1.3x between two runs seconds apart. This probe
does not fix it; it shows it, so that a user knows when a latency difference can be the machine's.

`probe_speed(device, seconds)` runs PROBE_SOURCE with the device's Python, pinned as its runner is, and
summarises the median time of each 0.25-s bin against the fastest bin.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass

from edgebench.types import EdgebenchError

BIN_S = 0.25
SLOW = 1.15  # a bin this much slower than the fastest counts as the machine's slow state

# Standard library + numpy only (what the runner needs anyway). argv: seconds, bin width.
PROBE_SOURCE = r"""
import json, sys, time
import numpy as np
seconds, width = float(sys.argv[1]), float(sys.argv[2])
a = np.random.default_rng(0).random((200, 200), dtype=np.float32)
bins, t0 = {}, time.perf_counter()
while True:
    t = time.perf_counter()
    if t - t0 >= seconds:
        break
    for _ in range(4):
        a @ a
    bins.setdefault(int((t - t0) / width), []).append(time.perf_counter() - t)
print(json.dumps([sorted(v)[len(v) // 2] for _, v in sorted(bins.items())]))
"""


@dataclass(frozen=True)
class SpeedTrace:
    seconds: float
    bins: list  # median probe time of each BIN_S bin, relative to the fastest bin (1.0 = fastest)
    slowest: float  # 95th percentile bin, relative to the fastest
    slow_share: float  # share of bins at SLOW x the fastest or slower
    switches: int  # changes between the fast and the slow state

    @property
    def stable(self) -> bool:
        return self.slowest < SLOW

    def summary(self) -> str:
        if self.stable:
            return (f"steady: {len(self.bins)} bins of {BIN_S:g} s over {self.seconds:g} s within "
                    f"{self.slowest:.2f}x of the fastest")
        return (f"CHANGES SPEED: bins of {BIN_S:g} s ran 1.00x to {self.slowest:.2f}x the fastest over "
                f"{self.seconds:g} s, {100 * self.slow_share:.0f}% of the time {SLOW:g}x slower or more, "
                f"{self.switches} switches; latency here moves between runs by as much (a shared host): "
                f"compare runs measured side by side, or use a quiet machine")

    def to_dict(self) -> dict:
        return {**asdict(self), "stable": self.stable}


def summarize(times: list, seconds: float) -> SpeedTrace:
    if len(times) < 4:
        raise EdgebenchError(f"speed probe returned {len(times)} bins; needs at least 4 (probe for longer)")
    fastest = min(times)
    rel = [round(t / fastest, 3) for t in times]  # rounded once: bins and slowest agree in the JSON
    slow = [r >= SLOW for r in rel]
    ordered = sorted(rel)
    return SpeedTrace(seconds=seconds, bins=rel,
                      slowest=ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
                      slow_share=sum(slow) / len(slow), switches=sum(a != b for a, b in zip(slow, slow[1:])))


def probe_speed(device, seconds: float = 10.0) -> SpeedTrace:
    """Time the probe on a local device's cores (pinned as its runner is) for `seconds`."""
    if device.kind != "local":
        raise EdgebenchError(f"the speed probe runs on local devices; {device.name} is {device.kind}")
    if seconds < 4 * BIN_S:
        raise EdgebenchError(f"--stability needs at least {4 * BIN_S:g} s, got {seconds:g}")
    cmd = device.pinned([device.config.python, "-c", PROBE_SOURCE, str(seconds), str(BIN_S)])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                              env={**device._env(), "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgebenchError(f"speed probe on {device.name} failed: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgebenchError(f"speed probe on {device.name} failed: {last}")
    return summarize(json.loads(proc.stdout), seconds)
