"""The search page of a report: per device, predicted front against measured picks, and the errors.

Rendering only: every figure comes from the `devices` argument (predictions made by the search, and
measurements the pipeline stored). Nothing is measured or predicted here.

    devices = {device_name: {
        "predicted": [{"arch": ..., "accuracy": ..., "latency_ms": ...}, ...],       # the search's front
        "measured":  [{"name": ..., "arch": ..., "accuracy": ..., "latency_ms": p50,  # deployed picks
                       "predicted_latency_ms": ..., "error_pct": ..., "budget_ms": ... or None,
                       "provenance": "measured" | "emulated" | "estimated" | ...}, ...]}}

Accuracies are fractions (0.91) or None. A budget miss (measured latency above the budget the pick was
searched for) is flagged in the table and drawn as a red cross: it is shown, never hidden.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

PAGE = "search.html"
LUT_SOURCE = "the device's latency table (the sum of its blocks plus the fitted overhead)"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _num(v):
    return None if v is None else float(v)


def is_miss(m: dict) -> bool:
    """Measured p50 above the budget the pick was searched for."""
    budget, lat = _num(m.get("budget_ms")), _num(m.get("latency_ms"))
    return budget is not None and lat is not None and lat > budget


def front_plot(device: str, predicted: list[dict], measured: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = sorted((p for p in predicted if p.get("latency_ms") is not None and p.get("accuracy") is not None),
                  key=lambda p: p["latency_ms"])
    meas = [m for m in measured if m.get("latency_ms") is not None]
    if not pred and not meas:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if pred:
        ax.plot([p["latency_ms"] for p in pred], [p["accuracy"] * 100 for p in pred], "-o", color="#4477aa",
                ms=3, lw=1, label="predicted front (predicted latency and accuracy)")
    provs = sorted({str(m.get("provenance", "?")) for m in meas})
    for m in meas:
        acc = m.get("accuracy")
        y = acc * 100 if acc is not None else None
        miss = is_miss(m)
        if y is None:
            continue
        ax.scatter(m["latency_ms"], y, marker="x" if miss else "o", s=60 if miss else 40,
                   color="#cc3311" if miss else "#228833", zorder=3)
        if m.get("predicted_latency_ms") is not None:  # where the LUT said this pick would be
            ax.annotate("", xy=(m["latency_ms"], y), xytext=(m["predicted_latency_ms"], y),
                        arrowprops=dict(arrowstyle="->", color="#999999", lw=0.8))
        ax.annotate(str(m.get("name", "")), (m["latency_ms"], y), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
        if m.get("budget_ms") is not None:
            ax.axvline(m["budget_ms"], color="#cc3311" if miss else "#bbbbbb", lw=0.6, ls=":")
    ax.scatter([], [], marker="o", color="#228833", label="measured pick (accuracy on the device)")
    if any(is_miss(m) for m in meas):
        ax.scatter([], [], marker="x", color="#cc3311", label="measured pick over its budget")
    ax.set_xlabel(f"latency (ms; measured points: {', '.join(provs) or '-'}; dotted: budgets)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{device}: predicted front and measured picks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _cell(v, spec="{:.4g}") -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return spec.format(v)
    return html.escape(str(v))


def _table(measured: list[dict]) -> str:
    head = ("<tr><th>pick</th><th>budget (ms)</th><th>predicted latency (ms)</th><th>device latency (ms)</th>"
            "<th>provenance</th><th>error</th><th>budget</th><th>accuracy</th><th>arch</th></tr>")
    rows = []
    for m in measured:
        miss = is_miss(m)
        err = m.get("error_pct")
        status = ("<b style='color:#cc3311'>MISS</b>" if miss else
                  ("met" if m.get("budget_ms") is not None and m.get("latency_ms") is not None else "–"))
        acc = m.get("accuracy")
        rows.append(
            f"<tr{' class=miss' if miss else ''}><td>{_cell(m.get('name'))}</td><td>{_cell(_num(m.get('budget_ms')))}</td>"
            f"<td>{_cell(_num(m.get('predicted_latency_ms')))}</td><td>{_cell(_num(m.get('latency_ms')))}</td>"
            f"<td>{_cell(m.get('provenance'))}</td>"
            f"<td>{_cell(None if err is None else float(err), '{:+.1f}%')}</td><td>{status}</td>"
            f"<td>{_cell(None if acc is None else acc * 100, '{:.2f}%')}</td>"
            f"<td><code>{html.escape(json.dumps(m.get('arch'), separators=(',', ':')))}</code></td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _summary(measured: list[dict]) -> str:
    errs = [abs(float(m["error_pct"])) for m in measured if m.get("error_pct") is not None]
    misses = sum(is_miss(m) for m in measured)
    budgeted = sum(m.get("budget_ms") is not None for m in measured)
    parts = [f"{len(measured)} measured pick(s)"]
    if errs:
        errs.sort()
        parts.append(f"median |error| {errs[len(errs) // 2]:.1f}%, max {errs[-1]:.1f}%, "
                     f"{sum(e <= 10 for e in errs)}/{len(errs)} within ±10%")
    if budgeted:
        parts.append(f"{misses}/{budgeted} over budget")
    sizes = sorted({int(m["n_eval"]) for m in measured if m.get("n_eval")})
    if sizes:
        parts.append("accuracy on the device on " + (f"{sizes[0]:,}" if len(sizes) == 1 else
                                                      f"{sizes[0]:,}-{sizes[-1]:,}") + " test images")
    return "; ".join(parts)


def render_search_page(title: str, devices: dict, latency_source: str = LUT_SOURCE) -> str:
    sections = []
    for name, data in devices.items():
        predicted = list(data.get("predicted", []))
        measured = list(data.get("measured", []))
        img = front_plot(name, predicted, measured)
        plot = f"<img src='{img}' alt='front of {html.escape(name)}'>" if img else "<p>(nothing to plot)</p>"
        sections.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(_summary(measured))}</p>{plot}"
                        f"{_table(measured)}")
    note = (f"Predicted latency comes from {html.escape(latency_source)} (provenance <i>predicted</i>); measured "
            "points are the deployed picks on that device, with the provenance the device gives its figures: "
            "the p50 of the timed runs, or for an emulated CPU the estimate from its instruction counts "
            "(an emulated device's wall time is <i>emulated</i>, never a device latency). "
            "Error = (measured - predicted) / predicted. A pick measured above the budget it was searched "
            "for is marked MISS. The front's accuracy is the accuracy predictor's (validation split); a "
            "measured point's is the device's own on the test images it was given (an emulated device gets "
            "only the first few, so its figures move in whole points).")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:last-child{text-align:left}"
            "tr.miss{background:#fde0dc}code{font-size:11px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{note}</p>{''.join(sections)}</body></html>")


def write_search_page(out_dir: Path, title: str, devices: dict, latency_source: str = LUT_SOURCE) -> Path:
    """Write `search.html` (self-contained: plots embedded, nothing fetched) into the report folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PAGE
    path.write_text(render_search_page(title, devices, latency_source))
    return path
