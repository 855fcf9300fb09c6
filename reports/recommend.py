"""Which artifact to deploy on each device: the fastest within 1 point of the best accuracy measured there.

Rendering and the command line call this; it measures nothing. Candidates are the records that classify a
whole window on the device, so their latencies compare like for like: window models (one call per window)
and streamed windows of step models (T calls from rest, state carried; graph "stream"). A step record (one
sample) is the same file as its streamed window and is not a separate candidate. Records without accuracy
on the device, or failed ones, cannot be chosen; the reasons say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ACCURACY_MARGIN_POINTS = 1.0  # "within 1 point of the best accuracy on that device"


@dataclass(frozen=True)
class Recommendation:
    device: str
    pick: str  # artifact (record) name
    accuracy: float  # on the device, 0..1
    p50_ms: float  # per window or inference (call_unit)
    best_accuracy: float
    reason: str
    others: list = field(default_factory=list)  # [(name, why it lost)]
    latency_provenance: str = ""


def _graph(r) -> str:
    return r.extra.get("graph", "window") if isinstance(r.extra, dict) else "window"


def call_unit(records) -> tuple[str, str]:
    """What one call and one eval sample are: ('window', 'eval windows') in a run with streaming step models,
    else ('inference', 'eval samples') (an image classifier's report has no windows)."""
    if any(_graph(r) in ("stream", "step") for r in records):
        return "window", "eval windows"
    return "inference", "eval samples"


def candidates(records) -> list:
    return [r for r in records if _graph(r) != "step"]


def recommend(records, margin_points: float = ACCURACY_MARGIN_POINTS) -> dict:
    """{device: Recommendation} over the records of one run (latest per artifact and device)."""
    out = {}
    unit, samples = call_unit(records)
    for device in sorted({r.device for r in records}):
        recs = [r for r in candidates(records) if r.device == device]
        usable = [r for r in recs if r.status == "ok" and r.accuracy is not None and r.latency_ms]
        if not usable:
            continue
        # latencies of different provenance (measured vs emulated) are not compared with each other
        provs = {r.latency_provenance for r in usable}
        prov = "measured" if "measured" in provs else sorted(provs)[0]
        usable = [r for r in usable if r.latency_provenance == prov]
        best = max(r.accuracy for r in usable)
        floor = best - margin_points / 100.0
        eligible = [r for r in usable if r.accuracy >= floor - 1e-12]
        pick = min(eligible, key=lambda r: (r.latency_ms["p50"], -r.accuracy, r.name))
        p50 = pick.latency_ms["p50"]
        others = []
        for r in sorted(recs, key=lambda r: r.name):
            if r is pick:
                continue
            if r.status != "ok":
                others.append((r.name, f"failed: {r.error}"[:160]))
            elif r.accuracy is None:
                others.append((r.name, "no accuracy on the device"))
            elif not r.latency_ms:
                others.append((r.name, "no latency"))
            elif r.latency_provenance != prov:
                others.append((r.name, f"latency is {r.latency_provenance}, not comparable with {prov}"))
            elif r.accuracy < floor - 1e-12:
                others.append((r.name, f"accuracy {100 * r.accuracy:.2f}% is more than {margin_points:g} point "
                                       f"below the best {100 * best:.2f}%"))
            else:
                ratio = r.latency_ms["p50"] / p50 if p50 else float("inf")
                others.append((r.name, f"slower: p50 {r.latency_ms['p50']:.4g} ms per {unit}, {ratio:.2f}x the "
                                       f"pick's {p50:.4g} ms (accuracy {100 * r.accuracy:.2f}%)"))
        what = ("streamed window (step model, T calls)" if _graph(pick) == "stream"
                else "window model (one call)" if unit == "window" else "one call")
        reason = (f"fastest of the {len(eligible)} artifact(s) within {margin_points:g} point of the best accuracy "
                  f"on {device} ({100 * best:.2f}%): p50 {p50:.4g} ms per {unit} ({prov}), {what}, accuracy "
                  f"{100 * pick.accuracy:.2f}% on {pick.n_eval} {samples}")
        out[device] = Recommendation(device=device, pick=pick.name, accuracy=pick.accuracy, p50_ms=p50,
                                     best_accuracy=best, reason=reason, others=others, latency_provenance=prov)
    return out
