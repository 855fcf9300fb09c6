"""compare BASE.onnx CURRENT.onnx: both files measured here in alternating rounds, judged on paired ratios."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgebench.reports.compare import judge
from edgebench.reports.record import Record
from edgebench.reports.side_by_side import paired_ratio_ci, rounds_of

FAST, SLOW = 1.0, 1.5  # the two speeds of a shared host (devices/stability.py)


def sbs_record(name, rounds_ms, session="s1", role="base"):
    samples = [int(v * 1e6) for r in rounds_ms for v in r]
    return Record(run_id=f"r-{role}", name=name, model=name, dataset="d", device="local", status="ok",
                  sha256="sha" + name, runtime="onnxruntime", runtime_version="1.32.0", threads=1,
                  samples_ns=samples, latency_ms={"p50": float(np.median(samples)) / 1e6},
                  extra={"side_by_side": {"session": session, "rounds": len(rounds_ms), "role": role,
                                          "runs_per_round": len(rounds_ms[0]),
                                          "round_samples": [len(r) for r in rounds_ms]}})


def machine(states, median, seed):
    rng = np.random.default_rng(seed)
    return [list(median * s * (1 + 0.01 * rng.standard_normal(10))) for s in states]


def test_paired_rounds_see_the_model_through_the_machines_speed_changes():
    # base and current alternate; the machine switches speed once between the two halves of round pair 4
    base_states = [FAST, FAST, FAST, SLOW, SLOW, SLOW, SLOW, SLOW]
    cur_states = [FAST, FAST, FAST, FAST, SLOW, SLOW, SLOW, SLOW]
    base = sbs_record("m", machine(base_states, 100.0, 1))
    same = sbs_record("m", machine(cur_states, 100.0, 2), role="current")
    v = judge(base, same)
    assert v.basis.startswith("side by side, 8 alternating rounds") and v.verdict == "ok"
    assert abs(v.ratio - 1.0) < 0.02 and v.ratio_ci[1] < 1.05
    slower = sbs_record("m", machine(cur_states, 110.0, 3), role="current")
    v = judge(base, slower)
    assert v.verdict == "regression" and 1.08 < v.ratio < 1.12 and v.ratio_ci[0] > 1.05
    # the same samples judged as two separate runs: their medians sit in different machine states
    unpaired = judge(base, sbs_record("m", machine(cur_states, 110.0, 3), session="other", role="current"))
    assert unpaired.basis.startswith("raw samples") and unpaired.verdict != "regression"


def test_rounds_split_back_and_a_mismatch_is_one_clear_error():
    r = sbs_record("m", [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]])
    assert [len(x) for x in rounds_of(r)] == [2, 1, 3]
    import pytest

    from edgebench.types import EdgebenchError

    with pytest.raises(EdgebenchError, match="do not pair up"):
        paired_ratio_ci([[1.0], [2.0]], [[1.0]])


def _matmuls(path, size, layers):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32) / size, f"w{i}")
             for i in range(layers)]
    names = ["x"] + [f"h{i}" for i in range(layers)]
    nodes = [helper.make_node("MatMul", [names[i], f"w{i}"], [names[i + 1]]) for i in range(layers)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                          [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [1, size])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_compare_two_model_files_side_by_side(cli, tmp_path):
    small = _matmuls(tmp_path / "small.onnx", 64, 1)
    big = _matmuls(tmp_path / "big.onnx", 1024, 4)  # 4 M multiply-adds against 4 k
    store = tmp_path / "s.sqlite"
    p = cli("compare", small, big, "--rounds", "3", "--runs", "5", "--store", store, "--json")
    assert p.returncode == 1, p.stderr
    assert "1 regression(s): big@local" in p.stderr
    v = json.loads(p.stdout)["verdicts"][0]
    assert v["verdict"] == "regression" and v["ratio"] > 2 and v["basis"].startswith("side by side, 3 alternating")
    # the same file against itself: never a 50% regression, whatever this shared machine does meanwhile
    p = cli("compare", big, big, "--rounds", "3", "--runs", "5", "--store", store, "--max-slowdown", "50%", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)["verdicts"][0]
    assert v["verdict"] in ("ok", "inconclusive", "faster") and 0.67 < v["ratio"] < 1.5
    from edgebench.reports.store import Store

    with Store(store) as s:
        recs = s.query()
    assert len(recs) == 4 and all(len(r.extra["side_by_side"]["round_samples"]) == 3 for r in recs)
    assert all(r.extra["side_by_side"]["runner"] == "one process per file" for r in recs)
    import os

    # `local` names no cores: both files were pinned to one and the same core for the comparison
    assert all(r.device_facts["pinned_cores"] == [max(os.sched_getaffinity(0))] for r in recs)
    assert all(len(r.samples_ns) == 15 for r in recs)
    p = cli("compare", tmp_path / "missing.onnx", small)
    assert p.returncode == 2 and "model file not found" in p.stderr
    p = cli("compare", small, "some-run-id", "--store", store)
    assert p.returncode == 2 and "not one of each" in p.stderr
