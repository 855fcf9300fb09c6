"""The per-device recommendation: the fastest artifact within 1 point of the best accuracy on that device."""
from edgebench.reports.recommend import recommend
from edgebench.reports.record import Record


def _rec(name, acc, p50, device="local", graph="window", status="ok", prov="measured"):
    return Record(run_id="r", name=name, model=name.split("-")[0], dataset="d", device=device, status=status,
                  error="" if status == "ok" else "export: top-1 agreement 50% < 90%", accuracy=acc,
                  latency_ms=None if p50 is None else {"p50": p50}, latency_provenance=prov, n_eval=40,
                  extra={"graph": graph})


def test_fastest_within_one_point_wins_and_every_other_says_why():
    records = [
        _rec("lif-onnx-fp32", 0.975, 2.0),                         # the window model
        _rec("lif-stream-onnx-fp32", 0.975, 1.5, graph="stream"),
        _rec("lif-stream-onnx-int8", 0.970, 1.1, graph="stream"),  # 0.5 point below the best: eligible, fastest
        _rec("lif-stream-tflite-int8", 0.95, 0.5, graph="stream"),  # fastest, but 2.5 points below
        _rec("lif-step-onnx-fp32", 0.975, 0.01, graph="step"),     # one sample: not a window candidate
        _rec("cuba-stream-tflite-int8", None, None, status="failed", graph="stream"),
    ]
    rec = recommend(records)["local"]
    assert rec.pick == "lif-stream-onnx-int8"
    assert rec.best_accuracy == 0.975
    why = dict(rec.others)
    assert "lif-step-onnx-fp32" not in why
    assert why["lif-stream-tflite-int8"].startswith("accuracy 95.00% is more than 1 point below")
    assert why["lif-stream-onnx-fp32"].startswith("slower") and "1.36x" in why["lif-stream-onnx-fp32"]
    assert why["cuba-stream-tflite-int8"].startswith("failed: export")
    assert "within 1 point" in rec.reason and "1.1 ms" in rec.reason


def test_each_device_gets_its_own_pick_and_emulated_wall_time_is_not_compared_with_measured():
    records = [_rec("a-onnx-fp32", 0.9, 1.0), _rec("b-onnx-fp32", 0.9, 2.0),
               _rec("a-onnx-fp32", 0.9, 50.0, device="pi4-emulated", prov="emulated"),
               _rec("b-onnx-fp32", 0.9, 30.0, device="pi4-emulated", prov="emulated")]
    recs = recommend(records)
    assert recs["local"].pick == "a-onnx-fp32"
    assert recs["pi4-emulated"].pick == "b-onnx-fp32"
    assert recs["pi4-emulated"].latency_provenance == "emulated"


def test_int8_verdict_says_why_it_does_not_pay():
    from edgebench.reports.render import compare_to_float, int8_verdicts

    fp32 = _rec("lif-step-onnx-fp32", 0.975, 0.010, graph="step")
    fast = _rec("lif-step-onnx-int8", 0.970, 0.008, graph="step")
    slow = _rec("lif-step-onnx-int8-dynamic", 0.975, 0.015, graph="step")
    fast.precision, slow.precision, fp32.precision = "int8", "int8-dynamic", "fp32"
    for r, size in ((fp32, 1000), (fast, 400), (slow, 300)):
        r.format, r.size_bytes = "onnx", size
    slow.profile = [{"op": "DynamicQuantizeLinear", "total_us": 30.0, "count": 100},
                    {"op": "MatMulInteger", "total_us": 10.0, "count": 100}]
    records = [fp32, fast, slow]
    v = {x["name"]: x for x in int8_verdicts(records, compare_to_float(records))}
    assert v["lif-step-onnx-int8"]["pays"] and v["lif-step-onnx-int8"]["size_ratio"] == 0.4
    assert not v["lif-step-onnx-int8-dynamic"]["pays"]
    assert "1.50x the fp32 p50" in v["lif-step-onnx-int8-dynamic"]["why"]
    assert "75% of kernel time in quantize" in v["lif-step-onnx-int8-dynamic"]["why"]
    assert "DynamicQuantizeLinear 75%" in v["lif-step-onnx-int8-dynamic"]["why"]


def test_a_run_without_streaming_models_speaks_of_inferences_and_samples_not_windows():
    from edgebench.reports.markdown import render_markdown

    images = [_rec("cnn-onnx-fp32", 0.9, 1.0), _rec("cnn-tflite-fp32", 0.9, 2.0)]
    rec = recommend(images)["local"]
    assert "per inference" in rec.reason and "on 40 eval samples" in rec.reason and "window" not in rec.reason
    assert "ms per inference" in dict(rec.others)["cnn-tflite-fp32"]
    assert "| p50 per inference |" in render_markdown(images, "t", "report.html")
    har = images + [_rec("lif-stream-onnx-fp32", 0.9, 0.5, graph="stream")]
    rec = recommend(har)["local"]
    assert "per window" in rec.reason and "eval windows" in rec.reason
