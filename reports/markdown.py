"""report.md: the decision and a compact table in GitHub-flavored Markdown, for a pull-request comment or a CI log.

The decision is reports/recommend.py's, the same one report.html opens with. Rendering only.
"""
from __future__ import annotations

from edgebench.reports.record import Record, trust_warnings
from edgebench.reports.recommend import call_unit, recommend

MAX_ROWS = 60  # a pull-request comment holds 65,536 characters; report.html has every row
MAX_WARNINGS = 20  # likewise for the spread warnings


def _cell(v) -> str:
    """One table cell: pipes escaped, line breaks flattened (both would break a GFM table row)."""
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _f(v, spec: str = "{:.4g}") -> str:
    return "–" if v is None else spec.format(v)


def render_markdown(records: list[Record], title: str, html_name: str = "report.html") -> str:
    """The Markdown summary of one run's records (one record per artifact and device)."""
    from edgebench.reports.interactive import pick_warning
    from edgebench.reports.render import graph_of

    recs = recommend(records)
    ok = sum(r.status == "ok" for r in records)
    out = [f"## {_cell(title)}", "",
           f"{len(records)} records on {len({r.device for r in records})} device(s): {ok} ok, "
           f"{len(records) - ok} failed. Full report: `{html_name}` (interactive, offline).", "",
           "### Decision", ""]
    if recs:
        unit = call_unit(records)[0]
        out += [f"| device | deploy | accuracy on the device | p50 per {unit} | latency provenance | why |",
                "|---|---|--:|--:|---|---|"]
        for d, rec in recs.items():
            spread = pick_warning(records, d, rec.pick)
            out.append(f"| {_cell(d)} | **`{_cell(rec.pick)}`** | {100 * rec.accuracy:.2f}% | {rec.p50_ms:.4g} ms | "
                       f"{_cell(rec.latency_provenance)} | {_cell(rec.reason)}"
                       + (f" ⚠️ Spread: {_cell(spread)}" if spread else "") + " |")
    else:
        out.append("No artifact can be recommended: no successful record with accuracy on the device and a latency.")
    warnings = trust_warnings(r for r in records if r.status == "ok")
    if warnings:
        out += ["", f"<details><summary>{len(warnings)} spread warning(s)</summary>", ""]
        out += [f"- {_cell(w)}" for w in warnings[:MAX_WARNINGS]]
        if len(warnings) > MAX_WARNINGS:
            out.append(f"- ... {len(warnings) - MAX_WARNINGS} more: `edgebench run` prints them all")
        out += ["", "</details>"]
    out += ["", "### Records", "",
            "| artifact | device | graph | format | precision | accuracy | p50 (ms) | p99 (ms) | CV | size (kB) "
            "| provenance | status |",
            "|---|---|---|---|---|--:|--:|--:|--:|--:|---|---|"]
    picks = {(d, rec.pick) for d, rec in recs.items()}
    # per device: the pick, failures, then the rest by p50; past MAX_ROWS the slowest rows are left to the HTML
    ordered = sorted(records, key=lambda r: ((r.device, r.name) not in picks, r.status == "ok",
                                             (r.latency_ms or {}).get("p50", float("inf")), r.name))
    shown = sorted(ordered[:MAX_ROWS], key=lambda r: (r.device, (r.device, r.name) not in picks, r.name))
    for r in shown:
        lat = r.latency_ms or {}
        name = f"**{_cell(r.name)}**" if (r.device, r.name) in picks else _cell(r.name)
        status = "ok" if r.status == "ok" else "failed: " + _cell(r.error)[:120]
        out.append(
            f"| {name} | {_cell(r.device)} | {graph_of(r)} | {_cell(r.format)} | {_cell(r.precision)} | "
            f"{_f(None if r.accuracy is None else 100 * r.accuracy, '{:.2f}%')} | {_f(lat.get('p50'))} | "
            f"{_f(lat.get('p99'))} | {_f(lat.get('cv'), '{:.0%}')} | "
            f"{_f(None if r.size_bytes is None else r.size_bytes / 1000, '{:,.1f}')} | "
            f"{_cell(r.latency_provenance or '–')} | {status} |")
    if len(records) > len(shown):
        out += ["", f"{len(records) - len(shown)} more record(s), the slowest, are in `{html_name}` and records.csv."]
    out += ["", "Latency per call of the artifact: a window, a streamed window (T calls of a step model) or one "
            "step (graph column). Provenance: measured on the device, emulated (wall time under emulation), "
            "estimated (derived), predicted (by a model). Bold: the artifact to deploy.", ""]
    return "\n".join(out)
