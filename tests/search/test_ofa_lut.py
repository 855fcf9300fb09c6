"""The latency table: OFA keys, measured on the local device in one runner process, resumable, fitted,
and the vectorised prediction the finders use equals the per-arch one."""
from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from edgebench.devices.local import LocalConfig, LocalDevice
from edgebench.search.lut import LatencyTable, LUTConfig, all_entries, arch_entries, build_lut
from edgebench.search.ofa_space import OFASpace
from edgebench.train.ofa import OFASpec
from edgebench.types import EdgebenchError

SPEC = OFASpec(stem_width=8, widths=(8, 16), strides=(2, 2), se=(False, True), hswish=(False, True),
               final_width=16, ks_list=(3, 5), expand_list=(3, 6), depth_list=(1, 2), resolutions=(12, 16))
CFG = LUTConfig(runs=20, rounds=2, warmup=2, chunk=64, calib_nets=4)
BLOCK = re.compile(r"^expanded_conv-input:\d+x\d+x\d+-output:\d+x\d+x\d+-expand:\d+-kernel:\d+-stride:[12]-idskip:[01]$")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "lut.yaml"
    return build_lut(SPEC, LocalDevice(LocalConfig()), path, CFG, progress=False, log=lambda *_: None)


def test_keys_are_ofas_and_cover_every_block_a_subnet_uses():
    entries = all_entries(SPEC)
    blocks = [k for k in entries if k.startswith("expanded_conv")]
    assert all(BLOCK.match(k) for k in blocks)
    # per resolution: 2 stages x (first block + a later block) x 2 kernels x 2 expands
    assert len(blocks) == 2 * 2 * 2 * 2 * 2
    assert "expanded_conv-input:6x6x8-output:6x6x8-expand:6-kernel:5-stride:1-idskip:1" in entries
    for arch in OFASpace(SPEC).random_archs(20, seed=1):
        assert all(e["key"] in entries for e in arch_entries(SPEC, arch))


def test_table_is_ofa_yaml_with_provenance_and_a_fit(table):
    doc = yaml.safe_load(table.path.read_text())
    keys = [k for k in doc if not k.startswith("_")]
    assert set(keys) == set(all_entries(SPEC))
    for k in keys:
        assert {"count", "mean", "var", "p50", "params"} <= set(doc[k])
        assert doc[k]["count"] == 20 and doc[k]["mean"] > 0
    meta = doc["_meta"]
    assert meta["device"] == "local" and meta["runtime"] == "onnxruntime" and meta["runtime_version"]
    assert meta["provenance"] == "measured" and meta["facts"]["machine"]
    fit = doc["_fit"]
    assert fit["n_calib"] == 6 and len(fit["calib"]) == 6 and "least squares" in fit["method"]
    # the two ends of the space first (no extrapolation to the smallest subnet), then 4 random subnets
    assert fit["calib"][0]["arch"] == SPEC.smallest() and fit["calib"][1]["arch"] == SPEC.largest()
    # the fit reproduces its calibration nets better than the plain sum does
    err_sum = [abs(c["sum_ms"] - c["measured_ms"]) for c in fit["calib"]]
    err_fit = [abs(table.predict_ms(c["arch"]) - c["measured_ms"]) for c in fit["calib"]]
    assert np.mean(err_fit) <= np.mean(err_sum)


def test_vectorised_prediction_equals_the_per_arch_one(table):
    space = OFASpace(SPEC)
    archs = space.random_archs(30, seed=2)
    genes = np.stack([space.to_genes(a) for a in archs])
    assert np.allclose(table.predict_genes(space, genes), [table.predict_ms(a) for a in archs])
    p = table.predict(archs[0])
    assert p["predicted_latency_provenance"] == "predicted" and p["predicted_latency_ms"] > 0


def test_no_prediction_falls_below_the_empty_models_runtime_call(table):
    """A fit on noisy calibration runs can put c far below zero; no subnet is then predicted faster than
    the empty model (one runtime call), per arch or vectorised."""
    import copy

    doc = copy.deepcopy(table.doc)
    doc["_fit"]["c_ms"] = -1e3
    skewed = LatencyTable(doc, table.path)
    space = OFASpace(SPEC)
    archs = space.random_archs(10, seed=3)
    floor = skewed.floor_ms
    assert floor == doc[f"Identity-input:1x1x{SPEC.num_classes}"]["p50"] > 0
    assert [skewed.predict_ms(a) for a in archs] == [floor] * 10
    assert np.all(skewed.predict_genes(space, np.stack([space.to_genes(a) for a in archs])) == floor)
    assert all(table.predict_ms(a) >= floor for a in archs)


def test_an_interrupted_table_resumes_measuring_only_what_is_missing(table, tmp_path):
    doc = yaml.safe_load(table.path.read_text())
    missing = [k for k in doc if k.startswith("expanded_conv")][:3]
    for k in missing:
        del doc[k]
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump(doc))
    lines = []
    again = build_lut(SPEC, LocalDevice(LocalConfig()), partial, CFG, progress=False, log=lines.append)
    assert any("(3 measured now" in line for line in lines)
    assert all(k in again.doc for k in missing)
    assert again.fit["c_ms"] == table.fit["c_ms"]  # the fit was already there: kept, not remeasured
    other = LocalDevice(LocalConfig(name="local-other"))
    with pytest.raises(EdgebenchError, match="another device"):
        build_lut(SPEC, other, partial, CFG, progress=False, log=lambda *_: None)
    with pytest.raises(EdgebenchError, match="not found"):
        LatencyTable.load(tmp_path / "none.yaml")


def test_a_runs_own_table_of_another_space_is_measured_anew(table, tmp_path):
    """`edgebench run` after a change of [model]: its lut-DEVICE.yaml belongs to the old space. The run
    (replace_other) measures the new space's table in its place; `ofa lut --out` (default) refuses."""
    import dataclasses

    stale = tmp_path / "lut-local.yaml"
    stale.write_text(table.path.read_text())
    wider = dataclasses.replace(SPEC, final_width=24)
    with pytest.raises(EdgebenchError, match="another device or space"):
        build_lut(wider, LocalDevice(LocalConfig()), stale, CFG, progress=False, log=lambda *_: None)
    lines = []
    new = build_lut(wider, LocalDevice(LocalConfig()), stale, CFG, progress=False, log=lines.append,
                    replace_other=True)
    assert any("measuring it anew" in line for line in lines)
    assert new.spec == wider and yaml.safe_load(stale.read_text())["_meta"]["space"]["final_width"] == 24
    assert set(k for k in new.doc if not k.startswith("_")) == set(all_entries(wider))


def test_whole_subnets_share_the_runner_process_of_the_last_keys(table, tmp_path, monkeypatch):
    """The fit's subnets and `alongside` (a held-out check) run in the same process and rounds as the keys
    of the last chunk, so a drift of the machine's speed between keys and whole nets cannot enter the fit;
    a table missing only its fit measures only the whole subnets."""
    import edgebench.search.lut as lut

    calls = []
    real = lut.measure_models

    def spy(device, models, cfg, workdir):
        calls.append([k for k, _ in models])
        return real(device, models, cfg, workdir)

    monkeypatch.setattr(lut, "measure_models", spy)
    held_out = OFASpace(SPEC).random_archs(3, seed=4)
    cfg = LUTConfig(runs=20, rounds=2, warmup=2, chunk=30, calib_nets=4)
    new = build_lut(SPEC, LocalDevice(LocalConfig()), tmp_path / "t.yaml", cfg, progress=False,
                    log=lambda *_: None, alongside=held_out)
    n_keys = len(all_entries(SPEC))
    assert [len(c) for c in calls] == [30, n_keys - 30 + 6 + 3]  # two chunks; the whole nets in the last
    assert sum(k.startswith("net") for k in calls[0]) == 0 and sum(k.startswith("net") for k in calls[1]) == 9
    assert len(new.fit["calib"]) == 6 and len(new.measured_alongside) == 3
    assert all(m["p50_ms"] > 0 and m["instructions"] is None for m in new.measured_alongside)

    calls.clear()
    doc = yaml.safe_load(table.path.read_text())
    del doc["_fit"]
    nofit = tmp_path / "nofit.yaml"
    nofit.write_text(yaml.safe_dump(doc))
    again = build_lut(SPEC, LocalDevice(LocalConfig()), nofit, CFG, progress=False, log=lambda *_: None)
    assert [len(c) for c in calls] == [6] and again.fit["n_calib"] == 6 and again.measured_alongside == []
