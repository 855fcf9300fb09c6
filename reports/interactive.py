"""report.html: one self-contained, interactive page that opens with the decision.

Order of the page: what to deploy on each device (reports/recommend.py, the one recommendation), the
environment it was measured in, a sortable and filterable records table, then interactive plots (accuracy vs
latency with the Pareto front, latency distributions, operator profiles, guest instruction counts).

Plots are Plotly figures (reports/interactive_plots.py). The plotly.js bundle that the `plotly` package ships is inlined once in the page
(about 4.8 MB), so the page opens offline and nothing is fetched: no CDN, no fonts, no MathJax.
Plotly rather than Vega-Lite: one pure-Python dependency carries the JavaScript, whereas altair needs
vl-convert (a 30 MB native wheel) to inline vega, vega-lite and vega-embed; hover, zoom, legend toggles and
log/linear buttons come with the figures.

Rendering only: every figure comes from a Record; statistics (p50, p90, p99, CV) are the ones the Record
computed from all raw samples. Raw samples are thinned for drawing only (`thin`).
"""
from __future__ import annotations

from edgebench.deploy.inputs import feeds_text
from edgebench.reports.encoding import fold_blocks
from edgebench.reports.interactive_plots import _arch, _e, plots_html
from edgebench.reports.record import Record, trust_warnings
from edgebench.reports.recommend import call_unit, recommend

PROVENANCE_LEGEND = {
    "measured": "timed on the device itself",
    "emulated": "wall time under emulation or throttling: not a device latency",
    "estimated": "derived (e.g. from guest instruction counts and a cost model), with its band",
    "predicted": "by a model (latency table or predictor), before measurement",
}


def _num(v, spec: str = "{:.4g}") -> tuple[str, str]:
    """(cell text, sort value)."""
    if v is None or v == "":
        return "–", ""
    return spec.format(v), repr(float(v))


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
