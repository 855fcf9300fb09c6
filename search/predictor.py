"""A kernel-level latency predictor for one device, nn-Meter style, measured through the device adapters.

Build: the models to learn from (the ONNX artifacts in the store that still exist, plus a generated zoo of
CNNs, MLPs and small transformers) are split into the kernels the runtime executes (search/kernels.py).
Every distinct kernel is exported alone and timed on the device, many per runner process (the latency-table
runner of search/lut.py, with the deployed session settings); a few whole models are timed too. The file
keeps the raw measurements (and, on an emulated device, guest instructions), so fitting is repeatable and
an interrupted build resumes where it stopped.

Predict: each kernel of a graph gets its measured p50 when that exact kernel was timed ("measured" in the
breakdown), else the prediction of its type's regressor (a random forest on log features, as nn-Meter's),
else of the all-types regressor ("fallback"). The model's latency is
    sum of kernels + c + w * weight_MB + v * n_kernels
with c, w, v fitted by least squares on the whole models timed in the build (a kernel timed alone keeps its
weights in cache and pays one runtime call, a whole model streams its weights and pays one call in all).
On an emulated device the same is done for instruction counts, with no fit: the sum of kernels less
(n - 1) times the instructions of an empty model (every kernel's count includes one runtime call).
Figures are labelled `predicted`.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgebench.search.kernels import FEATURES, Kernel, kernel_file, run_shapes, split_kernels
from edgebench.types import EdgebenchError

PREDICTOR_FORMAT = "edgebench-kernel-predictor-1"
DEFAULT_DIR = Path("out/predictors")


@dataclass(frozen=True)
class BuildConfig:
    budget_minutes: float = 10.0  # stop measuring new kernels after this long (the fit uses what exists)
    runs: int = 60  # measured inferences per kernel, over `rounds` interleaved rounds
    rounds: int = 3
    warmup: int = 3
    threads: int = 1
    chunk: int = 64  # kernels per runner process; the file is saved after each
    zoo: int = 24  # generated models to learn from (besides the store's artifacts)
    seed: int = 0


def predictor_path(device_name: str, folder: Path | None = None) -> Path:
    return Path(folder or DEFAULT_DIR) / f"{device_name}.json"


def model_feed(path: Path, shapes: dict | None = None, inputs: dict | None = None) -> dict:
    """The arrays a model is split and timed with (free dimensions given as for `bench`)."""
    from edgebench.api import describe
    from edgebench.deploy.inputs import resolve_feeds

    artifact = describe(path)
    _, arrays = resolve_feeds(artifact.inputs, shapes, inputs)
    return arrays


def model_kernels(path: Path, feed: dict) -> tuple[onnx.ModelProto, dict, list[Kernel]]:
    model = onnx.load(str(path))
    shapes = run_shapes(model, feed)
    return model, shapes, split_kernels(model, shapes=shapes)


def weight_mb(model: onnx.ModelProto) -> float:
    from edgebench.export.onnx import count_params

    return count_params(model) * 4 / 1e6


# ---------------------------------------------------------------- the zoo
def zoo_models(n: int, folder: Path, seed: int = 0) -> list[tuple[str, Path]]:
    """Generated models covering the kernel types of CNNs, MLPs and transformers at several sizes."""
    import torch
    from torch import nn

    from edgebench.export.onnx import export_onnx

    rng = np.random.default_rng(seed)
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        family = ("cnn", "mlp", "transformer")[i % 3]
        torch.manual_seed(int(rng.integers(1 << 30)))
        if family == "cnn":
            c, side = int(rng.choice([8, 16, 24, 32, 48])), int(rng.choice([16, 24, 32]))
            layers, ch = [], 3
            for _ in range(int(rng.integers(2, 6))):
                k = int(rng.choice([1, 3, 5]))
                co = int(rng.choice([c, 2 * c]))
                groups = ch if (k > 1 and co == ch and rng.random() < 0.3) else 1
                layers += [nn.Conv2d(ch, co, k, stride=int(rng.choice([1, 1, 2])), padding=k // 2, groups=groups),
                           nn.BatchNorm2d(co), nn.ReLU() if rng.random() < 0.6 else nn.Hardswish()]
                ch = co
            module = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 10))
            example = torch.randn(1, 3, side, side)
        elif family == "mlp":
            dims = [int(rng.choice([32, 64, 128, 256, 512])) for _ in range(int(rng.integers(2, 5)))]
            layers, d = [], 64
            for h in dims:
                layers += [nn.Linear(d, h), nn.ReLU()]
                d = h
            module = nn.Sequential(*layers, nn.Linear(d, 10))
            example = torch.randn(1, 64)
        else:
            d = int(rng.choice([64, 128, 192, 256]))
            heads = int(rng.choice([2, 4]))
            layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=int(rng.choice([2, 4])) * d,
                                               batch_first=True, dropout=0.0)
            module = nn.TransformerEncoder(layer, int(rng.integers(1, 3)), enable_nested_tensor=False)
            example = torch.randn(1, int(rng.choice([16, 32, 64])), d)
        module.eval()
        path = folder / f"zoo-{i:03d}-{family}.onnx"
        if not path.exists():
            export_onnx(module, example, path)
        out.append((f"zoo-{i:03d}-{family}", path))
    return out


# ---------------------------------------------------------------- building
def _load(path: Path) -> dict:
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("format") != PREDICTOR_FORMAT:
            raise EdgebenchError(f"{path} is not an edgebench predictor file")
        return doc
    return {"format": PREDICTOR_FORMAT, "kernels": {}, "models": {}, "meta": {}}


def _save(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def _measure(device, items: list[tuple[str, Path]], cfg: BuildConfig, workdir: Path) -> dict:
    from edgebench.search.lut import LUTConfig, measure_models

    lut_cfg = LUTConfig(runs=cfg.runs, rounds=cfg.rounds, warmup=cfg.warmup, threads=cfg.threads)
    res = measure_models(device, items, lut_cfg, workdir)
    out = {}
    for key, _ in items:
        s = np.asarray(res[key]["samples_ns"], dtype=np.float64) / 1e6
        out[key] = {"p50_ms": float(np.median(s)), "n": int(s.size), "instructions": res[key]["instructions"]}
    return out


def build_predictor(device, out: Path, models: list[tuple[str, Path, dict]], cfg: BuildConfig = BuildConfig(),
                    progress: bool = True, log=print) -> dict:
    """Measure kernels (and whole models) of `models` [(name, path, feed)] on `device`; resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    doc = _load(out)
    doc["meta"] = {"device": device.name, "device_kind": device.kind, "threads": cfg.threads,
                   "runner": "search/lut_runner.py (deployed session settings)", "provenance": "predicted",
                   "facts": doc["meta"].get("facts") or device.facts()}
    pending, whole = {}, []
    for name, path, feed in models:
        try:
            model, shapes, kernels = model_kernels(path, feed)
        except Exception as exc:  # a model that cannot run here is skipped, and said so
            log(f"  skipped {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        for k in kernels:
            if k.key not in doc["kernels"] and k.key not in pending:
                pending[k.key] = (k, model, shapes)
        if name not in doc["models"]:
            whole.append((name, path, model, kernels))
    empty = _empty_kernel_model()
    deadline = time.monotonic() + cfg.budget_minutes * 60
    with tempfile.TemporaryDirectory(prefix="edgebench-predictor-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     disable=not progress) as bar:
        tmp = Path(tmp)
        task = bar.add_task(f"kernels on {device.name}", total=len(pending) + 1)
        if "_empty" not in doc["kernels"]:
            onnx.save(empty, str(tmp / "empty.onnx"))
            doc["kernels"]["_empty"] = {"type": "_empty", "features": {},
                                        **_measure(device, [("_empty", tmp / "empty.onnx")], cfg, tmp / "e")["_empty"]}
        bar.update(task, advance=1)
        keys = list(pending)
        for start in range(0, len(keys), cfg.chunk):
            if time.monotonic() > deadline:
                log(f"  budget of {cfg.budget_minutes:g} min reached: {len(keys) - start} kernels left unmeasured "
                    f"(run again to continue)")
                break
            chunk = keys[start:start + cfg.chunk]
            files = [(key, kernel_file(pending[key][0], pending[key][1], tmp / "k", pending[key][2])) for key in chunk]
            measured = _measure(device, files, cfg, tmp / f"c{start}")
            for key in chunk:
                k = pending[key][0]
                doc["kernels"][key] = {"type": k.type, "features": k.features, **measured[key]}
            _save(doc, out)
            bar.update(task, advance=len(chunk))
        # whole models, for the overhead fit (and to check the predictor against)
        todo = [(n, p) for n, p, _, _ in whole]
        for start in range(0, len(todo), cfg.chunk):
            if time.monotonic() > deadline + 60:
                break
            measured = _measure(device, todo[start:start + cfg.chunk], cfg, tmp / f"w{start}")
            for n, p, model, kernels in whole[start:start + cfg.chunk]:
                doc["models"][n] = {"path": str(p), "kernels": [k.key for k in kernels],
                                    "weight_mb": weight_mb(model), **measured[n]}
            _save(doc, out)
    _save(doc, out)
    return doc


def _empty_kernel_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# ---------------------------------------------------------------- predicting
def _type_code(t: str) -> float:
    import zlib

    return float(zlib.crc32(t.encode()) % 997)  # stable across processes (str hash is salted)


def _x(features: dict) -> np.ndarray:
    return np.log1p(np.asarray([float(features.get(k, 0) or 0) for k in FEATURES], dtype=np.float64))


class KernelPredictor:
    """Fitted from a predictor file; deterministic (fixed seeds), refitted on load."""

    MIN_PER_TYPE = 5  # fewer samples of a type: the all-types regressor answers

    def __init__(self, doc: dict, target: str = "p50_ms"):
        from sklearn.ensemble import RandomForestRegressor

        self.doc, self.target = doc, target
        self.meta = doc.get("meta", {})
        rows = [v for k, v in doc["kernels"].items() if k != "_empty" and v.get(target) is not None]
        if len(rows) < 3:
            raise EdgebenchError(f"the predictor has {len(rows)} measured kernels; build it first "
                                 f"(edgebench predictor build --device {self.meta.get('device', 'NAME')})")
        self.measured = {k: v[target] for k, v in doc["kernels"].items() if v.get(target) is not None}
        self.empty = doc["kernels"].get("_empty", {}).get(target)

        def fit(subset):
            x = np.stack([np.append(_x(r["features"]), _type_code(r["type"])) for r in subset])
            y = np.log(np.asarray([max(r[target], 1e-9) for r in subset]))
            return RandomForestRegressor(n_estimators=100, random_state=0, min_samples_leaf=1).fit(x, y)

        self.by_type = {}
        for t in sorted({r["type"] for r in rows}):
            subset = [r for r in rows if r["type"] == t]
            if len(subset) >= self.MIN_PER_TYPE:
                self.by_type[t] = fit(subset)
        self.fallback = fit(rows)
        self.fit = self._fit_overhead()

    def kernel(self, k: Kernel) -> tuple[float, str]:
        if k.key in self.measured:
            return self.measured[k.key], "measured"
        x = np.append(_x(k.features), _type_code(k.type))[None, :]
        reg = self.by_type.get(k.type)
        if reg is not None:
            return float(np.exp(reg.predict(x)[0])), "regressed"
        return float(np.exp(self.fallback.predict(x)[0])), "fallback"

    def _sum(self, kernels) -> tuple[float, list]:
        parts = [(k, *self.kernel(k)) for k in kernels]
        return sum(p[1] for p in parts), parts

    def _fit_overhead(self) -> dict:
        if self.target == "instructions":
            return {"method": "sum - (n - 1) x empty model", "n_models": 0}
        models = [m for m in self.doc.get("models", {}).values() if m.get(self.target)]
        if len(models) < 4:
            return {"method": "plain sum (fewer than 4 whole models measured)", "c": 0.0, "w": 0.0, "v": 0.0,
                    "n_models": len(models)}
        a, b = [], []
        for m in models:
            s = sum(self.measured.get(k, 0.0) for k in m["kernels"])
            scale = 1.0 / m[self.target]  # relative errors: a 10 us model counts as much as a 10 ms one
            a.append([scale, m["weight_mb"] * scale, len(m["kernels"]) * scale])
            b.append((m[self.target] - s) * scale)
        (c, w, v), *_ = np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)
        return {"method": "sum + c + w * weight_MB + v * n_kernels, least squares of relative error on whole "
                          "models", "c": float(c), "w": float(w), "v": float(v), "n_models": len(models)}

    def predict_model(self, model: onnx.ModelProto, kernels: list[Kernel]) -> dict:
        total, parts = self._sum(kernels)
        if self.target == "instructions":
            value = total - (len(kernels) - 1) * (self.empty or 0)
        else:
            f = self.fit
            value = total + f.get("c", 0.0) + f.get("w", 0.0) * weight_mb(model) + f.get("v", 0.0) * len(kernels)
            value = max(value, self.empty or 0.0)  # no model runs faster than an empty one
        by_type: dict = {}
        for k, v, how in parts:
            slot = by_type.setdefault(k.type, {"type": k.type, "count": 0, self.target: 0.0,
                                               "measured": 0, "regressed": 0, "fallback": 0})
            slot["count"] += 1
            slot[self.target] += v
            slot[how] += 1
        return {"value": float(value), "kernels": len(kernels), "sum_of_kernels": float(total),
                "breakdown": sorted(by_type.values(), key=lambda r: -r[self.target]), "fit": self.fit}


def load_predictor(path: Path, target: str = "p50_ms") -> KernelPredictor:
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"no predictor at {path}: build one with `edgebench predictor build --device NAME`")
    return KernelPredictor(_load(path), target)


def predict_file(predictor_file: Path, model_path: Path, shapes=None, inputs=None) -> dict:
    """Predicted latency (and instructions, for an emulated device's predictor) of any ONNX graph."""
    pred = load_predictor(predictor_file)
    feed = model_feed(model_path, shapes, inputs)
    model, _, kernels = model_kernels(model_path, feed)
    out = {"model": str(model_path), "device": pred.meta.get("device"), "provenance": "predicted",
           "predictor": str(predictor_file)}
    lat = pred.predict_model(model, kernels)
    # under emulation the timed figure is emulated wall time, never a device latency: it keeps its name
    name = "predicted_emulated_wall_ms" if pred.meta.get("device_kind") == "emulated" else "predicted_latency_ms"
    out.update({name: lat["value"], "kernels": lat["kernels"], "breakdown": lat["breakdown"], "fit": lat["fit"]})
    if any(v.get("instructions") for v in pred.doc["kernels"].values()):
        ins = load_predictor(predictor_file, "instructions").predict_model(model, kernels)
        out["predicted_instructions"] = int(ins["value"])
    return out
