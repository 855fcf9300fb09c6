"""InstaTune: make pretrained MiniLM elastic while fine-tuning it, then cut standalone subnetworks out of it.

InstaTune (Intel Labs, 2023) does not train a supernet from scratch: it fine-tunes a pretrained model so that
its subnetworks (fewer layers, fewer heads, narrower FFN) work too. Each step trains the full network and
sampled subnetworks, and distils the full network into them:

    loss(sub) = (CE(sub) + CE(full)) / 2 + KL(p_full || p_sub at T) * T^2        (p_full detached)

summed over the subnets of a step (sandwich sampling: the smallest one and random ones; the full network
is the largest). Before the elastic phase, heads and FFN neurons of every layer are reordered by a gradient
importance score (DynaBERT, DyNAS-T), so "the first k heads" are the k most useful ones: plain fine-tuning
gives subnets that fall to ~60-70%, and gradient ranking beats weight magnitude (dependency notes).

The model, its importance reordering and subnet extraction live in train/minilm.py.
Training batches hold sequences of similar length with their padding cut, and run under bf16 autocast where
the CPU has AMX units (`InstaTuneConfig.length_buckets`, `autocast`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgebench.train.minilm import (BertDims, ElasticChoices, MiniLMClassifier, accuracy, importance_scores,
                                    pretrained_minilm, reorder_, trim_padding)
from edgebench.types import EdgebenchError

CHECKPOINT_FORMAT = "edgebench-instatune-1"


# ---------------------------------------------------------------- elastic fine-tuning


@dataclass(frozen=True)
class InstaTuneConfig:
    steps: int = field(default=700, metadata={"help": "elastic fine-tuning steps (each trains full + sampled subnets)"})
    warmup_steps: int = field(default=100, metadata={"help": "plain fine-tuning steps of the full network before "
                                                              "importance scoring (the head must mean something)"})
    importance_batches: int = field(default=16, metadata={"help": "training batches the importance score sums over"})
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (linear warm-up 10%, linear decay)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    temperature: float = field(default=5.0, metadata={"help": "distillation temperature T (loss x T^2)"})
    n_random: int = field(default=1, metadata={"help": "random subnets per step, besides the smallest (sandwich)"})
    max_length: int = field(default=64, metadata={"help": "tokens per sequence (truncate / pad)"})
    max_train: int = field(default=0, metadata={"help": "use only the first N training rows (0: all)"})
    max_eval: int = field(default=0, metadata={"help": "evaluate on the first N val/test rows (0: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the head, the batches and the subnet sampling"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads while training"})
    length_buckets: int = field(default=50, metadata={
        "help": "sort every N batches' rows by length and cut each batch's padding (0: plain random batches, "
                "padded to max_length)"})
    autocast: str = field(default="auto", metadata={
        "help": "mixed precision while training: bf16, off, or auto (bf16 where the CPU has AMX bf16 units)"})

    def check(self) -> None:
        for name in ("steps", "batch_size", "max_length", "threads"):
            if getattr(self, name) < 1:
                raise EdgebenchError(f"instatune train: {name} must be >= 1 (got {getattr(self, name)})")
        if self.autocast not in ("auto", "bf16", "off"):
            raise EdgebenchError(f"instatune train: autocast must be auto, bf16 or off (got {self.autocast!r})")
        for name in ("warmup_steps", "importance_batches", "n_random", "max_train", "max_eval", "length_buckets"):
            if getattr(self, name) < 0:
                raise EdgebenchError(f"instatune train: {name} must be >= 0 (got {getattr(self, name)})")
        if self.lr <= 0 or self.temperature <= 0:
            raise EdgebenchError("instatune train: lr and temperature must be > 0")


def instatune_loss(sub_logits, full_logits, y, temperature: float):
    """InstaTune's loss for one subnet: (CE(sub) + CE(full)) / 2 + KL(p_full || p_sub at T) x T^2."""
    t = temperature
    kl = F.kl_div(F.log_softmax(sub_logits / t, -1), F.log_softmax(full_logits.detach() / t, -1),
                  reduction="batchmean", log_target=True)
    return (F.cross_entropy(sub_logits, y) + F.cross_entropy(full_logits, y)) / 2 + kl * t * t


@dataclass
class Supernet:
    """A fine-tuned elastic network and everything needed to use it without retraining."""

    model: MiniLMClassifier
    choices: ElasticChoices
    labels: tuple
    config: dict  # train + data config that made it
    metrics: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def max_length(self) -> int:
        return int(self.config["train"]["max_length"])


def save_supernet(sn: Supernet, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "dims": asdict(sn.model.dims), "choices": asdict(sn.choices),
                "labels": list(sn.labels), "config": sn.config, "metrics": sn.metrics,
                "state_dict": sn.model.state_dict()}, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint
    sn.path = path
    return path


def load_supernet(path: str | Path) -> Supernet:
    from edgebench.train.base import read_checkpoint

    path = Path(path)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, "InstaTune supernet checkpoint")
    model = MiniLMClassifier(BertDims.from_dict(ckpt["dims"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return Supernet(model, ElasticChoices.from_dict(ckpt["choices"]), tuple(ckpt["labels"]), ckpt["config"],
                    ckpt.get("metrics", {}), path)


@dataclass(frozen=True)
class TokenData:
    """Tokenised splits: ids (n, max_length) int64 and labels."""

    labels: tuple
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str


def token_data(data_cfg: dict, max_length: int, max_train: int = 0, max_eval: int = 0,
               with_train: bool = True) -> TokenData:
    """with_train=False leaves the training split untokenised (empty): search and deployment need only
    validation and test."""
    from edgebench.train.text import load_text, load_tokenizer, tokenize

    splits = load_text(**data_cfg)
    tok = load_tokenizer()

    def cut(texts, y, n):
        return (texts[:n], y[:n]) if n else (texts, y)

    tr, va, te = (cut(splits.train_text, splits.train_y, max_train), cut(splits.val_text, splits.val_y, max_eval),
                  cut(splits.test_text, splits.test_y, max_eval))
    if not with_train:
        tr = ((), tr[1][:0])
    train_x = tokenize(tok, tr[0], max_length) if tr[0] else np.zeros((0, max_length), np.int64)
    return TokenData(splits.labels, train_x, tr[1], tokenize(tok, va[0], max_length),
                     va[1], tokenize(tok, te[0], max_length), te[1], splits.source)


def _batches(lengths: np.ndarray, batch: int, rng: np.random.Generator, bucket: int = 0):
    """Endless shuffled mini-batches of indices, epoch after epoch. With bucket = B > 0, every B consecutive
    batches of an epoch pool their rows, sort them by length and are cut again (in shuffled order): a batch
    holds sequences of similar length, so trim_padding cuts most of its padding."""
    n = len(lengths)
    while True:
        perm = rng.permutation(n)
        batches = [perm[i:i + batch] for i in range(0, n - batch + 1 if n >= batch else 1, batch)]
        if bucket > 0:
            pooled = []
            for g in range(0, len(batches), bucket):
                rows = np.concatenate(batches[g:g + bucket])
                rows = rows[np.argsort(lengths[rows], kind="stable")]
                group = [rows[i:i + batch] for i in range(0, len(rows), batch)]
                pooled += [group[j] for j in rng.permutation(len(group))]
            batches = pooled
        yield from batches


def autocast_dtype(setting: str):
    """torch dtype for CPU autocast: "bf16", "off", or "auto" = bf16 only where the CPU has AMX tiles
    (bf16 matrix units; without them bf16 is no faster than fp32 on a CPU)."""
    if setting == "bf16":
        return torch.bfloat16
    if setting == "auto":
        try:
            return torch.bfloat16 if torch.cpu._is_amx_tile_supported() else None
        except AttributeError:
            return None
    return None


def _linear_schedule(opt, total: int, warm_frac: float = 0.1):
    warm = max(1, int(total * warm_frac))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))


def instatune(cfg: InstaTuneConfig, data_cfg: dict | None = None, choices: ElasticChoices = ElasticChoices(),
              out: Path | None = None, progress: bool = True, log=print) -> Supernet:
    """Fine-tune MiniLM elastically; writes `out` (and `out`.partial every 100 steps while running)."""
    cfg.check()
    data_cfg = dict(data_cfg or {})
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = token_data(data_cfg, cfg.max_length, cfg.max_train, cfg.max_eval)
    model = pretrained_minilm(len(data.labels), cfg.seed)
    dims = model.dims
    if max(choices.layers) > dims.layers or max(choices.heads) > max(dims.heads) or max(choices.ffn) > max(dims.ffn):
        raise EdgebenchError(f"elastic choices {asdict(choices)} exceed the model ({dims.layers} layers, "
                             f"{max(dims.heads)} heads, FFN {max(dims.ffn)})")
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    batches = _batches((data.train_x != 0).sum(1), cfg.batch_size, rng, cfg.length_buckets)
    dtype = autocast_dtype(cfg.autocast)

    def fwd(ids, arch=None):  # logits in fp32 whatever the autocast
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return model(ids, arch).float()

    def batch():
        idx = next(batches)
        return trim_padding(x[idx]), y[idx]

    config = {"train": asdict(cfg), "data": data_cfg, "data_source": data.source}
    sn = Supernet(model, choices, data.labels, config)
    metrics: dict = {"log": []}
    t0 = time.perf_counter()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  disable=not progress, transient=False) as bar:
        # 1. plain fine-tuning of the full network, so the importance score reads a trained head
        if cfg.warmup_steps:
            task = bar.add_task("instatune warm-up (full)", total=cfg.warmup_steps, loss=float("nan"))
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            sched = _linear_schedule(opt, cfg.warmup_steps)
            model.train()
            for _ in range(cfg.warmup_steps):
                xb, yb = batch()
                loss = F.cross_entropy(fwd(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(task, advance=1, loss=loss.item())
        # 2. reorder heads and FFN neurons by importance (DynaBERT): subnets keep the most useful ones
        if cfg.importance_batches:
            imp = [batch() for _ in range(cfg.importance_batches)]
            reorder_(model, *importance_scores(model, imp))
        # 3. elastic fine-tuning: full + smallest + random subnets per step, InstaTune's loss
        task = bar.add_task("instatune elastic", total=cfg.steps, loss=float("nan"))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        sched = _linear_schedule(opt, cfg.steps)
        small = choices.smallest()
        for step in range(1, cfg.steps + 1):
            model.train()
            xb, yb = batch()
            full = fwd(xb)
            subs = [small] + [choices.sample(rng) for _ in range(cfg.n_random)]
            loss = sum(instatune_loss(fwd(xb, a), full, yb, cfg.temperature) for a in subs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(task, advance=1, loss=loss.item())
            if step % 100 == 0 or step == cfg.steps:
                entry = {"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.perf_counter() - t0, 1)}
                metrics["log"].append(entry)
                if out is not None and step < cfg.steps:
                    sn.metrics = metrics
                    save_supernet(sn, Path(str(out) + ".partial"))
                if not progress:
                    log(f"instatune step {step}/{cfg.steps} loss {entry['loss']} ({entry['elapsed_s']} s)")
    model.eval()
    metrics["train_s"] = round(time.perf_counter() - t0, 1)
    metrics["autocast"] = str(dtype).replace("torch.", "") if dtype is not None else "off"
    metrics["val_accuracy_full"] = accuracy(model, data.val_x, data.val_y)
    metrics["val_accuracy_smallest"] = accuracy(model, data.val_x, data.val_y, small)
    metrics["test_accuracy_full"] = accuracy(model, data.test_x, data.test_y)
    metrics["test_accuracy_smallest"] = accuracy(model, data.test_x, data.test_y, small)
    metrics["n_train"], metrics["n_val"], metrics["n_test"] = len(x), len(data.val_y), len(data.test_y)
    sn.metrics = metrics
    if out is not None:
        save_supernet(sn, out)
        Path(str(out) + ".partial").unlink(missing_ok=True)
    return sn
