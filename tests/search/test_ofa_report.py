"""search.html: per device, the predicted front, the measured picks, the errors and the budget misses."""
from __future__ import annotations

import re

from edgebench.search.report import is_miss, write_search_page


def _devices():
    return {
        "local": {
            "predicted": [{"arch": {"r": 20}, "accuracy": 0.80, "latency_ms": 0.5},
                          {"arch": {"r": 28}, "accuracy": 0.90, "latency_ms": 1.5}],
            "measured": [
                {"name": "pick-1ms", "arch": {"r": 24}, "accuracy": 0.85, "latency_ms": 0.9,
                 "predicted_latency_ms": 0.95, "error_pct": -5.26, "budget_ms": 1.0, "provenance": "measured"},
                {"name": "pick-0.6ms", "arch": {"r": 20}, "accuracy": 0.81, "latency_ms": 0.7,
                 "predicted_latency_ms": 0.55, "error_pct": 27.3, "budget_ms": 0.6, "provenance": "measured"},
            ],
        },
        "pi4-emulated": {"predicted": [], "measured": [
            {"name": "p", "arch": {}, "accuracy": None, "latency_ms": 10.0, "predicted_latency_ms": None,
             "error_pct": None, "budget_ms": None, "provenance": "emulated"}]},
    }


def test_search_page_is_self_contained_and_shows_the_miss(tmp_path):
    page = write_search_page(tmp_path, "OFA search <test>", _devices())
    text = page.read_text()
    assert page.name == "search.html"
    assert "OFA search &lt;test&gt;" in text
    assert text.count("<h2>") == 2
    assert len(re.findall(r"data:image/png;base64,", text)) == 2  # one plot per device, embedded
    assert "http://" not in text and "https://" not in text  # nothing fetched
    assert text.count("MISS</b>") == 1  # pick-0.6ms measured 0.7 ms against a 0.6 ms budget
    assert "+27.3%" in text and "-5.3%" in text
    assert "1/2 over budget" in text
    assert "latency table (the sum of its blocks plus the fitted overhead)" in text  # OFA's source, by default
    other = write_search_page(tmp_path / "it", "InstaTune", _devices(), "a latency predictor <fitted>").read_text()
    assert "latency comes from a latency predictor &lt;fitted&gt;" in other and "latency table" not in other


def test_miss_needs_a_budget_and_a_latency_above_it():
    assert is_miss({"budget_ms": 1.0, "latency_ms": 1.01})
    assert not is_miss({"budget_ms": 1.0, "latency_ms": 1.0})
    assert not is_miss({"budget_ms": None, "latency_ms": 5.0})
