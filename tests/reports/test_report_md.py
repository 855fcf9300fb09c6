"""report.md: the decision and a compact GitHub-flavored table, with the same picks as report.html."""
import json
import re

from edgebench.reports.markdown import render_markdown
from edgebench.reports.render import write_report
from edgebench.reports.store import Store


def _table_rows(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _rendered_tables(md: str) -> list[list[list[str]]]:
    """The tables of the Markdown as a CommonMark + GFM-tables renderer (markdown-it-py, as rich uses) draws
    them: [[cells of each row]] per table."""
    from markdown_it import MarkdownIt

    page = MarkdownIt("commonmark").enable("table").render(md)
    return [[re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", t, re.S)]
            for t in re.findall(r"<table>(.*?)</table>", page, re.S)]


def test_report_md_sits_beside_report_html_and_recommends_the_same(with_more_devices, tmp_path):
    out = write_report(with_more_devices, tmp_path / "r")
    md = (out / "report.md").read_text()
    tables = _rendered_tables(md)
    assert len(tables) == 2 and len(tables[1]) == 1 + len(with_more_devices)  # decision, records
    assert tables[0][0][:2] == ["device", "deploy"]
    md_picks = {row[0]: re.fullmatch(r"<strong><code>(.+)</code></strong>", row[1]).group(1) for row in tables[0][1:]}
    decision = _table_rows(md, "| device | deploy")
    page = (out / "report.html").read_text()
    html_picks = dict(re.findall(r"<tr data-device='([^']+)' data-pick='([^']+)'>", page))
    assert md_picks == html_picks == {d: v["pick"] for d, v in
                                      json.loads((out / "recommendation.json").read_text()).items()}
    assert md_picks["local"] == "l2mu_lif-stream-tflite-fp32"
    assert "⚠️ Spread: l2mu_lif-stream-tflite-fp32 on local: CV 119%" in decision[2][-1]


def test_every_table_row_has_the_header_s_cells(with_more_devices):
    md = render_markdown(with_more_devices, "t")
    records = _table_rows(md, "| artifact |")
    assert len(records) == 2 + len(with_more_devices)
    assert {len(r) for r in records} == {len(records[0])} == {12}
    failed = [r for r in records if r[0] == "l2mu_lif-onnx-int8"][0]
    assert failed[-1].startswith("failed: export: top-1 agreement 50% < 90% \\| second line third")
    assert sum(r[0].startswith("**") for r in records) == 2  # the two picks in bold


def test_cli_report_format_md_prints_report_md(main_job, tmp_path, cli):
    store = tmp_path / "s.sqlite"
    with Store(store) as s:
        s.begin_run("har", "har_l2mu", {})
        for i, r in enumerate(main_job):
            r.run_id = "har"
            s.append(r, f"k{i}")
        s.finish_run("har")
    res = cli("report", "--store", store, "--run", "har", "--out", tmp_path / "rep", "--format", "md")
    assert res.returncode == 0, res.stderr
    assert res.stdout == (tmp_path / "rep" / "report.md").read_text()
    assert res.stdout.startswith("## edgebench report: har") and "**`l2mu_lif-stream-tflite-fp32`**" in res.stdout
    bad = cli("report", "--store", store, "--out", tmp_path / "rep2", "--format", "pdf")
    assert bad.returncode != 0 and "pdf" in (bad.stderr + bad.stdout)


def test_many_records_fit_a_pull_request_comment(main_job):
    import copy

    from edgebench.reports.markdown import MAX_ROWS, MAX_WARNINGS

    many = []
    for i in range(300):
        r = copy.deepcopy(main_job[i % len(main_job)])
        r.name, r.record_id = f"{r.name}-v{i}", f"v{i}"
        many.append(r)
    md = render_markdown(many, "t")
    rows = _table_rows(md, "| artifact |")[2:]
    assert len(md) < 65_536 and len(rows) == MAX_ROWS
    assert f"{300 - MAX_ROWS} more record(s), the slowest" in md
    warned = sum(line.startswith("- ") and "too high to trust" in line for line in md.splitlines())
    assert 0 < warned <= MAX_WARNINGS and "more: `edgebench run` prints them all" in md
    assert rows[0][0].startswith("**")  # the pick is kept, first
    kept = [float(r[6]) for r in rows[1:]]
    dropped = sorted(r.latency_ms["p50"] for r in many)[MAX_ROWS:]
    assert max(kept) <= min(dropped) * 1.001  # (the table rounds to 4 digits)
