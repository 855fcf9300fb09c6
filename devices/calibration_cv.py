"""Cross-validation of the emulated board's cost model (devices/calibration.py): out-of-fold estimates by model
or by source, the grouping selected on a calibration's own rows by a rule fixed in advance (select_grouping)
and repeated inside every training fold (nested_cross_validate), the error of a calibration on its own setup
(within_source_cross_validate), and the gap between sources that publish the same architecture, which bounds
any estimate from counts (same_architecture_pairs)."""
from __future__ import annotations

import json

from edgebench.devices.calibration import ATTRIBUTION_GROUPINGS, GROUPINGS, fit_cpi, predict_ms
from edgebench.types import EdgebenchError


def error_stats(pred: list[float], published: list[float]) -> dict:
    """Median and 90th percentile of |pred - published| / published, and Spearman's rank correlation."""
    import numpy as np
    from scipy.stats import spearmanr

    err = [abs(p - y) / y for p, y in zip(pred, published)]
    rho = float(spearmanr(pred, published).statistic) if len(pred) > 2 else float("nan")
    return {"n": len(err), "median_abs_error": float(np.median(err)), "p90_abs_error": float(np.percentile(err, 90)),
            "spearman": rho}


def cross_validate(rows: list[dict], grouping: str, clock_ghz: float, by: str) -> tuple[list[float], dict]:
    """Out-of-fold predictions for rows ({"by_class", "latency_ms", "source", "key"}), holding out one
    `by` value ("source" or "key") at a time; fold sizes are left as they come."""
    preds = [float("nan")] * len(rows)
    for held in sorted({r[by] for r in rows}):
        train = [(r["by_class"], r["latency_ms"]) for r in rows if r[by] != held]
        if not train:
            raise EdgebenchError(f"cross-validation by {by} needs at least two distinct values")
        cpi = fit_cpi(train, grouping, clock_ghz)
        for i, r in enumerate(rows):
            if r[by] == held:
                preds[i] = predict_ms(r["by_class"], cpi, grouping, clock_ghz)
    return preds, error_stats(preds, [r["latency_ms"] for r in rows])


def n_constants(grouping: str) -> int:
    return len(GROUPINGS[grouping] if grouping in GROUPINGS else ATTRIBUTION_GROUPINGS[grouping])


def select_grouping(rows: list[dict], candidates: tuple[str, ...], clock_ghz: float) -> tuple[str, dict]:
    """The grouping a calibration uses, chosen on its own rows only: the lowest p90 of |error| under
    leave-one-model-out among `candidates` (ties: the lower median, then the fewer constants). A grouping with
    as many constants as rows minus one is never a candidate: its held-out errors measure nothing. With
    too few rows for any comparison, the candidate with the fewest constants is taken.
    The rule is fixed before any evaluation; nested_cross_validate applies it inside every training fold."""
    scored = {}
    for g in candidates:
        if n_constants(g) <= len(rows) - 2:
            s = cross_validate(rows, g, clock_ghz, "key")[1]
            scored[g] = (round(s["p90_abs_error"], 6), round(s["median_abs_error"], 6), n_constants(g))
    if not scored:  # too few rows to compare groupings: the one with the fewest constants, chosen a priori
        if not rows:
            raise EdgebenchError("no rows to select a grouping on")
        return min(candidates, key=n_constants), {}
    best = min(scored, key=scored.get)
    return best, {g: {"p90_abs_error": v[0], "median_abs_error": v[1]} for g, v in scored.items()}


def nested_cross_validate(rows: list[dict], candidates: tuple[str, ...], clock_ghz: float,
                          by: str) -> tuple[list[float], dict, dict]:
    """Out-of-fold predictions where the grouping too is chosen without the held-out rows: for every held-out
    `by` value, select_grouping runs on the training rows alone, and its fit predicts the held-out rows.
    Returns (predictions, error_stats, {held-out value: chosen grouping})."""
    preds = [float("nan")] * len(rows)
    chosen = {}
    for held in sorted({r[by] for r in rows}):
        train = [r for r in rows if r[by] != held]
        g, _ = select_grouping(train, candidates, clock_ghz)
        chosen[held] = g
        cpi = fit_cpi([(r["by_class"], r["latency_ms"]) for r in train], g, clock_ghz)
        for i, r in enumerate(rows):
            if r[by] == held:
                preds[i] = predict_ms(r["by_class"], cpi, g, clock_ghz)
    return preds, error_stats(preds, [r["latency_ms"] for r in rows]), chosen


def within_source_cross_validate(rows: list[dict], candidates: tuple[str, ...],
                                 clock_ghz: float) -> tuple[list[float], dict]:
    """Nested leave-one-model-out inside each source separately (a source of fewer than 4 models predicts
    nothing and is left out), pooled: the error of a calibration fitted on the same setup (board, runtime,
    threads, harness) as the figure it predicts, which is what `--from-device` gives a user. It says nothing
    about another setup; leave-one-source-out does."""
    preds, ys, kept = [], [], []
    for s in sorted({r["source"] for r in rows}):
        sub = [r for r in rows if r["source"] == s]
        if len(sub) < 4:
            continue
        p, _, _ = nested_cross_validate(sub, candidates, clock_ghz, "key")
        preds += p
        ys += [r["latency_ms"] for r in sub]
        kept += sub
    if len(kept) < 3:
        raise EdgebenchError("within-source cross-validation needs a source of at least 4 models")
    return preds, error_stats(preds, ys)


def same_architecture_pairs(rows: list[dict], reference: dict) -> list[dict]:
    """Entries of different sources that publish the same architecture at the same input size (only the
    classifier's width may differ). Their counts are nearly equal, so any estimate from counts gives them
    nearly equal latencies; when the published figures differ, the gap is the sources' own (runtime, threads,
    harness) and bounds what a cost model fitted on one source can do on the other. `floor` is the smallest
    possible larger relative error of the two for an estimate proportional to the counts."""
    spec = {e["key"]: (e["arch"], json.dumps({k: v for k, v in e.get("arch_kwargs", {}).items() if k != "classes"},
                                             sort_keys=True), json.dumps(e["input_shape"])) for e in reference["entries"]}
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["source"] != b["source"] and spec[a["key"]] == spec[b["key"]]:
                # estimates in the counts' ratio c = n_a / n_b; published ratio p = y_a / y_b: the best common
                # scale leaves both off by (r - 1) / (r + 1), r = max(p / c, c / p)
                c, p = a["instructions"] / b["instructions"], a["latency_ms"] / b["latency_ms"]
                r = max(p / c, c / p)
                out.append({"a": a["key"], "b": b["key"], "published_a": a["latency_ms"], "published_b": b["latency_ms"],
                            "published_ratio": p, "count_ratio": c, "floor": (r - 1) / (r + 1)})
    return out
