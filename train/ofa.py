"""An Once-for-All (Cai et al., ICLR 2020) MobileNetV3-style elastic supernet sized for a CPU.

One network holds every subnetwork of the space
    kernel size  ks in {3, 5, 7}   per block (depthwise kernel; 5 and 3 are transformed centres of the 7x7)
    expand ratio e  in {3, 4, 6}   per block (middle channels = input channels x e, most important first)
    depth        d  in {2, 3, 4}   per stage (the first d blocks of the stage are kept)
    resolution   r  in {20, 24, 28} (the input image is resized to r x r)
An arch is OFA's dict {"ks": [...], "e": [...], "d": [...], "r": R}: ks and e have one entry per block
slot (stages x max depth, slots beyond a stage's depth are ignored), d one per stage.

Training (train/ofa_train.py) is progressive shrinking: the full network first, then elastic kernel, then depth, then
expand ratio (after sorting middle channels by importance), each later phase training a randomly sampled
subnetwork per step with knowledge distillation from the full network. A subnetwork taken out with
get_active_subnet() is a standalone module with copied weights; its BatchNorm statistics must be
recalibrated on training images (recalibrate_bn) before it is evaluated or exported: the supernet's
running statistics belong to the full network, and without recalibration subnets fall to about 30%.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.train.ofa_blocks import Head, MBConv, Pool, Stem, SubNet, make_divisible  # noqa: F401 (their home for callers)
from edgebench.types import EdgebenchError



@dataclass(frozen=True)
class OFASpec:
    """The supernet's shape and its elastic choices (the [model] table of an OFA run config)."""

    stem_width: int = field(default=8, metadata={"help": "channels of the 3x3 stem convolution"})
    stem_stride: int = field(default=1, metadata={"help": "stride of the stem"})
    widths: tuple = field(default=(16, 24, 32, 48), metadata={"help": "output channels of every stage"})
    strides: tuple = field(default=(2, 2, 1, 2), metadata={"help": "stride of every stage's first block"})
    se: tuple = field(default=(False, True, True, True), metadata={"help": "squeeze-excite per stage"})
    hswish: tuple = field(default=(False, True, True, True), metadata={"help": "hardswish (else relu) per stage"})
    final_width: int = field(default=96, metadata={"help": "channels of the final 1x1 expansion"})
    ks_list: tuple = field(default=(3, 5, 7), metadata={"help": "elastic depthwise kernel sizes"})
    expand_list: tuple = field(default=(3, 4, 6), metadata={"help": "elastic expand ratios"})
    depth_list: tuple = field(default=(2, 3, 4), metadata={"help": "elastic depths per stage"})
    resolutions: tuple = field(default=(20, 24, 28), metadata={"help": "elastic input resolutions"})
    in_channels: int = field(default=1, metadata={"help": "image channels"})
    num_classes: int = field(default=10, metadata={"help": "classes"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier (training only)"})

    def __post_init__(self):
        n = len(self.widths)
        for name in ("strides", "se", "hswish"):
            if len(getattr(self, name)) != n:
                raise EdgebenchError(f"ofa model: {name} needs one entry per stage ({n}), got {getattr(self, name)}")
        for name in ("ks_list", "expand_list", "depth_list", "resolutions"):
            vals = getattr(self, name)
            if not vals or list(vals) != sorted(set(vals)) or any(int(v) <= 0 for v in vals):
                raise EdgebenchError(f"ofa model: {name} must be distinct increasing positive values, got {vals}")
        if any(k % 2 == 0 for k in self.ks_list):
            raise EdgebenchError(f"ofa model: kernel sizes must be odd, got {self.ks_list}")

    @property
    def n_stages(self) -> int:
        return len(self.widths)

    @property
    def max_depth(self) -> int:
        return max(self.depth_list)

    @property
    def n_slots(self) -> int:
        return self.n_stages * self.max_depth

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "OFASpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EdgebenchError(f"ofa model: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    # -------------------------------------------------- arch helpers
    def largest(self) -> dict:
        return {"ks": [max(self.ks_list)] * self.n_slots, "e": [max(self.expand_list)] * self.n_slots,
                "d": [self.max_depth] * self.n_stages, "r": max(self.resolutions)}

    def smallest(self) -> dict:
        return {"ks": [min(self.ks_list)] * self.n_slots, "e": [min(self.expand_list)] * self.n_slots,
                "d": [min(self.depth_list)] * self.n_stages, "r": min(self.resolutions)}

    def random_arch(self, rng: np.random.Generator, ks=None, e=None, d=None, r=None) -> dict:
        """A uniformly random arch; the choice lists can be narrowed (progressive shrinking)."""
        ks, e, d, r = ks or self.ks_list, e or self.expand_list, d or self.depth_list, r or self.resolutions
        return {"ks": [int(rng.choice(ks)) for _ in range(self.n_slots)],
                "e": [int(rng.choice(e)) for _ in range(self.n_slots)],
                "d": [int(rng.choice(d)) for _ in range(self.n_stages)],
                "r": int(rng.choice(r))}

    def blocks(self, arch: dict) -> list[dict]:
        """The active blocks of an arch with their shapes: what a latency table is keyed by."""
        out = []
        side = _out_side(int(arch["r"]), self.stem_stride)
        c_in = self.stem_width
        for s in range(self.n_stages):
            for j in range(int(arch["d"][s])):
                slot = s * self.max_depth + j
                stride = self.strides[s] if j == 0 else 1
                o_side = _out_side(side, stride)
                out.append({"slot": slot, "stage": s, "in_side": side, "out_side": o_side, "c_in": c_in,
                            "c_out": self.widths[s], "expand": int(arch["e"][slot]), "kernel": int(arch["ks"][slot]),
                            "stride": stride, "idskip": int(stride == 1 and c_in == self.widths[s]),
                            "se": bool(self.se[s]), "hswish": bool(self.hswish[s])})
                side, c_in = o_side, self.widths[s]
        return out


def _out_side(side: int, stride: int) -> int:
    return (side - 1) // stride + 1  # 'same' padding (k // 2) for odd k


# ====================================================================== dynamic (elastic) modules
def _bn(x, bn: nn.BatchNorm2d, c: int):
    """BatchNorm over the first c channels of `bn` (running statistics updated in place in training)."""
    training = bn.training
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if training and bn.momentum is None:  # cumulative average, as nn.BatchNorm2d does (BN recalibration)
        bn.num_batches_tracked += 1
        momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        training, momentum, bn.eps)


class DynamicMBConv(nn.Module):
    """An MBConv at its largest (kernel max, expand max) whose active kernel and expand ratio can shrink."""

    def __init__(self, c_in, c_out, stride, se, hswish, ks_list, expand_list):
        super().__init__()
        self.c_in, self.c_out, self.stride, self.has_se, self.hswish = c_in, c_out, stride, se, hswish
        self.ks_list, self.expand_list = sorted(ks_list), sorted(expand_list)
        kmax, mid = max(ks_list), make_divisible(c_in * max(expand_list))
        self.max_mid = mid
        self.expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, kmax, stride, kmax // 2, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid)
        # OFA's kernel transformation: a k x k kernel is the centre of the next larger kernel (already
        # transformed), times a learned k^2 x k^2 matrix shared by all channels of the layer.
        for big, small in zip(self.ks_list[::-1], self.ks_list[::-1][1:]):
            self.register_parameter(f"transform_{big}to{small}", nn.Parameter(torch.eye(small * small)))
        if se:
            self.se_reduce = nn.Conv2d(mid, make_divisible(mid // 4), 1)
            self.se_expand = nn.Conv2d(make_divisible(mid // 4), mid, 1)
        self.project = nn.Conv2d(mid, c_out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.active_kernel, self.active_expand = max(ks_list), max(expand_list)

    def act(self, x):
        return F.hardswish(x) if self.hswish else F.relu(x)

    def active_mid(self) -> int:
        return make_divisible(self.c_in * self.active_expand)

    def active_dw_weight(self, mid: int) -> torch.Tensor:
        w = self.dw.weight[:mid]
        k = max(self.ks_list)
        for big, small in zip(self.ks_list[::-1], self.ks_list[::-1][1:]):
            if k <= self.active_kernel:
                break
            start = (big - small) // 2
            centre = w[:, :, start:start + small, start:start + small].reshape(mid, small * small)
            w = F.linear(centre, getattr(self, f"transform_{big}to{small}")).reshape(mid, 1, small, small)
            k = small
        return w

    def forward(self, x):
        mid = self.active_mid()
        k = self.active_kernel
        y = self.act(_bn(F.conv2d(x, self.expand_conv.weight[:mid]), self.expand_bn, mid))
        y = F.conv2d(y, self.active_dw_weight(mid), None, self.stride, k // 2, 1, mid)
        y = self.act(_bn(y, self.dw_bn, mid))
        if self.has_se:
            red = make_divisible(mid // 4)
            s = y.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_reduce.weight[:red, :mid], self.se_reduce.bias[:red]))
            s = F.hardsigmoid(F.conv2d(s, self.se_expand.weight[:mid, :red], self.se_expand.bias[:mid]))
            y = y * s
        y = _bn(F.conv2d(y, self.project.weight[:, :mid]), self.project_bn, self.c_out)
        return x + y if self.residual else y

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder middle channels by importance (L1 norm of their projection weights), most important
        first, so that a smaller expand ratio keeps the channels that matter most (OFA)."""
        order = torch.argsort(self.project.weight.abs().sum((0, 2, 3)), descending=True)
        self.project.weight.copy_(self.project.weight[:, order])
        for t in (self.expand_conv.weight, self.dw.weight):
            t.copy_(t[order])
        for bn in (self.expand_bn, self.dw_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        if self.has_se:
            self.se_expand.weight.copy_(self.se_expand.weight[order])
            self.se_expand.bias.copy_(self.se_expand.bias[order])
            self.se_reduce.weight.copy_(self.se_reduce.weight[:, order])
            # and the SE's own hidden units, by the L1 norm of their outgoing weights
            red_order = torch.argsort(self.se_expand.weight.abs().sum((0, 2, 3)), descending=True)
            self.se_expand.weight.copy_(self.se_expand.weight[:, red_order])
            self.se_reduce.weight.copy_(self.se_reduce.weight[red_order])
            self.se_reduce.bias.copy_(self.se_reduce.bias[red_order])

    @torch.no_grad()
    def export_into(self, block: MBConv) -> None:
        """Copy the active weights into a static MBConv of the same active shape."""
        mid = self.active_mid()
        block.expand_conv[0].weight.copy_(self.expand_conv.weight[:mid])
        block.dw[0].weight.copy_(self.active_dw_weight(mid))
        _copy_bn(block.expand_conv[1], self.expand_bn, mid)
        _copy_bn(block.dw[1], self.dw_bn, mid)
        if self.has_se:
            red = make_divisible(mid // 4)
            block.se.reduce.weight.copy_(self.se_reduce.weight[:red, :mid])
            block.se.reduce.bias.copy_(self.se_reduce.bias[:red])
            block.se.expand.weight.copy_(self.se_expand.weight[:mid, :red])
            block.se.expand.bias.copy_(self.se_expand.bias[:mid])
        block.project[0].weight.copy_(self.project.weight[:, :mid])
        _copy_bn(block.project[1], self.project_bn, self.c_out)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class OFASupernet(nn.Module):
    """The elastic network. set_active_subnet(ks, e, d) selects a subnetwork; forward runs it."""

    def __init__(self, spec: OFASpec = OFASpec()):
        super().__init__()
        self.spec = spec
        self.stem = Stem(spec.in_channels, spec.stem_width, spec.stem_stride)
        blocks, c_in = [], spec.stem_width
        for s in range(spec.n_stages):
            for j in range(spec.max_depth):
                blocks.append(DynamicMBConv(c_in, spec.widths[s], spec.strides[s] if j == 0 else 1, spec.se[s],
                                            spec.hswish[s], spec.ks_list, spec.expand_list))
                c_in = spec.widths[s]
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(spec.widths[-1], spec.final_width)
        self.pool = Pool()
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.final_width, spec.num_classes)
        self.active_depth = [spec.max_depth] * spec.n_stages

    def set_active_subnet(self, ks=None, e=None, d=None) -> None:
        """OFA's call: per-slot kernel sizes and expand ratios, per-stage depths (None: unchanged; an int:
        every slot/stage)."""
        n, st = self.spec.n_slots, self.spec.n_stages
        if ks is not None:
            ks = [ks] * n if isinstance(ks, int) else list(ks)
            for b, k in zip(self.blocks, ks):
                if k not in self.spec.ks_list:
                    raise EdgebenchError(f"kernel size {k} is not in {list(self.spec.ks_list)}")
                b.active_kernel = int(k)
        if e is not None:
            e = [e] * n if isinstance(e, int) else list(e)
            for b, v in zip(self.blocks, e):
                if v not in self.spec.expand_list:
                    raise EdgebenchError(f"expand ratio {v} is not in {list(self.spec.expand_list)}")
                b.active_expand = int(v)
        if d is not None:
            d = [d] * st if isinstance(d, int) else list(d)
            if any(v not in self.spec.depth_list for v in d):
                raise EdgebenchError(f"depths {d} not all in {list(self.spec.depth_list)}")
            self.active_depth = [int(v) for v in d]

    def set_arch(self, arch: dict) -> None:
        self.set_active_subnet(arch["ks"], arch["e"], arch["d"])

    def active_arch(self, r: int | None = None) -> dict:
        return {"ks": [b.active_kernel for b in self.blocks], "e": [b.active_expand for b in self.blocks],
                "d": list(self.active_depth), "r": int(r or max(self.spec.resolutions))}

    def forward(self, x):
        x = self.stem(x)
        md = self.spec.max_depth
        for s, depth in enumerate(self.active_depth):
            for j in range(depth):
                x = self.blocks[s * md + j](x)
        return self.classifier(self.dropout(self.pool(self.head(x))))

    @torch.no_grad()
    def get_active_subnet(self, r: int | None = None) -> SubNet:
        """The active subnetwork as a standalone module with copied weights (BN statistics still the
        supernet's: recalibrate them with recalibrate_bn before use)."""
        arch = self.active_arch(r)
        sub = SubNet(self.spec, arch)
        sub.stem.load_state_dict(self.stem.state_dict())
        md = self.spec.max_depth
        slots = [s * md + j for s, depth in enumerate(self.active_depth) for j in range(depth)]
        for block, slot in zip(sub.blocks, slots):
            self.blocks[slot].export_into(block)
        sub.head.load_state_dict(self.head.state_dict())
        sub.classifier.load_state_dict(self.classifier.state_dict())
        return sub.eval()

    def sort_channels(self) -> None:
        for b in self.blocks:
            b.sort_channels()


# ====================================================================== data helpers
def resize(x: torch.Tensor, r: int) -> torch.Tensor:
    """Images to r x r (bilinear, antialiased when shrinking): training, evaluation and the deployed data
    all use this one function."""
    if x.shape[-1] == r and x.shape[-2] == r:
        return x
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)


def resize_np(x: np.ndarray, r: int, batch: int = 2048) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([resize(torch.from_numpy(x[i:i + batch]), r).numpy()
                               for i in range(0, len(x), batch)]) if len(x) else x


@torch.no_grad()
def recalibrate_bn(module: nn.Module, x: np.ndarray, r: int, batch: int = 250) -> nn.Module:
    """Recompute every BatchNorm's running mean/var as the average of per-batch statistics over `x`
    (training images) resized to r, as OFA does: the statistics of this subnetwork, not of the full
    supernet (exact averages over `x` when its length is a multiple of `batch`)."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    module.train().to(memory_format=torch.channels_last)  # as in training: faster depthwise convolutions
    for i in range(0, len(x), batch):
        module(resize(torch.from_numpy(x[i:i + batch]), r).contiguous(memory_format=torch.channels_last))
    for bn, m in zip(bns, saved):
        bn.momentum = m
    return module.to(memory_format=torch.contiguous_format).eval()


@torch.inference_mode()
def evaluate(module: nn.Module, x: np.ndarray, y: np.ndarray, r: int, batch: int = 500) -> float:
    """Top-1 accuracy of `module` (its BN-folded export twin when it has one: the same outputs, half the time
    with channels-last tensors) on x resized to r."""
    module.eval()
    twin = getattr(module, "export_module", None)
    module = (twin() if callable(twin) else module).to(memory_format=torch.channels_last)
    correct = 0
    for i in range(0, len(x), batch):
        out = module(resize(torch.from_numpy(x[i:i + batch]), r).contiguous(memory_format=torch.channels_last))
        correct += int((out.argmax(-1).numpy() == y[i:i + batch]).sum())
    return correct / max(len(x), 1)


def extract_subnet(supernet: OFASupernet, arch: dict, calib_x: np.ndarray) -> SubNet:
    """set_active_subnet + get_active_subnet + BN recalibration: the deployable subnetwork of `arch`."""
    supernet.set_arch(arch)
    sub = supernet.get_active_subnet(int(arch["r"]))
    return recalibrate_bn(sub, calib_x, int(arch["r"]))


def subnet_accuracy(supernet: OFASupernet, arch: dict, calib_x: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of `arch` after BN recalibration, evaluated in the supernet's own dynamic modules."""
    sub = extract_subnet(supernet, arch, calib_x)
    return evaluate(sub, x, y, int(arch["r"]))


def subnet_trained(sub: SubNet, dataset, name: str, metrics: dict | None = None, eval_limit: int = 0,
                   train_images: int = 2000):
    """A Trained for the export stage: the subnetwork plus the dataset resized to its resolution (the
    deployed model takes r x r images; the bundle's eval data is the test split at r; the first train_images
    training images, INT8 calibration's)."""
    import dataclasses

    from edgebench.train.base import Trained

    r = sub.resolution
    x_te, y_te = dataset.x_test, dataset.y_test
    if eval_limit:
        x_te, y_te = x_te[:eval_limit], y_te[:eval_limit]
    ds = dataclasses.replace(
        dataset, x_train=resize_np(dataset.x_train[:train_images], r), x_test=resize_np(x_te, r), y_test=y_te,
        y_train=dataset.y_train[:train_images],
        preprocessing=f"{dataset.preprocessing}; resized to {r} x {r} (bilinear, antialiased)")
    return Trained(name=name, kind="ofa-subnet", module=sub, dataset=ds,
                   config={"arch": sub.arch, "dataset": dataset.name}, metrics=dict(metrics or {}))
