"""A CPU quota for the local runner through cgroups: v2 `cpu.max` where the cpu controller is on the
unified hierarchy, else v1 `cpu.cfs_quota_us`. Used for a coarse "slower device" estimate, which is
why a throttled local device labels its latency `emulated`, never `measured`.
"""
from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

from edgebench.types import EdgebenchError

# The quota's period. The kernel's default, 100 ms, throttles in bursts: a process that starts mid-period runs
# free until the next one, so a model timed in rounds of a few tenths of a second was slowed by 1.085-1.137x
# under a quota of 0.9 cores (4 side-by-side comparisons of 48 rounds, OCR detector at 640x640), its intervals
# up to 7 points wide. With 10 ms the same comparisons gave 1.118-1.144x, intervals at most 1.5 points wide.
PERIOD_US = 10_000
MIN_QUOTA_US = 1_000  # the kernel's smallest quota per period
MAX_PERIOD_US = 1_000_000


def period_and_quota(cores: float) -> tuple[int, int]:
    """(period, quota) in microseconds: PERIOD_US, or a longer period where the quota would be under the
    kernel's 1 ms minimum (0.05 cores: 1 ms per 20 ms)."""
    if cores * MAX_PERIOD_US < MIN_QUOTA_US:
        raise EdgebenchError(f"cpu_quota must be at least {MIN_QUOTA_US / MAX_PERIOD_US:g} cores (the kernel's "
                             f"smallest quota is 1 ms per period of at most 1 s), got {cores:g}")
    period = max(PERIOD_US, math.ceil(MIN_QUOTA_US / cores))
    return period, max(MIN_QUOTA_US, round(cores * period))


def _mounts():
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                yield parts[1], parts[2], parts[3].split(",")


def find_cpu_cgroup() -> tuple[int, Path]:
    """(version, directory under which a child group with a CPU quota can be made)."""
    for mount, fstype, _ in _mounts():
        if fstype == "cgroup2":
            ctrl = Path(mount) / "cgroup.controllers"
            if ctrl.exists() and "cpu" in ctrl.read_text().split():
                return 2, Path(mount)
    for mount, fstype, opts in _mounts():
        if fstype == "cgroup" and "cpu" in opts and (Path(mount) / "cpu.cfs_quota_us").exists():
            return 1, Path(mount)
    raise EdgebenchError("cannot set a CPU quota: no cgroup v2 'cpu' controller and no cgroup v1 'cpu' "
                         "hierarchy is mounted on this machine")


class CpuQuota:
    """A temporary child cgroup limited to `cores` CPUs' worth of time (0.5 = half of one core).

    Use as a context manager; `procs_file` is where a process writes its pid to join. The group is
    removed on exit.
    """

    def __init__(self, cores: float):
        if cores <= 0:
            raise EdgebenchError(f"cpu_quota must be > 0 cores, got {cores}")
        self.cores = cores
        self.period_us, self.quota_us = period_and_quota(cores)
        self.version, root = find_cpu_cgroup()
        self.path = root / f"edgebench-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "CpuQuota":
        period, quota = self.period_us, self.quota_us
        try:
            self.path.mkdir()
            if self.version == 2:
                (self.path / "cpu.max").write_text(f"{quota} {period}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(period))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except PermissionError:
            self._remove()
            raise EdgebenchError(f"cannot set a CPU quota: no permission to create {self.path} "
                                 "(run as root or delegate a cgroup to this user)") from None
        except OSError as exc:
            self._remove()
            raise EdgebenchError(f"cannot set a CPU quota in {self.path}: {exc.strerror}") from None
        return self

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def wrap(self, cmd: list[str]) -> list[str]:
        """The command, made to join this group before it execs (arguments stay positional, unquoted)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs_file), *cmd]

    def _remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass

    def __exit__(self, *exc) -> None:
        self._remove()
