"""The overhead fit of the kernel predictor, from kernels timed alone to whole models: the per-kernel, per-node
and per-element terms recovered from synthetic builds, the terms of older files, guest instructions outside
the interpreter, and the cross-validated error a build states."""
import numpy as np
import pytest

from edgebench.search.kernels import Kernel
from edgebench.search.predictor import PREDICTOR_FORMAT
from edgebench.search.predictor_fit import KernelPredictor

def _doc(truth):
    """Kernels of one type timed alone, and whole models built from them by the rule `truth`."""
    rng = np.random.default_rng(0)
    kernels = {"_empty": {"type": "_empty", "features": {}, "p50_ms": 0.0038}}  # the prior on k_n agrees
    names = []
    for i in range(40):
        k = Kernel("Add", [], [], [], {"out_elems": 100 * (i + 1)})
        kernels[k.key] = {"type": k.type, "features": k.features, "p50_ms": 0.005 + 0.001 * i}
        names.append(k.key)
    models = {}
    for j in range(30):
        keys = list(rng.choice(names, size=int(rng.integers(2, 30))))
        terms = {"n_kernels": len(keys), "alone_extra_nodes": int(rng.integers(0, 50)),
                 "model_extra_nodes": int(rng.integers(0, 50)),
                 "streamed_mb_beyond_cache": float(rng.uniform(0, 5)), "dram_mb": float(rng.choice([0, 9, 20, 38])),
                 "conv_io_melems": float(rng.uniform(0, 0.2)),
                 "kernel_inputs": len(keys) + int(rng.integers(0, 10)), "kernel_out_melems": float(rng.uniform(0, 1)),
                 "model_io": int(rng.integers(2, 12))}
        total = sum(kernels[k]["p50_ms"] for k in keys)
        models[f"m{j}"] = {"kernels": keys, "weight_mb": 0.0, **terms, "p50_ms": truth(total, terms)}
    return {"format": PREDICTOR_FORMAT, "kernels": kernels, "models": models, "meta": {}}


def test_overhead_fit_recovers_the_per_kernel_per_node_and_per_megabyte_costs():
    def truth(total, t):
        return (total + 0.003 - 0.0038 * t["n_kernels"] + 0.0006 * t["alone_extra_nodes"]
                + 0.0009 * t["model_extra_nodes"] + 0.01 * t["streamed_mb_beyond_cache"] + 0.05 * t["dram_mb"]
                - 0.05 * t["conv_io_melems"]
                - 0.0004 * t["kernel_inputs"] + 0.02 * t["kernel_out_melems"] + 0.0008 * t["model_io"])

    pred = KernelPredictor(_doc(truth))
    f = pred.fit
    assert f["n_models"] == 30 and pred.terms == KernelPredictor.TERMS
    got = [f["c"], *(f[t] for t in KernelPredictor.TERMS)]
    want = [0.003, -0.0038, 0.0006, 0.0009, 0.01, 0.05, -0.05, -0.0004, 0.02, 0.0008]
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert f["train_median_abs_error"] < 1e-6


def test_a_file_measured_before_the_two_kinds_of_extra_node_is_fitted_on_them_or_on_its_one_term():
    """Files built before 2026-11-29 hold node_excess (alone - model extras) only. With the nodes each kernel
    runs alone in the file, both terms are derived from it; without them the old signed term is fitted."""
    def truth(total, t):
        return (total + 0.003 - 0.0038 * t["n_kernels"] + 0.0006 * t["alone_extra_nodes"]
                + 0.0009 * t["model_extra_nodes"])

    doc = _doc(truth)
    for v in doc["kernels"].values():
        v["runtime_nodes"] = 1
    for m in doc["models"].values():  # as an old build recorded them: kernels alone ran one node each
        m["alone_extra_nodes"] = 0
        m["p50_ms"] = truth(sum(doc["kernels"][k]["p50_ms"] for k in m["kernels"]), m)
        m["node_excess"] = -m.pop("model_extra_nodes")
        del m["alone_extra_nodes"]
    pred = KernelPredictor(doc)
    assert pred.terms == KernelPredictor.TERMS
    assert abs(pred.fit["model_extra_nodes"] - 0.0009) < 1e-7 and pred.fit["not_fitted"] == ["alone_extra_nodes"]
    for v in doc["kernels"].values():
        del v["runtime_nodes"]
    legacy = KernelPredictor(doc)
    assert legacy.terms == KernelPredictor.LEGACY_TERMS
    assert abs(legacy.fit["node_excess"] + 0.0009) < 1e-7  # the same cost, on the signed term


def test_a_term_without_spread_over_the_models_is_not_fitted():
    def truth(total, t):
        return total + 0.003 - 0.0038 * t["n_kernels"]

    doc = _doc(truth)
    for m in doc["models"].values():
        m["model_io"] = 2  # every model with one input and one output: indistinguishable from c
    f = KernelPredictor(doc).fit
    assert f["not_fitted"] == ["model_io"] and f["model_io"] == 0.0
    assert abs(f["c"] - 0.003) < 1e-7 and abs(f["n_kernels"] + 0.0038) < 1e-7


def test_too_few_whole_models_fall_back_to_the_plain_sum():
    doc = _doc(lambda total, t: 2 * total)
    doc["models"] = dict(list(doc["models"].items())[:15])  # 9 coefficients need 18
    pred = KernelPredictor(doc)
    assert pred.fit["method"].startswith("plain sum") and pred.fit["n_kernels"] == 0.0


def test_instructions_are_fitted_outside_the_interpreter_and_the_runners_harness_added_once():
    """Kernels and whole models are fitted on what they ran outside the Python interpreter (its share depends on
    its state and on the harness: the build's batch runner is not `bench`'s runner); a prediction adds the
    deployed runner's interpreter share, measured by the build, once."""
    doc = _doc(lambda total, t: 0.0)
    rows = doc["kernels"]
    rows["_empty"].update(instructions=30_000, instructions_outside_interpreter=20_000)
    keys = [k for k in rows if k != "_empty"]  # in the order _doc made them
    for i in range(40):  # the interpreter's share of a kernel alone varies with its position: noise
        out = 10_000 + 3_000 * i
        rows[keys[i]].update(instructions_outside_interpreter=out, instructions=out + 9_000 + 1_500 * (i % 3))
    for m in doc["models"].values():
        m["instructions_outside_interpreter"] = sum(rows[k]["instructions_outside_interpreter"]
                                                    for k in m["kernels"]) - 9_000 * m["n_kernels"] + 9_000
        m["instructions"] = m["instructions_outside_interpreter"] + 9_000  # the batch runner's harness
    doc["meta"]["runner_harness_instructions"] = 11_800  # `bench`'s runner, measured by the build
    pred = KernelPredictor(doc, "instructions")
    assert pred.ktarget == "instructions_outside_interpreter" and pred.measured[keys[3]] == 19_000
    assert pred.fit["train_median_abs_error"] < 1e-6
    assert abs(pred.fit["c"] - 9_000) < 1 and abs(pred.fit["n_kernels"] + 9_000) < 1
    m = doc["models"]["m0"]
    total = sum(pred.measured[k] for k in m["kernels"])
    assert abs(pred._apply(total, m) - (m["instructions_outside_interpreter"] + 11_800)) < 1
    # a build without the split (an older file) keeps the full counts for its kernels
    for r in rows.values():
        del r["instructions_outside_interpreter"]
    assert KernelPredictor(doc, "instructions").ktarget == "instructions"


def test_cross_validation_states_the_error_of_a_model_never_seen():
    from edgebench.search.predictor_cv import band_text, cross_validate

    def truth(total, t):
        return total + 0.003 - 0.0038 * t["n_kernels"] + 0.0006 * t["alone_extra_nodes"]

    cv = cross_validate(_doc(truth), "p50_ms")
    assert cv["n_models"] == 30 and cv["folds"] == 5 and set(cv["errors"]) == {f"m{j}" for j in range(30)}
    assert cv["p90_abs"] < 1e-3 and cv["within_5"] == 1.0  # every kernel known and the overhead exact
    assert band_text(cv).startswith("±0.0% (90% of the build's 30 whole models")

    # a kernel taken from one model only leaves with it: the held-out model is predicted from the others
    doc = _doc(truth)
    odd = Kernel("Add", [], [], [], {"out_elems": 150})
    doc["kernels"][odd.key] = {"type": "Add", "features": odd.features, "p50_ms": 5.0, "sampled": "exact"}
    doc["models"]["m0"]["kernels"].append(odd.key)
    doc["models"]["m0"]["n_kernels"] += 1
    m0 = doc["models"]["m0"]
    m0["p50_ms"] = truth(sum(doc["kernels"][k]["p50_ms"] for k in m0["kernels"]), m0)
    cv = cross_validate(doc, "p50_ms")
    assert cv["errors"]["m0"] < -0.5  # its 5 ms kernel regressed from the Adds around 0.006 ms
    assert sorted(abs(e) for e in cv["errors"].values())[-2] < 1e-3  # the others stay exact

    few = _doc(truth)
    few["models"] = dict(list(few["models"].items())[:5])
    assert cross_validate(few, "p50_ms") is None and "too few whole models" in band_text(None)
    assert "predates" in band_text(None, computed=False)


def test_the_weight_streaming_models_overflow_the_cache_as_wholes_not_kernel_by_kernel(tmp_path):
    from edgebench.search.predictor import model_kernels
    from edgebench.search.predictor_terms import CACHE_MB, model_terms
    from edgebench.search.predictor_sources import streaming_sources

    srcs = streaming_sources(tmp_path)
    streamed = []
    for src in srcs:
        model, shapes, kernels = model_kernels(src.path, src.feed)
        assert {k.type for k in kernels} == {"MatMul+Add+Relu", "MatMul+Add"} and not src.around
        # each product's weights (384 x 1536 floats, 2.4 MB) stay cached when it is timed alone ...
        assert max(k.features["weight_elems"] for k in kernels) * 4 / 1e6 < 2.5
        streamed.append(model_terms(model, kernels, shapes)["streamed_mb_beyond_cache"])
    # ... while the wholes stream 4.7 to 38 MB of them, beyond the cache, in growing steps
    assert streamed == sorted(streamed) and streamed[0] > 2.0 and streamed[-1] > 35.0 - CACHE_MB
    assert [s.name for s in streaming_sources(tmp_path, 2)] == [s.name for s in srcs[:2]]


def test_a_file_measured_before_dram_mb_gets_it_from_its_kernels_weights_and_the_devices_cache():
    from edgebench.search.predictor_terms import with_derived_terms

    gemm = Kernel("Gemm", [], [], [], {"weight_elems": 1_500_000})  # 6 MB of weights
    doc = {"kernels": {gemm.key: {"type": "Gemm", "features": gemm.features}},
           "models": {f"x{n}": {"kernels": [gemm.key] * n, "weight_mb": 6.0 * n} for n in (1, 2, 4, 8)},
           "meta": {"facts": {"last_level_cache_kb": 16 * 1024}}}
    got = {name: m["dram_mb"] for name, m in with_derived_terms(doc)["models"].items()}
    # a 16 MB cache: nothing from memory up to 4 MB of weights, all of it from 16 MB on, linear between
    assert got == {"x1": 6 * (6 - 4) / 12, "x2": 12 * (12 - 4) / 12, "x4": 24.0, "x8": 48.0}
    doc["meta"] = {}  # a device that did not say: this machine's 32 MB
    assert with_derived_terms(doc)["models"]["x4"]["dram_mb"] == 24 * (24 - 8) / 24
    doc["models"]["x8"]["weight_mb"] = 6.0  # one product's weights read 8 times, as an unrolled step's: cached
    assert with_derived_terms(doc)["models"]["x8"]["dram_mb"] == 0.0


def test_a_kernel_alone_hands_back_each_output_which_a_whole_model_does_not():
    # kernels with two outputs cost 2,500 more alone per extra output (the build's Split probe); whole models don't
    def doc(per_output):
        d = _doc(lambda total, terms: total - 0.004 * (terms["n_kernels"] - 1))
        d["meta"]["per_output"] = {"p50_ms": per_output} if per_output is not None else {}
        for m in d["models"].values():
            m["extra_outputs"] = 0
        return d

    plain, probed = KernelPredictor(doc(None), "p50_ms"), KernelPredictor(doc(0.002), "p50_ms")
    assert plain.fit == probed.fit  # no training model has a multi-output kernel: the fit is the same
    k = Kernel("Add", [], [], [], {"out_elems": 100})
    terms = {t: 0.0 for t in plain.terms} | {"n_kernels": 10, "kernel_inputs": 10}
    with_splits = plain.predict_model([k] * 10, {**terms, "extra_outputs": 5})["value"]
    assert probed.predict_model([k] * 10, {**terms, "extra_outputs": 5})["value"] == pytest.approx(with_splits - 0.010)
    assert probed.predict_model([k] * 10, terms)["value"] == pytest.approx(plain.predict_model([k] * 10, terms)["value"])


def test_an_older_file_gets_its_models_extra_outputs_from_the_kernels_output_counts():
    from edgebench.search.predictor_terms import with_derived_terms

    d = {"meta": {}, "kernels": {"a": {"type": "Split", "features": {"n_outputs": 3}, "runtime_nodes": 1},
                                 "b": {"type": "Add", "features": {}, "runtime_nodes": 1}},
         "models": {"m": {"kernels": ["a", "b", "a"], "node_excess": 0}}}
    assert with_derived_terms(d)["models"]["m"]["extra_outputs"] == 4
