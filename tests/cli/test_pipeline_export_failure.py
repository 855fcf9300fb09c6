"""One artifact whose export fails becomes failed rows with the reason; the sweep and report go on.

The failure is injected by wrapping the real exporter (a converter bug cannot be summoned on demand with
the bundled models); everything else — training, the other exports, the devices, the store — is real.
"""
from edgebench import pipeline
from edgebench.config import parse_config
from edgebench.export.errors import ExportError


def test_failed_export_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    real = pipeline.export_artifact

    def flaky(trained, fmt, precision, *args, **kw):
        if fmt.value == "tflite":
            raise ExportError("TFLite conversion (fp32) failed: RuntimeError: Lowering not found: aten.fake")
        return real(trained, fmt, precision, *args, **kw)

    monkeypatch.setattr(pipeline, "export_artifact", flaky)
    cfg = parse_config({
        "name": "partial", "out_dir": str(tmp_path / "out"), "store": str(tmp_path / "s.sqlite"),
        "models": [{"name": "tiny", "kind": "cnn", "dataset": "digits", "model": {"width": 4},
                    "train": {"epochs": 1}}],
        "export": {"formats": ["onnx", "tflite"], "precisions": ["fp32"]},
        "bench": {"runs": 10, "warmup": 1},
    })
    result = pipeline.run_pipeline(cfg, progress=False, log=lambda *a: None)
    by_name = {r.name: r for r in result.records}
    assert by_name["tiny-onnx-fp32"].status == "ok" and by_name["tiny-onnx-fp32"].latency_ms["n"] == 10
    failed = by_name["tiny-tflite-fp32"]
    assert failed.status == "failed" and failed.error.startswith("export: TFLite conversion (fp32) failed")
    html = (result.report_dir / "report.html").read_text()
    assert "tiny-tflite-fp32" in html and "Lowering not found" in html
