"""A regression gate: two sets of records, paired, with a verdict that noise does not flip.

Pairs are matched by artifact (sha256, else name), device, runtime and threads. Latency is decided on the
raw samples: a bootstrap 95% confidence interval of the ratio of medians (current / base). A pair regresses
only when the whole interval lies above 1 + max_slowdown; a ratio whose interval straddles the threshold is
"inconclusive", never a failure. Records measured side by side (reports/side_by_side.py: both model files
timed here in alternating rounds) are judged on the rounds' paired ratios instead. Guest instruction counts
(emulated devices) are exact and compared as such. Accuracy regresses when it drops by more than
max_accuracy_drop (in points).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgebench.reports.record import Record
from edgebench.types import EdgebenchError

BOOTSTRAP_ROUNDS = 2000
# A latency verdict on runs with less sampled time than this names it: a shared host can run at two speeds
# in stretches of seconds (devices/stability.py), so a short run may sit wholly in one of them.
SHORT_RUN_S = 10.0
MAX_SAMPLES = 5000  # per side, for the bootstrap only (statistics elsewhere use every sample)


@dataclass(frozen=True)
class Verdict:
    name: str
    device: str
    runtime: str
    threads: int | None
    verdict: str  # "ok", "regression", "faster", "inconclusive", "missing in base", "missing in current", "failed"
    base_p50_ms: float | None = None
    current_p50_ms: float | None = None
    ratio: float | None = None  # current / base
    ratio_ci: tuple | None = None  # bootstrap 95% interval of the ratio of medians
    basis: str = ""  # "raw samples (bootstrap)", "instruction counts (exact)"
    accuracy_delta_pp: float | None = None
    reason: str = ""
    same_file: bool = False  # base and current are the same artifact (sha256)

    def to_dict(self) -> dict:
        return asdict(self)


def load_records(source: str, store: Path | None = None) -> list[Record]:
    """A report folder (records.json), a store file (its newest run) or a run id in `store`."""
    from edgebench.reports.render import latest_per_key
    from edgebench.reports.store import DEFAULT_STORE, Store, run_records

    path = Path(source)
    if path.is_dir():
        f = path / "records.json"
        if not f.exists():
            raise EdgebenchError(f"{path} is not a report folder (no records.json)")
        return latest_per_key([Record.from_dict(d) for d in json.loads(f.read_text())])
    if path.is_file():
        with Store(path) as s:
            run_id = s.latest_run()
            records = s.query(run_id=run_id) if run_id else []
        if not records:
            raise EdgebenchError(f"store {path} has no records")
        return latest_per_key(records)
    if not Path(store or DEFAULT_STORE).exists():
        raise EdgebenchError(f"'{source}' is neither a report folder, a store file nor a run id in "
                             f"{store or DEFAULT_STORE}")
    return latest_per_key(run_records(source, store))


def _key(r: Record) -> tuple:
    return (r.sha256 or r.name, r.device, r.runtime, r.threads)


def median_ratio_ci(base_ns, cur_ns, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians (current / base) and its bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    b = np.asarray(base_ns, dtype=np.float64)
    c = np.asarray(cur_ns, dtype=np.float64)
    b = b if len(b) <= MAX_SAMPLES else rng.choice(b, MAX_SAMPLES, replace=False)
    c = c if len(c) <= MAX_SAMPLES else rng.choice(c, MAX_SAMPLES, replace=False)
    mb = np.median(b[rng.integers(0, len(b), (rounds, len(b)))], axis=1)
    mc = np.median(c[rng.integers(0, len(c), (rounds, len(c)))], axis=1)
    ratios = mc / mb
    return float(np.median(c) / np.median(b)), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def judge(b: Record, c: Record, max_slowdown: float = 0.05, max_accuracy_drop_pp: float = 0.5) -> Verdict:
    """The verdict on one pair of records, whatever their keys (side by side: base and current devices may
    differ)."""
    common = dict(name=c.name, device=c.device, runtime=f"{c.runtime} {c.runtime_version}".strip(), threads=c.threads,
                  same_file=bool(b.sha256) and b.sha256 == c.sha256)
    if b.status != "ok" or c.status != "ok":
        which = "base" if b.status != "ok" else "current"
        return Verdict(**common, verdict="failed", reason=f"{which} measurement failed: "
                       f"{(b if which == 'base' else c).error}")
    acc = None
    if b.accuracy is not None and c.accuracy is not None:
        acc = 100.0 * (c.accuracy - b.accuracy)
    bi, ci = b.extra.get("instructions_per_inference"), c.extra.get("instructions_per_inference")
    p50 = dict(base_p50_ms=(b.latency_ms or {}).get("p50"), current_p50_ms=(c.latency_ms or {}).get("p50"))
    paired = _side_by_side_rounds(b, c)
    if bi and ci:
        ratio = ci / bi
        lo = hi = ratio
        basis = "instruction counts (exact)"
    elif paired:
        from edgebench.reports.side_by_side import paired_ratio_ci

        ratio, lo, hi = paired_ratio_ci(*paired)
        basis = f"side by side, {len(paired[0])} alternating rounds (bootstrap of the rounds' ratios)"
    elif b.samples_ns and c.samples_ns:
        ratio, lo, hi = median_ratio_ci(b.samples_ns, c.samples_ns)
        basis = f"raw samples (bootstrap of medians, {len(b.samples_ns)} vs {len(c.samples_ns)})"
    else:
        return Verdict(**common, **p50, verdict="inconclusive", accuracy_delta_pp=acc, reason="no raw samples")
    reasons = []
    if lo > 1 + max_slowdown:
        verdict = "regression"
        reasons.append(f"{(ratio - 1):+.1%} slower (95% interval {lo - 1:+.1%} .. {hi - 1:+.1%}) beyond "
                       f"{max_slowdown:.1%}")
    elif hi < 1 - max_slowdown:
        verdict = "faster"
    elif hi > 1 + max_slowdown:
        verdict = "inconclusive"
        reasons.append(f"interval {lo - 1:+.1%} .. {hi - 1:+.1%} straddles +{max_slowdown:.1%}")
    else:
        verdict = "ok"
    if basis.startswith("raw samples") and verdict in ("regression", "inconclusive"):
        span = min(sum(b.samples_ns), sum(c.samples_ns)) / 1e9
        if span < SHORT_RUN_S:
            reasons.append(f"the shorter run sampled {span:.1f} s: a shared machine can change speed for longer "
                           f"(`edgebench devices doctor {c.device} --stability 20`); bench with --min-time "
                           f"{SHORT_RUN_S:g} or more, or compare the two model files side by side")
    quota_note = _quota_tail(b, c, verdict, max_slowdown)
    if quota_note:
        reasons.append(quota_note)
    if acc is not None and -acc > max_accuracy_drop_pp:
        verdict = "regression"
        reasons.append(f"accuracy {acc:+.2f} pp beyond -{max_accuracy_drop_pp:g} pp")
    return Verdict(**common, **p50, verdict=verdict, ratio=ratio, ratio_ci=(lo, hi), basis=basis,
                   accuracy_delta_pp=acc, reason="; ".join(reasons))


def _quota_tail(b: Record, c: Record, verdict: str, max_slowdown: float) -> str:
    """Why a CPU-quota device can leave the median alone: an inference much shorter than the quota's period
    (devices/throttle.py) is slowed only when it meets a throttled stretch, so the mean moves and the median does
    not (a 0.4 ms window under 0.5 cores: p50 0.403 -> 0.410 ms, mean 0.408 -> 0.889 ms). Said where the
    verdict is not a regression but the mean rose beyond the threshold."""
    from edgebench.devices.throttle import PERIOD_US

    quota = (c.device_facts or {}).get("cpu_quota_cores")
    if not quota or verdict == "regression" or not (b.samples_ns and c.samples_ns):
        return ""
    mean_b, mean_c = float(np.mean(b.samples_ns)), float(np.mean(c.samples_ns))
    # "this short": a median under a tenth of the period, so most inferences fall between throttled stretches
    if mean_c <= mean_b * (1 + max_slowdown) or float(np.median(c.samples_ns)) * 10 > PERIOD_US * 1e3:
        return ""
    return (f"the mean is {mean_c / mean_b - 1:+.0%}: {c.device}'s CPU quota ({quota:g} cores in "
            f"{PERIOD_US // 1000} ms periods) slows an inference this short only when it meets a throttled "
            "stretch, which the median does not show")


def machine_moved(verdicts: list[Verdict]) -> str:
    """A warning when identical files (same sha256) came out both slower and faster than their threshold in one
    comparison: a file cannot be both, so the machine's speed moved between (or within) the runs. Two runs of
    the main job here, nothing changed, gave 8 such `regression` rows and 13 `faster` (README). A slowed
    device makes identical files slower, not some of them faster, and gets no warning. The verdicts stand."""
    same = [v for v in verdicts if v.same_file and v.ratio is not None and not v.basis.startswith("instruction")]
    slower = [v for v in same if v.verdict == "regression"]
    faster = [v for v in same if v.verdict == "faster"]
    if not slower or not faster:
        return ""
    lo = min(v.ratio for v in faster)
    hi = max(v.ratio for v in slower)
    return (f"{len(slower)} identical file(s) measured slower and {len(faster)} faster ({lo:.2f}x to {hi:.2f}x): "
            "the machine's speed moved between the runs, not the files; compare the model files side by side "
            "(`edgebench compare BASE.onnx CURRENT.onnx`) or check the device (`edgebench devices doctor NAME "
            "--stability 20`)")


def _side_by_side_rounds(b: Record, c: Record) -> tuple | None:
    """(base rounds, current rounds) when both records were measured side by side in one session."""
    from edgebench.reports.side_by_side import rounds_of

    sb, sc = (b.extra or {}).get("side_by_side"), (c.extra or {}).get("side_by_side")
    if not sb or not sc or sb.get("session") != sc.get("session"):
        return None
    rb, rc = rounds_of(b), rounds_of(c)
    return (rb, rc) if rb and rc and len(rb) == len(rc) else None


def compare_records(base: list[Record], current: list[Record], max_slowdown: float = 0.05,
                    max_accuracy_drop_pp: float = 0.5) -> list[Verdict]:
    """A verdict per pair; unpaired records are listed as missing, never dropped."""
    by_base = {_key(r): r for r in base}
    by_cur = {_key(r): r for r in current}
    if len(by_base) < len(base) or len(by_cur) < len(current):  # same file twice: fall back to names
        by_base = {(r.name, *(_key(r)[1:])): r for r in base}
        by_cur = {(r.name, *(_key(r)[1:])): r for r in current}
    out, paired = [], set()  # ids of the base records judged
    for key, c in by_cur.items():
        b = by_base.get(key)
        if b is None:
            named = [r for k, r in by_base.items() if k[1:] == key[1:] and r.name == c.name]
            b = named[0] if len(named) == 1 else None  # the same artifact name, rebuilt (new sha256)
        if b is None:
            out.append(Verdict(c.name, c.device, f"{c.runtime} {c.runtime_version}".strip(), c.threads,
                               "missing in base"))
            continue
        paired.add(id(b))
        out.append(judge(b, c, max_slowdown, max_accuracy_drop_pp))
    for b in base:  # a base record paired by sha256 under another name is not missing
        if id(b) not in paired:
            out.append(Verdict(b.name, b.device, f"{b.runtime} {b.runtime_version}".strip(), b.threads,
                               "missing in current"))
    return out
