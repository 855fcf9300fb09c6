"""A shared machine changes speed between the runner processes of a predictor build: the timings are scaled to
one speed (the build's median empty-model time) before fitting."""
import numpy as np

from edgebench.search.predictor_fit import KernelPredictor, at_reference_speed, speed_mix
from tests.search.test_predictor_overhead import _doc


def test_timings_are_scaled_to_the_builds_median_speed_before_fitting():
    """Kernels timed while the machine ran at half speed (their process's empty model took twice as long) count
    as if timed at the build's median speed; the fit then recovers the costs as for a steady machine."""
    def truth(total, t):
        return (total + 0.003 - 0.0038 * t["n_kernels"] + 0.0006 * t["alone_extra_nodes"]
                + 0.01 * t["streamed_mb_beyond_cache"] - 0.05 * t["conv_io_melems"] - 0.0004 * t["kernel_inputs"] + 0.02 * t["kernel_out_melems"] + 0.0008 * t["model_io"])

    steady = _doc(truth)
    moved = _doc(truth)
    timed = [v for k, v in moved["kernels"].items() if k != "_empty"] + list(moved["models"].values())
    for i, v in enumerate(timed):
        slow = 2.0 if i % 3 == 0 else 1.0  # a third of the processes ran at half speed
        v["p50_ms"] *= slow
        v["empty_ms"] = 0.0038 * slow
    scaled = at_reference_speed(moved)
    assert scaled["meta"]["reference_empty_ms"] == 0.0038 and at_reference_speed(scaled) is scaled  # once only
    for key, v in steady["kernels"].items():
        assert abs(scaled["kernels"][key]["p50_ms"] - v["p50_ms"]) < 1e-12
    assert scaled["kernels"]["_empty"]["p50_ms"] == 0.0038
    got, want = KernelPredictor(moved).fit, KernelPredictor(steady).fit
    np.testing.assert_allclose([got[t] for t in ("c", *KernelPredictor.TERMS)],
                               [want[t] for t in ("c", *KernelPredictor.TERMS)], atol=1e-7)
    def as_timed(entries):
        return {k: {x: y for x, y in v.items() if x != "empty_ms"} for k, v in entries.items()}

    unscaled = KernelPredictor({**moved, "kernels": as_timed(moved["kernels"]), "models": as_timed(moved["models"])})
    assert unscaled.fit["train_median_abs_error"] > 0.05  # the same figures taken as timed do not fit
    assert at_reference_speed(steady) is steady  # a build without empty_ms (older edgebench): as timed


def test_a_build_timed_at_two_speeds_says_so():
    doc = _doc(lambda total, t: total)
    doc["meta"]["device"] = "local"
    assert speed_mix(doc) is None  # no empty_ms: an older build, nothing to say
    timed = [v for k, v in doc["kernels"].items() if k != "_empty"] + list(doc["models"].values())
    for i, v in enumerate(timed):
        v["empty_ms"] = 0.0058 if i % 4 else 0.0093  # a quarter in the slow stretch
    said = speed_mix(doc)
    assert said.startswith(f"{len(timed[::4])} of {len(timed)} timings were taken while this machine ran 1.25x slower")
    assert "5.80 to 9.30 us" in said and "devices doctor local --stability 20" in said
    for i, v in enumerate(timed):
        v["empty_ms"] = 0.0058 * (1 + 0.01 * (i % 10))  # one speed, a little noise: nothing to say
    assert speed_mix(doc) is None
