"""The architectures of the Raspberry Pi 4 reference set, rebuilt in PyTorch from their published definitions.

Random weights: latency does not depend on the values (fp32 kernels do the same work for any weights), and
nothing is downloaded. Each builder follows the paper / reference code named in its docstring; the
reference set (devices/data/pi4_reference.json) names a builder by `arch` and its arguments.
Used by benchmarks/pi4_estimate.py and `edgebench devices calibrate --from-device`.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """TF-slim / MobileNetV2 reference `_make_divisible`: round to a multiple of `divisor`, never below 90%."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn(cin, cout, k, s, groups=1, act: type[nn.Module] | None = nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    def __init__(self, features: nn.Module, cin: int, classes: int, hidden: int = 0,
                 hidden_act: type[nn.Module] = nn.Hardswish):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        head = []
        if hidden:
            head += [nn.Linear(cin, hidden), hidden_act()]
            cin = hidden
        head.append(nn.Linear(cin, classes))
        self.head = nn.Sequential(*head)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------- MobileNet v1
def mobilenet_v1(width: float = 1.0, classes: int = 1001) -> nn.Module:
    """MobileNet v1 (Howard et al. 2017, Table 1; TF-slim mobilenet_v1 with depth_multiplier = width,
    min_depth 8): a 3x3 stride-2 conv, 13 depthwise-separable blocks, average pool, 1x1 conv classifier."""
    def d(c):
        return max(int(c * width), 8)

    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = [_conv_bn(3, d(32), 3, 2)]
    cin = d(32)
    for cout, s in plan:
        layers += [_conv_bn(cin, cin, 3, s, groups=cin), _conv_bn(cin, d(cout), 1, 1)]
        cin = d(cout)
    return _Classifier(nn.Sequential(*layers), cin, classes)


# ---------------------------------------------------------------- MobileNet v2
class _InvertedResidual(nn.Module):
    def __init__(self, cin, cout, k, s, hidden, act=nn.ReLU6, se: int = 0, se_gate=nn.Sigmoid):
        super().__init__()
        layers = []
        if hidden != cin:
            layers.append(_conv_bn(cin, hidden, 1, 1, act=act))
        layers.append(_conv_bn(hidden, hidden, k, s, groups=hidden, act=act))
        if se:
            layers.append(_SqueezeExcite(hidden, se, se_gate))
        layers.append(_conv_bn(hidden, cout, 1, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class _SqueezeExcite(nn.Module):
    def __init__(self, channels, reduced, gate=nn.Hardsigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x):
        return x * self.gate(self.fc2(torch.relu(self.fc1(self.pool(x)))))


def mobilenet_v2(width: float = 1.0, classes: int = 1001) -> nn.Module:
    """MobileNet v2 (Sandler et al. 2018, Table 2; TF-slim mobilenet_v2 with depth_multiplier = width):
    channels rounded to multiples of 8, the last 1x1 conv stays 1280 below width 1."""
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    cin = _divisible(32 * width)
    layers = [_conv_bn(3, cin, 3, 2)]
    for t, c, n, s in settings:
        cout = _divisible(c * width)
        for i in range(n):
            layers.append(_InvertedResidual(cin, cout, 3, s if i == 0 else 1, cin * t))
            cin = cout
    last = _divisible(1280 * width) if width > 1.0 else 1280
    layers.append(_conv_bn(cin, last, 1, 1))
    return _Classifier(nn.Sequential(*layers), last, classes)


# ---------------------------------------------------------------- MobileNet v3
_V3 = {  # (kernel, expanded, out, squeeze-excite, hard-swish, stride): Howard et al. 2019, Tables 1 and 2
    "large": [(3, 16, 16, 0, 0, 1), (3, 64, 24, 0, 0, 2), (3, 72, 24, 0, 0, 1), (5, 72, 40, 1, 0, 2),
              (5, 120, 40, 1, 0, 1), (5, 120, 40, 1, 0, 1), (3, 240, 80, 0, 1, 2), (3, 200, 80, 0, 1, 1),
              (3, 184, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1), (3, 480, 112, 1, 1, 1), (3, 672, 112, 1, 1, 1),
              (5, 672, 160, 1, 1, 2), (5, 960, 160, 1, 1, 1), (5, 960, 160, 1, 1, 1)],
    "small": [(3, 16, 16, 1, 0, 2), (3, 72, 24, 0, 0, 2), (3, 88, 24, 0, 0, 1), (5, 96, 40, 1, 1, 2),
              (5, 240, 40, 1, 1, 1), (5, 240, 40, 1, 1, 1), (5, 120, 48, 1, 1, 1), (5, 144, 48, 1, 1, 1),
              (5, 288, 96, 1, 1, 2), (5, 576, 96, 1, 1, 1), (5, 576, 96, 1, 1, 1)],
}


def mobilenet_v3(size: str = "large", width: float = 1.0, classes: int = 1001) -> nn.Module:
    """MobileNet v3 large / small (Howard et al. 2019): squeeze-excite with hard-sigmoid (reduced to
    expanded/4, rounded to 8), hard-swish, last 1x1 conv (960 / 576) then a 1280 / 1024 hidden layer."""
    cin = _divisible(16 * width)
    layers = [_conv_bn(3, cin, 3, 2, act=nn.Hardswish)]
    for k, exp, out, se, hs, s in _V3[size]:
        cout, hidden = _divisible(out * width), _divisible(exp * width)
        layers.append(_InvertedResidual(cin, cout, k, s, hidden, act=nn.Hardswish if hs else nn.ReLU,
                                        se=_divisible(hidden / 4) if se else 0, se_gate=nn.Hardsigmoid))
        cin = cout
    last = _divisible(cin * 6)
    layers.append(_conv_bn(cin, last, 1, 1, act=nn.Hardswish))
    return _Classifier(nn.Sequential(*layers), last, classes, hidden=1280 if size == "large" else 1024)


# ---------------------------------------------------------------- EfficientNet-lite
_EFFNET_LITE = {  # width, depth, resolution (efficientnet_lite_builder.py)
    "lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260), "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}
_EFFNET_BLOCKS = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
                  (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]  # kernel, stride, expand, out, repeats (B0)


def efficientnet_lite(variant: str = "lite0", classes: int = 1000) -> nn.Module:
    """EfficientNet-lite (Tan & Le 2019 B0 blocks; TensorFlow TPU efficientnet_lite_builder): no
    squeeze-excite, ReLU6, stem (32) and head (1280) not scaled, first and last stage repeats not scaled."""
    width, depth, _ = _EFFNET_LITE[variant]
    cin = 32
    layers = [_conv_bn(3, cin, 3, 2)]
    for i, (k, s, e, out, n) in enumerate(_EFFNET_BLOCKS):
        cout = _divisible(out * width)
        repeats = n if i in (0, len(_EFFNET_BLOCKS) - 1) else int(math.ceil(depth * n))
        for j in range(repeats):
            layers.append(_InvertedResidual(cin, cout, k, s if j == 0 else 1, cin * e))
            cin = cout
    layers.append(_conv_bn(cin, 1280, 1, 1))
    return _Classifier(nn.Sequential(*layers), 1280, classes)


# ---------------------------------------------------------------- ResNet
class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, s):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, planes, 3, s, act=nn.ReLU), _conv_bn(planes, planes, 3, 1, act=None))
        self.short = (_conv_bn(cin, planes, 1, s, act=None) if s != 1 or cin != planes else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, s):
        super().__init__()
        out = planes * 4
        self.body = nn.Sequential(_conv_bn(cin, planes, 1, 1, act=nn.ReLU), _conv_bn(planes, planes, 3, s, act=nn.ReLU),
                                  _conv_bn(planes, out, 1, 1, act=None))
        self.short = _conv_bn(cin, out, 1, s, act=None) if s != 1 or cin != out else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def resnet(depth: int = 18, classes: int = 1000) -> nn.Module:
    """ResNet-18/34 (basic blocks) and -50 (bottlenecks), He et al. 2016 Table 1 (stride on the 3x3 conv,
    as torchvision's v1.5)."""
    block, counts = {18: (_Basic, [2, 2, 2, 2]), 34: (_Basic, [3, 4, 6, 3]), 50: (_Bottleneck, [3, 4, 6, 3])}[depth]
    layers = [_conv_bn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        for j in range(n):
            layers.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
            cin = planes * block.expansion
    return _Classifier(nn.Sequential(*layers), cin, classes)


BUILDERS = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet_lite": efficientnet_lite,
    "resnet": resnet,
}


def build(arch: str, **kwargs) -> nn.Module:
    """A reference architecture with random weights (seeded, so every rebuild is the same file)."""
    if arch not in BUILDERS:
        raise KeyError(f"unknown reference architecture '{arch}' (known: {', '.join(sorted(BUILDERS))})")
    torch.manual_seed(0)
    return BUILDERS[arch](**kwargs).eval()
