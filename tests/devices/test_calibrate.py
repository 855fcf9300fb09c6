"""`edgebench devices calibrate`: refit the emulated board's cost model from a reference file (counting each
model on the real emulated Cortex-A72) and from a board over SSH (the loopback sshd, with the emulated
aarch64 Python as the board, as the ssh tests do). Three tiny models keep this to about a minute; the board
refit takes the reference refit's TFLite exports from the session's export cache (tests/conftest.py)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from typer.testing import CliRunner

from edgebench.devices import calibration as cal

NEEDS = ("qemu-aarch64", "gcc")
TINY = [  # made-up figures for the test: a reference file needs a cited source, so this one says what it is
    ("tiny/v1-0.25-32", "mobilenet_v1", {"width": 0.25, "classes": 10}, 32, 1.0),
    ("tiny/v1-0.25-64", "mobilenet_v1", {"width": 0.25, "classes": 10}, 64, 3.0),
    ("tiny/v2-0.35-48", "mobilenet_v2", {"width": 0.35, "classes": 10}, 48, 2.5),
]


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
    if any(shutil.which(t) is None for t in NEEDS):
        pytest.skip(f"needs {', '.join(NEEDS)}")
    doc = {"sources": {"test": {"title": "invented for this test (not a measurement)", "authors": "-",
                                "url": "https://example.invalid", "year": 2026, "license": "-"}},
           "entries": [{"key": k, "source": "test", "arch": a, "arch_kwargs": kw, "input_shape": [1, 3, r, r],
                        "classes": 10, "latency_ms": ms, "batch": 1, "threads": 1} for k, a, kw, r, ms in TINY]}
    path = tmp_path_factory.mktemp("ref") / "tiny.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="session")
def refit_from_reference(tiny_reference, tmp_path_factory):
    """`edgebench devices calibrate pi4-emulated --reference tiny.json`: counts the 3 models, fits, writes."""
    from edgebench.cli import app

    out = tmp_path_factory.mktemp("cal") / "pi4.json"
    res = CliRunner().invoke(app, ["devices", "calibrate", "pi4-emulated", "--reference", str(tiny_reference),
                                   "--counts", str(out.with_name("none.json")), "--out", str(out), "--json"])
    return res, out


@pytest.mark.slow
def test_calibrate_from_a_reference_file_counts_each_model_and_fits_with_a_cv_band(refit_from_reference):
    res, out = refit_from_reference
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output.strip().splitlines()[-1])
    c = cal.load_calibration(out)
    assert printed["file"] == str(out) and printed["cpi"] == pytest.approx(c.cpi)
    counts = cal.load_counts(out.with_name("pi4.counts.json"))
    assert sorted(x["key"] for x in counts.values()) == sorted(k for k, *_ in TINY)
    for x in counts.values():  # classes add up to the count; the kernels' NEON work is there
        assert sum(x["by_class"].values()) == pytest.approx(x["instructions"], rel=1e-3)
        assert x["by_class"]["simd"] > 0 and x["runtime"] == "ai_edge_litert"
    # one source: the band is the p90 of leave-one-model-out errors
    assert "leave-one-model-out" in c.band_basis and "leave_one_source_out" not in c.cv
    assert c.band == pytest.approx(c.cv["leave_one_model_out"]["p90_abs_error"])


@pytest.mark.slow
def test_calibrate_from_a_board_over_ssh_fits_the_boards_own_p50s(refit_from_reference, tiny_reference, sshd,
                                                                  aarch64_python, remote_workdir, tmp_path,
                                                                  monkeypatch):
    from edgebench.devices.calibrate_cli import refit

    _, first = refit_from_reference

    def no_export(*a):
        raise AssertionError("the reference refit's exports were not reused from the cache")

    monkeypatch.setattr(cal, "_export_entry", no_export)
    board = dataclasses.asdict(sshd.config(python=str(aarch64_python), workdir=str(remote_workdir),
                                           run_timeout_s=900.0, emulated=True))
    board.pop("name")
    toml = "[devices.board]\nkind = \"ssh\"\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in board.items() if v is not None)
    (tmp_path / "devices.toml").write_text(toml)
    lines = []
    c, path = refit("pi4-emulated", from_device="board", reference=tiny_reference,
                    counts=first.with_name("pi4.counts.json"),
                    out=tmp_path / "board.json", runs=3, warmup=1, devices_file=tmp_path / "devices.toml",
                    log=lines.append)
    # the counts were reused (nothing counted again); every model was measured on the board
    assert not any(line.startswith("counting") for line in lines)
    measured = [line for line in lines if " on board: p50 " in line]
    assert len(measured) == 3 and all("ai_edge_litert" in line for line in measured)
    assert c.fitted_on["reference"] == "measured on 'board' over SSH" and c.fitted_on["threads"] == ["1"]
    assert c.fitted_on["n_models"] == 3 and list(remote_workdir.iterdir()) == []  # board temp folders removed
    assert cal.load_calibration(path).cpi == pytest.approx(c.cpi)
    assert all(v >= 0 for v in c.cpi.values()) and any(v > 0 for v in c.cpi.values())


def test_calibrate_wants_a_reference_or_a_board():
    from edgebench.cli import app

    res = CliRunner().invoke(app, ["devices", "calibrate", "pi4-emulated"])
    assert res.exit_code != 0
    assert "give --reference FILE (published latencies) or --from-device" in str(res.exception)


def test_only_an_emulated_device_is_calibrated():
    from edgebench.devices.calibrate_cli import refit

    with pytest.raises(cal.EdgebenchError, match="only an emulated device is calibrated"):
        refit("local", reference=cal.REFERENCE_FILE)


@pytest.mark.slow
def test_calibrate_onnx_from_a_board_counts_and_measures_the_onnx_exports(tiny_reference, sshd, aarch64_python,
                                                                            remote_workdir, tmp_path):
    from edgebench.devices.calibrate_cli import refit

    board = dataclasses.asdict(sshd.config(python=str(aarch64_python), workdir=str(remote_workdir),
                                           run_timeout_s=900.0, emulated=True))
    board.pop("name")
    (tmp_path / "devices.toml").write_text("[devices.board]\nkind = \"ssh\"\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in board.items() if v is not None))
    lines = []
    c, path = refit("pi4-emulated", from_device="board", reference=tiny_reference,
                    counts=tmp_path / "none.json", out=tmp_path / "pi4-emulated.onnxruntime.json", runs=3,
                    warmup=1, devices_file=tmp_path / "devices.toml", log=lines.append, fmt="onnx")
    assert c.runtime == "onnxruntime" and cal.load_calibration(path).runtime == "onnxruntime"
    measured = [line for line in lines if " on board: p50 " in line]
    assert len(measured) == 3 and all("onnxruntime" in line for line in measured)
    counts = cal.load_counts(tmp_path / "pi4-emulated.onnxruntime.counts.json")
    assert len(counts) == 3 and all(json.loads(k)[-1] == "onnx" and x["runtime"] == "onnxruntime"
                                    for k, x in counts.items())
    assert all(x["by_class"]["simd"] > 0 for x in counts.values())


def test_an_export_is_reused_only_when_everything_it_depends_on_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path / "cache"))
    entry = {"key": "tiny/v1", "arch": "mobilenet_v1", "arch_kwargs": {"width": 0.25, "classes": 10},
             "input_shape": [1, 3, 32, 32]}
    first = cal.export_entry(entry, tmp_path / "a", "onnx")

    def no_export(*a):
        raise AssertionError("exported again")

    monkeypatch.setattr(cal, "_export_entry", no_export)
    again = cal.export_entry(entry, tmp_path / "b", "onnx")
    assert again.sha256 == first.sha256 and again.path.parent.parent == tmp_path / "cache"
    for other in [dict(entry, input_shape=[1, 3, 48, 48]), dict(entry, arch_kwargs={"width": 0.5, "classes": 10})]:
        with pytest.raises(AssertionError, match="exported again"):
            cal.export_entry(other, tmp_path / "c", "onnx")
    with pytest.raises(AssertionError, match="exported again"):  # another format
        cal.export_entry(entry, tmp_path / "d", "tflite")
    monkeypatch.setenv(cal.CACHE_ENV, "")  # the cache turned off
    with pytest.raises(AssertionError, match="exported again"):
        cal.export_entry(entry, tmp_path / "e", "onnx")
    # a slot left half-written (killed mid-copy) is not taken for a finished one
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path / "cache"))
    slot = tmp_path / "cache" / cal.export_key(entry, "onnx")
    (slot / "done").unlink()
    with pytest.raises(AssertionError, match="exported again"):
        cal.export_entry(entry, tmp_path / "f", "onnx")
