"""report.html rendered in a real headless Chromium (Debian's), offline: the plots must show."""
import shutil

import pytest

from edgebench.devices.local import LocalDevice
from edgebench.reports.record import Record
from edgebench.reports.render import write_report
from edgebench.types import RunSpec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_html_shows_its_plots_in_chromium(cnn_bundle, onnx_artifact, tmp_path):
    from playwright.sync_api import sync_playwright

    m = LocalDevice().run(cnn_bundle, RunSpec(runs=100, warmup=5))
    out = write_report([Record.from_parts("r", onnx_artifact, m, "local")], tmp_path / "report")
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        plots = page.eval_on_selector_all(
            "img.plot", "els => els.map(e => ({alt: e.alt, w: e.naturalWidth, h: e.naturalHeight, "
                        "ok: e.complete && e.naturalWidth > 0}))")
        page.screenshot(path=str(shot), full_page=True)
        table_text = page.inner_text("table")
        browser.close()
    alts = [p["alt"] for p in plots]
    assert "accuracy vs latency" in alts
    assert any(a.startswith("latency distribution digits_cnn-onnx-fp32") for a in alts)
    assert all(p["ok"] and p["w"] > 300 and p["h"] > 150 for p in plots), plots
    assert "digits_cnn-onnx-fp32" in table_text and "measured" in table_text
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert shot.stat().st_size > 20_000
    shutil.copy(shot, "/tmp/edgebench-report-screenshot.png")
