"""The main job's report.html in a real headless Chromium (Debian's), with the network blocked: nothing is
requested, the table sorts and filters, and a plot point's tooltip names its artifact."""
import shutil

import pytest

from edgebench.reports.recommend import recommend
from edgebench.reports.render import latest_per_key, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

VISIBLE_ROWS = """() => Array.from(document.querySelectorAll('#records-table tbody tr'))
    .filter(r => r.style.display !== 'none').map(r => ({name: r.dataset.name, device: r.dataset.device,
        p50: r.querySelector("td:nth-child(COL)").dataset.v}))"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_main_job_report_sorts_filters_and_names_points_offline(with_more_devices, tmp_path):
    from playwright.sync_api import sync_playwright

    records = latest_per_key(with_more_devices)
    out = write_report(records, tmp_path / "report")
    pick = recommend(records)["local"].pick
    shot = tmp_path / "report.png"
    blocked, requests, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})

        def route(r):  # the network is blocked: anything but the file itself is aborted and recorded
            if r.request.url == (out / "report.html").as_uri():
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        page.wait_for_selector(".acc-latency .main-svg")
        assert page.inner_text("#decision tbody tr[data-device='local'] code.pick") == pick

        # sort by p50: ascending, then descending; rows without a p50 (the failed one) stay last
        keys = page.eval_on_selector_all("#records-table thead th", "ths => ths.map(t => t.dataset.key)")
        col = keys.index("p50") + 1
        rows_js = VISIBLE_ROWS.replace("COL", str(col))
        page.click("#records-table th[data-key='p50']")
        up = page.evaluate(rows_js)
        page.click("#records-table th[data-key='p50']")
        down = page.evaluate(rows_js)
        expected = sorted(r.latency_ms["p50"] for r in records if r.latency_ms)
        assert [float(r["p50"]) for r in up if r["p50"]] == expected
        assert [float(r["p50"]) for r in down if r["p50"]] == expected[::-1]
        assert up[-1]["p50"] == "" and down[-1]["p50"] == "" and len(up) == len(records)

        # filter to one device
        page.select_option("select[data-filter='device']", "pi4-emulated")
        shown = page.evaluate(rows_js)
        assert {r["device"] for r in shown} == {"pi4-emulated"}
        assert len(shown) == sum(r.device == "pi4-emulated" for r in records) == 8
        assert page.inner_text("#row-count") == f"8 of {len(records)} rows"
        page.select_option("select[data-filter='device']", "")

        # hover the pick's point in the local accuracy-latency plot and read the tooltip
        page.locator(".acc-latency[data-device='local']").scroll_into_view_if_needed()
        box = page.evaluate("""pick => {
            const gd = document.querySelector(".acc-latency[data-device='local'] .js-plotly-plot");
            const t = gd.data.findIndex(d => d.name !== 'predicted (search)' && (d.customdata || []).includes(pick));
            const i = gd.data[t].customdata.indexOf(pick);
            const pt = gd.querySelectorAll('.scatterlayer .trace')[t].querySelectorAll('path.point')[i];
            const b = pt.getBoundingClientRect();
            return {x: b.x + b.width / 2, y: b.y + b.height / 2};
        }""", pick)
        page.mouse.move(box["x"] - 30, box["y"] + 30)
        page.mouse.move(box["x"], box["y"], steps=5)
        page.wait_for_selector(".acc-latency[data-device='local'] .hoverlayer .hovertext", timeout=5000)
        tooltip = page.eval_on_selector(  # an SVG text: one tspan per line
            ".acc-latency[data-device='local'] .hoverlayer .hovertext",
            "el => Array.from(el.querySelectorAll('tspan.line')).map(t => t.textContent).join('\\n')")
        page.screenshot(path=str(shot), full_page=True)

        # log/linear axis buttons, and a distribution toggled off by its legend entry
        xtype = ("() => document.querySelector(\".acc-latency[data-device='local'] .js-plotly-plot\")"
                 "._fullLayout.xaxis.type")
        assert page.evaluate(xtype) == "log"
        page.locator(".acc-latency[data-device='local'] .updatemenu-button", has_text="linear x").click()
        page.wait_for_function(xtype.replace("() =>", "() => ") + " === 'linear'")
        dist = ".distribution[data-device='local']"
        page.locator(dist).scroll_into_view_if_needed()
        hidden_js = (f"() => document.querySelector(\"{dist} .js-plotly-plot\").data"
                     ".filter(d => d.visible === 'legendonly').map(d => d.name)")
        before = page.evaluate(hidden_js)  # more than 20 artifacts: the slowest start hidden
        slowest = page.evaluate(f"() => document.querySelector(\"{dist} .js-plotly-plot\").data.at(-1).name")
        page.locator(f"{dist} .legend .traces").first.click()  # reversed legend: its first entry is the last trace
        page.wait_for_function(f"() => document.querySelector(\"{dist} .js-plotly-plot\").data.at(-1).visible "
                               "=== true")
        hidden = page.evaluate(hidden_js)
        browser.close()
    assert len(before) == 36 - 20 and slowest in before and set(hidden) == set(before) - {slowest}
    assert tooltip.splitlines()[0] == pick
    assert "device: local" in tooltip and "provenance: measured" in tooltip and "n=100" in tooltip
    assert not errors, errors
    assert blocked == [] and requests == [(out / "report.html").as_uri()], (blocked, requests)
    assert shot.stat().st_size > 100_000  # kept under the test's tmp dir as the test's artifact
