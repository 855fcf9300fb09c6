"""The calibration shipped for pi4-emulated is the fit of the shipped counts on the shipped reference set, and
the band it states is its own cross-validation's (a refit that forgets to update one of them fails here)."""
from __future__ import annotations

import pytest

from edgebench.devices import calibration as cal
from edgebench.devices import calibration_cv as calcv


def test_shipped_calibration_was_fitted_on_the_shipped_reference_and_states_its_cv_errors():
    path = cal.default_calibration_path("pi4-emulated")
    c = cal.load_calibration(path)
    assert c.fitted_on["reference_sha256"] == cal.file_sha256(cal.REFERENCE_FILE)
    assert c.band == pytest.approx(c.cv["leave_one_source_out"]["p90_abs_error"])
    assert c.cpu == "cortex-a72" and c.clock_ghz == 1.5 and c.runtime == "ai_edge_litert"
    counts = cal.load_counts()
    rows, missing = cal.joined_rows(cal.load_reference(), counts)
    assert c.fitted_on["n_models"] == len(rows) >= 15
    # the shipped constants are the fit of the shipped counts on the shipped reference
    assert cal.fit_cpi([(r["by_class"], r["latency_ms"]) for r in rows], c.grouping, c.clock_ghz) == pytest.approx(c.cpi)
    # the grouping is the one the a-priori rule selects on these rows, and the band covers that selection
    assert c.grouping == calcv.select_grouping(rows, cal.CANDIDATES, c.clock_ghz)[0]
    preds, stats, _ = calcv.nested_cross_validate(rows, cal.CANDIDATES, c.clock_ghz, "source")
    assert c.band == pytest.approx(stats["p90_abs_error"])
    lomo = calcv.nested_cross_validate(rows, cal.CANDIDATES, c.clock_ghz, "key")[1]
    assert c.cv["leave_one_model_out"]["p90_abs_error"] == pytest.approx(lomo["p90_abs_error"])


def test_shipped_pi5_calibration_is_the_fit_of_the_published_pi5_rows_on_cortex_a76_counts():
    c = cal.load_calibration(cal.default_calibration_path("pi5-emulated"))
    ref_path = cal.DATA / "pi5_reference.json"
    assert c.fitted_on["reference_sha256"] == cal.file_sha256(ref_path)
    assert c.cpu == "cortex-a76" and c.clock_ghz == 2.4
    rows, missing = cal.joined_rows(cal.load_reference(ref_path), cal.load_counts(cal.DATA / "pi5_counts.json"),
                                    "cortex-a76")
    assert not missing and c.fitted_on["n_models"] == len(rows) == 5
    assert c.band == pytest.approx(c.cv["leave_one_model_out"]["p90_abs_error"])
    assert cal.fit_cpi([(r["by_class"], r["latency_ms"]) for r in rows], c.grouping, c.clock_ghz) == pytest.approx(c.cpi)


def test_shipped_attribution_covers_every_reference_model_and_adds_up():
    import json

    doc = json.loads((cal.DATA / "pi4_attribution.json").read_text())["attribution"]
    ref = cal.load_reference()
    assert {cal.entry_signature(e) for e in ref["entries"]} <= set(doc)
    counts = cal.load_counts()
    for sig, a in doc.items():
        assert sum(a["families"].values()) == a["total"] == sum(a["libraries"].values()) and a["symbolized"]
        # one inference plus the markers-only region: within 1% of the counted inference
        assert a["total"] == pytest.approx(counts[sig]["instructions"], rel=0.01)
