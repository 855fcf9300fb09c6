"""The interactive plots of report.html (reports/interactive.py): accuracy vs latency with the Pareto front,
latency distributions, operator profiles and guest instruction counts, as Plotly figures. Rendering only: every
figure comes from a Record; raw samples are thinned for drawing only (`thin`), statistics use every sample."""
from __future__ import annotations

import html
import json

from edgebench.reports.record import Record
from edgebench.reports.recommend import candidates

MAX_PLOTTED_SAMPLES = 2000  # per artifact in a distribution plot; statistics always use every sample
SHOWN_DISTRIBUTIONS = 20  # artifacts drawn at first per device (the pick and the fastest); the legend shows the rest
MAX_PROFILE_OPS = 15  # per artifact in the profile plot
SYMBOLS = {"measured": "circle", "estimated": "square", "emulated": "triangle-up", "predicted": "diamond-open"}
PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000",
           "#ee7733", "#009988", "#cc3311", "#0077bb"]
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def thin(values: list, k: int = MAX_PLOTTED_SAMPLES) -> list:
    """At most k values for drawing: the k evenly spaced order statistics of the sorted values (min and max
    kept), so the drawn distribution keeps its shape. Only for plots, never for statistics."""
    v = [float(f"{x:.5g}") for x in sorted(values)]  # 5 digits are far below a pixel
    if len(v) <= k:
        return v
    return [v[round(i * (len(v) - 1) / (k - 1))] for i in range(k)]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, accuracy) points no other point beats on both: faster and at least as accurate."""
    front, best = [], float("-inf")
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def _e(v) -> str:
    return html.escape(str(v))


def _t(v) -> str:
    """Text inside a plot: Plotly draws a small HTML subset and decodes &amp; &lt; &gt;, not &quot;."""
    return html.escape(str(v), quote=False)


def _arch(r: Record) -> str:
    a = r.extra.get("arch") if isinstance(r.extra, dict) else None
    return "" if a is None else json.dumps(a, separators=(",", ":"))


def _figure(fig: dict, div_id: str, cls: str, **attrs) -> str:
    import plotly.io as pio

    extra = "".join(f" data-{k}='{_e(v)}'" for k, v in attrs.items())
    body = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG,
                       validate=True)
    return f"<div class='fig {cls}'{extra}>{body}</div>"


# -- the figures --------------------------------------------------------------------------------------------

def _hover(r: Record) -> str:
    lat = r.latency_ms or {}
    lines = [f"<b>{_t(r.name)}</b>", f"device: {_t(r.device)}",
             f"runtime: {_t(f'{r.runtime} {r.runtime_version}'.strip() or '–')}",
             f"provenance: {_t(r.latency_provenance or '–')}"]
    if lat:
        lines.append(f"p50 {lat['p50']:.4g} ms" + (f", n={lat['n']}" if lat.get("n") is not None else ""))
        if lat.get("p90") is not None:
            lines.append(f"spread: p90 {lat['p90']:.4g}, p99 {lat['p99']:.4g} ms, CV {100 * lat['cv']:.0f}%")
        elif lat.get("band") is not None:
            lines.append(f"estimate band ±{100 * lat['band']:.0f}%")
    if r.accuracy is not None:
        from edgebench.reports.render import accuracy_ci

        lo, hi = accuracy_ci(r)
        ci = "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}] (95 %)"
        lines.append(f"accuracy {100 * r.accuracy:.2f}%{ci} on {r.n_eval} eval samples")
    if _arch(r):
        lines.append(f"arch: {_t(_arch(r))}")
    return "<br>".join(lines)


def _scale_buttons(axis: str = "xaxis", default: str = "log") -> list:
    order = [default, "linear" if default == "log" else "log"]
    return [{"type": "buttons", "direction": "right", "x": 1, "y": 1.02, "xanchor": "right", "yanchor": "bottom",
             "showactive": True, "buttons": [
                 {"label": f"{s} {axis[0]}", "method": "relayout", "args": [{f"{axis}.type": s}]} for s in order]}]


def accuracy_latency_figure(device: str, records: list[Record], pick: str | None) -> dict | None:
    pts = [r for r in candidates(records) if r.device == device and r.status == "ok" and r.accuracy is not None
           and r.latency_ms and r.latency_ms.get("p50") is not None]
    if not pts:
        return None
    models = sorted({r.model for r in pts})
    color = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    traces = []
    for prov in sorted({r.latency_provenance for r in pts}):
        group = [r for r in pts if r.latency_provenance == prov]
        for model in sorted({r.model for r in group}):  # one legend entry per model: click to hide it
            mine = [r for r in group if r.model == model]
            ci = [(100 * (r.accuracy - lo), 100 * (hi - r.accuracy)) if lo is not None else (0, 0)
                  for r in mine for lo, hi in [_ci(r)]]
            traces.append({"type": "scatter", "mode": "markers", "name": f"{model} ({prov})",
                           "legendgroup": model, "x": [r.latency_ms["p50"] for r in mine],
                           "y": [100 * r.accuracy for r in mine],
                           "error_y": {"type": "data", "symmetric": False, "array": [c[1] for c in ci],
                                       "arrayminus": [c[0] for c in ci], "thickness": 0.8, "width": 2,
                                       "color": "#999999"},
                           **({"error_x": {"type": "data", "symmetric": False, "thickness": 0.8, "width": 2,
                                           "color": "#999999",
                                           "array": [r.latency_ms["high"] - r.latency_ms["p50"] for r in mine],
                                           "arrayminus": [r.latency_ms["p50"] - r.latency_ms["low"] for r in mine]}}
                              if all(r.latency_ms.get("low") is not None for r in mine) else {}),
                           "customdata": [r.name for r in mine], "text": [_hover(r) for r in mine],
                           "hovertemplate": "%{text}<extra></extra>",
                           "marker": {"symbol": SYMBOLS.get(prov, "x"), "size": 10, "color": color[model],
                                      "line": {"width": 0.5, "color": "#333"}}})
        front = pareto_front([(r.latency_ms["p50"], 100 * r.accuracy) for r in group])
        traces.append({"type": "scatter", "mode": "lines", "name": f"Pareto front ({prov})",
                       "x": [p[0] for p in front], "y": [p[1] for p in front], "hoverinfo": "skip",
                       "line": {"shape": "hv", "color": "#555555", "width": 1.2, "dash": "dot"}})
    pred = [r for r in pts if isinstance(r.extra.get("predicted_latency_ms"), (int, float))]
    if pred:  # where the search said each pick would be, joined to where it was measured
        xs, ys = [], []
        for r in pred:
            ya = r.extra.get("predicted_accuracy")
            xs += [r.extra["predicted_latency_ms"], r.latency_ms["p50"], None]
            ys += [100 * (ya if ya is not None else r.accuracy), 100 * r.accuracy, None]
        traces.append({"type": "scatter", "mode": "lines", "name": "predicted → measured", "x": xs, "y": ys,
                       "hoverinfo": "skip", "line": {"color": "#bbbbbb", "width": 0.8}})
        traces.append({"type": "scatter", "mode": "markers", "name": "predicted (search)",
                       "x": [r.extra["predicted_latency_ms"] for r in pred],
                       "y": [100 * (r.extra.get("predicted_accuracy") if r.extra.get("predicted_accuracy") is not None
                                    else r.accuracy) for r in pred],
                       "customdata": [r.name for r in pred],
                       "text": [f"<b>{_t(r.name)}</b> (predicted)<br>device: {_t(r.device)}<br>provenance: predicted"
                                f"<br>latency {r.extra['predicted_latency_ms']:.4g} ms"
                                + (f"<br>accuracy {100 * r.extra['predicted_accuracy']:.2f}%"
                                   if r.extra.get("predicted_accuracy") is not None else "")
                                + (f"<br>arch: {_t(_arch(r))}" if _arch(r) else "") for r in pred],
                       "hovertemplate": "%{text}<extra></extra>",
                       "marker": {"symbol": SYMBOLS["predicted"], "size": 10,
                                  "color": [color[r.model] for r in pred]}})
    annotations = []
    chosen = next((r for r in pts if r.name == pick), None)
    if chosen is not None:
        annotations.append({"x": _log10(chosen.latency_ms["p50"]), "y": 100 * chosen.accuracy,
                            "text": f"deploy: {_t(chosen.name)}", "showarrow": True, "arrowhead": 2,
                            "ax": 40, "ay": -30, "font": {"size": 11}})
    provs = ", ".join(sorted({r.latency_provenance for r in pts}))
    return {"data": traces, "layout": {
        "title": {"text": f"{_t(device)}: accuracy vs latency", "font": {"size": 14}, "x": 0.01,
                  "xanchor": "left"},
        "xaxis": {"type": "log", "title": {"text": f"p50 latency per call (ms; {provs})"}},
        "yaxis": {"title": {"text": "accuracy on the device (%)"}},
        "hovermode": "closest", "height": 460, "margin": {"t": 80, "l": 60, "r": 20, "b": 50},
        "legend": {"title": {"text": "model (provenance)"}}, "annotations": annotations,
        "updatemenus": _scale_buttons("xaxis", "log")}}


def _log10(x: float) -> float:
    """Annotations on a log axis are placed in log10 units."""
    import math

    return math.log10(x) if x > 0 else 0.0


def _ci(r: Record) -> tuple:
    from edgebench.reports.render import accuracy_ci

    return accuracy_ci(r)


def distribution_figure(device: str, records: list[Record], pick: str | None = None) -> dict | None:
    recs = sorted((r for r in records if r.device == device and r.status == "ok" and r.samples_ns),
                  key=lambda r: _median_ms(r))
    if not recs:
        return None
    shown = ({r.name for r in recs} if len(recs) <= SHOWN_DISTRIBUTIONS
             else {r.name for r in recs[:SHOWN_DISTRIBUTIONS - 1]} | {pick or recs[SHOWN_DISTRIBUTIONS - 1].name})
    emulated = any(r.device_kind == "emulated" for r in recs)
    traces = []
    for r in recs:
        values = [s / 1e6 for s in r.samples_ns]
        drawn = thin(values)
        traces.append({"type": "box", "orientation": "h", "name": r.name, "x": drawn, "boxpoints": "outliers",
                       "visible": True if r.name in shown else "legendonly",
                       "marker": {"size": 3}, "line": {"width": 1},
                       "hovertemplate": (f"<b>{_t(r.name)}</b><br>%{{x:.4g}} ms<br>{len(values)} runs"
                                         + (f", {len(drawn)} drawn" if len(drawn) < len(values) else "")
                                         + "<extra></extra>")})
    what = ("emulated wall time per call under qemu (ms): not a device latency" if emulated
            else f"latency per call (ms; {', '.join(sorted({r.latency_provenance for r in recs}))})")
    menus = _scale_buttons("xaxis", "log") + [{
        "type": "buttons", "direction": "right", "x": 0.75, "y": 1.02, "xanchor": "right", "yanchor": "bottom",
        "showactive": False, "buttons": [
            {"label": "show all", "method": "restyle", "args": [{"visible": True}]},
            {"label": "hide all", "method": "restyle", "args": [{"visible": "legendonly"}]}]}]
    return {"data": traces, "layout": {
        "title": {"text": f"{_t(device)}: latency distributions<br><sub>click a legend entry to toggle an "
                          "artifact</sub>", "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        "legend": {"traceorder": "reversed"},
        "xaxis": {"type": "log", "title": {"text": what}}, "yaxis": {"automargin": True},
        "height": 160 + 24 * min(len(recs), SHOWN_DISTRIBUTIONS), "showlegend": True,
        "margin": {"t": 80, "r": 20, "b": 50},
        "updatemenus": menus}}


def _median_ms(r: Record) -> float:
    v = sorted(r.samples_ns)
    return v[len(v) // 2] / 1e6


def profile_figure(device: str, records: list[Record]) -> dict | None:
    """The top operators of each profiled artifact on one device, one artifact at a time (a menu chooses)."""
    recs = [r for r in records if r.device == device and r.status == "ok" and r.profile]
    if not recs:
        return None
    traces, top = [], 0
    for k, r in enumerate(recs):
        ops = sorted(r.profile, key=lambda p: p.get("mean_us", 0))[-MAX_PROFILE_OPS:]
        top = max(top, len(ops))
        traces.append({"type": "bar", "orientation": "h", "name": r.name, "visible": k == 0,
                       "x": [p.get("mean_us", 0) for p in ops],
                       "y": [f"{p.get('op')} {p.get('node', '')}".strip() for p in ops],
                       "text": [f"{p.get('share', 0):.1%}" for p in ops], "textposition": "auto",
                       "hovertemplate": f"{_t(r.name)}<br>%{{y}}<br>%{{x:.2f}} µs per run (%{{text}})<extra></extra>",
                       "marker": {"color": "#4477aa"}})
    menu = [{"type": "dropdown", "x": 1, "y": 1.02, "xanchor": "right", "yanchor": "bottom", "buttons": [
        {"label": r.name, "method": "update",
         "args": [{"visible": [j == k for j in range(len(recs))]},
                  {"title.text": f"{_t(device)}: top operators of {_t(r.name)}"}]} for k, r in enumerate(recs)]}]
    return {"data": traces, "layout": {
        "title": {"text": f"{_t(device)}: top operators of {_t(recs[0].name)}", "font": {"size": 14}, "x": 0.01,
                  "xanchor": "left"},
        "xaxis": {"title": {"text": "mean time per run (µs)"}}, "yaxis": {"automargin": True},
        "showlegend": False, "updatemenus": menu, "height": 180 + 22 * top, "margin": {"t": 80, "r": 20, "b": 50}}}


def instructions_figure(device: str, records: list[Record]) -> dict | None:
    recs = sorted((r for r in records if r.device == device and r.status == "ok"
                   and r.extra.get("instructions_per_inference") is not None),
                  key=lambda r: r.extra["instructions_per_inference"])
    if not recs:
        return None
    classes = sorted({c for r in recs for c in (r.extra.get("instructions_by_class") or {})})
    names = [r.name for r in recs]
    if classes:
        traces = [{"type": "bar", "orientation": "h", "name": c, "y": names,
                   "x": [(r.extra.get("instructions_by_class") or {}).get(c, 0) for r in recs],
                   "hovertemplate": f"%{{y}}<br>{_t(c)}: %{{x:,.0f}}<extra></extra>"} for c in classes]
    else:
        traces = [{"type": "bar", "orientation": "h", "name": "instructions", "y": names,
                   "x": [r.extra["instructions_per_inference"] for r in recs],
                   "text": [("est. " + f"{r.extra['estimated_latency_ms']:.4g} ms")
                            if r.extra.get("estimated_latency_ms") is not None else "" for r in recs],
                   "hovertemplate": "%{y}<br>%{x:,.0f} instructions<br>%{text}<extra></extra>"}]
    return {"data": traces, "layout": {
        "title": {"text": f"{_t(device)}: guest instructions per inference (exact counts under emulation)",
                  "font": {"size": 14}},
        "barmode": "stack", "xaxis": {"title": {"text": "instructions per inference"}},
        "yaxis": {"automargin": True}, "height": 160 + 24 * len(recs), "margin": {"t": 50, "r": 20, "b": 50}}}


def plots_html(records: list[Record], recs: dict) -> str:
    devices = sorted({r.device for r in records})
    parts = ["<section id='plots'><h2>Accuracy vs latency</h2><p class='note'>One point per artifact that "
             "classifies a whole window (window models and streamed windows; single steps are in the streaming "
             "table). Symbols: provenance; vertical bars: 95 % interval of the accuracy; horizontal bars: the band of "
             "an estimated latency; dotted: the Pareto "
             "front (no other point is both faster and more accurate). Drag to zoom, double-click to reset.</p>"]
    n = 0
    for d in devices:
        pick = recs[d].pick if d in recs else None
        fig = accuracy_latency_figure(d, records, pick)
        if fig:
            n += 1
            parts.append(_figure(fig, f"acc-latency-{n}", "acc-latency", device=d))
    dist = [(d, distribution_figure(d, records, recs[d].pick if d in recs else None)) for d in devices]
    if any(f for _, f in dist):
        parts.append(f"<h2>Latency distributions</h2><p class='note'>Boxes from the raw samples; an artifact "
                     f"with more than {MAX_PLOTTED_SAMPLES} runs is drawn from {MAX_PLOTTED_SAMPLES} evenly "
                     "spaced order statistics of them (min and max kept). The table's p50/p90/p99 use every "
                     f"sample. With more than {SHOWN_DISTRIBUTIONS} artifacts on a device, the fastest and the "
                     "pick are drawn at first; the legend turns the others on.</p>")
        for i, (d, fig) in enumerate(dist):
            if fig:
                parts.append(_figure(fig, f"dist-{i}", "distribution", device=d))
    prof = [(d, profile_figure(d, records)) for d in devices]
    if any(f for _, f in prof):
        parts.append(f"<h2>Operator profiles</h2><p class='note'>The {MAX_PROFILE_OPS} operators with the most "
                     "time per run, from the runtime's own profiler; the menu chooses the artifact.</p>")
        for i, (d, fig) in enumerate(prof):
            if fig:
                parts.append(_figure(fig, f"profile-{i}", "profile", device=d))
    insn = [(d, instructions_figure(d, records)) for d in devices]
    if any(f for _, f in insn):
        parts.append("<h2>Instruction counts (emulated devices)</h2>")
        for i, (d, fig) in enumerate(insn):
            if fig:
                parts.append(_figure(fig, f"insn-{i}", "instructions", device=d))
    return "".join(parts) + "</section>"
