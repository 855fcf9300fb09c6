"""Progressive shrinking of an OFA supernet (train/ofa.py), and its checkpoint: the full network first, then
elastic kernel, then depth, then expand ratio, each later phase training sampled subnetworks with knowledge
distillation from the full network (Cai et al., ICLR 2020)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from edgebench.train.ofa import OFASpec, OFASupernet, resize
from edgebench.types import EdgebenchError

CKPT_FORMAT = "edgebench-ofa-supernet-1"


# ====================================================================== progressive shrinking
@dataclass(frozen=True)
class ShrinkConfig:
    """Progressive shrinking: epochs per phase and the optimiser (the [train] table of an OFA config)."""

    full_epochs: float = field(default=3.0, metadata={"help": "epochs of the full network (fractions allowed)"})
    kernel_epochs: float = field(default=1.0, metadata={"help": "epochs with elastic kernel"})
    depth_epochs: float = field(default=1.0, metadata={"help": "epochs with elastic kernel and depth"})
    expand_epochs: float = field(default=2.0, metadata={"help": "epochs with everything elastic"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate of the full-network phase"})
    shrink_lr: float = field(default=1.5e-3, metadata={"help": "learning rate of the shrinking phases"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    kd_ratio: float = field(default=1.0, metadata={"help": "weight of the distillation loss from the full network"})
    subnets_per_step: int = field(default=1, metadata={"help": "sampled subnetworks whose gradients add up per step"})
    sandwich: tuple = field(default=(), metadata={
        "help": "subnets every shrinking step trains besides the random ones: 'largest' and/or 'smallest' of "
                "the phase (BigNAS's sandwich rule)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the cross-entropy"})
    bn_calib_images: int = field(default=2000, metadata={"help": "training images for BN recalibration"})
    threads: int = field(default=1, metadata={"help": "torch threads for training"})
    seed: int = field(default=0, metadata={"help": "seed"})

    def __post_init__(self):
        if min(self.full_epochs, self.kernel_epochs, self.depth_epochs, self.expand_epochs) < 0:
            raise EdgebenchError("ofa train: epochs must be >= 0")
        if set(self.sandwich) - {"largest", "smallest"}:
            raise EdgebenchError(f"ofa train: sandwich takes 'largest' and/or 'smallest', got {list(self.sandwich)}")
        if not 0 <= self.label_smoothing < 1:
            raise EdgebenchError("ofa train: label_smoothing must be within [0, 1)")
        if self.batch_size < 1 or self.subnets_per_step < 1 or self.bn_calib_images < 1 or self.threads < 1:
            raise EdgebenchError("ofa train: batch_size, subnets_per_step, bn_calib_images, threads must be >= 1")


def _phases(spec: OFASpec, cfg: ShrinkConfig):
    """(name, epochs, lr, choices) of every phase; choices narrow what random subnets may use."""
    big_k, big_e, big_d = (max(spec.ks_list),), (max(spec.expand_list),), (spec.max_depth,)
    return [
        ("full", cfg.full_epochs, cfg.lr, dict(ks=big_k, e=big_e, d=big_d)),
        ("kernel", cfg.kernel_epochs, cfg.shrink_lr, dict(ks=spec.ks_list, e=big_e, d=big_d)),
        ("depth", cfg.depth_epochs, cfg.shrink_lr, dict(ks=spec.ks_list, e=big_e, d=spec.depth_list)),
        ("expand", cfg.expand_epochs, cfg.shrink_lr, dict(ks=spec.ks_list, e=spec.expand_list, d=spec.depth_list)),
    ]


def _phase_extreme(choices: dict, spec: OFASpec, r: int, pick=min) -> dict:
    """The smallest (pick=min) or largest (max) subnet a shrinking phase may sample, at the step's resolution."""
    return {"ks": [pick(choices["ks"])] * spec.n_slots, "e": [pick(choices["e"])] * spec.n_slots,
            "d": [pick(choices["d"])] * spec.n_stages, "r": r}


def train_supernet(supernet: OFASupernet, x_train: np.ndarray, y_train: np.ndarray, cfg: ShrinkConfig,
                   progress: bool = True, log=print) -> dict:
    """Progressive shrinking in place. Every step draws a resolution; after the full phase every step
    trains `subnets_per_step` random subnets (within the phase's choices) with KD from the full network
    (a frozen copy taken when the full phase ends)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    spec = supernet.spec
    torch.set_num_threads(cfg.threads)
    x_all = torch.from_numpy(x_train)
    y_all = torch.from_numpy(y_train.astype(np.int64))
    n = len(x_all)
    # channels-last halves the time of the depthwise convolutions' backward pass on CPU (measured)
    supernet.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    teacher = None
    history = {}
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), disable=not progress) as bar:
        for name, epochs, lr, choices in _phases(spec, cfg):
            steps = int(round(epochs * steps_per_epoch))
            if steps == 0:
                continue
            if name == "expand":
                supernet.sort_channels()  # before width shrinks: keep the important channels first
            if name != "full" and teacher is None and cfg.kd_ratio > 0:
                teacher = copy.deepcopy(supernet).eval()
                teacher.set_arch(spec.largest())
                for p in teacher.parameters():
                    p.requires_grad_(False)
            opt = torch.optim.AdamW(supernet.parameters(), lr=lr, weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                        pct_start=0.15 if name == "full" else 0.05)
            task = bar.add_task(f"ofa {name}", total=steps, loss=float("nan"))
            supernet.train()
            perm = torch.from_numpy(rng.permutation(n))
            pos, last = 0, float("nan")
            for _ in range(steps):
                if pos + cfg.batch_size > n:
                    perm, pos = torch.from_numpy(rng.permutation(n)), 0
                idx = perm[pos:pos + cfg.batch_size]
                pos += cfg.batch_size
                r = int(rng.choice(spec.resolutions))
                xb, yb = resize(x_all[idx], r).contiguous(memory_format=torch.channels_last), y_all[idx]
                soft = None
                if teacher is not None and name != "full":
                    with torch.no_grad():
                        soft = F.softmax(teacher(xb), -1)
                opt.zero_grad(set_to_none=True)
                total = 0.0
                if name == "full":
                    archs = [spec.largest()]
                else:
                    archs = [spec.random_arch(rng, **choices) for _k in range(cfg.subnets_per_step)]
                    if "largest" in cfg.sandwich:
                        archs.insert(0, _phase_extreme(choices, spec, r, max))
                    if "smallest" in cfg.sandwich:
                        archs.append(_phase_extreme(choices, spec, r, min))
                for arch in archs:
                    supernet.set_arch(arch)
                    out = supernet(xb)
                    loss = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
                    if soft is not None:
                        loss = loss + cfg.kd_ratio * torch.mean(torch.sum(-soft * F.log_softmax(out, -1), -1))
                    loss.backward()
                    total += loss.item()
                opt.step()
                sched.step()
                last = 0.9 * last + 0.1 * total if last == last else total
                bar.update(task, advance=1, loss=last)
            history[name] = {"steps": steps, "epochs": epochs, "final_loss": last,
                             "elapsed_s": time.perf_counter() - t0}
            log(f"ofa {name}: {steps} steps, loss {last:.3f}, {time.perf_counter() - t0:.0f} s")
    supernet.to(memory_format=torch.contiguous_format)
    supernet.set_arch(spec.largest())
    supernet.eval()
    return {"phases": history, "train_s": time.perf_counter() - t0}


# ====================================================================== checkpoints
def save_supernet(supernet: OFASupernet, path, metrics: dict | None = None, config: dict | None = None):
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CKPT_FORMAT, "spec": supernet.spec.to_dict(), "config": config or {},
                "metrics": metrics or {}, "state_dict": supernet.state_dict()}, path)
    return path


def load_supernet(path) -> tuple[OFASupernet, dict]:
    """(supernet, checkpoint dict without the weights); a missing or foreign file is one line."""
    from pathlib import Path

    from edgebench.train.base import read_checkpoint

    ckpt = read_checkpoint(Path(path), CKPT_FORMAT, "OFA supernet checkpoint")
    net = OFASupernet(OFASpec.from_dict(ckpt["spec"]))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    ckpt.pop("state_dict")
    return net, ckpt
