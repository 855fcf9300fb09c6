#!/usr/bin/env python3
"""Part of edgebench's bundle runner (deploy/runner.py): what the device reports about itself: energy, instruction-count markers, memory, CPU.

Shipped beside runner.py in every bundle; like it, imports only the standard library, numpy and the runtime
for the model's format. Keep it compatible with Python 3.7 (older boards).
"""
import os
import platform
import re
import subprocess
import threading
import time

import numpy as np


# ---------------------------------------------------------------- energy counters
# Read around exactly the measured runs. Counters (RAPL) are read twice; power meters (Raspberry Pi 5 PMIC,
# Android battery) are sampled on a thread and integrated over the same window (trapezoid rule).
RAPL_ROOT = "/sys/class/powercap"
POWER_SUPPLY_ROOT = "/sys/class/power_supply"
ENERGY_SOURCES = ("auto", "none", "rapl", "pi5-pmic", "android-battery")


def rapl_zones(root=RAPL_ROOT):
    """Top-level RAPL zones (package domains: intel-rapl:N, not their subzones intel-rapl:N:M) that can be
    read: [(name, energy_uj path, max_energy_range_uj)]."""
    zones = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return zones
    for name in names:
        if not name.startswith("intel-rapl:") or name.count(":") != 1:
            continue
        path = os.path.join(root, name, "energy_uj")
        try:
            with open(os.path.join(root, name, "max_energy_range_uj")) as f:
                max_range = int(f.read().strip())
            with open(path) as f:
                int(f.read().strip())
        except (OSError, ValueError):
            continue  # unreadable (often root-only): no measured energy from this zone
        zones.append((name, path, max_range))
    return zones


def rapl_read(zones):
    values = []
    for _, path, _ in zones:
        with open(path) as f:
            values.append(int(f.read().strip()))
    return values


def rapl_delta_uj(zones, before, after):
    """Energy counted between two reads, each counter's wrap-around at max_energy_range_uj handled."""
    total = 0
    for (_, _, max_range), b, a in zip(zones, before, after):
        total += a - b if a >= b else (max_range - b) + a
    return total


class RaplMeter:
    def __init__(self, zones):
        self.zones = zones

    def start(self):
        self.t0, self.before = time.perf_counter(), rapl_read(self.zones)

    def stop(self):
        after, seconds = rapl_read(self.zones), time.perf_counter() - self.t0
        return {"source": "rapl:" + ",".join(z[0] for z in self.zones), "scope": "CPU package counters (RAPL)",
                "energy_uj": rapl_delta_uj(self.zones, self.before, after), "seconds": seconds}


PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=(\S+?)[AV]\s*$")


def pmic_watts(text):
    """Power (W) from `vcgencmd pmic_read_adc` on a Raspberry Pi 5: the sum of current x voltage over the rails
    the PMIC reports both for (lines `  VDD_CORE_A current(7)=0.75A` and `  VDD_CORE_V volt(15)=0.72V`).
    Rails with a voltage only (EXT5V_V, BATT_V) are left out. None when nothing pairs (a Pi 4 answers
    `error=1 error_msg="Command not registered"`)."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = PMIC_LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value == value:  # not nan
            (amps if m.group(2) == "A" else volts)[m.group(1)] = value
    rails = sorted(set(amps) & set(volts))
    return sum(amps[r] * volts[r] for r in rails) if rails else None


def read_pmic(vcgencmd="vcgencmd"):
    try:
        p = subprocess.run([vcgencmd, "pmic_read_adc"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return pmic_watts(p.stdout) if p.returncode == 0 else None


def read_battery(root=POWER_SUPPLY_ROOT):
    """Power (W) drawn from an Android phone's battery: |current_now| (uA) x voltage_now (uV), the units of the
    Linux power_supply ABI. The sign of current_now while discharging differs between phones; its size
    does not. None when the files are absent or unreadable."""
    try:
        with open(os.path.join(root, "battery", "current_now")) as f:
            current_ua = int(f.read().strip())
        with open(os.path.join(root, "battery", "voltage_now")) as f:
            voltage_uv = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return abs(current_ua) * voltage_uv / 1e12


def integrate_uj(samples, t0, t1):
    """Energy (uJ) of power samples [(t_s, watts)] over [t0, t1], trapezoid rule."""
    pts = [(t, w) for t, w in samples if w is not None and t0 <= t <= t1]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:])) * 1e6


class SampledMeter:
    """Power read every `interval_s` on a thread, from start() to stop(), both ends included."""

    def __init__(self, source, scope, read_watts, interval_s):
        self.source, self.scope, self.read, self.interval_s = source, scope, read_watts, interval_s

    def _sample(self):
        self.samples.append((time.perf_counter(), self.read()))

    def _loop(self):
        while not self.done.wait(self.interval_s):
            self._sample()

    def start(self):
        self.samples, self.done = [], threading.Event()
        self._sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.done.set()
        self.thread.join()
        self._sample()
        t0, t1 = self.samples[0][0], self.samples[-1][0]
        seconds = t1 - t0
        energy = integrate_uj(self.samples, t0, t1)
        read = [w for _, w in self.samples if w is not None]
        return {"source": self.source, "scope": self.scope, "energy_uj": int(round(energy)), "seconds": seconds,
                "power_samples": len(read), "sample_interval_s": self.interval_s,
                "mean_power_w": energy / 1e6 / seconds if seconds > 0 else None}


def energy_meter(kind, powercap_root=RAPL_ROOT, vcgencmd="vcgencmd", power_supply_root=POWER_SUPPLY_ROOT):
    """(meter or None, why none). `auto` takes the first source this device has: RAPL, a Pi 5 PMIC, a battery."""
    if kind == "none":
        return None, "energy counters off (--energy none)"
    if kind in ("auto", "rapl"):
        zones = rapl_zones(powercap_root)
        if zones:
            return RaplMeter(zones), ""
    if kind in ("auto", "pi5-pmic") and read_pmic(vcgencmd) is not None:
        return SampledMeter("pi5-pmic:vcgencmd pmic_read_adc", "sum of the PMIC's rails (board side of the "
                            "PMIC: USB devices and conversion losses are outside it)",
                            lambda: read_pmic(vcgencmd), 0.1), ""
    if kind in ("auto", "android-battery") and read_battery(power_supply_root) is not None:
        return SampledMeter("android-battery:" + os.path.join(power_supply_root, "battery"),
                            "whole phone, from its battery (screen, radios and idle draw included)",
                            lambda: read_battery(power_supply_root), 0.05), ""
    return None, ("no energy counter on this device (no readable RAPL, Pi 5 PMIC or battery)" if kind == "auto"
                  else "energy source %s is not readable on this device" % kind)


# Instruction-count markers for an emulator (edgebench's qemu plugin devices/insn_count.c): a failing,
# side-effect-free syscall lseek(-1, MAGIC, 0) that the plugin recognizes by its arguments.
INSN_MARK_START = 0x4544474542530001
INSN_MARK_END = 0x4544474542530002


def insn_marker(code):
    try:
        os.lseek(-1, code, 0)
    except OSError:
        pass


def with_insn_markers(infer):
    """`infer` bracketed by markers, so a counting emulator isolates exactly the measured inferences."""

    def marked():
        insn_marker(INSN_MARK_START)
        infer()
        insn_marker(INSN_MARK_END)

    return marked


def peak_rss_mb():
    """Peak resident set size of this process in MiB.

    /proc/self/status VmHWM first: it belongs to this program's own address space. getrusage's ru_maxrss
    is a fallback only, because Linux carries the parent's high-water mark across fork+exec (a runner
    started from a host holding torch would report the host's memory).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except Exception:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model", "processor") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache_kb(base="/sys/devices/system/cpu/cpu0/cache"):
    """The largest CPU cache that cpu0 reports in sysfs (the last level: an L3 shared by the cores, or a Pi 4's
    L2), in KiB; None where sysfs has none."""
    sizes = []
    try:
        for index in os.listdir(base):
            try:
                with open(os.path.join(base, index, "size")) as f:
                    text = f.read().strip().upper()
            except OSError:
                continue
            scale = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(text[-1:], None)
            number = text[:-1] if scale else text
            if number.isdigit():
                sizes.append(int(number) * (scale or 1))
    except OSError:
        return None
    return max(sizes) if sizes else None


def device_facts():
    mem_total_mb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total_mb = int(line.split()[1]) / 1024.0
                    break
    except OSError:
        pass
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        affinity = sorted(os.sched_getaffinity(0))
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "mem_total_mb": mem_total_mb,
        "last_level_cache_kb": last_level_cache_kb(),
    }
