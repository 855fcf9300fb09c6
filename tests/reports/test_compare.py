"""The regression gate decides on raw samples: noise is not a regression, a real slowdown is."""
import json

import numpy as np

from edgebench.reports.compare import compare_records
from edgebench.reports.record import Record


def rec(name, samples_ms, device="local", accuracy=None, insn=None, sha="s"):
    extra = {"instructions_per_inference": insn} if insn else {}
    return Record(run_id="r", name=name, model=name, dataset="d", device=device, status="ok", sha256=sha + name,
                  runtime="onnxruntime", runtime_version="1.32.0", threads=1, accuracy=accuracy,
                  samples_ns=[int(v * 1e6) for v in samples_ms], latency_ms={"p50": float(np.median(samples_ms))},
                  extra=extra)


def noisy(median, n=500, seed=0):
    rng = np.random.default_rng(seed)
    return median * (1 + 0.03 * rng.standard_normal(n)) + rng.exponential(0.02 * median, n)


def test_same_distribution_is_ok_and_a_ten_percent_slowdown_regresses():
    base = [rec("a", noisy(2.0, seed=1)), rec("b", noisy(5.0, seed=2))]
    same = [rec("a", noisy(2.0, seed=3)), rec("b", noisy(5.0, seed=4))]
    slower = [rec("a", noisy(2.2, seed=5)), rec("b", noisy(5.0, seed=6))]
    assert [v.verdict for v in compare_records(base, same, 0.05)] == ["ok", "ok"]
    verdicts = {v.name: v for v in compare_records(base, slower, 0.05)}
    assert verdicts["a"].verdict == "regression" and "slower" in verdicts["a"].reason
    lo, hi = verdicts["a"].ratio_ci
    assert 1.05 < lo <= verdicts["a"].ratio <= hi < 1.15
    assert verdicts["b"].verdict == "ok"


def test_few_samples_straddling_the_threshold_are_inconclusive_not_failures():
    base = [rec("a", noisy(2.0, n=8, seed=1) * np.linspace(0.7, 1.3, 8))]
    cur = [rec("a", noisy(2.1, n=8, seed=2) * np.linspace(0.7, 1.3, 8))]
    assert compare_records(base, cur, 0.05)[0].verdict == "inconclusive"


def test_instruction_counts_are_compared_exactly_and_accuracy_drops_count():
    base = [rec("emu", [900.0, 1100.0], device="pi4-emulated", insn=1_000_000, accuracy=0.90)]
    cur_insn = [rec("emu", [1000.0, 1000.0], device="pi4-emulated", insn=1_060_000, accuracy=0.90)]
    v = compare_records(base, cur_insn, 0.05)[0]
    assert v.verdict == "regression" and v.ratio == v.ratio_ci[0] == 1.06 and v.basis.startswith("instruction")
    cur_acc = [rec("emu", [1000.0, 1000.0], device="pi4-emulated", insn=1_000_000, accuracy=0.88)]
    v = compare_records(base, cur_acc, 0.05, max_accuracy_drop_pp=0.5)[0]
    assert v.verdict == "regression" and "accuracy -2.00 pp" in v.reason


def test_unpaired_records_are_listed(cli, tmp_path):
    base = [rec("a", noisy(2.0)), rec("gone", noisy(1.0))]
    cur = [rec("a", noisy(2.0, seed=9)), rec("new", noisy(1.0))]
    verdicts = {v.name: v.verdict for v in compare_records(base, cur)}
    assert verdicts == {"a": "ok", "new": "missing in base", "gone": "missing in current"}
    # and through the command line, on two report folders
    for name, recs in (("base", base), ("cur", [rec("a", noisy(2.4, seed=9))])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.json").write_text(json.dumps([r.to_dict() for r in recs]))
    p = cli("compare", tmp_path / "base", tmp_path / "cur", "--json")
    assert p.returncode == 1 and "1 regression(s): a@local" in p.stderr
    doc = json.loads(p.stdout)
    assert doc["regressions"] == 1 and {v["verdict"] for v in doc["verdicts"]} == {"regression", "missing in current"}


def test_the_same_file_under_another_name_is_one_pair_not_a_missing_row():
    # two runs of one config under two run names: the artifact's name differs, its sha256 does not
    base = [rec("digits_a-onnx-fp32", noisy(2.0), sha="x")]
    base[0].sha256 = "same"
    cur = [rec("digits_b-onnx-fp32", noisy(2.0, seed=9), sha="x")]
    cur[0].sha256 = "same"
    verdicts = compare_records(base, cur)
    assert [(v.name, v.verdict, v.same_file) for v in verdicts] == [("digits_b-onnx-fp32", "ok", True)]


def test_a_quota_device_that_moved_the_mean_but_not_the_median_says_why():
    base = [rec("w", noisy(0.4, seed=1))]
    stalls = noisy(0.4, seed=2)
    stalls[::10] += 5.0  # one inference in ten meets a 5 ms throttled stretch
    cur = [rec("w", stalls)]
    cur[0].device_facts = {"cpu_quota_cores": 0.5}
    v = compare_records(base, cur)[0]
    assert v.verdict == "ok" and "local's CPU quota (0.5 cores in 10 ms periods)" in v.reason
    assert "the mean is +" in v.reason
    cur[0].device_facts = {}  # no quota: nothing to explain
    assert compare_records(base, cur)[0].reason == ""


def test_a_verdict_on_a_short_run_says_how_long_it_sampled():
    short = compare_records([rec("a", noisy(2.0, seed=1))], [rec("a", noisy(2.2, seed=5))], 0.05)[0]
    assert short.verdict == "regression" and "the shorter run sampled 1.0 s" in short.reason
    assert "--stability 20" in short.reason and "--min-time 10" in short.reason
    long = compare_records([rec("a", noisy(40.0, seed=1))], [rec("a", noisy(44.0, seed=5))], 0.05)[0]
    assert long.verdict == "regression" and "sampled" not in long.reason  # 500 x 40 ms = 20 s
    same = compare_records([rec("a", noisy(2.0, seed=1))], [rec("a", noisy(2.0, seed=3))], 0.05)[0]
    assert same.verdict == "ok" and same.reason == ""


def test_identical_files_both_slower_and_faster_warn_that_the_machine_moved(cli, tmp_path):
    from edgebench.reports.compare import machine_moved

    base = [rec("a", noisy(2.0, seed=1)), rec("b", noisy(5.0, seed=2)), rec("c", noisy(1.0, seed=3))]
    # the same files (same sha256): one ran 1.5x slower, one 0.6x: the machine, not the files
    moved = [rec("a", noisy(3.0, seed=4)), rec("b", noisy(3.0, seed=5)), rec("c", noisy(1.0, seed=6))]
    verdicts = compare_records(base, moved)
    assert [v.verdict for v in verdicts] == ["regression", "faster", "ok"] and all(v.same_file for v in verdicts)
    assert machine_moved(verdicts).startswith("1 identical file(s) measured slower and 1 faster (0.60x to 1.50x)")
    # a slowed device: identical files slower, none faster: no warning, the regression stands
    slowed = [rec("a", noisy(2.4, seed=4)), rec("b", noisy(6.0, seed=5)), rec("c", noisy(1.0, seed=6))]
    assert machine_moved(compare_records(base, slowed)) == ""
    # rebuilt files (new sha256) moving both ways may be the files: no warning
    rebuilt = [rec("a", noisy(3.0, seed=4), sha="t"), rec("b", noisy(3.0, seed=5), sha="t")]
    assert machine_moved(compare_records(base, rebuilt)) == ""
    for name, recs in (("base", base), ("cur", moved)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.json").write_text(json.dumps([r.to_dict() for r in recs]))
    p = cli("compare", tmp_path / "base", tmp_path / "cur")
    assert p.returncode == 1 and "the machine's speed moved" in p.stderr and "1 regression(s): a@local" in p.stderr
    p = cli("compare", tmp_path / "base", tmp_path / "cur", "--json")
    assert p.returncode == 1 and "machine's speed moved" in json.loads(p.stdout)["warning"]
