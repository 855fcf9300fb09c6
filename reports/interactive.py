"""report.html: one self-contained, interactive page that opens with the decision.

Order of the page: what to deploy on each device (reports/recommend.py, the one recommendation), the
environment it was measured in, a sortable and filterable records table, then interactive plots (accuracy vs
latency with the Pareto front, latency distributions, operator profiles, guest instruction counts).

Plots are Plotly figures. The plotly.js bundle that the `plotly` package ships is inlined once in the page
(about 4.8 MB), so the page opens offline and nothing is fetched: no CDN, no fonts, no MathJax.
Plotly rather than Vega-Lite: one pure-Python dependency carries the JavaScript, whereas altair needs
vl-convert (a 30 MB native wheel) to inline vega, vega-lite and vega-embed; hover, zoom, legend toggles and
log/linear buttons come with the figures.

Rendering only: every figure comes from a Record; statistics (p50, p90, p99, CV) are the ones the Record
computed from all raw samples. Raw samples are thinned for drawing only (`thin`).
"""
from __future__ import annotations

import html
import json

from edgebench.deploy.inputs import feeds_text
from edgebench.reports.encoding import fold_blocks
from edgebench.reports.record import Record, trust_warnings
from edgebench.reports.recommend import call_unit, candidates, recommend

MAX_PLOTTED_SAMPLES = 2000  # per artifact in a distribution plot; statistics always use every sample
SHOWN_DISTRIBUTIONS = 20  # artifacts drawn at first per device (the pick and the fastest); the legend shows the rest
MAX_PROFILE_OPS = 15  # per artifact in the profile plot
PROVENANCE_LEGEND = {
    "measured": "timed on the device itself",
    "emulated": "wall time under emulation or throttling: not a device latency",
    "estimated": "derived (e.g. from guest instruction counts and a cost model), with its band",
    "predicted": "by a model (latency table or predictor), before measurement",
}
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


def _num(v, spec: str = "{:.4g}") -> tuple[str, str]:
    """(cell text, sort value)."""
    if v is None or v == "":
        return "–", ""
    return spec.format(v), repr(float(v))


def _arch(r: Record) -> str:
    a = r.extra.get("arch") if isinstance(r.extra, dict) else None
    return "" if a is None else json.dumps(a, separators=(",", ":"))


def _figure(fig: dict, div_id: str, cls: str, **attrs) -> str:
    import plotly.io as pio

    extra = "".join(f" data-{k}='{_e(v)}'" for k, v in attrs.items())
    body = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG,
                       validate=True)
    return f"<div class='fig {cls}'{extra}>{body}</div>"


# -- the decision and the environment ------------------------------------------------------------------------

def pick_warning(records: list[Record], device: str, pick: str) -> str:
    """The spread warning of a pick whose p50 alone is not to be trusted (record.trust_warnings), else ''."""
    return "; ".join(trust_warnings(r for r in records if r.device == device and r.name == pick))


def decision_html(recs: dict, records: list[Record]) -> str:
    if not recs:
        return ("<section id='decision'><h2>Decision</h2><p class='warn'>No artifact can be recommended: no "
                "successful record with accuracy on the device and a latency.</p></section>")
    rows = "".join(
        f"<tr data-device='{_e(d)}' data-pick='{_e(rec.pick)}'><td>{_e(d)}</td><td><code class='pick'>"
        f"{_e(rec.pick)}</code></td><td class='n'>{100 * rec.accuracy:.2f}</td><td class='n'>{rec.p50_ms:.4g}</td>"
        f"<td>{_e(rec.latency_provenance)}</td><td class='why'>{_e(rec.reason)}"
        + (f"<br><span class='warn'>Spread: {_e(w)}</span>" if (w := pick_warning(records, d, rec.pick)) else "")
        + "</td></tr>" for d, rec in recs.items())
    lost = "".join(
        f"<details><summary>{_e(d)}: why the other {len(rec.others)} lost</summary><ul>"
        + "".join(f"<li><code>{_e(n)}</code>: {_e(why)}</li>" for n, why in rec.others) + "</ul></details>"
        for d, rec in recs.items())
    return ("<section id='decision'><h2>Decision: what to deploy</h2><table class='decision'><thead><tr>"
            "<th>device</th><th>deploy</th><th>accuracy on the device (%)</th>"
            f"<th>p50 per {call_unit(records)[0]} (ms)</th>"
            f"<th>latency provenance</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>{lost}</section>")


def environment_html(records: list[Record]) -> str:
    rows = []
    for device in sorted({r.device for r in records}):
        recs = [r for r in records if r.device == device]
        facts: dict = {}
        for r in recs:
            facts.update(r.device_facts or {})
        runtimes = sorted({f"{r.runtime} {r.runtime_version}".strip() for r in recs if r.runtime})
        threads = sorted({r.threads for r in recs if r.threads is not None})
        pin = facts.get("pinned_cores")
        pinning = (f"pinned to cores {pin}" if pin else f"not pinned (affinity {facts.get('affinity', '?')})")
        if facts.get("cpu_quota_cores"):
            pinning += f"; CPU quota {facts['cpu_quota_cores']} cores ({facts.get('cgroup', 'cgroup')})"
        kinds = sorted({r.device_kind for r in recs if r.device_kind})
        system = ", ".join(str(facts[k]) for k in ("machine", "os") if facts.get(k))
        sw = ", ".join(f"{k} {facts[k]}" for k in ("python", "numpy") if facts.get(k))
        rows.append(f"<tr><td>{_e(device)}</td><td>{_e(', '.join(kinds))}</td><td>{_e(facts.get('cpu', '?'))}</td>"
                    f"<td class='n'>{_e(facts.get('cores', '?'))}</td><td>{_e('; '.join(runtimes) or '–')}</td>"
                    f"<td class='n'>{_e(', '.join(map(str, threads)) or '–')}</td><td>{_e(pinning)}</td>"
                    f"<td>{_e(system)}</td><td>{_e(sw)}</td></tr>")
    legend = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in PROVENANCE_LEGEND.items())
    return ("<section id='environment'><h2>Environment</h2><table class='env'><thead><tr><th>device</th>"
            "<th>kind</th><th>CPU</th><th>cores</th><th>runtime versions</th><th>threads</th><th>pinning</th>"
            f"<th>system</th><th>host software</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p class='note'>Latency provenance, how each latency was obtained:</p><dl class='prov'>{legend}</dl>"
            "</section>")


# -- the records table ----------------------------------------------------------------------------------------

FILTERS = ("device", "graph", "format", "precision", "status", "provenance")
COLUMNS = [  # (header with unit, key, numeric)
    ("artifact", "name", False), ("device", "device", False), ("graph", "graph", False),
    ("format", "format", False), ("precision", "precision", False), ("status", "status", False),
    ("latency provenance", "provenance", False), ("accuracy (%)", "acc", True),
    ("Δ accuracy vs fp32 (pp)", "dacc", True),
    ("p50 (ms)", "p50", True), ("p90 (ms)", "p90", True), ("p99 (ms)", "p99", True), ("CV (%)", "cv", True),
    ("n runs", "n", True), ("latency vs fp32 (×)", "ratio", True), ("top-1 agreement vs fp32 (%)", "agree", True),
    ("MACs", "macs", True), ("params", "params", True), ("size (kB)", "size", True),
    ("peak RSS (MB)", "rss", True), ("guest instructions / inference", "insn", True),
    ("energy (mJ / inference)", "energy", True), ("energy is", "energy_prov", False),
    ("runtime", "runtime", False), ("threads", "threads", True), ("inputs fed", "fed", False), ("arch", "arch", False),
]


def _row_cells(r: Record, c: dict) -> dict:
    from edgebench.reports.render import accuracy_ci, graph_of

    lat = r.latency_ms or {}
    acc = _num(None if r.accuracy is None else 100 * r.accuracy, "{:.2f}")
    lo, hi = accuracy_ci(r)
    if lo is not None:
        acc = (f"{acc[0]} <small>[{100 * lo:.1f}, {100 * hi:.1f}]</small>", acc[1])
    status = "ok" if r.status == "ok" else "failed"
    return {
        "name": (_e(r.name), r.name), "device": (_e(r.device), r.device), "graph": (graph_of(r), graph_of(r)),
        "format": (_e(r.format), r.format), "precision": (_e(r.precision), r.precision),
        "status": (status if r.status == "ok" else f"failed: {_e(r.error)}", status),
        "provenance": (_e(r.latency_provenance or "–"), r.latency_provenance or "–"), "acc": acc,
        "dacc": _num(None if "accuracy_delta" not in c else 100 * c["accuracy_delta"], "{:+.2f}"),
        "p50": _num(lat.get("p50")), "p90": _num(lat.get("p90")), "p99": _num(lat.get("p99")),
        "cv": _num(None if lat.get("cv") is None else 100 * lat["cv"], "{:.1f}"), "n": _num(lat.get("n"), "{:.0f}"),
        "ratio": _num(c.get("latency_ratio"), "{:.2f}"),
        "agree": _num(None if c.get("top1_agreement") is None else 100 * c["top1_agreement"], "{:.1f}"),
        "macs": _num(r.macs, "{:,.0f}"), "params": _num(r.params, "{:,.0f}"),
        "size": _num(None if r.size_bytes is None else r.size_bytes / 1000, "{:,.1f}"),
        "rss": _num(r.peak_rss_mb, "{:.1f}"), "insn": _num(r.extra.get("instructions_per_inference"), "{:,.0f}"),
        "energy": _num(r.extra.get("energy_mj_per_inference"), "{:.4g}"),
        "energy_prov": (f"<span title='{_e(r.extra.get('energy_source') or r.extra.get('energy_unavailable') or '')}'>"
                        f"{_e(r.extra.get('energy_provenance') or '–')}</span>", r.extra.get("energy_provenance") or ""),
        "runtime": (_e(f"{r.runtime} {r.runtime_version}".strip() or "–"), r.runtime),
        "threads": _num(r.threads, "{:.0f}"),
        "fed": (f"<div class='clip'>{_e(feeds_text(r.inputs_fed) or '–')}</div>", feeds_text(r.inputs_fed)),
        "arch": (f"<code>{_e(_arch(r))}</code>" if _arch(r) else "–", _arch(r)),
    }


def records_table_html(records: list[Record], cmp: dict) -> str:
    head = "".join(f"<th data-key='{k}' data-num='{int(num)}' class='{'n' if num else ''}' title='click to sort'>"
                   f"{_e(h)}</th>" for h, k, num in COLUMNS)
    rows = []
    for r in sorted(records, key=lambda r: (r.device, r.name)):
        cells = _row_cells(r, cmp.get(r.record_id, {}))
        attrs = "".join(f" data-{f}='{_e(cells[f][1])}'" for f in FILTERS)
        tds = "".join(f"<td class='{'n' if num else ''}' data-v='{_e(cells[k][1])}'>{cells[k][0]}</td>"
                      for _, k, num in COLUMNS)
        rows.append(f"<tr class='rec{'' if r.status == 'ok' else ' failed'}'{attrs}>{tds}</tr>")
    selects = []
    for f in FILTERS:
        values = sorted({_row_cells(r, {})[f][1] for r in records})
        opts = "".join(f"<option value='{_e(v)}'>{_e(v)}</option>" for v in values)
        selects.append(f"<label>{f} <select class='filter' data-filter='{f}'><option value=''>all</option>"
                       f"{opts}</select></label>")
    return ("<section id='records'><h2>Records</h2><p class='note'>Click a header to sort; choose a value to "
            "filter. Latency per call of the artifact (a window, a streamed window of T calls, or one step: see "
            "graph); brackets: 95 % Wilson interval of the accuracy over the eval samples.</p>"
            f"<div class='filters'>{''.join(selects)} <label>artifact <input id='name-filter' type='search' "
            f"placeholder='part of a name'></label> <span id='row-count'></span></div>"
            f"<div class='scroll'><table id='records-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table></div></section>")


TABLE_JS = """
(function () {
  const table = document.getElementById('records-table');
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  function apply() {
    const sel = {};
    document.querySelectorAll('select.filter').forEach(s => { if (s.value) sel[s.dataset.filter] = s.value; });
    const text = document.getElementById('name-filter').value.toLowerCase();
    let shown = 0;
    rows.forEach(r => {
      const ok = Object.entries(sel).every(([k, v]) => r.dataset[k] === v) &&
                 (!text || r.cells[0].textContent.toLowerCase().includes(text));
      r.style.display = ok ? '' : 'none';
      shown += ok ? 1 : 0;
    });
    document.getElementById('row-count').textContent = shown + ' of ' + rows.length + ' rows';
  }
  document.querySelectorAll('select.filter').forEach(s => s.addEventListener('change', apply));
  document.getElementById('name-filter').addEventListener('input', apply);
  table.tHead.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
    const asc = th.dataset.sort !== 'asc';
    table.tHead.querySelectorAll('th').forEach(h => { delete h.dataset.sort; });
    th.dataset.sort = asc ? 'asc' : 'desc';
    const num = th.dataset.num === '1';
    const key = r => r.cells[i].dataset.v;
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === '' || y === '') return (x === '') - (y === '');  // empty cells last, either direction
      const c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }));
  apply();
})();
"""


# -- plots ----------------------------------------------------------------------------------------------------

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


# -- the page -------------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
#records-table th { cursor: pointer; user-select: none; }
#records-table td:first-child { white-space: nowrap; }
th[data-sort=asc]::after { content: " ▲"; } th[data-sort=desc]::after { content: " ▼"; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed { background: #fde8e8; }
table.decision td { font-size: 14px; } table.decision code.pick { font-size: 15px; font-weight: bold; }
td.why { max-width: 60em; }
.scroll { overflow: auto; max-height: 75vh; }
div.clip { max-height: 3.2em; min-width: 16em; overflow-y: auto; font-size: 11px; }
.filters { margin: 0.5em 0; font-size: 13px; } .filters label { margin-right: 0.8em; }
.note { font-size: 12px; color: #444; max-width: 75em; } .warn { color: #a00; }
dl.prov { font-size: 12px; display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.prov dt { font-weight: bold; } dl.prov dd { margin: 0; }
.fig { margin: 0.5em 0 1.5em; }
pre { white-space: pre-wrap; font-size: 11px; }
"""


def render_page(records: list[Record], cmp: dict, title: str) -> str:
    """The whole report.html for the records of one run (one record per artifact and device)."""
    from plotly.offline import get_plotlyjs

    from edgebench.reports.render import int8_html, stream_html

    recs = recommend(records)
    encodings = "".join(
        f"<details><summary>{_e(r.name)}</summary><pre>{_e(fold_blocks(r.onnx_encoding))}</pre></details>"
        for r in {r.name: r for r in records if r.onnx_encoding}.values())
    macs_defs = sorted({r.macs_definition for r in records if r.macs_definition})
    js = get_plotlyjs().replace("</script", "<\\/script")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{js}</script>
</head><body>
<h1>{_e(title)}</h1>
{decision_html(recs, records)}
{environment_html(records)}
{records_table_html(records, cmp)}
{plots_html(records, recs)}
{stream_html(records)}
{int8_html(records, cmp)}
<h2>Notes</h2><p class="note">Latency statistics are computed on the host from all raw samples. Accuracy is
computed from the predictions the deployed file produced on the device. Δ and ratios compare each quantized
artifact with the fp32 artifact of the same model and format on the same device in the same run. Intervals: 95 %
(Wilson for an accuracy over its eval samples). MACs (batch 1): {_e('; '.join(macs_defs)) or '–'}.</p>
<h2>Graph encodings</h2><p class="note">ONNX-Net-style text of each graph; a block repeated once per time step
is written once with <code>[above K lines xN]</code> (records.json keeps the whole text).</p>{encodings}
<script>{TABLE_JS}</script>
</body></html>
"""
