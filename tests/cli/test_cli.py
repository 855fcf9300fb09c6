"""The command line as a user runs it: JSON output, and one clear line for every bad input."""
import json

import numpy as np
import pytest


def one_error_line(proc) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bench_json_has_every_field(cli, onnx_artifact, tmp_path):
    p = cli("bench", onnx_artifact.path, "--device", "local", "--runs", "200", "--json",
            "--store", tmp_path / "s.sqlite")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    lat = doc["latency_ms"]
    assert set(lat) >= {"p50", "p90", "p99", "mean", "std", "min", "max", "cv", "n"}
    assert lat["n"] == 200 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    for key in ("load_ms", "first_inference_ms", "peak_rss_mb", "macs", "params", "size_bytes"):
        assert doc[key] > 0, key
    assert doc["provenance"]["latency"] == "measured"
    assert doc["device"] == "local" and doc["runtime"].startswith("onnxruntime ")
    assert "accuracy" not in doc  # no eval data given: no accuracy claimed


def test_bench_with_eval_reports_accuracy_from_the_runner(cli, onnx_artifact, eval_npz, trained_cnn, tmp_path):
    p = cli("bench", onnx_artifact.path, "--device", "local", "--eval", eval_npz, "--runs", "20", "--json",
            "--store", tmp_path / "s.sqlite")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["n_eval"] == 450
    assert doc["accuracy"] == pytest.approx(trained_cnn.metrics["test_accuracy"], abs=1 / 450)
    assert doc["provenance"]["accuracy"] == "measured"


def test_bench_profile_lists_top_operators(cli, onnx_artifact, tmp_path):
    p = cli("bench", onnx_artifact.path, "--runs", "20", "--profile", "--store", tmp_path / "s.sqlite")
    assert p.returncode == 0, p.stderr
    assert "top operators" in p.stdout and "Conv" in p.stdout


def test_missing_file(cli, tmp_path):
    line = one_error_line(cli("bench", tmp_path / "nope.onnx", "--store", tmp_path / "s.sqlite"))
    assert "model file not found" in line


def test_corrupt_and_truncated_onnx(cli, onnx_artifact, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(onnx_artifact.path.read_bytes()[: onnx_artifact.size_bytes // 2])
    assert "not a valid ONNX model" in one_error_line(cli("bench", cut, "--store", tmp_path / "s.sqlite"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf at all" * 50)
    assert "not a valid ONNX model" in one_error_line(cli("bench", junk, "--store", tmp_path / "s.sqlite"))


def test_eval_set_of_the_wrong_shape(cli, onnx_artifact, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((10, 3, 8, 8), np.float32), y=np.zeros(10, np.int64))
    line = one_error_line(cli("bench", onnx_artifact.path, "--eval", bad, "--store", tmp_path / "s.sqlite"))
    assert "does not fit the model's input" in line
    nox = tmp_path / "nox.npz"
    np.savez(nox, data=np.zeros(3))
    assert "must hold arrays 'x' and 'y'" in one_error_line(
        cli("bench", onnx_artifact.path, "--eval", nox, "--store", tmp_path / "s.sqlite"))


def test_unknown_device(cli, onnx_artifact, tmp_path):
    line = one_error_line(cli("bench", onnx_artifact.path, "--device", "pi9", "--store", tmp_path / "s.sqlite"))
    assert "unknown device 'pi9'" in line


def test_malformed_toml_config(cli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[[models]\nkind = "cnn"\n')
    assert "malformed TOML" in one_error_line(cli("run", cfg))
    cfg.write_text('name = "x"\n[[models]]\nname = "m"\nkind = "cnn"\ndataset = "digits"\n[bench]\nrunz = 3\n')
    assert one_error_line(cli("run", cfg)) == "edgebench: error: unknown key 'runz' in bench; did you mean 'runs'?"
    assert "config file not found" in one_error_line(cli("run", tmp_path / "none.toml"))


def test_unsupported_suffix(cli, tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"x")
    assert "expected .onnx or .tflite" in one_error_line(cli("bench", f, "--store", tmp_path / "s.sqlite"))


def test_failed_runner_is_recorded_and_exits_non_zero(cli, onnx_artifact, tmp_path):
    wrapper = tmp_path / "py"
    wrapper.write_text("#!/bin/sh\nkill -9 $$\n")
    wrapper.chmod(0o755)
    devs = tmp_path / "devices.toml"
    devs.write_text(f'[devices.doomed]\nkind = "local"\npython = "{wrapper}"\n')
    store = tmp_path / "s.sqlite"
    p = cli("bench", onnx_artifact.path, "--device", "doomed", "--devices", devs, "--store", store)
    assert "runner killed by signal 9" in one_error_line(p)
    from edgebench.reports.store import Store

    with Store(store) as s:
        recs = s.query(status="failed")
    assert len(recs) == 1 and recs[0].device == "doomed"


def test_devices_list_and_doctor(cli):
    p = cli("devices", "list", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["local"]["kind"] == "local"
    p = cli("devices", "doctor", "local", "--json")
    doc = json.loads(p.stdout)["local"]
    assert doc["ok"] and doc["facts"]["onnxruntime"]


def test_train_export_bench_chain(cli, tmp_path):
    p = cli("train", "cnn", "--dataset", "digits", "--epochs", "2", "--out", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    ckpt, npz = tmp_path / "cnn-digits.pt", tmp_path / "cnn-digits-eval.npz"
    assert ckpt.exists() and npz.exists()
    p = cli("export", ckpt, "--format", "onnx", "--out", tmp_path / "art", "--json")
    assert p.returncode == 0, p.stderr
    art = json.loads(p.stdout)
    assert art["validation"]["top1_agreement"] == 1.0 and art["validation"]["max_abs_diff"] <= 1e-4
    p = cli("export", ckpt, "--precision", "int8", "--int8-activations", "uint8", "--out", tmp_path / "q", "--json")
    assert p.returncode == 0, p.stderr
    agreement = json.loads(p.stdout)["validation"]["top1_agreement"]
    assert agreement >= 0.97
    # asking for more agreement than the file has: one line that says how to keep it anyway
    p = cli("export", ckpt, "--precision", "int8-dynamic", "--min-agreement", "1", "--out", tmp_path / "d", "--json")
    if p.returncode == 0:  # int8-dynamic happened to agree on every sample: then it must say so
        assert json.loads(p.stdout)["validation"]["top1_agreement"] == 1.0
    else:
        assert "lower --min-agreement" in one_error_line(p)
    p = cli("export", ckpt, "--precision", "int8", "--min-agreement", "1.5", "--out", tmp_path / "q")
    assert "--min-agreement is a share between 0 and 1" in one_error_line(p)
    p = cli("export", ckpt, "--precision", "int8", "--int8-activations", "int4", "--out", tmp_path / "q")
    assert "--int8-activations must be int8 or uint8" in one_error_line(p)
    p = cli("export", tmp_path / "missing.pt")
    assert "checkpoint not found" in one_error_line(p)
    p = cli("export", npz)
    assert "cannot read checkpoint" in one_error_line(p) or "not an edgebench checkpoint" in one_error_line(p)
    (tmp_path / "empty.pt").write_bytes(b"")  # torch.load raises a bare EOFError, with no text
    p = cli("export", tmp_path / "empty.pt")
    assert "cannot read checkpoint" in one_error_line(p) and one_error_line(p).endswith("EOFError")


def test_bench_a_users_text_classifier_with_ids_and_mask(cli, tmp_path):
    """Any ONNX classifier, not only edgebench's: int64 token ids plus an attention mask, dynamic length."""
    import torch

    class TinyText(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 16)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, input_ids, attention_mask):
            h = self.emb(input_ids) * attention_mask.unsqueeze(-1).float()
            return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1).float())

    path = tmp_path / "text.onnx"
    ids, mask = torch.zeros(1, 12, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)
    torch.onnx.export(TinyText().eval(), (ids, mask), str(path), dynamo=False, input_names=["input_ids",
                      "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "b", 1: "seq"}, "attention_mask": {0: "b", 1: "seq"}})
    unset = cli("bench", path, "--runs", "30", "--json", "--store", tmp_path / "s.sqlite")
    assert unset.returncode == 2 and "--shape input_ids=" in one_error_line(unset)  # the length is never guessed
    p = cli("bench", path, "--runs", "30", "--json", "--store", tmp_path / "s.sqlite",
            "--shape", "input_ids=1x12", "--shape", "attention_mask=1x12")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["latency_ms"]["n"] == 30 and doc["status"] == "ok"
    assert [(f["name"], f["shape"], f["dtype"], f["source"]) for f in doc["inputs_fed"]] == [
        ("input_ids", [1, 12], "int64", "zeros"), ("attention_mask", [1, 12], "int64", "ones (a mask)")]


def test_eval_labels_outside_the_models_classes_are_refused(cli, onnx_artifact, trained_cnn, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=trained_cnn.dataset.x_test, y=trained_cnn.dataset.y_test + 3)  # up to 12 for 10 classes
    line = one_error_line(cli("bench", onnx_artifact.path, "--eval", bad, "--store", tmp_path / "s.sqlite"))
    assert line == ("edgebench: error: eval labels go up to 12 but the model outputs 10 classes: labels outside "
                    "the model's classes cannot be scored")
    assert not (tmp_path / "s.sqlite").exists()  # refused before anything ran or was stored


def test_a_cv_too_high_to_trust_is_warned_about():
    from edgebench.reports.record import CV_TRUST_LIMIT, Record, trust_warnings

    steady = Record(run_id="r", name="a", model="m", dataset="d", device="local", status="ok",
                    latency_ms={"cv": CV_TRUST_LIMIT / 2})
    noisy = Record(run_id="r", name="b", model="m", dataset="d", device="local", status="ok",
                   latency_ms={"cv": 0.9})
    warnings = trust_warnings([steady, noisy])
    assert len(warnings) == 1 and warnings[0].startswith("b on local: CV 90% is too high to trust")


def test_train_typos_are_one_line_naming_the_closest(cli, tmp_path):
    """Checked before any data loads: nothing is trained or written."""
    p = cli("train", "cnnn", "--dataset", "digits", "--out", tmp_path)
    assert one_error_line(p) == "edgebench: error: unknown model 'cnnn'; did you mean 'cnn'?"
    p = cli("train", "cnn", "--dataset", "digit", "--out", tmp_path)
    assert one_error_line(p) == "edgebench: error: unknown dataset 'digit'; did you mean 'digits'?"
    p = cli("train", "cnn", "--dataset", "nope", "--out", tmp_path)
    assert "unknown dataset 'nope' (known: basicmotions, digits" in one_error_line(p)
    assert list(tmp_path.iterdir()) == []
