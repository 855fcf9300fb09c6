"""Energy per inference: measured where the device has counters, else estimated from a power profile.

Measured (provenance `measured`): the runner reads the device's own counter around exactly the measured runs
(deploy/runner_device.py `energy_meter`):
- Linux RAPL `energy_uj` (CPU package), read before and after, wrap-around at `max_energy_range_uj` handled;
- Raspberry Pi 5: `vcgencmd pmic_read_adc`, the sum of current x voltage over the PMIC's rails, sampled every
  0.1 s and integrated;
- Android: `/sys/class/power_supply/battery/current_now` x `voltage_now` (uA x uV), sampled every 0.05 s.
Energy per inference = counted energy / measured inferences. What the counter covers (the CPU package, the
PMIC's rails, the whole phone) is named in the record's `energy_source`.

Estimated (provenance `estimated`): a power profile in devices.toml (`power_active_w`, `power_idle_w`,
`power_profile` naming it) times the latency: E = P_active x p50. For an emulated device the estimated latency
is used, never the emulated wall time. The record names the profile, so the figure says how it was obtained.

Spiking networks also get the usual neuromorphic-literature estimate from their synaptic operations
(`synops_energy`): it is a property of the model, not of a device, and says so.
"""
from __future__ import annotations

import statistics

from edgebench.types import Measurement

MIN_POWER_SAMPLES = 10  # fewer samples of a sampled power meter: the energy figure is flagged

# Energy per operation, 32-bit floating point in a 45 nm process: M. Horowitz, "Computing's energy problem
# (and what we can do about it)", ISSCC 2014: add 0.9 pJ, multiply 3.7 pJ. A synaptic operation of a
# spiking net is an accumulate (an add); a dense MAC is a multiply and an add.
PJ_PER_ACCUMULATE = 0.9
PJ_PER_MAC = 0.9 + 3.7
OPERATION_ENERGY_SOURCE = ("Horowitz, ISSCC 2014, 45 nm fp32: 0.9 pJ per accumulate (add), "
                           "4.6 pJ per MAC (3.7 pJ multiply + 0.9 pJ add)")


def annotate_energy(m: Measurement, device) -> Measurement:
    """Adds energy_mj_per_inference and its provenance to m.extra (measured counters win)."""
    if not m.ok:
        return m
    counted = m.extra.get("energy_counter")  # from the runner: {"source", "energy_uj", "inferences", ...}
    if counted and counted.get("inferences"):
        m.extra["energy_mj_per_inference"] = counted["energy_uj"] / 1000.0 / counted["inferences"]
        m.extra["energy_provenance"] = "measured"
        scope = counted.get("scope")
        m.extra["energy_source"] = counted.get("source", "") + (f" ({scope})" if scope else "")
        if counted.get("seconds"):
            m.extra["energy_window_s"] = counted["seconds"]
            m.extra["energy_mean_power_w"] = counted["energy_uj"] / 1e6 / counted["seconds"]
        if "power_samples" in counted:
            m.extra["energy_power_samples"] = counted["power_samples"]
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


def energy_warning(extra: dict) -> str:
    """Why a measured energy figure is weak, or ''."""
    n = extra.get("energy_power_samples")
    if extra.get("energy_provenance") == "measured" and n is not None and n < MIN_POWER_SAMPLES:
        window = extra.get("energy_window_s") or 0.0
        return (f"energy from only {n} power samples over {window:.2f} s: measure longer (--min-time) "
                f"for a figure to trust")
    return ""


def synops_energy(metrics: dict) -> dict:
    """The SynOps-based energy estimate of a spiking net per eval sample (one whole window, however many calls
    a step model makes for it), beside the dense-MAC one it replaces. {} when the model has no synaptic-operation
    count."""
    synops = metrics.get("synops_per_sample")
    if synops is None:
        return {}
    out = {"synops_energy_mj_per_sample": synops * PJ_PER_ACCUMULATE * 1e-9,
           "synops_energy_source": f"estimated: synaptic operations x {PJ_PER_ACCUMULATE:g} pJ ({OPERATION_ENERGY_SOURCE})"}
    dense = metrics.get("dense_macs_per_sample")
    if dense is not None:
        out["dense_mac_energy_mj_per_sample"] = dense * PJ_PER_MAC * 1e-9
    return out
