"""How far off is a predictor on a model it never saw? K-fold cross-validation over the build's whole models.

Each fold leaves some whole models out: their measured whole-model figures leave the overhead fit, and every
kernel that only they contain (taken from them, `sampled == "exact"`) leaves the regressors, so each held-out
model is predicted as an unseen one is: its kernels regressed, the rest known only from other models, the
random configurations and the neighbours sampled around them. `predict` prints the resulting band with every
prediction ("the stated error"); `predictor build` stores it in the predictor file's meta.
"""
from __future__ import annotations

import numpy as np

from edgebench.search.kernels import Kernel
from edgebench.types import EdgebenchError

FOLDS = 5
MIN_MODELS = 8  # fewer whole models than this: no band (each fold would leave too few to fit)


def _kernel(doc: dict, key: str) -> Kernel | None:
    v = doc["kernels"].get(key)
    return Kernel(v["type"], [], [], [], v["features"]) if v else None


def cross_validate(doc: dict, target: str, folds: int = FOLDS, seed: int = 0) -> dict | None:
    """{"target", "folds", "n_models", "median_abs", "p90_abs", "within_10", "within_5", "errors"} or None
    when the build has too few whole models with `target` measured."""
    from edgebench.search.predictor_fit import KernelPredictor, at_reference_speed
    from edgebench.search.predictor_terms import with_derived_terms

    if target == "p50_ms":  # held-out figures at the speed the predictor's are scaled to
        doc = at_reference_speed(doc)
    doc = with_derived_terms(doc)  # before the folds: a held-out model's kernels leave the file with it
    names = [n for n, m in doc.get("models", {}).items() if m.get(target)]
    if len(names) < MIN_MODELS:
        return None
    names = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    errors = {}
    for f in range(folds):
        held = set(names[f::folds])
        kept = {n: m for n, m in doc["models"].items() if n not in held}
        elsewhere = {k for m in kept.values() for k in m["kernels"]}
        only_held = {k for n in held for k in doc["models"][n]["kernels"]} - elsewhere
        kernels = {k: v for k, v in doc["kernels"].items() if not (k in only_held and v.get("sampled") == "exact")}
        try:
            pred = KernelPredictor({**doc, "kernels": kernels, "models": kept}, target)
        except EdgebenchError:
            return None
        for n in held:
            m = doc["models"][n]
            ks = [k for k in (_kernel(doc, key) for key in m["kernels"]) if k is not None]
            value = pred.predict_model(ks, {t: m.get(t, 0.0) for t in (*pred.terms, "extra_outputs")})["value"]
            errors[n] = value / m[target] - 1
    e = np.abs(np.asarray(list(errors.values())))
    return {"target": target, "folds": folds, "n_models": int(e.size),
            "median_abs": float(np.median(e)), "p90_abs": float(np.percentile(e, 90)),
            "within_10": float(np.mean(e <= 0.10)), "within_5": float(np.mean(e <= 0.05)),
            "errors": {n: round(float(x), 5) for n, x in errors.items()}}


def band_text(cv: dict | None, computed: bool = True) -> str:
    """'±12% (...)': the error a prediction carries, or why there is none (computed=False: the file was
    built by an edgebench that did not cross-validate)."""
    if not computed:
        return "no error band: this predictor file predates it; run `edgebench predictor build` again (it resumes)"
    if not cv:
        return ("no error band: the build has too few whole models to cross-validate "
                f"(needs {MIN_MODELS}; run predictor build longer or add --model files)")
    return (f"±{100 * cv['p90_abs']:.1f}% (90% of the build's {cv['n_models']} whole models were within this "
            f"when predicted without them, {cv['folds']}-fold; median error {100 * cv['median_abs']:.1f}%)")
