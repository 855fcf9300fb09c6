"""report.html as a page people act on: the decision first, a sortable table, interactive offline plots."""
import json
import re

import pytest

from edgebench.reports.interactive import render_page
from edgebench.reports.interactive_plots import (MAX_PLOTTED_SAMPLES, accuracy_latency_figure, distribution_figure,
                                                 instructions_figure, pareto_front, profile_figure, thin)
from edgebench.reports.recommend import recommend
from edgebench.reports.record import LatencyStats
from edgebench.reports.render import compare_to_float, latest_per_key, write_report


def _page(records):
    records = latest_per_key(records)
    return render_page(records, compare_to_float(records), "t")


def test_page_opens_with_the_decision_then_the_environment_then_the_records(with_more_devices):
    page = _page(with_more_devices)
    order = [page.index(f"<section id='{s}'>") for s in ("decision", "environment", "records", "plots")]
    assert order == sorted(order)
    picks = dict(re.findall(r"<tr data-device='([^']+)' data-pick='([^']+)'>", page))
    expected = {d: rec.pick for d, rec in recommend(latest_per_key(with_more_devices)).items()}
    assert picks == expected and set(picks) == {"local", "pi4-emulated"}
    assert picks["local"] == "l2mu_lif-stream-tflite-fp32"  # the main job's pick, as recommendation.json says
    decision = page[page.index("<section id='decision'>"):page.index("<section id='environment'>")]
    # the main job's pick was timed on a busy machine (CV 119 %): the decision says so beside the pick
    assert "Spread: l2mu_lif-stream-tflite-fp32 on local: CV 119% is too high" in decision
    assert decision.count("Spread:") == 1  # the emulated pick's estimate has no CV to warn about
    env = page[page.index("<section id='environment'>"):page.index("<section id='records'>")]
    for fact in ("onnxruntime 1.32.0", "ai_edge_litert 2.3.0", "Intel(R) Xeon(R) Processor",
                 "not pinned (affinity [0, 1])", "cortex-a72 (emulated", "estimated"):
        assert fact in env, fact


def test_main_job_page_is_self_contained_and_at_most_6_mb(main_job, tmp_path):
    out = write_report(main_job, tmp_path / "r")
    page = (out / "report.html").read_text()
    size = (out / "report.html").stat().st_size
    assert size <= 6_000_000, size
    assert "plotly.js v" in page  # the library itself, inlined
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import", page)
    ours = page[page.index("</script>", page.index("plotly.js v")):]  # all but the library's own code
    assert "plot.ly" not in ours and "https://" not in ours and "http://" not in ours
    assert page.count("Plotly.newPlot(") >= 2  # accuracy vs latency and the distributions


def test_samples_are_thinned_for_drawing_only(main_job):
    import random

    rng = random.Random(0)
    r = main_job[0]
    r.samples_ns = [int(1e6 * rng.lognormvariate(0, 0.5)) for _ in range(10_000)]
    r.latency_ms = LatencyStats.from_samples_ns(r.samples_ns).to_dict()
    fig = distribution_figure("local", [r])
    drawn = fig["data"][0]["x"]
    assert len(drawn) == MAX_PLOTTED_SAMPLES
    values = sorted(s / 1e6 for s in r.samples_ns)
    assert drawn[0] == pytest.approx(values[0], rel=1e-4) and drawn[-1] == pytest.approx(values[-1], rel=1e-4)
    assert drawn[len(drawn) // 2] == pytest.approx(r.latency_ms["p50"], rel=0.01)
    page = _page([r])
    assert f"data-v='{float(r.latency_ms['p50'])!r}'" in page  # the table's p50: every sample
    assert thin([3, 1, 2]) == [1, 2, 3]


def test_pareto_front_keeps_points_no_other_beats():
    pts = [(1.0, 90.0), (2.0, 95.0), (1.5, 89.0), (3.0, 95.0), (0.5, 80.0), (2.5, 97.0)]
    assert pareto_front(pts) == [(0.5, 80.0), (1.0, 90.0), (2.0, 95.0), (2.5, 97.0)]


def test_accuracy_latency_points_say_what_they_are(with_more_devices):
    records = latest_per_key(with_more_devices)
    fig = accuracy_latency_figure("local", records, "l2mu_lif-stream-tflite-fp32")
    by_name = {n: t for t in fig["data"] if t["name"] != "predicted (search)" for n in t.get("customdata", [])}
    step = [r.name for r in records if r.extra.get("graph") == "step"]
    assert step and not set(step) & set(by_name)  # one-step latencies are not compared with windows
    ofa = by_name["ofa-local-b1-onnx-fp32"]
    assert ofa["marker"]["symbol"] == "circle"
    hover = ofa["text"][ofa["customdata"].index("ofa-local-b1-onnx-fp32")]
    for part in ("device: local", "runtime: onnxruntime 1.32.0", "provenance: measured", "n=100", "spread: p90",
                 'arch: {"ks":[3,5]'):
        assert part in hover, part
    predicted = [t for t in fig["data"] if t["name"] == "predicted (search)"][0]
    assert predicted["marker"]["symbol"] == "diamond-open" and predicted["x"] == [2.2, 1.6, 0.55]
    fronts = [t for t in fig["data"] if t["name"].startswith("Pareto front")]
    assert [t["name"] for t in fronts] == ["Pareto front (measured)"] and fronts[0]["x"][0] < 1
    emu = accuracy_latency_figure("pi4-emulated", records, None)
    assert {t["marker"]["symbol"] for t in emu["data"] if t["mode"] == "markers"} == {"square"}
    band = [t for t in emu["data"] if t["mode"] == "markers"][0]
    assert band["error_x"]["array"][0] == pytest.approx(0.11 * band["x"][0])  # the estimate's ±11 % band
    assert all("error_x" not in t for t in fig["data"])  # measured points have no such band


def test_instruction_counts_only_where_a_device_counted_them(with_more_devices):
    records = latest_per_key(with_more_devices)
    assert instructions_figure("local", records) is None
    fig = instructions_figure("pi4-emulated", records)
    assert {t["name"] for t in fig["data"]} == {"float", "int", "load/store"}
    totals = [sum(t["x"][i] for t in fig["data"]) for i in range(len(fig["data"][0]["y"]))]
    assert totals == sorted(totals) and totals[0] == pytest.approx(1_000_000, abs=2)
    assert "not a device latency" in json.dumps(distribution_figure("pi4-emulated", records)["layout"])


def test_operator_profiles_one_artifact_at_a_time(with_more_devices):
    records = latest_per_key(with_more_devices)
    assert profile_figure("pi4-emulated", records) is None
    fig = profile_figure("local", records)
    assert [t["name"] for t in fig["data"]] == ["ofa-local-b0-onnx-fp32", "ofa-local-b1-onnx-fp32"]
    assert [t["visible"] for t in fig["data"]] == [True, False]
    assert fig["data"][1]["y"][-1] == "Conv n0" and fig["data"][1]["x"][-1] == 19.0  # slowest op on top
    menu = fig["layout"]["updatemenus"][0]["buttons"]
    assert [b["args"][0]["visible"] for b in menu] == [[True, False], [False, True]]
