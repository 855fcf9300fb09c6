"""`edgebench run` with job = "ofa" on a tiny config (seconds), then the `edgebench ofa` commands on what
it left: search, predict, export; strict config and one-line errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgebench.types import EdgebenchError

TINY = {
    "job": "ofa", "name": "ofa_tiny",
    "data": {"train_limit": 600, "val_size": 300, "test_limit": 200},
    "model": {"stem_width": 8, "widths": [8, 16], "strides": [2, 2], "se": [False, True], "hswish": [False, True],
              "final_width": 16, "ks_list": [3, 5], "expand_list": [3, 6], "depth_list": [1, 2],
              "resolutions": [20, 28]},
    "train": {"full_epochs": 1, "kernel_epochs": 0.5, "depth_epochs": 0.5, "expand_epochs": 0.5, "batch_size": 100,
              "bn_calib_images": 200},
    "predictor": {"subnets": 12, "hidden": 32, "epochs": 50, "calib_images": 200, "val_images": 300},
    "lut": {"runs": 10, "rounds": 2, "warmup": 1, "calib_nets": 5},
    "search": {"budgets": [0.5], "population": 8, "generations": 4, "deploy_extremes": False,
               "pareto_population": 16, "pareto_generations": 5},
    "bench": {"devices": ["local"], "runs": 20, "warmup": 2, "validate_images": 50, "eval_threads": 2},
}


class _Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """The real entry point (edgebench.cli:main) in this process: exit code, stdout, stderr."""
    from edgebench import cli as cli_module

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["edgebench", *args])
        code = 0
        try:
            cli_module.main()
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return _Done(code, out.out, out.err)

    return call


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    from edgebench.search.ofa_job import run

    root = tmp_path_factory.mktemp("ofa")
    doc = dict(TINY, out_dir=str(root / "out"), store=str(root / "store.sqlite"))
    result = run(doc, root / "ofa_tiny.toml", progress=False, log=lambda *_: None)
    return root, result


def test_job_deploys_the_pick_and_reports_predicted_against_measured(done):
    root, result = done
    recs = [r for r in result.records if r.status == "ok"]
    assert len(recs) == 1
    rec = recs[0]
    ex = rec.extra
    assert ex["predicted_latency_provenance"] == "predicted" and ex["predicted_latency_ms"] > 0
    assert rec.latency_provenance == "measured" and rec.latency_ms["p50"] > 0
    assert ex["latency_budget_ms"] > 0 and isinstance(ex["latency_budget_met"], bool)
    assert ex["latency_budget_met"] == (rec.latency_ms["p50"] <= ex["latency_budget_ms"])
    assert rec.accuracy is not None and rec.n_eval == 200
    # checked against PyTorch on the first 50 test images; the accuracy pass on 2 threads, timed runs on 1
    assert ex["validation_images"] == 50 and ex["eval_threads"] == 2 and rec.threads == 1
    assert set(ex["arch"]) == {"ks", "e", "d", "r"}
    page = (result.report_dir / "search.html").read_text()
    assert "<h2>local</h2>" in page and "data:image/png;base64," in page
    assert "accuracy on the device on 200 test images" in page
    summary = json.loads((result.report_dir / "ofa_summary.json").read_text())
    assert summary["devices"]["local"]["measured"][0]["predicted_latency_ms"] == pytest.approx(ex["predicted_latency_ms"])
    assert len(summary["devices"]["local"]["predicted"]) >= 1  # the NSGA-II front
    assert "heldout_mae" in summary["train_metrics"]["accuracy_predictor"]
    assert (root / "out" / "supernet.pt").exists() and (root / "out" / "lut-local.yaml").exists()


def test_cli_search_predict_and_export_on_the_jobs_outputs(done, tmp_path, cli):
    root, _ = done
    ckpt, lut = root / "out" / "supernet.pt", root / "out" / "lut-local.yaml"
    proc = cli("ofa", "search", "--supernet", str(ckpt), "--lut", str(lut), "--latency-ms", "1000", "--json",
                "--generations", "3", "--population", "8", "--out", str(tmp_path / "arch.json"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    pick = doc["picks"][0]
    assert pick["predicted_latency_ms"] <= 1000 and 0 <= pick["predicted_accuracy"] <= 1
    assert pick["predicted_latency_provenance"] == "predicted"
    proc = cli("ofa", "predict", "--lut", str(lut), "--arch", str(tmp_path / "arch.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["predicted_latency_ms"] == pytest.approx(pick["predicted_latency_ms"])
    proc = cli("ofa", "export", "--supernet", str(ckpt), "--arch", str(tmp_path / "arch.json"), "--format", "onnx",
                "--precision", "fp32", "--out", str(tmp_path / "art"), "--json")
    assert proc.returncode == 0, proc.stderr
    exp = json.loads(proc.stdout)
    assert Path(exp["path"]).exists() and exp["max_abs_diff"] <= 1e-4 and exp["top1_agreement"] >= 0.99


def test_arch_errors_are_one_line_and_exit_2(done, tmp_path, cli):
    root, _ = done
    lut = root / "out" / "lut-local.yaml"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ks": [3] * 4, "e": [3] * 4, "d": [1, 1], "r": 24}))
    proc = cli("ofa", "predict", "--lut", str(lut), "--arch", str(bad))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "'r' must be one of [20, 28]" in proc.stderr
    bad.write_text("[1, 2")
    proc = cli("ofa", "predict", "--lut", str(lut), "--arch", str(bad))
    assert proc.returncode == 2 and "malformed arch file" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_config_typos_are_errors_before_any_work(tmp_path):
    from edgebench.search.ofa_job import parse

    with pytest.raises(EdgebenchError, match="unknown key"):
        parse(dict(TINY, train={"full_epoch": 1}), tmp_path / "c.toml")
    with pytest.raises(EdgebenchError, match="unknown top-level"):
        parse(dict(TINY, bench_devices=["local"]), tmp_path / "c.toml")
    with pytest.raises(EdgebenchError, match="fractions"):
        parse(dict(TINY, search={"budgets": [1.5]}), tmp_path / "c.toml")
    with pytest.raises(EdgebenchError, match="unknown format"):
        parse(dict(TINY, export={"formats": ["tf"]}), tmp_path / "c.toml")
    with pytest.raises(EdgebenchError, match="min_agreement"):
        parse(dict(TINY, export={"min_agreement": 1.5}), tmp_path / "c.toml")
    with pytest.raises(EdgebenchError, match="tflite_kernels"):
        parse(dict(TINY, bench={"tflite_kernels": "fastest"}), tmp_path / "c.toml")
    job = parse(dict(TINY, export={"min_agreement": 0.97}, bench={"tflite_kernels": "auto"}), tmp_path / "c.toml")
    assert job.export.min_agreement == 0.97 and job.bench.tflite_kernels == "auto"


def test_an_emulated_pick_is_compared_by_instructions_never_by_emulated_wall_time():
    from edgebench.reports.record import Record
    from edgebench.search.lut import LatencyTable
    from edgebench.search.ofa_job import _measured_point
    from edgebench.train.ofa import OFASpec

    table = LatencyTable({"_meta": {"space": OFASpec().to_dict(), "device": "pi4-emulated",
                                    "latency_basis": "instructions", "ipc": 1.0, "clock_ghz": 1.5}})
    rec = Record(run_id="r", name="p", model="p", dataset="d", device="pi4-emulated", status="ok",
                 latency_ms={"p50": 900.0}, latency_provenance="emulated", accuracy=0.9,
                 extra={"estimated_latency_ms": 5.0, "estimated_provenance": "estimated",
                        "instructions_per_inference": 3_300_000, "predicted_instructions": 3_000_000,
                        "predicted_latency_ms": 2.0, "latency_budget_ms": 2.1, "arch": {}})
    point = _measured_point(rec, table)
    # 3.3 M instructions at ipc 1 and 1.5 GHz: 2.2 ms, 10% over the prediction (3.0 M -> 2.0 ms)
    assert point["latency_ms"] == pytest.approx(2.2) and point["provenance"] == "estimated"
    assert point["error_pct"] == pytest.approx(10.0)
    assert point["device_estimated_latency_ms"] == 5.0  # the device's own estimate, kept apart


def test_a_subnet_deployed_on_several_devices_is_exported_once(done, monkeypatch):
    """The largest and smallest subnet go to every device: one file per format and precision, shared; a
    failed export fails the same way on the next device without a second try."""
    from edgebench.export.errors import ExportError
    from edgebench.search import ofa_job
    from edgebench.train.ofa_train import load_supernet

    root, _ = done
    job = ofa_job.parse(dict(TINY, out_dir=str(root / "out_exports"), export={"calib_images": 64}),
                        root / "ofa_tiny.toml")
    net, _ = load_supernet(root / "out" / "supernet.pt")
    ds, _, _ = ofa_job.load_data({"train_limit": 600, "val_size": 300, "test_limit": 200})
    exports = ofa_job._Exports(job, net, ds)
    calls, extracted = [], []
    real, real_sub = ofa_job.export_deployable, ofa_job.deployable_subnet
    monkeypatch.setattr(ofa_job, "export_deployable", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    monkeypatch.setattr(ofa_job, "deployable_subnet", lambda *a, **k: extracted.append(a[1]) or real_sub(*a, **k))
    arch = job.model.largest()
    first, trained = exports.get(arch, "onnx", "fp32", "ofa-largest")
    again, _ = exports.get(dict(arch), "onnx", "fp32", "ofa-other-name")
    assert again is first and len(calls) == 1
    assert first.path.name == "ofa-largest-onnx-fp32.onnx" and len(trained.dataset.x_test) == 200
    assert first.extra["bn_recalibration_images"] == job.train.bn_calib_images
    assert len(trained.dataset.x_train) == 64  # [export] calib_images: what static INT8 calibrates on
    assert list((root / "out_exports" / "artifacts").iterdir()) == [first.path]
    tfl, trained_again = exports.get(arch, "tflite", "fp32", "ofa-largest")  # the same extracted subnet
    assert trained_again is trained and extracted == [arch] and tfl.path.name == "ofa-largest-tflite-fp32.tflite"

    def broken(*a, **k):
        calls.append("broken")
        raise ExportError("quantization failed")

    monkeypatch.setattr(ofa_job, "export_deployable", broken)
    for _ in range(2):
        with pytest.raises(ExportError, match="quantization failed"):
            exports.get(arch, "onnx", "int8", "ofa-largest")
    assert calls.count("broken") == 1


def test_emulated_measurements_run_at_once_and_land_in_the_order_asked(tmp_path):
    """_Benches: on an emulated device two measurements run at once in background threads (the slow first one
    still lands first); any other device measures alone, at once, in the calling thread."""
    import threading
    import time

    from edgebench.reports.store import Store
    from edgebench.search.ofa_deploy import _Benches
    from edgebench.types import Artifact, Format, Measurement, Precision, Provenance

    def artifact(name):
        return Artifact(name=name, model=name, dataset="d", path=tmp_path / f"{name}.onnx", format=Format.ONNX,
                        precision=Precision.FP32, inputs=(), outputs=(), size_bytes=1, sha256="0")

    class Device:
        def __init__(self, kind):
            self.kind, self.name, self.threads, self.running, self.most = kind, kind, set(), 0, 0

        def run(self, seconds):
            self.threads.add(threading.get_ident())
            self.running += 1
            self.most = max(self.most, self.running)
            time.sleep(seconds)
            self.running -= 1
            return Measurement(ok=seconds < 0.3, device=self.name, provenance=Provenance.EMULATED,
                               error="" if seconds < 0.3 else "too slow", samples_ns=[1000])

    logged = []
    with Store(tmp_path / "s.sqlite") as store:
        store.begin_run("r", "r", {})
        emu = Device("emulated")
        benches = _Benches(store, "r", emu, None, 2, logged.append)
        for i, seconds in enumerate((0.4, 0.05, 0.05)):
            benches.submit(artifact(f"a{i}"), None, f"a{i}@emu", emu.run, seconds)
        assert store.query(run_id="r") == []  # nothing waited for yet: the caller goes on exporting
        benches.drain()
        assert [r.name for r in store.query(run_id="r")] == ["a0", "a1", "a2"]
        assert emu.most == 2 and threading.get_ident() not in emu.threads
        assert logged == ["  a0@emu failed: too slow"]
        local = Device("local")
        benches = _Benches(store, "r", local, None, 1, logged.append)
        benches.submit(artifact("b0"), None, "b0@local", local.run, 0.01)
        assert [r.name for r in store.query(run_id="r")][-1] == "b0" and local.threads == {threading.get_ident()}
        benches.drain()


def test_exports_made_ahead_in_worker_processes_are_used_without_exporting_again(done, monkeypatch):
    """export_ahead: two subnets exported in two worker processes before any device measures; the job's own
    _Exports then hands out those files (nothing exported again in this process), a failed export stays the
    ExportError it was, and a worker's file computes what the same subnet exported here computes."""
    import numpy as np

    from edgebench.export.errors import ExportError
    from edgebench.export.onnx import run_onnx
    from edgebench.search import ofa_job
    from edgebench.search.ofa_deploy import export_ahead
    from edgebench.train.ofa_train import load_supernet

    root, _ = done
    # the plumbing is under test, not the tiny supernet's INT8 quality (96-100% agreement on 50 images)
    job = ofa_job.parse(dict(TINY, out_dir=str(root / "out_ahead"), export={"calib_images": 64, "min_agreement": 0.5}),
                        root / "ofa_tiny.toml")
    ckpt = root / "out" / "supernet.pt"
    net, _ = load_supernet(ckpt)
    ds, _, _ = ofa_job.load_data(ofa_job.asdict(job.data))
    exports, logged = ofa_job._Exports(job, net, ds), []
    big, small = job.model.largest(), job.model.smallest()
    items = [(big, "ofa-largest", [("onnx", "fp32"), ("onnx", "int8")]), (small, "ofa-smallest", [("onnx", "fp32")])]
    monkeypatch.setattr(ofa_job, "export_deployable", lambda *a, **k: (_ for _ in ()).throw(AssertionError("here")))
    export_ahead(exports, items + [(dict(big), "ofa-again", [("onnx", "fp32")])], ckpt, 2, logged.append)
    assert logged == ["exporting 2 subnets in 2 worker processes before any device measures"]
    first, trained = exports.get(big, "onnx", "fp32", "ofa-largest")  # no export here: it would raise
    assert first.path.exists() and first.path.name == "ofa-largest-onnx-fp32.onnx"
    assert len(trained.dataset.x_test) == 200 and trained.config["arch"] == big
    int8, _ = exports.get(big, "onnx", "int8", "ofa-largest")
    assert int8.path.exists() and int8.extra["quantized_from"] == first.name
    monkeypatch.undo()
    here, _ = ofa_job._Exports(job, net, ds).get(small, "onnx", "fp32", "ofa-smallest-here")
    there, sub = exports.get(small, "onnx", "fp32", "ofa-smallest")
    x = sub.dataset.x_test[:20]
    np.testing.assert_allclose(run_onnx(there.path, x), run_onnx(here.path, x), rtol=0, atol=1e-4)
    exports.done[(ofa_job.json.dumps(small, sort_keys=True), "tflite", "fp32")] = ExportError("broken")
    with pytest.raises(ExportError, match="broken"):
        exports.get(small, "tflite", "fp32", "ofa-smallest")


def test_an_export_worker_that_dies_fails_its_files_as_an_export_error(done, tmp_path):
    """A worker process that ends early (here: it cannot load the checkpoint) breaks the pool: every file it
    owed fails as an ExportError saying so, which the job records as a failed export; no traceback."""
    from edgebench.export.errors import ExportError
    from edgebench.search import ofa_job
    from edgebench.search.ofa_deploy import export_ahead
    from edgebench.train.ofa_train import load_supernet

    root, _ = done
    job = ofa_job.parse(dict(TINY, out_dir=str(tmp_path / "out")), root / "ofa_tiny.toml")
    net, _ = load_supernet(root / "out" / "supernet.pt")
    ds, _, _ = ofa_job.load_data(ofa_job.asdict(job.data))
    exports = ofa_job._Exports(job, net, ds)
    big, small = job.model.largest(), job.model.smallest()
    export_ahead(exports, [(big, "ofa-largest", [("onnx", "fp32")]), (small, "ofa-smallest", [("onnx", "fp32")])],
                 tmp_path / "missing.pt", 2, lambda *_: None)
    for arch in (big, small):
        with pytest.raises(ExportError, match="an export worker process ended before its files were made"):
            exports.get(arch, "onnx", "fp32", "any")
    assert exports.subnets == {}  # nothing extracted here for a file that failed
