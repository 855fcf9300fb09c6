"""Energy per inference: measured where the device has counters, else estimated from a power profile.

Measured (provenance `measured`): the runner reads the device's own counter around the measured runs and
reports the energy it counted (Linux RAPL `energy_uj` with wrap-around handled; see deploy/runner.py
`energy_counters`). Energy per inference = counted energy / measured inferences.

Estimated (provenance `estimated`): a power profile in devices.toml (`power_active_w`, `power_idle_w`,
`power_profile` naming it) times the latency: E = P_active x p50. For an emulated device the estimated latency
is used, never the emulated wall time. The record names the profile, so the figure says how it was obtained.
"""
from __future__ import annotations

import statistics

from edgebench.types import Measurement


def annotate_energy(m: Measurement, device) -> Measurement:
    """Adds energy_mj_per_inference and its provenance to m.extra (measured counters win)."""
    if not m.ok:
        return m
    counted = m.extra.get("energy_counter")  # from the runner: {"source", "energy_uj", "inferences"}
    if counted and counted.get("inferences"):
        m.extra["energy_mj_per_inference"] = counted["energy_uj"] / 1000.0 / counted["inferences"]
        m.extra["energy_provenance"] = "measured"
        m.extra["energy_source"] = counted.get("source", "")
        return m
    config = getattr(device, "config", None)
    active = float(getattr(config, "power_active_w", 0.0) or 0.0)
    if active <= 0:
        return m
    latency_ms = m.extra.get("estimated_latency_ms")
    basis = "estimated latency"
    if latency_ms is None:
        if device.kind == "emulated" or not m.samples_ns:
            return m  # emulated wall time is no latency: no energy from it
        latency_ms = statistics.median(m.samples_ns) / 1e6
        basis = f"{m.provenance.value} p50 latency"
    m.extra["energy_mj_per_inference"] = active * latency_ms  # W x ms = mJ
    m.extra["energy_provenance"] = "estimated"
    m.extra["energy_source"] = (f"power profile '{getattr(config, 'power_profile', '') or 'unnamed'}': "
                                f"{active:g} W active x {basis}")
    idle = float(getattr(config, "power_idle_w", 0.0) or 0.0)
    if idle:
        m.extra["power_idle_w"] = idle
    return m
