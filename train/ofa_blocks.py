"""The standalone (static) modules of an OFA subnetwork (train/ofa.py): what get_active_subnet() returns and
what is exported. Plain Conv/BN/Linear layers; MobileNetV3's inverted residual with hardswish and
squeeze-excite."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from edgebench.train.ofa import OFASpec


def make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _act(hswish: bool) -> nn.Module:
    return nn.Hardswish() if hswish else nn.ReLU()


# ====================================================================== standalone (static) modules
class SE(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        mid = make_divisible(channels // 4)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x):
        y = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand - BN - act - kxk depthwise - BN - act - (SE) - 1x1 project - BN (+ x)."""

    def __init__(self, c_in, c_out, expand, kernel, stride, se, hswish):
        super().__init__()
        mid = make_divisible(c_in * expand)
        self.expand_conv = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), _act(hswish))
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
                                nn.BatchNorm2d(mid), _act(hswish))
        self.se = SE(mid) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand_conv(x))))
        return x + y if self.residual else y


class Stem(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.Hardswish()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Head(nn.Module):
    """Final 1x1 expansion (BN, hardswish); the pooling and the classifier are separate modules."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.Hardswish()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Pool(nn.Module):
    def forward(self, x):
        return torch.flatten(x.mean((2, 3), keepdim=True), 1)


class SubNet(nn.Module):
    """A standalone subnetwork: plain Conv/BN/Linear layers, input 1 x r x r. `arch` says which one."""

    def __init__(self, spec: OFASpec, arch: dict):
        super().__init__()
        self.arch = copy.deepcopy(arch)
        self.resolution = int(arch["r"])
        self.stem = Stem(spec.in_channels, spec.stem_width, spec.stem_stride)
        self.blocks = nn.ModuleList(MBConv(b["c_in"], b["c_out"], b["expand"], b["kernel"], b["stride"], b["se"],
                                           b["hswish"]) for b in spec.blocks(arch))
        self.head = Head(spec.widths[-1], spec.final_width)
        self.pool = Pool()
        self.classifier = nn.Linear(spec.final_width, spec.num_classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.classifier(self.pool(self.head(x)))

    def export_module(self) -> "SubNet":
        """The exported twin (export/onnx.py export_view): every BatchNorm folded into the convolution before it,
        as both runtimes do when they load the file. Half the traced nodes: TFLite conversion takes half the time."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        twin = copy.deepcopy(self).eval()
        for m in twin.modules():
            if isinstance(m, (Stem, Head)):
                m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
            elif isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.BatchNorm2d):
                m[0], m[1] = fuse_conv_bn_eval(m[0], m[1]), nn.Identity()
        return twin
