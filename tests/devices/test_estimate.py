"""The emulated board's latency estimate: the reference set, the cost model, its error band, and how the
estimate leads in the record, the JSON and the CLI table (no emulator needed: these run in a second)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgebench.devices import attribution
from edgebench.devices import calibration as cal
from edgebench.devices import calibration_cv as calcv
from edgebench.devices.emulated import EmulatedConfig, EmulatedDevice
from edgebench.devices.registry import get_device
from edgebench.reports.record import Record, format_estimate
from edgebench.types import Artifact, Format, Measurement, Precision, Provenance


def _by_class(simd, scalar):
    return {"simd": simd, "simd_ldst": 0, "ldst": scalar, "branch": 0, "int": 0, "other": 0}


# ------------------------------------------------------------------ the reference set
def test_shipped_reference_has_15_models_from_2_cited_sources_and_each_figure_is_its_published_text():
    ref = cal.load_reference()
    entries, sources = ref["entries"], ref["sources"]
    assert len({e["key"] for e in entries}) == len(entries) >= 15
    assert len({e["source"] for e in entries}) >= 2
    for s in sources.values():
        assert s["title"] and s["authors"] and s["url"].startswith("https://") and s["year"] and s["license"]
    for e in entries:
        text = e["published_text"]
        if "(ns)" in text:  # MLPerf loadgen prints nanoseconds
            assert int(text.split(":")[-1]) == round(e["latency_ms"] * 1e6)
        else:  # a table row: the figure appears in it as printed
            assert f"| {e['latency_ms']:g} |" in text
        assert e["batch"] == 1 and e["input_shape"][0] == 1 and e["location"].startswith("https://")


def test_pi5_reference_holds_published_pi5_rows_for_a_cortex_a76_refit():
    ref = cal.load_reference(cal.DATA / "pi5_reference.json")
    assert len(ref["entries"]) == 5 and ref["device"] == "Raspberry Pi 5"
    for e in ref["entries"]:
        assert f"| {e['latency_ms']:g} |" in e["published_text"] and "Raspberry Pi 5" in e["location"]
    # the same architectures as the Pi 4 NetsPresso rows, but counted per CPU: a Pi 4 count is never reused
    pi4 = {cal.entry_signature(e) for e in cal.load_reference()["entries"]}
    assert not pi4 & {cal.entry_signature(e, "cortex-a76") for e in ref["entries"]}


def test_every_reference_architecture_rebuilds_with_its_published_input():
    import torch

    from edgebench.devices.reference_models import build

    seen = set()
    for e in cal.load_reference()["entries"]:
        sig = (e["arch"], json.dumps(e["arch_kwargs"], sort_keys=True))
        if sig in seen or e["input_shape"][-1] > 160:
            continue  # one forward per architecture at a small input keeps this fast
        seen.add(sig)
        with torch.no_grad():
            y = build(e["arch"], **e["arch_kwargs"])(torch.zeros(e["input_shape"]))
        assert y.shape == (1, e["classes"])


def test_reference_with_an_uncited_source_is_refused(tmp_path):
    doc = {"sources": {"a": {"title": "t"}}, "entries": [
        {"key": "k", "source": "b", "arch": "resnet", "input_shape": [1, 3, 8, 8], "latency_ms": 1.0}]}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(cal.EdgebenchError, match="source 'b' is not cited"):
        cal.load_reference(tmp_path / "r.json")


# ------------------------------------------------------------------ the cost model
def test_fit_recovers_the_cycles_per_instruction_of_each_class():
    true = {"kernel": 0.6, "scalar": 2.5}
    rows = []
    for simd, scalar in [(1e6, 1e5), (5e6, 2e6), (2e7, 1e6), (3e6, 3e6)]:
        ms = (true["kernel"] * simd + true["scalar"] * scalar) / 1.5e6
        rows.append((_by_class(simd, scalar), ms))
    cpi = cal.fit_cpi(rows, "kernel-scalar", 1.5)
    assert cpi["kernel"] == pytest.approx(0.6, rel=1e-6) and cpi["scalar"] == pytest.approx(2.5, rel=1e-6)
    one = cal.fit_cpi(rows, "one-ipc", 1.5)  # one IPC cannot fit a mix that changes from model to model
    errs = [abs(cal.predict_ms(bc, one, "one-ipc", 1.5) - ms) / ms for bc, ms in rows]
    assert max(errs) > 0.2


def test_cross_validation_never_predicts_a_figure_with_constants_fitted_on_it():
    # source "b" runs 2x slower than "a" for the same instructions: fitted on everything, the fit would
    # split the difference; held out, "b" is predicted from "a" alone and is off by exactly half
    rows = [{"key": f"{s}{i}", "source": s, "by_class": _by_class(n, 0), "latency_ms": k * n / 1.5e6}
            for s, k in (("a", 1.0), ("b", 2.0)) for i, n in enumerate((1e6, 2e6, 4e6))]
    preds, stats = calcv.cross_validate(rows, "kernel-scalar", 1.5, "source")
    for r, p in zip(rows, preds):
        expected = r["latency_ms"] * (2.0 if r["source"] == "a" else 0.5)
        assert p == pytest.approx(expected, rel=1e-6)
    assert stats["median_abs_error"] == pytest.approx(0.75)  # errors 100% (a) and 50% (b)


def _two_cost_rows(noise=(1.0, 1.04, 0.97, 1.02, 0.99, 1.03, 0.98, 1.01)):
    """Rows made with 0.5 cycles per NEON instruction and 3.0 per scalar one (plus a little noise): one IPC
    cannot fit them, kernel-scalar can."""
    mixes = [(1e6, 1e5), (5e6, 2e6), (2e7, 1e6), (3e6, 3e6), (8e6, 4e5), (1e7, 5e6), (4e6, 2.5e6), (6e6, 1e6)]
    return [{"key": f"m{i}", "source": "ab"[i % 2], "by_class": _by_class(k, s),
             "latency_ms": (0.5 * k + 3.0 * s) / 1.5e6 * f, "threads": 1}
            for i, ((k, s), f) in enumerate(zip(mixes, noise))]


def test_selection_by_leave_one_model_out_prefers_the_grouping_the_data_were_made_with():
    g, scores = calcv.select_grouping(_two_cost_rows(), tuple(cal.GROUPINGS), 1.5)
    assert g == "kernel-scalar"
    assert scores["one-ipc"]["p90_abs_error"] > 3 * scores["kernel-scalar"]["p90_abs_error"]


def test_selection_never_considers_a_grouping_with_as_many_constants_as_rows_minus_one():
    rows = _two_cost_rows()[:4]  # five-class has 5 constants; kernel-scalar-fixed 3 > 4 - 2
    _, scores = calcv.select_grouping(rows, tuple(cal.GROUPINGS), 1.5)
    assert set(scores) == {"one-ipc", "kernel-scalar"}


def test_nested_cross_validation_chooses_the_grouping_without_the_held_out_rows():
    # a held-out figure multiplied by 10 cannot change its own prediction: neither the constants nor the
    # grouping that predicts it saw it
    rows = _two_cost_rows()
    preds, _, _ = calcv.nested_cross_validate(rows, tuple(cal.GROUPINGS), 1.5, "key")
    for i in range(len(rows)):
        bent = [dict(r, latency_ms=r["latency_ms"] * (10 if j == i else 1)) for j, r in enumerate(rows)]
        assert calcv.nested_cross_validate(bent, tuple(cal.GROUPINGS), 1.5, "key")[0][i] == pytest.approx(preds[i])


def test_auto_calibration_selects_its_grouping_and_states_nested_cv_errors():
    c = cal.calibrate(_two_cost_rows(), "pi4-emulated", "cortex-a72", 1.5, "ai_edge_litert", {"reference": "t"})
    assert c.grouping == "kernel-scalar" and c.cpi["kernel"] == pytest.approx(0.5, rel=0.05)
    assert c.cv["leave_one_source_out"]["selection"].startswith("nested")
    assert c.band == pytest.approx(c.cv["leave_one_source_out"]["p90_abs_error"])
    assert c.fitted_on["grouping_selection"]["rule"].startswith("lowest p90")


def test_same_architecture_pairs_bound_what_counts_can_do_across_sources():
    ref = {"entries": [{"key": "a/v3", "arch": "mobilenet_v3", "arch_kwargs": {"classes": 1001}, "input_shape": [1, 3, 8, 8]},
                       {"key": "b/v3", "arch": "mobilenet_v3", "arch_kwargs": {"classes": 3}, "input_shape": [1, 3, 8, 8]},
                       {"key": "b/r18", "arch": "resnet", "arch_kwargs": {"classes": 3}, "input_shape": [1, 3, 8, 8]}]}
    rows = [{"key": "a/v3", "source": "a", "instructions": 100, "latency_ms": 20.0},
            {"key": "b/v3", "source": "b", "instructions": 100, "latency_ms": 10.0},
            {"key": "b/r18", "source": "b", "instructions": 100, "latency_ms": 10.0}]
    (pair,) = calcv.same_architecture_pairs(rows, ref)
    # any common figure x leaves max(|x - 20| / 20, |x - 10| / 10) >= 1/3 (at x = 13.3)
    assert pair["a"] == "a/v3" and pair["b"] == "b/v3" and pair["floor"] == pytest.approx(1 / 3)


def test_band_is_the_p90_of_leave_one_source_out_errors(tmp_path):
    rows = [{"key": f"{s}{i}", "source": s, "by_class": _by_class(n, n / 10), "latency_ms": k * n / 1.5e6,
             "threads": 1} for s, k in (("a", 1.0), ("b", 1.3)) for i, n in enumerate((1e6, 2e6, 4e6, 8e6))]
    c = cal.calibrate(rows, "pi4-emulated", "cortex-a72", 1.5, "ai_edge_litert", {"reference": "test"})
    assert c.band == pytest.approx(c.cv["leave_one_source_out"]["p90_abs_error"])
    assert "leave-one-source-out" in c.band_basis and c.fitted_on["n_models"] == 8
    again = cal.load_calibration(cal.save_calibration(c, tmp_path / "c.json"))
    assert again.cpi == pytest.approx(c.cpi) and again.band == pytest.approx(c.band)


# ------------------------------------------------------------------ the estimate in the device, record, CLI
def _calibration_file(tmp_path, runtime="ai_edge_litert", band=0.12) -> Path:
    c = cal.Calibration(device="pi4-emulated", cpu="cortex-a72", clock_ghz=1.5, runtime=runtime,
                        grouping="kernel-scalar", cpi={"kernel": 0.5, "scalar": 2.0}, band=band,
                        band_basis="p90 of |error| under leave-one-source-out cross-validation (20 models)",
                        fitted_on={"summary": "20 models"})
    return cal.save_calibration(c, tmp_path / "cal.json")


FIGURES = {"instructions_per_inference": 3_000_000, "instructions_by_class": _by_class(2_000_000, 1_000_000)}


def test_calibrated_estimate_carries_band_and_calibration(tmp_path):
    dev = EmulatedDevice(EmulatedConfig(name="pi4-emulated", calibration=str(_calibration_file(tmp_path))))
    est = dev.estimate(FIGURES, "ai_edge_litert")
    assert est["estimated_latency_ms"] == pytest.approx((0.5 * 2e6 + 2.0 * 1e6) / 1.5e6)
    assert est["estimate_band"] == 0.12 and est["estimate_calibrated"] is True
    assert est["estimate_calibration"]["file"].endswith("cal.json")


def test_a_runtime_the_calibration_was_not_fitted_on_gets_the_uncalibrated_estimate_without_band(tmp_path):
    dev = EmulatedDevice(EmulatedConfig(name="pi4-emulated", calibration=str(_calibration_file(tmp_path))))
    est = dev.estimate(FIGURES, "onnxruntime")
    assert est["estimate_calibrated"] is False and est["estimate_band"] is None
    assert est["estimated_latency_ms"] == pytest.approx(3e6 / 1.5e9 * 1e3)
    assert "onnxruntime" in est["estimate_note"] and "error unknown" in est["estimate_note"]


def test_each_runtime_finds_the_users_calibration_fitted_on_it(tmp_path, monkeypatch):
    from edgebench.devices import emulated

    monkeypatch.setattr(emulated, "USER_CALIBRATIONS", tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _calibration_file(tmp_path / "a").rename(tmp_path / "pi4-emulated.json")
    c = cal.load_calibration(_calibration_file(tmp_path / "b", runtime="onnxruntime", band=0.07))
    cal.save_calibration(dataclasses.replace(c, cpi={"kernel": 1.0, "scalar": 1.0}),
                         tmp_path / "pi4-emulated.onnxruntime.json")
    dev = EmulatedDevice(EmulatedConfig(name="pi4-emulated"))
    onnx, tfl = dev.estimate(FIGURES, "onnxruntime"), dev.estimate(FIGURES, "ai_edge_litert")
    assert onnx["estimate_calibrated"] and onnx["estimate_band"] == 0.07
    assert onnx["estimated_latency_ms"] == pytest.approx(3e6 / 1.5e6)
    assert onnx["estimate_calibration"]["file"].endswith("pi4-emulated.onnxruntime.json")
    assert tfl["estimate_band"] == 0.12 and tfl["estimate_calibration"]["file"].endswith("pi4-emulated.json")


def test_calibrating_onnx_on_published_tflite_figures_is_refused():
    from edgebench.devices.calibrate_cli import refit

    with pytest.raises(cal.EdgebenchError, match="measured with tflite: fitting onnx counts to them would mix"):
        refit("pi4-emulated", reference=cal.REFERENCE_FILE, fmt="onnx")


def test_onnx_and_tflite_counts_of_one_entry_have_different_signatures_and_old_ones_stay_valid():
    e = cal.load_reference()["entries"][0]
    assert cal.entry_signature(e) == cal.entry_signature(e, "cortex-a72", "tflite")
    assert cal.entry_signature(e, "cortex-a72", "onnx") != cal.entry_signature(e)
    assert cal.entry_signature(e) in cal.load_counts()  # the shipped counts keep matching


def test_pi5_emulated_is_a_cortex_a76_at_2_4_ghz_with_its_own_calibration():
    dev = get_device("pi5-emulated")
    assert dev.config.cpu == "cortex-a76" and dev.config.clock_ghz == 2.4
    est = dev.estimate(FIGURES, "ai_edge_litert")
    assert est["estimate_calibrated"] is True
    assert est["estimate_calibration"]["file"].endswith("pi5-emulated.calibration.json")
    assert "leave-one-model-out" in est["estimate_calibration"]["band_basis"]  # one source: no LOSO possible


def test_a_device_without_calibration_says_its_estimate_is_uncalibrated(tmp_path):
    dev = EmulatedDevice(EmulatedConfig(name="my-a53", cpu="cortex-a53", clock_ghz=1.2))
    est = dev.estimate(FIGURES, "ai_edge_litert")
    assert est["estimate_calibrated"] is False and est["estimate_band"] is None
    assert est["estimated_latency_ms"] == pytest.approx(3e6 / 1.2e9 * 1e3)
    assert "no calibration file" in est["estimate_note"]


def _emulated_record(tmp_path, extra) -> Record:
    art = Artifact(name="m-tflite-fp32", model="m", dataset="d", path=tmp_path / "m.tflite", format=Format.TFLITE,
                   precision=Precision.FP32, inputs=(), outputs=(), size_bytes=1, sha256="0")
    m = Measurement(ok=True, device="pi4-emulated", provenance=Provenance.EMULATED,
                    samples_ns=[400_000, 410_000, 420_000], runtime="ai_edge_litert", threads=1, extra=extra)
    return Record.from_parts("r", art, m, "emulated")


def test_record_of_an_emulated_run_leads_with_the_estimate_and_keeps_wall_time_under_its_own_name(tmp_path):
    dev = EmulatedDevice(EmulatedConfig(name="pi4-emulated", calibration=str(_calibration_file(tmp_path))))
    rec = _emulated_record(tmp_path, dict(FIGURES, **dev.estimate(FIGURES, "ai_edge_litert")))
    est = (0.5 * 2e6 + 2.0 * 1e6) / 1.5e6
    assert rec.latency_provenance == "estimated"
    assert rec.latency_ms["p50"] == pytest.approx(est) and rec.latency_ms["band"] == 0.12
    assert rec.latency_ms["low"] == pytest.approx(est * 0.88) and rec.latency_ms["high"] == pytest.approx(est * 1.12)
    assert rec.extra["emulated_wall_time_ms"]["p50"] == pytest.approx(0.41)  # never the latency
    s = json.loads(json.dumps(rec.summary()))
    assert s["latency_ms"]["p50"] == pytest.approx(est) and s["provenance"]["latency"] == "estimated"
    assert s["emulated_wall_time_ms"]["p50"] == pytest.approx(0.41)
    assert s["estimate"]["estimate_calibration"]["file"].endswith("cal.json")
    assert format_estimate(rec.latency_ms) == f"{est:.4g} ms ±12%"


def test_emulated_run_without_an_estimate_has_no_latency_at_all(tmp_path):
    rec = _emulated_record(tmp_path, {"instructions_note": "threads > 1"})
    assert rec.latency_ms is None and rec.latency_provenance == ""
    assert rec.extra["emulated_wall_time_ms"]["n"] == 3


def test_cli_table_shows_the_estimate_with_band_and_calibration_for_an_emulated_record(tmp_path):
    from rich.console import Console

    from edgebench.cli import _records_table

    dev = EmulatedDevice(EmulatedConfig(name="pi4-emulated", calibration=str(_calibration_file(tmp_path))))
    rec = _emulated_record(tmp_path, dict(FIGURES, **dev.estimate(FIGURES, "ai_edge_litert")))
    console = Console(width=250, record=True)
    console.print(_records_table([rec], "t"))
    text = console.export_text()
    assert "2 ms ±12%" in text and "estimated, cal.json" in text  # (0.5 x 2M + 2.0 x 1M) / 1.5 GHz
    assert "0.41" not in text  # the emulated wall time does not pose as latency


def test_three_rows_calibrate_with_the_fewest_constants_and_a_band():
    rows = _two_cost_rows()[:3]
    c = cal.calibrate(rows, "pi4-emulated", "cortex-a72", 1.5, "ai_edge_litert", {"reference": "t"})
    assert c.grouping == "one-ipc" and c.band > 0


def test_microkernel_families_follow_xnnpack_names():
    assert attribution.microkernel_family("xnn_f32_igemm_minmax_ukernel_4x8__aarch64_neonfma_lane_ld128") == "gemm"
    assert attribution.microkernel_family("xnn_f32_gemm_minmax_ukernel_6x8__aarch64_neonfma_lane_ld128") == "gemm"
    assert attribution.microkernel_family("xnn_f32_dwconv_minmax_ukernel_9p4c__neonfma") == "dwconv"
    assert attribution.microkernel_family("xnn_x32_transposec_ukernel__4x4_aarch64_neon_tbl128") == "transpose"
    assert attribution.microkernel_family("xnn_f32_vhswish_ukernel__neon_u16") == "elementwise"
    assert attribution.microkernel_family("xnn_create_convolution2d_nhwc_f32") == "xnnpack-other"
    assert attribution.microkernel_family("_ZN6tflite11Interpreter6InvokeEv") == "runtime"


def test_attribution_puts_code_outside_the_runtime_library_outside(tmp_path):
    blocks = tmp_path / "blocks.txt"
    blocks.write_text("1000 700 /no/such/lib/libc.so.6\n2000 300 \n")
    a = attribution.attribute_blocks(blocks)
    assert a["total"] == 1000 and a["libraries"] == {"libc.so.6": 700, "(no file)": 300}
    assert a["families"]["outside"] == 1000 and sum(a["families"].values()) == 1000
