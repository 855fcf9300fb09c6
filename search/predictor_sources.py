"""Where the kernel-level predictor learns from (search/predictor.py builds from any of them): the user's models
and the store's artifacts (store_sources), a generated zoo of CNNs, MLPs and small transformers (zoo_sources),
stacks of feed-forward blocks whose weights overflow the cache (streaming_sources) and OFA subnets
(ofa_sources)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.search.predictor import Source, model_feed
from edgebench.types import EdgebenchError


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


def store_sources(given: list[tuple[str, Path]], store: Path, device_name: str, threads: int,
                  log=print) -> list[Source]:
    """The user's models: those given, then every ONNX artifact in the store that still exists (fed the
    shapes it was timed with), all sampled around. A store record of this device at these threads is a
    whole-model measurement already made: it is added to the overhead fit as it is."""
    out = []
    for name, p in given:
        try:
            out.append(Source(name, Path(p), model_feed(Path(p)), around=True))
        except EdgebenchError as exc:  # e.g. free dimensions: such a model needs shapes, skip it
            log(f"edgebench: skipped {name}: {exc}")
    if not Path(store).exists():
        return out
    from edgebench.reports.store import Store

    with Store(store) as s:
        records = [r for r in s.query(status="ok") if r.format == "onnx" and Path(r.artifact_path).exists()]
    seen = {}
    for r in records:
        mine = r.device == device_name and (r.threads or 1) == threads
        value = {"p50_ms": (r.latency_ms or {}).get("p50") if r.device_kind != "emulated" else None,
                 "instructions": r.extra.get("instructions_per_inference"),
                 "instructions_outside_interpreter": r.extra.get("instructions_outside_interpreter")}
        if r.sha256 in seen:
            if mine and seen[r.sha256].record is None and any(value.values()):
                seen[r.sha256].record = value
            continue
        shapes = {f["name"]: tuple(f["shape"]) for f in r.inputs_fed if f.get("name") and f.get("shape")}
        try:
            feed = model_feed(Path(r.artifact_path), shapes or None)
        except EdgebenchError as exc:
            log(f"edgebench: skipped {r.name}: {exc}")
            continue
        src = Source(f"store-{r.name}-{r.sha256[:8]}", Path(r.artifact_path), feed, around=True,
                     record=value if mine and any(value.values()) else None)
        seen[r.sha256] = src
        out.append(src)
    return out


# Feed-forward blocks (384 -> 1536 -> 384, as a transformer's, 4.7 MB of weights each) of the weight-streaming
# models: 4.7 to 38 MB in all, each product's weights small enough to stay cached when it is timed alone.
STREAMING_BLOCKS = (1, 2, 4, 6, 8)


def streaming_sources(folder: Path, n: int = len(STREAMING_BLOCKS)) -> list[Source]:
    """Stacks of transformer feed-forward blocks (a 16-token sequence, width 384, as MiniLM's) whose weights
    (4.7 to 38 MB) overflow the cache that each of their products keeps its 2.4 MB in when timed alone: a
    whole model reads them from memory on every inference. They give the overhead fit's term for that
    (dram_mb, search/predictor_terms.py) models to learn it from; without them only a user's large model had any
    (the local build's 33 models: MiniLM alone, 44% off when predicted without itself, and the held-out
    MiniLM cut to 3 layers 20-30% under). The first n of them; not sampled around."""
    import torch
    from torch import nn

    from edgebench.export.onnx import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for blocks in STREAMING_BLOCKS[:n]:
        path = folder / f"stream-ffn-x{blocks}.onnx"
        if not path.exists():
            torch.manual_seed(blocks)
            layers = []
            for _ in range(blocks):
                layers += [nn.Linear(384, 1536), nn.ReLU(), nn.Linear(1536, 384)]
            export_onnx(nn.Sequential(*layers).eval(), torch.randn(1, 16, 384), path)
        out.append(Source(path.stem, path, model_feed(path)))
    return out


def zoo_sources(n: int, folder: Path, seed: int = 0, around: bool = True) -> list[Source]:
    """The generated zoo, a small search space of CNNs, MLPs and transformers: sampled around by default."""
    return [Source(name, p, model_feed(p), around=around) for name, p in zoo_models(n, folder, seed)]


def ofa_sources(folder: Path, n_random: int = 4, seed: int = 0, spec=None) -> list[Source]:
    """A search space's configurations: the largest, the smallest and `n_random` random subnets of the OFA
    space (the default OFASpec unless given), sampled around, so predictions for the subnets a search visits
    interpolate."""
    import torch

    from edgebench.export.onnx import export_onnx
    from edgebench.train.ofa import OFASpec, SubNet

    spec = spec or OFASpec()
    rng = np.random.default_rng(seed)
    archs = [("largest", spec.largest()), ("smallest", spec.smallest())]
    archs += [(f"random{i}", spec.random_arch(rng)) for i in range(n_random)]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, arch in archs:
        path = folder / f"ofa-{name}-seed{seed}.onnx"
        if not path.exists():
            torch.manual_seed(0)
            export_onnx(SubNet(spec, arch).eval(), torch.randn(1, spec.in_channels, arch["r"], arch["r"]), path)
        out.append(Source(f"ofa-{name}-seed{seed}", path, model_feed(path), around=True))
    return out
